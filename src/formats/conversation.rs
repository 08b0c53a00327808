//! Training rows as chat conversations, in whichever form a dataset holds them:
//! - `messages`: a list of `{role, content}` (TRL's conversational form); every assistant message is trained;
//! - `prompt` and `completion`: strings (a user and an assistant message) or message lists (TRL's
//!   conversational prompt-completion form); only the completion's assistant messages are trained. Rows of
//!   a traces or curated table (they have a `teacher` column) hold the bare problem: it is put under
//!   `forge generate`'s default instruction for its domain, as the teacher saw it;
//! - a problems table (`prompt`, `steps`, `gold`): the user message is the prompt under `forge generate`'s
//!   instruction for its domain, the assistant message the reference solution, so a model trained on it
//!   answers in the format `forge generate` and `forge eval` ask for.
//!
//! `segments` (a list of `{kind, start, end, train}`, character offsets into the last trained message's
//! content, end exclusive) switch the loss off on spans marked `train = false`. Read by `train-sft` (to
//! tokenize), `init-model` (to train a tokenizer) and `export` (to write other trainers' layouts).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::domain::Domain;
use super::prompt::{answer_line, instruction};
use crate::dataset::{Record, Step};
use crate::model::chat::Message;

/// A labelled span of the trained completion (DESIGN.md: `segments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Segment {
    /// A [`crate::dataset::SegmentKind`] name.
    #[serde(default)]
    pub kind: String,
    /// First character (Unicode scalar offset).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Whether the loss covers it.
    pub train: bool,
}

/// A row as chat messages, which of them carry the loss, and the segments of the last trained one.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The messages, system and user turns included.
    pub messages: Vec<Message>,
    /// Which messages carry the loss (one flag per message).
    pub trained: Vec<bool>,
    /// The labelled spans of the last trained message, when the row has them.
    pub segments: Vec<Segment>,
}

/// What is wrong with a row: the column and the message.
pub type RowError = (&'static str, String);

fn messages_of(v: &Value, column: &'static str, default_role: &str) -> Result<Vec<Message>, RowError> {
    match v {
        Value::String(s) => Ok(vec![Message::new(default_role, s)]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let field = |k: &str| m.get(k).and_then(Value::as_str);
                match (field("role"), field("content")) {
                    (Some(role), Some(content)) => Ok(Message::new(role, content)),
                    _ => Err((column, format!("item {i} is not a `{{role, content}}` message: {m}"))),
                }
            })
            .collect(),
        other => Err((column, format!("expected a string or a list of messages, found {other}"))),
    }
}

fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// The conversation of a row (see the module docs for the forms read).
pub fn conversation(fields: &Map<String, Value>) -> Result<Conversation, RowError> {
    let (messages, trained) = if let Some(m) = present(fields, "messages") {
        let messages = messages_of(m, "messages", "user")?;
        let trained = messages.iter().map(|m| m.role == "assistant").collect();
        (messages, trained)
    } else if let (Some(p), Some(c)) = (present(fields, "prompt"), present(fields, "completion")) {
        let mut prompt = messages_of(p, "prompt", "user")?;
        // a traces (or curated) row keeps the bare problem: the teacher saw it under `forge generate`'s
        // instruction for its domain
        if present(fields, "teacher").is_some() && p.is_string() {
            let domain = Domain::of(fields.get("domain").and_then(Value::as_str).unwrap_or_default());
            prompt[0].content = instruction(domain, &prompt[0].content);
        }
        let completion = messages_of(c, "completion", "assistant")?;
        let trained = prompt.iter().map(|_| false).chain(completion.iter().map(|m| m.role == "assistant")).collect();
        ([prompt, completion].concat(), trained)
    } else if let (Some(Value::String(prompt)), Some(steps)) = (present(fields, "prompt"), present(fields, "steps")) {
        let steps: Vec<Step> = serde_json::from_value(steps.clone()).map_err(|e| ("steps", e.to_string()))?;
        let domain = Domain::of(fields.get("domain").and_then(Value::as_str).unwrap_or_default());
        let user = instruction(domain, prompt);
        let answer = reference_solution(domain, &steps, fields)?;
        (vec![Message::new("user", &user), Message::new("assistant", &answer)], vec![false, true])
    } else {
        return Err((
            "messages",
            "the row has no `messages`, no `prompt` and `completion`, and no `prompt` and `steps`".into(),
        ));
    };
    if !trained.iter().any(|&t| t) {
        return Err(("messages", "the row has no assistant message to train on".into()));
    }
    let segments = match present(fields, "segments") {
        Some(s) => serde_json::from_value(s.clone()).map_err(|e| ("segments", e.to_string()))?,
        None => Vec::new(),
    };
    Ok(Conversation { messages, trained, segments })
}

/// A problem's reference solution as the answer `forge generate`'s instruction asks for: the steps, then
/// the final answer in `\boxed{}` (the expression for Countdown, a Python block for code).
pub fn reference_solution(domain: Domain, steps: &[Step], fields: &Map<String, Value>) -> Result<String, RowError> {
    let text: Vec<&str> = steps.iter().map(|s| s.text.as_str()).collect();
    if domain == Domain::Code {
        return Ok(format!("```python\n{}\n```", text.join("\n")));
    }
    let text_of = |k: &str| fields.get(k).and_then(Value::as_str);
    let answer = answer_line(domain, text_of("gold"), text_of("metadata").unwrap_or_default()).ok_or(
        if domain == Domain::Countdown {
            ("metadata", "a countdown problem needs `solution` in its metadata".to_string())
        } else {
            ("gold", "a problem without `gold` has no reference answer".to_string())
        },
    )?;
    Ok(format!("{}\n{answer}", text.join("\n")))
}

/// The record's row error with its location.
pub fn located(record: &Record, (column, message): RowError) -> crate::Error {
    crate::Error::data(record.location.clone().column(column), message)
}
