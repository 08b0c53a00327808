//! `forge export`: a dataset in the layouts other trainers read as they are.
//!
//! - `hf`: `data/train-00000-of-00001.parquet` (the `messages` form plus the source columns) and a
//!   `README.md` dataset card (schema, rows per stage of the lineage, provenance, source licences), which
//!   `datasets.load_dataset(DIR)` reads;
//! - `messages`: Parquet with `messages` (TRL's conversational form), `prompt`/`completion` and `id`;
//! - `sharegpt`: Parquet with `conversations` of `{from, value}` (`system`, `human`, `gpt`) and a
//!   `dataset_info.json` entry for LLaMA-Factory;
//! - `jsonl`: one JSON object per line with `messages`.
//!
//! Input: an `sft` table (`forge journey`), or traces / curated rows (the reply is the reasoning and the
//! solution). Reasoning is written in the target's delimiters: `<think>…</think>` (R1, Qwen3),
//! `<|begin_of_thought|>…` (Sky-T1, Bespoke), or left out.
//!
//! ```text
//! forge export curated/ --format messages --reasoning think -o export/
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dataset::{Input, Manifest, SegmentKind, TableKind};
use crate::error::{Error, Result};
use crate::formats::conversation::{Conversation, conversation, located};

/// The layout `forge export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Hugging Face datasets layout with a dataset card
    Hf,
    /// TRL's conversational `messages` (plus `prompt`/`completion`)
    Messages,
    /// ShareGPT `conversations` (`from`/`value`) and LLaMA-Factory's `dataset_info.json`
    Sharegpt,
    /// JSON lines with `messages`
    Jsonl,
}

/// How the reasoning is put into the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Reasoning {
    /// `<think>\n…\n</think>\n\n` before the solution (DeepSeek-R1, Qwen3)
    Think,
    /// `<|begin_of_thought|>…<|end_of_thought|>` then `<|begin_of_solution|>…<|end_of_solution|>` (Sky-T1)
    Thought,
    /// The solution only
    None,
}

/// `forge export`'s settings (the `[export]` section of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The dataset to export (`sft`, `curated` or `traces`)
    pub input: PathBuf,
    /// The layout to write
    #[arg(long, value_enum)]
    pub format: Format,
    /// How the reasoning is delimited in the assistant message
    #[arg(long, value_enum, default_value_t = think())]
    #[serde(default = "think")]
    pub reasoning: Reasoning,
}

fn think() -> Reasoning {
    Reasoning::Think
}

/// The delimiters teachers write around reasoning; a reply's reasoning is rendered without them (a
/// splice joins two samples' reasoning, each with its own).
const DELIMITERS: [&str; 4] = ["<think>", "</think>", "<|begin_of_thought|>", "<|end_of_thought|>"];

/// The assistant reply with its reasoning in `style`.
pub fn reply(reasoning: Option<&str>, solution: &str, style: Reasoning) -> String {
    let reasoning = reasoning.map(|r| DELIMITERS.iter().fold(r.to_string(), |r, d| r.replace(d, "")));
    match (reasoning.as_deref().map(str::trim).filter(|r| !r.is_empty()), style) {
        (None, _) | (_, Reasoning::None) => solution.trim().to_string(),
        (Some(r), Reasoning::Think) => format!("<think>\n{r}\n</think>\n\n{}", solution.trim()),
        (Some(r), Reasoning::Thought) => format!(
            "<|begin_of_thought|>\n\n{r}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n{}\n\n<|end_of_solution|>",
            solution.trim()
        ),
    }
}

/// One exported row: id, the conversation (reasoning rendered), where it came from.
struct Row {
    id: String,
    messages: Vec<(String, String)>,
}

fn row(fields: &Map<String, Value>, index: u64, style: Reasoning) -> std::result::Result<Row, (&'static str, String)> {
    let mut conv: Conversation = conversation(fields)?;
    let last = conv.messages.len() - 1;
    // the reasoning and solution of the final reply: a traces row has them as columns; an sft row has
    // segments (everything before the `final` segment is reasoning); otherwise the reasoning may be
    // delimited in the text only (a teacher's continuation of a wrong prefix), ending at the last
    // closing delimiter
    let text = |k: &str| fields.get(k).and_then(Value::as_str);
    let content = conv.messages[last].content.clone();
    let parts = if let Some(solution) = text("solution") {
        Some((text("reasoning").map(str::to_string), solution.to_string()))
    } else {
        let chars: Vec<char> = content.chars().collect();
        let at_final =
            conv.segments.iter().find(|s| s.kind == SegmentKind::Final.name()).map(|f| f.start.min(chars.len()));
        at_final.map(|at| (Some(chars[..at].iter().collect()), chars[at..].iter().collect())).or_else(|| {
            let split = crate::verify::extract::split(&content);
            split.reasoning.filter(|_| !split.unclosed).map(|r| (Some(r.to_string()), split.solution.to_string()))
        })
    };
    if let Some((reasoning, solution)) = parts {
        conv.messages[last].content = reply(reasoning.as_deref(), &solution, style);
    }
    let id = text("id").map(str::to_string).unwrap_or_else(|| index.to_string());
    Ok(Row { id, messages: conv.messages.into_iter().map(|m| (m.role, m.content)).collect() })
}

fn messages_type(role: &str, content: &str) -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new(role, DataType::Utf8, false),
        Field::new(content, DataType::Utf8, false),
    ]))
}

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The rows as one record batch of `format`'s columns.
fn batch(rows: &[Row], format: Format) -> Result<RecordBatch> {
    let sharegpt = format == Format::Sharegpt;
    let (column, role, content) =
        if sharegpt { ("conversations", "from", "value") } else { ("messages", "role", "content") };
    let message = |m: &(String, String)| {
        let from = if sharegpt {
            match m.0.as_str() {
                "user" => "human",
                "assistant" => "gpt",
                other => other,
            }
        } else {
            m.0.as_str()
        };
        serde_json::json!({ role: from, content: m.1 })
    };
    let mut fields =
        vec![Field::new("id", DataType::Utf8, false), Field::new(column, list(messages_type(role, content)), false)];
    let with_split = format != Format::Sharegpt;
    if with_split {
        fields.push(Field::new("prompt", list(messages_type(role, content)), false));
        fields.push(Field::new("completion", list(messages_type(role, content)), false));
    }
    let schema = Arc::new(Schema::new(fields));
    let values: Vec<Value> = rows
        .iter()
        .map(|r| {
            let all: Vec<Value> = r.messages.iter().map(message).collect();
            let mut o = serde_json::json!({ "id": r.id, column: all });
            if with_split {
                let (prompt, completion) = all.split_at(all.len() - 1);
                o["prompt"] = Value::Array(prompt.to_vec());
                o["completion"] = Value::Array(completion.to_vec());
            }
            o
        })
        .collect();
    crate::dataset::to_batch(&schema, &values)
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    fs_err::create_dir_all(dir)?;
    let temp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("part")));
    let file = fs_err::File::create(&temp)?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| Error::parquet(&temp, e))?;
    writer.write(batch).map_err(|e| Error::parquet(&temp, e))?;
    writer.close().map_err(|e| Error::parquet(&temp, e))?;
    fs_err::rename(&temp, path)?;
    Ok(())
}

/// The manifests of `dir` and of the datasets it was made from, following provenance inputs.
fn lineage(dir: &Path) -> Vec<Manifest> {
    let mut out = Vec::new();
    let mut next = vec![dir.to_path_buf()];
    while let Some(d) = next.pop() {
        if let Ok(m) = Manifest::read(&d.join("manifest.json")) {
            next.extend(m.provenance.inputs.iter().map(|i| i.path.clone()).filter(|p| p.is_dir()));
            out.push(m);
        }
    }
    out
}

fn card(cfg: &ExportConfig, rows: usize, schema: &Schema, input: &Input) -> String {
    let mut text = format!(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\ntags:\n- reasoning\n- forge\n---\n\n\
         # {}\n\nMade with forge {}: {rows} conversations for supervised fine-tuning, reasoning delimited as \
         `{}`. Load it with `datasets.load_dataset(\"<this directory>\")`; the `messages` column is TRL's \
         conversational form.\n\n## Columns\n\n| column | type |\n|---|---|\n",
        cfg.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(cfg.reasoning).expect("json").as_str().unwrap_or_default()
    );
    for f in schema.fields() {
        text += &format!("| `{}` | `{}` |\n", f.name(), crate::dataset::type_name(f.data_type()));
    }
    text += "\n## How it was made\n\nRows in and out of each stage that led here (newest first):\n\n| stage | rows in | rows out | rejected | command |\n|---|---|---|---|---|\n";
    let mut sources = Vec::new();
    for m in lineage(&input.path) {
        let rejected: u64 = m.report.rejected.values().sum();
        text += &format!(
            "| {} | {} | {} | {} | `{}` |\n",
            m.provenance.stage,
            m.report.rows_in,
            m.report.rows_out,
            rejected,
            m.provenance.command.join(" ").replace('|', "\\|")
        );
        for i in &m.provenance.inputs {
            if !i.path.is_dir() || m.provenance.stage == "import" {
                sources.push(i.path.display().to_string());
            }
        }
    }
    text += "\n## Sources and licences\n\n";
    if sources.is_empty() {
        text += "Synthetic problems made by `forge synth` and solutions by the models named in the lineage above; no third-party text.\n";
    } else {
        text += "The rows derive from these inputs; their licences apply (see the LICENSE files beside them):\n\n";
        for s in sources {
            text += &format!("- `{s}`\n");
        }
    }
    text
}

/// Export `cfg.input` into `out`; returns the rows written.
pub fn run(cfg: &ExportConfig, out: &Path) -> Result<usize> {
    if out.exists() && fs_err::read_dir(out)?.next().is_some() {
        return Err(Error::usage(format!("`{}` exists and is not empty", out.display())));
    }
    let input = Input::open(&cfg.input)?;
    if !matches!(input.kind, None | Some(TableKind::Sft | TableKind::Curated | TableKind::Traces)) {
        return Err(Error::usage(format!(
            "`{}` is a {} table; export takes sft, curated or traces",
            cfg.input.display(),
            input.kind.map(TableKind::name).unwrap_or("?")
        )));
    }
    let mut rows = Vec::new();
    for (i, r) in input.records(0..input.rows()).enumerate() {
        let r = r?;
        rows.push(row(&r.fields, i as u64, cfg.reasoning).map_err(|e| located(&r, e))?);
    }
    let staging = out.with_extension("forge-tmp");
    if staging.exists() {
        fs_err::remove_dir_all(&staging)?;
    }
    let b = batch(&rows, cfg.format)?;
    match cfg.format {
        Format::Hf => {
            write_parquet(&staging.join("data/train-00000-of-00001.parquet"), &b)?;
            fs_err::write(staging.join("README.md"), card(cfg, rows.len(), &b.schema(), &input))?;
        }
        Format::Messages => write_parquet(&staging.join("train.parquet"), &b)?,
        Format::Sharegpt => {
            write_parquet(&staging.join("train.parquet"), &b)?;
            let name =
                cfg.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "forge".into());
            let info = serde_json::json!({ name: {
                "file_name": "train.parquet",
                "formatting": "sharegpt",
                "columns": { "messages": "conversations" },
                "tags": { "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system" }
            }});
            fs_err::write(staging.join("dataset_info.json"), serde_json::to_vec_pretty(&info).expect("json"))?;
        }
        Format::Jsonl => {
            fs_err::create_dir_all(&staging)?;
            let mut text = String::new();
            for r in &rows {
                let messages: Vec<Value> = r
                    .messages
                    .iter()
                    .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                    .collect();
                text += &serde_json::json!({ "id": r.id, "messages": messages }).to_string();
                text.push('\n');
            }
            fs_err::write(staging.join("train.jsonl"), text)?;
        }
    }
    if out.exists() {
        fs_err::remove_dir(out)?;
    }
    fs_err::rename(&staging, out)?;
    Ok(rows.len())
}

/// `forge export`.
pub struct Export;

impl crate::stage::Stage for Export {
    const NAME: &'static str = "export";
    const ABOUT: &'static str =
        "Write a dataset in the layouts other trainers read: HF datasets, TRL messages, ShareGPT, JSONL";
    const EXAMPLES: &'static str =
        "  forge export sft/ --format hf -o my-dataset/                       # data/train-*.parquet + README.md card
  forge export curated/ --format messages --reasoning think -o trl/   # TRL SFTTrainer, <think> reasoning
  forge export curated/ --format sharegpt --reasoning thought -o lf/  # LLaMA-Factory (dataset_info.json)
  forge export sft/ --format jsonl --reasoning none -o jsonl/";
    type Config = ExportConfig;
    type Target = crate::stage::DirTarget;

    fn run(cfg: &ExportConfig, out: &crate::stage::DirTarget, _: &crate::Context) -> Result<crate::stage::Done> {
        let rows = run(cfg, &out.output)?;
        Ok(crate::stage::Done {
            rows_out: Some(rows as u64),
            summary: format!("wrote {rows} rows as {:?} to `{}`", cfg.format, out.output.display()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_styles() {
        assert_eq!(reply(Some("a"), "b", Reasoning::Think), "<think>\na\n</think>\n\nb");
        assert_eq!(reply(Some("a"), "b", Reasoning::None), "b");
        assert!(
            reply(Some("a"), "b", Reasoning::Thought).starts_with("<|begin_of_thought|>\n\na\n\n<|end_of_thought|>")
        );
        assert_eq!(reply(None, "b", Reasoning::Think), "b");
    }
}
