//! The tables forge writes: their kinds, Arrow schemas and row types. `schemas/*.md` documents each
//! column; a test renders these schemas and compares them with those files, so the two cannot drift.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// A kind of table. The manifest records it, and readers use it to check what they were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// Problems to solve (`import`, `synth`).
    Problems,
    /// Sampled solutions (`generate`).
    Traces,
    /// Traces that passed `forge filter`, with their verdict.
    Curated,
    /// Training conversations with labelled spans (`forge journey`).
    Sft,
}

impl TableKind {
    /// Every kind, in pipeline order.
    pub const ALL: [TableKind; 4] = [TableKind::Problems, TableKind::Traces, TableKind::Curated, TableKind::Sft];

    /// The kind's name, as the manifest and `--help` spell it.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Problems => "problems",
            TableKind::Traces => "traces",
            TableKind::Curated => "curated",
            TableKind::Sft => "sft",
        }
    }

    /// Bumped whenever a column is added, removed or changes type.
    pub fn version(self) -> u32 {
        match self {
            TableKind::Problems => 1,
            TableKind::Traces => 1,
            TableKind::Curated => 1,
            TableKind::Sft => 1,
        }
    }

    /// The kind's Arrow schema (documented column by column in `schemas/<name>.md`).
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Problems => problems_schema(),
            TableKind::Traces => traces_schema(),
            TableKind::Curated => curated_schema(),
            TableKind::Sft => sft_schema(),
        }
    }
}

fn string(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

/// One problem: what the teacher is asked, and what a verifier needs to judge the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The source's own id when it has one, else `h` + 16 hex digits of a content hash.
    pub id: String,
    /// Where the problem comes from, e.g. `gsm8k/train` or `synth/igsm`.
    pub source: String,
    /// How an answer is judged: `math` (answer equivalence), `code` (tests), `countdown` (expression).
    pub domain: String,
    /// The problem as posed to a model, without answer-format instructions.
    pub prompt: String,
    /// The reference final answer as the source writes it; null when there is none (some code problems).
    pub gold: Option<String>,
    /// Python snippets for code problems; each one, appended to the candidate program, exits 0 iff it passes.
    pub tests: Option<Vec<String>>,
    /// A reference solution step by step, when the source has one (GSM8K, `synth`).
    pub steps: Option<Vec<Step>>,
    /// A JSON object with whatever else the source had (level, subject, numbers, the synth graph, ...).
    pub metadata: String,
}

/// One step of a reference solution; `calcs` are the calculations in it a checker can redo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The step's text.
    pub text: String,
    /// The calculations in it that a checker can redo.
    pub calcs: Vec<Calc>,
}

/// A checkable calculation: `expr` evaluates to `result` (`%` is the remainder, as in Python).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calc {
    /// The expression, as written (`48 / 2`).
    pub expr: String,
    /// Its value, as written (`24`).
    pub result: String,
}

/// The problems table's Arrow schema.
pub fn problems_schema() -> SchemaRef {
    let calc = Fields::from(vec![string("expr", false), string("result", false)]);
    let step = Fields::from(vec![string("text", false), Field::new("calcs", list_of(DataType::Struct(calc)), false)]);
    Arc::new(Schema::new(vec![
        string("id", false),
        string("source", false),
        string("domain", false),
        string("prompt", false),
        string("gold", true),
        Field::new("tests", list_of(DataType::Utf8), true),
        Field::new("steps", list_of(DataType::Struct(step)), true),
        string("metadata", false),
    ]))
}

/// One sampled solution of one problem (draft: the generation stage fills it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// `<problem_id>#<sample_index>`.
    pub id: String,
    /// The `id` of the problem in its problems dataset.
    pub problem_id: String,
    /// Copied from the problem.
    pub source: String,
    /// Copied from the problem.
    pub domain: String,
    /// The problem text (copied).
    pub prompt: String,
    /// Copied from the problem.
    pub gold: Option<String>,
    /// The teacher that wrote it: `local:<checkpoint>` or `openai:<model>@<url>`.
    pub teacher: String,
    /// Which of the problem's samples (0-based).
    pub sample_index: u32,
    /// The sampling settings and the seed that reproduce this sample.
    pub sampling: Sampling,
    /// The raw text the teacher produced, delimiters included.
    pub completion: String,
    /// The thinking part, null when the teacher gave none.
    pub reasoning: Option<String>,
    /// The final-answer part, after the reasoning.
    pub solution: String,
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// `stop`, `length` or `error` ([`Finish`]).
    pub finish_reason: String,
    /// Copied from the problem (Countdown's numbers and target live here).
    pub metadata: String,
    /// Copied from the problem: code problems' tests (Python snippets).
    #[serde(default)]
    pub tests: Option<Vec<String>>,
    /// Log-probability of each generated token under the teacher (before temperature and truncation).
    pub token_logprobs: Option<Vec<f32>>,
    /// The teacher's most likely tokens at each generated position (`--top-logprobs K`).
    pub top_logprobs: Option<Vec<Vec<TokenLogprob>>>,
    /// Why the sample is missing (`finish_reason = "error"`): the request failed past its retries.
    pub error: Option<String>,
    /// What an HTTP teacher's server reported (model, system fingerprint, usage, latency), or what the local
    /// decoder did beyond sampling (beam search, budget forcing): a JSON object.
    pub server: Option<String>,
}

/// A token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's id in the teacher's vocabulary.
    pub token: u32,
    /// Its log-probability under the teacher.
    pub logprob: f32,
}

/// How a sample was drawn (the traces table's `sampling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus (top-p) truncation; 1 keeps every token.
    pub top_p: f32,
    /// Top-k truncation, when set.
    pub top_k: Option<u32>,
    /// New tokens at most.
    pub max_new_tokens: u32,
    /// The seed that reproduces the sample (with the problem id and sample index).
    pub seed: u64,
}

/// The traces table's Arrow schema.
pub fn traces_schema() -> SchemaRef {
    let sampling = Fields::from(vec![
        Field::new("temperature", DataType::Float32, false),
        Field::new("top_p", DataType::Float32, false),
        Field::new("top_k", DataType::UInt32, true),
        Field::new("max_new_tokens", DataType::UInt32, false),
        Field::new("seed", DataType::UInt64, false),
    ]);
    Arc::new(Schema::new(vec![
        string("id", false),
        string("problem_id", false),
        string("source", false),
        string("domain", false),
        string("prompt", false),
        string("gold", true),
        string("teacher", false),
        Field::new("sample_index", DataType::UInt32, false),
        Field::new("sampling", DataType::Struct(sampling), false),
        string("completion", false),
        string("reasoning", true),
        string("solution", false),
        Field::new("prompt_tokens", DataType::UInt32, false),
        Field::new("completion_tokens", DataType::UInt32, false),
        string("finish_reason", false),
        string("metadata", false),
        Field::new("tests", list_of(DataType::Utf8), true),
        Field::new("token_logprobs", list_of(DataType::Float32), true),
        Field::new(
            "top_logprobs",
            list_of(list_of(DataType::Struct(Fields::from(vec![
                Field::new("token", DataType::UInt32, false),
                Field::new("logprob", DataType::Float32, false),
            ])))),
            true,
        ),
        string("error", true),
        string("server", true),
    ]))
}

/// The traces columns plus the filter's verdict.
pub fn curated_schema() -> SchemaRef {
    let mut fields: Vec<Field> = traces_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend([
        string("extracted", true),
        Field::new("correct", DataType::Boolean, true),
        string("gold_origin", true),
    ]);
    Arc::new(Schema::new(fields))
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

/// What a segment of a training reply is (the `kind` of the sft table's `segments`; journey writes them,
/// trainers and `export` read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// A step of the solution.
    Step,
    /// A deliberately wrong step (Journey Learning).
    Error,
    /// The model noticing the error.
    Detect,
    /// The corrected step.
    Fix,
    /// A check of a step.
    Verify,
    /// The final answer.
    Final,
}

impl SegmentKind {
    /// The kind's name, as the `segments` column spells it.
    pub fn name(self) -> &'static str {
        match self {
            SegmentKind::Step => "step",
            SegmentKind::Error => "error",
            SegmentKind::Detect => "detect",
            SegmentKind::Fix => "fix",
            SegmentKind::Verify => "verify",
            SegmentKind::Final => "final",
        }
    }
}

/// Why a sample ended (the traces table's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_new_tokens` reached: truncated.
    Length,
    /// The request failed past its retries (an HTTP teacher): no sample, the row's `error` says why.
    Error,
}

impl Finish {
    /// The reason's name, as the `finish_reason` column spells it.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Error => "error",
        }
    }

    /// The reason a `finish_reason` value names (`None` for one forge does not write, as a server's
    /// `content_filter`).
    pub fn of(column: &str) -> Option<Finish> {
        match column {
            "stop" => Some(Finish::Stop),
            "length" => Some(Finish::Length),
            "error" => Some(Finish::Error),
            _ => None,
        }
    }
}

/// A labelled span of the completion: character offsets into the assistant message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSpan {
    /// A [`SegmentKind`] name.
    pub kind: String,
    /// First character (Unicode scalar offset).
    pub start: u32,
    /// One past the last character.
    pub end: u32,
    /// Whether the trainers compute loss on it.
    pub train: bool,
}

/// One training conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftRow {
    /// The row's id: the problem id for one row per problem.
    pub id: String,
    /// The `id` of the problem in its problems dataset.
    pub problem_id: String,
    /// Copied from the problem.
    pub source: String,
    /// Copied from the problem.
    pub domain: String,
    /// The whole conversation; the last message is the assistant's reply.
    pub messages: Vec<ChatMessage>,
    /// `messages` without the final assistant reply.
    pub prompt: Vec<ChatMessage>,
    /// The final assistant reply, as a one-message list.
    pub completion: Vec<ChatMessage>,
    /// Labelled spans of the reply's content, in order and covering it.
    pub segments: Vec<SegmentSpan>,
    /// Copied from the problem.
    pub gold: Option<String>,
    /// A JSON object: how the row was made (strategy, knobs, inserted errors, verdicts).
    pub metadata: String,
}

pub fn sft_schema() -> SchemaRef {
    let message = || DataType::Struct(Fields::from(vec![string("role", false), string("content", false)]));
    let segment = Fields::from(vec![
        string("kind", false),
        Field::new("start", DataType::UInt32, false),
        Field::new("end", DataType::UInt32, false),
        Field::new("train", DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(vec![
        string("id", false),
        string("problem_id", false),
        string("source", false),
        string("domain", false),
        Field::new("messages", list_of(message()), false),
        Field::new("prompt", list_of(message()), false),
        Field::new("completion", list_of(message()), false),
        Field::new("segments", list_of(DataType::Struct(segment)), false),
        string("gold", true),
        string("metadata", false),
    ]))
}

/// The compact type notation used in `schemas/*.md`: `string`, `list<string>`,
/// `struct<text: string, note?: string>` (`?` marks a nullable nested field).
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::List(item) | DataType::LargeList(item) => format!("list<{}>", type_name(item.data_type())),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| {
                    let mark = if f.is_nullable() { "?" } else { "" };
                    format!("{}{mark}: {}", f.name(), type_name(f.data_type()))
                })
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        other => other.to_string().to_lowercase(),
    }
}
