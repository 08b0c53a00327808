//! Training rows to token ids and loss masks. A row is read as a conversation
//! ([`crate::formats::conversation`]) in any of these forms:
//! - `messages`: a list of `{role, content}` (TRL's conversational form); every assistant message is trained;
//! - `prompt` and `completion`: strings (a user and an assistant message) or message lists (TRL's
//!   conversational prompt-completion form); only the completion's assistant messages are trained. Rows of
//!   a traces or curated table (they have a `teacher` column) hold the bare problem: it is put under
//!   `forge generate`'s default instruction for its domain, as the teacher saw it;
//! - a problems table (`prompt`, `steps`, `gold`): the user message is the prompt under `forge generate`'s
//!   instruction for its domain, the assistant message the reference solution, so a model trained on it
//!   answers in the format `forge generate` and `forge eval` ask for.
//!
//! - `text` (and none of the above): plain text for language modelling (pretraining a base on text of a
//!   domain, as TRL's language-modelling datasets); every token is trained, and the end-of-sequence token
//!   is appended so the model learns where a text ends.
//!
//! `segments` (a list of `{kind, start, end, train}`, character offsets into the last trained message's
//! content, end exclusive) switch the loss off on spans marked `train = false`.
//!
//! The conversation is rendered once with the checkpoint's chat template, as `apply_chat_template` does,
//! and each trained message is located in the text (rendering message prefixes separately is unreliable:
//! templates such as Qwen3's rewrite earlier turns). The trained span runs through the end-of-turn token
//! that follows the content, so the model learns to stop. Tokens are trained when their first byte is in
//! a trained span; rows are cut to `max_length` tokens keeping the start, and rows left with no trained
//! token are dropped (and counted).

use std::ops::Range;

use serde_json::{Map, Value};

use crate::formats::conversation::{Conversation, RowError};
use crate::model::chat::{ChatTemplate, Message};
use crate::model::tokenizer::Tokenizer;

/// A tokenized training row: `train[i]` says whether the loss covers predicting `ids[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The token ids.
    pub ids: Vec<u32>,
    /// Per token: whether the loss covers predicting it.
    pub train: Vec<bool>,
    /// The tokens of the last trained message and its end-of-turn token, as rendered (it may run past
    /// `ids` where the row was cut).
    pub reply: Range<usize>,
    /// The teacher's top-k distribution of each token (`[]`: none), or empty (no teacher at all): for
    /// distillation ([`super::distill::attach`]).
    pub teacher: Vec<Vec<(u32, f32)>>,
}

impl Example {
    /// An example with no reply marked and no teacher distributions.
    pub fn new(ids: Vec<u32>, train: Vec<bool>) -> Example {
        Example { ids, train, reply: 0..0, teacher: Vec::new() }
    }

    /// Tokens with a loss (the first token is never predicted).
    pub fn trained(&self) -> usize {
        self.train.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Renders conversations with a checkpoint's chat template and tokenizer.
pub struct Renderer {
    chat: ChatTemplate,
    tokenizer: Tokenizer,
    max_length: usize,
    specials: Vec<String>,
}

impl Renderer {
    /// A renderer cutting rows at `max_length` tokens.
    pub fn new(chat: ChatTemplate, tokenizer: Tokenizer, max_length: usize) -> Renderer {
        let specials = tokenizer.special_tokens();
        Renderer { chat, tokenizer, max_length, specials }
    }

    /// The tokenizer it renders with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The example of a row in any of the forms of the module docs, or `None` when no trained token is left
    /// within `max_length`.
    pub fn row(&self, fields: &Map<String, Value>) -> Result<Option<Example>, RowError> {
        let plain = ["messages", "prompt", "completion"].iter().all(|c| fields.get(*c).is_none_or(Value::is_null));
        match fields.get("text") {
            Some(Value::String(text)) if plain => self.text(text),
            Some(other) if plain && !other.is_null() => Err(("text", format!("expected a string, found {other}"))),
            _ => self.example(&crate::formats::conversation::conversation(fields)?),
        }
    }

    /// Plain text, every token trained, the end-of-sequence token appended.
    fn text(&self, text: &str) -> Result<Option<Example>, RowError> {
        let mut ids = self.tokenizer.encode(text).map_err(|e| ("text", e.to_string()))?;
        ids.extend(self.tokenizer.eos_ids.first());
        let reply = 0..ids.len();
        ids.truncate(self.max_length);
        let example = Example { train: vec![true; ids.len()], ids, reply, teacher: Vec::new() };
        Ok((example.trained() > 0).then_some(example))
    }

    /// The example of `conv`, or `None` when no trained token is left within `max_length`.
    pub fn example(&self, conv: &Conversation) -> Result<Option<Example>, RowError> {
        let render =
            |m: &[Message], open: bool| self.chat.render(m, open, &Map::new()).map_err(|e| ("messages", e.to_string()));
        let mut text = render(&conv.messages, false)?;
        let eos = self.chat.tokens.get("eos_token").and_then(Value::as_str).unwrap_or_default();
        let (mut trained, mut excluded) = (Vec::<Range<usize>>::new(), Vec::<Range<usize>>::new());
        let last = conv.trained.iter().rposition(|&t| t).expect("checked in `conversation`");
        // Templates such as DeepSeek-R1's drop the reasoning from assistant turns; the final turn is then
        // the conversation up to it with the generation prompt, plus the reply and the end-of-turn token,
        // which is what the model sees when it generates.
        if last + 1 == conv.messages.len() && !text.contains(&conv.messages[last].content) {
            text = render(&conv.messages[..last], true)? + &conv.messages[last].content + eos;
        }
        let mut cursor = 0;
        let mut reply = 0..0;
        for (i, (m, &train)) in conv.messages.iter().zip(&conv.trained).enumerate() {
            if m.content.is_empty() {
                continue;
            }
            let Some(at) = text[cursor..].find(&m.content).map(|at| cursor + at) else {
                if train {
                    return Err((
                        "messages",
                        format!("the chat template does not reproduce message {i} ({}) verbatim", m.role),
                    ));
                }
                continue;
            };
            let mut end = at + m.content.len();
            cursor = end;
            if !train {
                continue;
            }
            // the end-of-turn token that closes the reply (the eos token, or the template's own, such as
            // Qwen2.5-Math's `<|im_end|>` whose eos is `<|endoftext|>`)
            if !eos.is_empty() && text[end..].starts_with(eos) {
                end += eos.len();
            } else if let Some(t) = self.specials.iter().find(|t| text[end..].starts_with(t.as_str())) {
                end += t.len();
            }
            trained.push(at..end);
            if i == last {
                reply = at..end;
                for s in &conv.segments {
                    let byte = |c: usize| m.content.char_indices().nth(c).map_or(m.content.len(), |(b, _)| b);
                    if s.start > s.end || s.end > m.content.chars().count() {
                        return Err((
                            "segments",
                            format!(
                                "span {}..{} is outside the completion ({} characters)",
                                s.start,
                                s.end,
                                m.content.chars().count()
                            ),
                        ));
                    }
                    if !s.train {
                        excluded.push(at + byte(s.start)..at + byte(s.end));
                    }
                }
            }
        }
        let tokens = self.tokenizer.encode_with_offsets(&text).map_err(|e| ("messages", e.to_string()))?;
        let inside = |spans: &[Range<usize>], b: usize| spans.iter().any(|r| r.contains(&b));
        let mut ids: Vec<u32> = tokens.iter().map(|t| t.0).collect();
        let mut train: Vec<bool> =
            tokens.iter().map(|&(_, (s, e))| s < e && inside(&trained, s) && !inside(&excluded, s)).collect();
        let first = tokens.iter().position(|&(_, (s, _))| s >= reply.start).unwrap_or(tokens.len());
        let reply = first..first + tokens[first..].iter().take_while(|&&(_, (s, _))| s < reply.end).count();
        ids.truncate(self.max_length);
        train.truncate(self.max_length);
        let example = Example { ids, train, reply, teacher: Vec::new() };
        Ok((example.trained() > 0).then_some(example))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::conversation::conversation;
    use crate::model::tiny;

    fn renderer(max_length: usize) -> Renderer {
        let mut tokens = Map::new();
        tokens.insert("eos_token".into(), "<|im_end|>".into());
        Renderer::new(
            ChatTemplate::new(tiny::CHATML, tokens).unwrap(),
            Tokenizer::from_inner(tiny::tokenizer().unwrap(), vec![258]),
            max_length,
        )
    }

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn trained_text(r: &Renderer, e: &Example) -> String {
        let ids: Vec<u32> = e.ids.iter().zip(&e.train).filter(|(_, t)| **t).map(|(i, _)| *i).collect();
        r.tokenizer().decode(&ids, false).unwrap()
    }

    /// Only assistant text and its end-of-turn token carry the loss, in every row form.
    #[test]
    fn loss_covers_assistant_turns_only() {
        let r = renderer(1024);
        let rows = [
            serde_json::json!({"messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
                {"role": "assistant", "content": "6"}]}),
            serde_json::json!({"prompt": "2+2?", "completion": "4"}),
            serde_json::json!({"prompt": [{"role": "user", "content": "2+2?"}],
                               "completion": [{"role": "assistant", "content": "4"}]}),
        ];
        let want = ["4<|im_end|>6<|im_end|>", "4<|im_end|>", "4<|im_end|>"];
        for (row, want) in rows.iter().zip(want) {
            let conv = conversation(&fields(row.clone())).unwrap();
            let e = r.example(&conv).unwrap().unwrap();
            assert_eq!(e.ids.len(), e.train.len());
            assert_eq!(trained_text(&r, &e), want, "{row}");
        }
    }

    /// Spans marked `train = false` get no loss; the rest of the completion does.
    #[test]
    fn untrained_segments_are_masked() {
        let r = renderer(1024);
        let completion = "3 + 4 = 8. Wait, 3 + 4 = 7. Answer: 7";
        let row = serde_json::json!({"prompt": "3+4?", "completion": completion, "segments": [
            {"kind": "error", "start": 0, "end": 11, "train": false},
            {"kind": "fix", "start": 11, "end": 37, "train": true}]});
        let e = r.example(&conversation(&fields(row)).unwrap()).unwrap().unwrap();
        assert_eq!(trained_text(&r, &e), "Wait, 3 + 4 = 7. Answer: 7<|im_end|>");
        let bad = serde_json::json!({"prompt": "x", "completion": "ab",
            "segments": [{"kind": "error", "start": 1, "end": 9, "train": false}]});
        let err = r.example(&conversation(&fields(bad)).unwrap()).unwrap_err();
        assert_eq!(err.0, "segments");
    }

    /// A problem with reference steps becomes the instruction `forge generate` sends and a boxed answer.
    #[test]
    fn problems_train_on_their_reference_solution() {
        let row = serde_json::json!({"prompt": "Compute 2 + 3.", "domain": "math", "gold": "5",
            "steps": [{"text": "2 + 3 = 5", "calcs": [{"expr": "2 + 3", "result": "5"}]}]});
        let conv = conversation(&fields(row)).unwrap();
        assert!(conv.messages[0].content.starts_with("Compute 2 + 3.\n\nPlease reason step by step"));
        assert_eq!(conv.messages[1].content, "2 + 3 = 5\nThe answer is \\boxed{5}.");
    }

    /// Rows are cut keeping the start; a row whose trained part falls beyond `max_length` is dropped.
    #[test]
    fn truncation_keeps_the_start_and_drops_empty_rows() {
        let row = serde_json::json!({"prompt": "a long question", "completion": "answer"});
        let conv = conversation(&fields(row)).unwrap();
        let full = renderer(1024).example(&conv).unwrap().unwrap();
        let cut = renderer(full.ids.len() - 3).example(&conv).unwrap().unwrap();
        assert_eq!(cut.ids[..], full.ids[..full.ids.len() - 3]);
        assert_eq!(renderer(10).example(&conv).unwrap(), None);
        let err = conversation(&fields(serde_json::json!({"text": "x"}))).unwrap_err();
        assert!(err.1.contains("no `messages`"), "{err:?}");
    }

    /// A `text` row trains every token and ends with the end-of-sequence token; a `text` column beside
    /// messages is left alone, and a `text` that is not a string is an error naming the column.
    #[test]
    fn text_rows_train_every_token() {
        let r = renderer(1024);
        let e = r.row(&fields(serde_json::json!({"text": "7 * 8 = 56"}))).unwrap().unwrap();
        assert_eq!(r.tokenizer().decode(&e.ids, false).unwrap(), "7 * 8 = 56<|im_end|>");
        assert!(e.train.iter().all(|&t| t));
        let chat = fields(serde_json::json!({"text": "ignored", "prompt": "2+2?", "completion": "4"}));
        assert_eq!(trained_text(&r, &r.row(&chat).unwrap().unwrap()), "4<|im_end|>");
        assert_eq!(r.row(&fields(serde_json::json!({"text": 3}))).unwrap_err().0, "text");
    }
}
