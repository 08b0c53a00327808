//! `forge import`: JSONL, Parquet or CSV to a `problems` dataset, with presets for the common formats
//! (GSM8K, MATH and MATH-500, Countdown, HumanEval, MBPP, APPS/TACO, CodeContests, LiveCodeBench, AIME) and a
//! generic column mapping.
//!
//! Ids are the source's own when it has them, else `h` + 16 hex digits of the xxh3 hash of prompt and
//! gold answer, so reimporting the same data gives the same ids. Columns a preset does not use are kept
//! in `metadata`.
//!
//! ```text
//! forge import --preset gsm8k ../shared/data/gsm8k/train.jsonl -o problems/
//! forge import --prompt-col q --answer-col a --id-col id my.csv -o problems/
//! ```

mod aime;
mod apps;
mod codecontests;
mod columns;
mod countdown;
mod gsm8k;
mod humaneval;
mod livecodebench;
mod math;
mod mbpp;

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dataset::{DatasetWriter, Format, Input, Problem, Provenance, Record, Start, TableKind};
use crate::error::{Error, Location, Result};
use crate::formats::domain::Domain;
use crate::progress::Progress;
use crate::report::StageReport;
use crate::{Context, Outcome, OutputArgs};

/// A known dataset layout `forge import` converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// GSM8K: `question`, `answer` ending in `#### N`; steps from the `<<a*b=c>>` annotations
    Gsm8k,
    /// MATH: `problem`, `solution` (gold = its last `\boxed{}`), `answer` when present
    Math,
    /// MATH-500: as `math`, keeping `math500` as the source name
    Math500,
    /// Countdown (TinyZero): `nums`, `target`, optional `ref_solution`
    Countdown,
    /// HumanEval: `task_id`, `prompt`, `test`, `entry_point`, `canonical_solution`
    Humaneval,
    /// MBPP: `task_id`, `text`, `code`, `test_list`, `test_setup_code`
    Mbpp,
    /// APPS and TACO: `question`, `input_output` (stdin/stdout cases or `fn_name` calls), `solutions`
    #[value(alias = "taco")]
    #[serde(alias = "taco")]
    Apps,
    /// CodeContests: `name`, `description`, `public_tests`, `private_tests`, `solutions`
    Codecontests,
    /// LiveCodeBench: `question_id`, `question_content`, `public_test_cases`, `private_test_cases`
    Livecodebench,
    /// AIME: `id`, `problem`, `answer`
    Aime,
}

impl Preset {
    /// The preset's name, as `--preset` and the `source` column spell it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Gsm8k => "gsm8k",
            Preset::Math => "math",
            Preset::Math500 => "math500",
            Preset::Countdown => "countdown",
            Preset::Humaneval => "humaneval",
            Preset::Mbpp => "mbpp",
            Preset::Apps => "apps",
            Preset::Codecontests => "codecontests",
            Preset::Livecodebench => "livecodebench",
            Preset::Aime => "aime",
        }
    }
}

/// `forge import` settings; the same struct is a `kind = "import"` pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Input: a JSONL, Parquet or CSV file, or a dataset directory
    pub input: PathBuf,
    /// Read a known format
    #[arg(long, value_enum)]
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Column holding the problem text (generic mapping, instead of a preset)
    #[arg(long, value_name = "COL", conflicts_with = "preset")]
    #[serde(default)]
    pub prompt_col: Option<String>,
    /// Column holding the gold answer
    #[arg(long, value_name = "COL", conflicts_with = "preset")]
    #[serde(default)]
    pub answer_col: Option<String>,
    /// Column holding the problem id (default: a content hash)
    #[arg(long, value_name = "COL", conflicts_with = "preset")]
    #[serde(default)]
    pub id_col: Option<String>,
    /// How answers are judged, for the generic mapping
    #[arg(long, value_enum, default_value_t = default_domain(), conflicts_with = "preset")]
    #[serde(default = "default_domain")]
    pub domain: Domain,
    /// Source name recorded on every row (default: `<preset>/<file stem>`, or the file stem)
    #[arg(long)]
    #[serde(default)]
    pub source: Option<String>,
    /// Input format when the extension does not say
    #[arg(long, value_enum)]
    #[serde(default)]
    pub format: Option<Format>,
}

fn default_domain() -> Domain {
    Domain::Math
}

impl ImportConfig {
    fn source_name(&self) -> String {
        if let Some(source) = &self.source {
            return source.clone();
        }
        let stem = self.input.file_stem().and_then(|s| s.to_str()).unwrap_or("input").to_string();
        match self.preset {
            Some(preset) => format!("{}/{stem}", preset.name()),
            None => stem,
        }
    }

    /// Whether every row should have a gold answer (rows without one are counted as `no_gold`).
    fn expects_gold(&self) -> bool {
        match self.preset {
            Some(Preset::Humaneval | Preset::Mbpp | Preset::Apps | Preset::Codecontests | Preset::Livecodebench) => {
                false
            }
            Some(_) => true,
            None => self.answer_col.is_some(),
        }
    }

    fn convert(&self, row: &Row) -> Result<Problem> {
        match self.preset {
            Some(Preset::Gsm8k) => gsm8k::convert(row),
            Some(Preset::Math | Preset::Math500) => math::convert(row),
            Some(Preset::Countdown) => countdown::convert(row),
            Some(Preset::Humaneval) => humaneval::convert(row),
            Some(Preset::Mbpp) => mbpp::convert(row),
            Some(Preset::Apps) => apps::convert(row),
            Some(Preset::Codecontests) => codecontests::convert(row),
            Some(Preset::Livecodebench) => livecodebench::convert(row),
            Some(Preset::Aime) => aime::convert(row),
            None => columns::convert(row, self),
        }
    }
}

/// Rows converted per batch.
const CHUNK: usize = 4096;

/// `forge import`: read the input in its layout, write a problems dataset to `out`.
pub fn run(cfg: &ImportConfig, out: &OutputArgs, ctx: &Context) -> Result<Outcome> {
    let started = Instant::now();
    if cfg.preset.is_none() && cfg.prompt_col.is_none() {
        return Err(Error::usage("tell forge how to read the input")
            .with_hint("pass `--preset NAME` (see `forge import --help`) or `--prompt-col COLUMN`"));
    }
    let input = Input::open_as(&cfg.input, cfg.format)?;
    let range = out.shard.range(input.rows());
    let provenance = Provenance::start("import", &ctx.command, cfg, vec![input.reference()?]);
    let mut writer = match DatasetWriter::create(&out.output, TableKind::Problems, out.shard, &out.write, provenance)? {
        Start::UpToDate(m) => return Ok(Outcome::UpToDate(m)),
        Start::Write(w) => w,
    };
    let source = cfg.source_name();
    let progress = Progress::rows("import", range.end - range.start, ctx.quiet);
    let mut rows = Vec::with_capacity(CHUNK);
    let mut count = 0;
    let mut no_gold: Option<(u64, Location)> = None;
    for record in input.records(range) {
        let record = record?;
        let mut problem = cfg.convert(&Row(&record))?;
        if problem.gold.is_none() && cfg.expects_gold() {
            no_gold.get_or_insert((0, record.location.clone())).0 += 1;
        }
        problem.source.clone_from(&source);
        rows.push(problem);
        count += 1;
        if rows.len() == CHUNK {
            writer.write_rows(&rows)?;
            progress.inc(rows.len() as u64);
            rows.clear();
        }
    }
    writer.write_rows(&rows)?;
    progress.finish();
    let mut report = StageReport::new("import", count, count, started.elapsed().as_secs_f64());
    if let Some((n, first)) = no_gold {
        report.flagged.insert("no_gold".into(), n);
        if !ctx.quiet {
            eprintln!("warning: {n} row(s) have no gold answer (kept, gold is null); the first is {first}");
        }
    }
    Ok(Outcome::Written(writer.finish(report)?))
}

/// One input record with accessors whose errors name the line or row and the column.
pub(crate) struct Row<'a>(&'a Record);

impl Row<'_> {
    fn error(&self, column: &str, message: impl Into<String>) -> Error {
        Error::data(self.0.location.clone().column(column), message)
    }

    fn has(&self, column: &str) -> bool {
        self.0.fields.get(column).is_some_and(|v| !v.is_null())
    }

    fn get(&self, column: &str) -> Result<&Value> {
        self.0.fields.get(column).ok_or_else(|| {
            let have: Vec<&str> = self.0.fields.keys().map(String::as_str).collect();
            self.error(column, "required column is missing").with_hint(format!(
                "the row has columns {}; pick another `--preset`, or map them with `--prompt-col`, `--answer-col`, `--id-col`",
                have.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn wrong_type(&self, column: &str, expected: &str, found: &Value) -> Error {
        self.error(column, format!("expected {expected}, found {}", crate::dataset::json_type_name(found)))
    }

    /// A required string.
    fn text(&self, column: &str) -> Result<String> {
        match self.get(column)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.wrong_type(column, "a string", other)),
        }
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self.0.fields.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.text(column).map(Some),
        }
    }

    /// A required string or number, as text (ids, answers).
    fn scalar(&self, column: &str) -> Result<String> {
        match self.get(column)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.wrong_type(column, "a string or a number", other)),
        }
    }

    fn opt_scalar(&self, column: &str) -> Result<Option<String>> {
        match self.0.fields.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.scalar(column).map(Some),
        }
    }

    fn int(&self, column: &str) -> Result<i128> {
        let value = self.get(column)?;
        value.as_i64().map(i128::from).ok_or_else(|| self.wrong_type(column, "an integer", value))
    }

    fn int_list(&self, column: &str) -> Result<Vec<i128>> {
        let value = self.get(column)?;
        let items = value.as_array().ok_or_else(|| self.wrong_type(column, "a list of integers", value))?;
        items
            .iter()
            .map(|v| v.as_i64().map(i128::from).ok_or_else(|| self.wrong_type(column, "a list of integers", v)))
            .collect()
    }

    /// A JSON value: a string column holding JSON text is parsed (APPS keeps its cases so), anything else
    /// (a struct or list read from Parquet) taken as it is.
    fn json(&self, column: &str) -> Result<Value> {
        match self.get(column)? {
            Value::String(text) => serde_json::from_str(text).map_err(|e| self.error(column, format!("not JSON: {e}"))),
            other => Ok(other.clone()),
        }
    }

    fn text_list(&self, column: &str) -> Result<Vec<String>> {
        let value = self.get(column)?;
        let items = value.as_array().ok_or_else(|| self.wrong_type(column, "a list of strings", value))?;
        items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.wrong_type(column, "a list of strings", v)))
            .collect()
    }

    /// The columns not in `used`, as the JSON object text stored in `metadata`.
    fn metadata(&self, used: &[&str]) -> String {
        let rest: Map<String, Value> = self
            .0
            .fields
            .iter()
            .filter(|(k, _)| !used.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(rest).to_string()
    }
}

/// `h` + 16 hex digits of the xxh3 hash of prompt and gold: a stable id for sources without one.
pub fn content_id(prompt: &str, gold: Option<&str>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(prompt.as_bytes());
    h.update(&[0]);
    h.update(gold.unwrap_or_default().as_bytes());
    format!("h{:016x}", h.digest())
}

fn problem(id: String, domain: Domain, prompt: String, gold: Option<String>) -> Problem {
    Problem {
        id,
        source: String::new(),
        domain: domain.name().into(),
        prompt,
        gold,
        tests: None,
        steps: None,
        metadata: "{}".into(),
    }
}

/// `forge import`.
pub struct Import;

impl crate::stage::Stage for Import {
    const NAME: &'static str = "import";
    const ABOUT: &'static str = "Turn JSONL, Parquet or CSV into a problems dataset";
    const EXAMPLES: &'static str = "  forge import --preset gsm8k ../shared/data/gsm8k/train.jsonl -o problems/
  forge import --preset math500 ../shared/data/math500/test.jsonl -o math500/
  forge import --prompt-col q --answer-col a --id-col id my.csv -o problems/
  forge import --preset gsm8k train.jsonl -o problems/ --shard 3/8   # slice 3 of 8";
    type Config = ImportConfig;
    type Target = OutputArgs;

    fn run(cfg: &ImportConfig, out: &OutputArgs, ctx: &Context) -> Result<crate::stage::Done> {
        Ok(crate::stage::Done::dataset(&run(cfg, out, ctx)?, &out.output))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ImportConfig,
    }

    /// Flags and pipeline TOML share one struct; their defaults must agree.
    #[test]
    fn flag_defaults_equal_serde_defaults() {
        let flags = Cli::parse_from(["import", "in.jsonl"]).config;
        let table: ImportConfig = serde_json::from_value(serde_json::json!({ "input": "in.jsonl" })).unwrap();
        assert_eq!(flags, table);
    }
}
