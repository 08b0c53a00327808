//! `forge verify`: decide which model outputs are right. The same functions are the library API that
//! the filter stage and reward functions call.
//!
//! For each row: split off the reasoning, extract the final answer ([`extract`]), compare it with the gold
//! answer ([`answer`]) or, for Countdown rows, check the expression ([`checks`]), or, for code rows, run the
//! program against its tests in the [`sandbox`] ([`code`]); flag truncated output
//! (an unclosed `<think>`, `finish_reason = length`) and bad format (no answer, delimiters out of order).
//!
//! ```text
//! forge verify --gold '\frac12' --pred 'so the answer is \boxed{0.5}'     # exit 0 if equivalent, 1 if not
//! forge verify --input traces.jsonl --output verdicts.jsonl               # columns `answer`, `completion`
//! forge verify --input code.jsonl --output verdicts.jsonl                 # code rows: `tests`, `completion`
//! ```

pub mod answer;
pub mod checks;
pub mod code;
pub mod extract;
pub mod language;
mod latex;
pub mod pass_rate;
pub mod repetition;
pub mod sandbox;
pub mod vote;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Context;
use crate::dataset::{Finish, Format, Input};
use crate::error::{Error, Location, Result};
use crate::formats::domain::Domain;
use crate::progress::Progress;
use crate::report::StageReport;

pub use answer::{DEFAULT_TOLERANCE, Method, equivalent};
pub use extract::Rule;

/// Recorded in every verdict, so a dataset says which verifier judged it.
pub const VERIFIER: &str = concat!("forge-verify/", env!("CARGO_PKG_VERSION"));
/// The gold answer's column when `--gold-col` is not given.
pub const DEFAULT_GOLD_COL: &str = "answer";
/// The output's column when `--output-col` is not given.
pub const DEFAULT_OUTPUT_COL: &str = "completion";
/// The prompt's column when `--prompt-col` is not given.
pub const DEFAULT_PROMPT_COL: &str = "prompt";

/// How answers are found and compared (shared by `forge verify`, the filter stage and rewards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// Relative tolerance for answers that are not exact numbers (`\sqrt`, `\pi`); exact numbers compare exactly
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// Do not fall back to the last number in the output when no answer is marked
    #[arg(long)]
    pub no_last_number: bool,
    /// An n-gram repeated back to back this many times is a repetition loop
    #[arg(long, default_value_t = repetition::DEFAULT_MIN_REPEATS)]
    pub max_repeats: usize,
    /// Largest share of the reasoning's letters allowed in a script other than the prompt's
    #[arg(long, default_value_t = language::DEFAULT_MAX_FOREIGN_SHARE)]
    pub max_foreign_share: f64,
    /// Code rows: wall-clock seconds one test program may run (its CPU seconds are capped the same)
    #[arg(long, default_value_t = sandbox::DEFAULT_TIMEOUT, value_name = "SECONDS")]
    pub sandbox_timeout: f64,
    /// Code rows: address space one test program may map, in MiB
    #[arg(long, default_value_t = sandbox::DEFAULT_MEMORY_MB, value_name = "MB")]
    pub sandbox_memory: u64,
    /// Code rows: test programs run at once [default: one per CPU]
    #[arg(long, value_name = "N")]
    pub sandbox_concurrency: Option<usize>,
    /// Code rows: the Python 3 interpreter programs run with
    #[arg(long, default_value = sandbox::DEFAULT_PYTHON, value_name = "PATH")]
    pub sandbox_python: PathBuf,
}

impl VerifySettings {
    /// How code rows' test programs run.
    pub fn sandbox_limits(&self) -> sandbox::Limits {
        sandbox::Limits {
            timeout: std::time::Duration::from_secs_f64(self.sandbox_timeout.max(0.001)),
            memory_mb: self.sandbox_memory,
            python: self.sandbox_python.clone(),
            concurrency: self.sandbox_concurrency(),
        }
    }

    /// Threads for judging rows in parallel: code rows wait on their sandboxes, so as many as sandboxes may
    /// run, and at least one per CPU for everything else (verify, filter and eval all judge through it).
    pub fn thread_pool(&self) -> Result<rayon::ThreadPool> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.sandbox_concurrency().max(rayon::current_num_threads()))
            .build()
            .map_err(|e| Error::usage(format!("cannot start the verify threads: {e}")))
    }

    /// Code runs at once (the sandbox's `--sandbox-concurrency`).
    pub fn sandbox_concurrency(&self) -> usize {
        self.sandbox_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
            .max(1)
    }
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            tolerance: DEFAULT_TOLERANCE,
            no_last_number: false,
            max_repeats: repetition::DEFAULT_MIN_REPEATS,
            max_foreign_share: language::DEFAULT_MAX_FOREIGN_SHARE,
            sandbox_timeout: sandbox::DEFAULT_TIMEOUT,
            sandbox_memory: sandbox::DEFAULT_MEMORY_MB,
            sandbox_concurrency: None,
            sandbox_python: PathBuf::from(sandbox::DEFAULT_PYTHON),
        }
    }
}

/// `forge verify` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Rows to verify: JSONL or Parquet (a file or a dataset directory)
    #[arg(long, value_name = "FILE", requires = "output", conflicts_with_all = ["gold", "pred"])]
    pub input: Option<PathBuf>,
    /// Where to write every row with its verdict columns: `.jsonl` or `.parquet`
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Column with the gold answer
    #[arg(long, default_value = DEFAULT_GOLD_COL, value_name = "COL")]
    #[serde(default = "defaults::gold_col")]
    pub gold_col: String,
    /// Column with the model output
    #[arg(long, default_value = DEFAULT_OUTPUT_COL, value_name = "COL")]
    #[serde(default = "defaults::output_col")]
    pub output_col: String,
    /// Column with the prompt, for the language check (skipped when the column is absent)
    #[arg(long, default_value = DEFAULT_PROMPT_COL, value_name = "COL")]
    #[serde(default = "defaults::prompt_col")]
    pub prompt_col: String,
    /// Check one pair: the gold answer
    #[arg(long, requires = "pred")]
    pub gold: Option<String>,
    /// Check one pair: the model output
    #[arg(long, requires = "gold")]
    pub pred: Option<String>,
    /// Check one pair: the prompt, to check the output's language against
    #[arg(long, requires = "pred")]
    pub prompt: Option<String>,
    /// Output format when the extension does not say
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// How outputs are judged
    #[command(flatten)]
    #[serde(flatten)]
    pub settings: VerifySettings,
}

mod defaults {
    pub fn gold_col() -> String {
        super::DEFAULT_GOLD_COL.into()
    }
    pub fn output_col() -> String {
        super::DEFAULT_OUTPUT_COL.into()
    }
    pub fn prompt_col() -> String {
        super::DEFAULT_PROMPT_COL.into()
    }
}

/// The verdict on one output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The answer found, as written.
    pub extracted: Option<String>,
    /// Which rule found it (`answer_tag`, `boxed`, `final_answer_is`, `final_answer`, `answer_is`, `answer_colon`, `gsm8k`,
    /// `last_span`, `whole`, and `last_number` for the fallback).
    pub extraction_rule: Option<Rule>,
    /// The answer is equivalent to the gold one (Countdown: the expression checks).
    pub correct: bool,
    /// How equivalence was decided (`exact`, `tolerance`, `rounding`, `structure`, `text`).
    pub match_method: Option<Method>,
    /// An answer is present and the reasoning delimiters are balanced and in order.
    pub format_ok: bool,
    /// The reasoning never closed, or the generation hit its token limit.
    pub truncated: bool,
    /// An n-gram repeats back to back past `max_repeats`.
    pub repetition: bool,
    /// The reasoning is in the prompt's language and script (null when there is no prompt).
    pub language_ok: Option<bool>,
    /// Share of the reasoning's letters in a script other than the prompt's.
    pub foreign_script_share: Option<f64>,
    /// Code: the share of the problem's tests the program passed.
    pub tests_passed: Option<f64>,
    /// Code: the first failing test and why (`test 2 of 3: AssertionError`).
    pub test_error: Option<String>,
    /// Every failed check (stable snake_case codes in the written verdict).
    pub failed: Vec<Failure>,
    /// The verifier and its version (`forge-verify/X.Y.Z`).
    pub verifier: &'static str,
}

/// A check an output failed (written as its [`Failure::name`], the code filter reports use too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The reasoning opened (`<think>`) and never closed.
    UnclosedReasoning,
    /// More than one `<think>` or `</think>`, or the closing before the opening.
    BadDelimiters,
    /// No answer could be extracted.
    NoAnswer,
    /// An n-gram repeats back to back past `max_repeats`.
    Repetition,
    /// The answer is not equivalent to the gold one.
    WrongAnswer,
    /// The reasoning is not in the prompt's language or script.
    Language,
    /// The generation hit its token limit.
    Truncated,
    /// Countdown: the answer is not an arithmetic expression over integers.
    Unparsable,
    /// Countdown: the numbers used are not exactly the given ones, each once.
    WrongNumbers,
    /// Countdown: the expression does not reach the target.
    WrongValue,
    /// Code: no program in the output.
    NoCode,
    /// Code: the program does not parse.
    SyntaxError,
    /// Code: a test failed (an assertion, an exception, a wrong result).
    FailedTest,
    /// Code: a test ran past its time (wall clock or CPU seconds).
    Timeout,
    /// Code: a test ran out of its memory.
    Memory,
    /// Code: a test died of a signal or a runaway recursion.
    Crash,
    /// Code: a test wrote more output than the sandbox keeps.
    OutputLimit,
}

impl Failure {
    /// The stable code, as the written verdict spells it.
    pub fn name(self) -> &'static str {
        match self {
            Failure::UnclosedReasoning => "unclosed_reasoning",
            Failure::BadDelimiters => "bad_delimiters",
            Failure::NoAnswer => "no_answer",
            Failure::Repetition => "repetition",
            Failure::WrongAnswer => "wrong_answer",
            Failure::Language => "language",
            Failure::Truncated => "truncated",
            Failure::Unparsable => "unparsable",
            Failure::WrongNumbers => "wrong_numbers",
            Failure::WrongValue => "wrong_value",
            Failure::NoCode => "no_code",
            Failure::SyntaxError => "syntax_error",
            Failure::FailedTest => "failed_test",
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::Crash => "crash",
            Failure::OutputLimit => "output_limit",
        }
    }
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl From<checks::CountdownError> for Failure {
    fn from(e: checks::CountdownError) -> Failure {
        match e {
            checks::CountdownError::Unparsable => Failure::Unparsable,
            checks::CountdownError::WrongNumbers => Failure::WrongNumbers,
            checks::CountdownError::WrongValue => Failure::WrongValue,
        }
    }
}

/// Check a math-style output against a gold answer.
pub fn verify_answer(gold: &str, output: &str, settings: &VerifySettings) -> Verdict {
    let mut v = base_verdict(output, settings);
    if let Some(pred) = &v.extracted {
        v.match_method = equivalent(&extract::gold_answer(gold), pred, settings.tolerance);
        v.correct = v.match_method.is_some();
        if !v.correct {
            v.failed.push(Failure::WrongAnswer);
        }
    }
    v
}

/// Check a Countdown output: the extracted expression uses each of `nums` once and reaches `target`.
pub fn verify_countdown(nums: &[i128], target: i128, output: &str, settings: &VerifySettings) -> Verdict {
    let mut v = base_verdict(output, settings);
    if let Some(pred) = &v.extracted {
        match checks::countdown(pred, nums, target) {
            Ok(()) => {
                v.correct = true;
                v.match_method = Some(Method::Exact);
            }
            Err(e) => v.failed.push(e.into()),
        }
    }
    v
}

fn base_verdict(output: &str, settings: &VerifySettings) -> Verdict {
    let parts = extract::split(output);
    let found = extract::extract_split(output, &parts, !settings.no_last_number);
    checked_verdict(output, &parts, found, Failure::NoAnswer, settings)
}

/// A verdict with what was `found` and the checks every domain shares (reasoning closed, delimiters in
/// order, no repetition loop; `missing` when nothing was found); `correct` is left to the domain.
fn checked_verdict(
    output: &str,
    parts: &extract::Split,
    found: Option<(String, Rule)>,
    missing: Failure,
    settings: &VerifySettings,
) -> Verdict {
    let mut failed = Vec::new();
    if parts.unclosed {
        failed.push(Failure::UnclosedReasoning);
    }
    let ordered = delimiters_in_order(output);
    if !ordered {
        failed.push(Failure::BadDelimiters);
    }
    if found.is_none() {
        failed.push(missing);
    }
    let repetition = repetition::has_loop(output, settings.max_repeats.max(2));
    if repetition {
        failed.push(Failure::Repetition);
    }
    Verdict {
        repetition,
        language_ok: None,
        foreign_script_share: None,
        tests_passed: None,
        test_error: None,
        format_ok: found.is_some() && !parts.unclosed && ordered,
        truncated: parts.unclosed,
        extracted: found.as_ref().map(|f| f.0.clone()),
        extraction_rule: found.map(|f| f.1),
        correct: false,
        match_method: None,
        failed,
        verifier: VERIFIER,
    }
}

/// Add the language check of `output`'s reasoning (or all of it, when it has none) against `prompt`.
pub fn check_language(verdict: &mut Verdict, prompt: &str, output: &str, settings: &VerifySettings) {
    let parts = extract::split(output);
    let text = parts.reasoning.unwrap_or(output);
    let check = language::check(prompt, text, settings.max_foreign_share);
    verdict.language_ok = Some(check.ok);
    verdict.foreign_script_share = Some(check.foreign_script_share);
    if !check.ok {
        verdict.failed.push(Failure::Language);
    }
}

/// At most one `<think>` and one `</think>`, the opening (if any) before the closing.
fn delimiters_in_order(text: &str) -> bool {
    let (opens, closes) = (extract::count(text, "<think>"), extract::count(text, "</think>"));
    if opens > 1 || closes > 1 {
        return false;
    }
    match (extract::find(text, "<think>"), extract::find(text, "</think>")) {
        (Some(o), Some(c)) => o < c,
        _ => true,
    }
}

/// Verify every row of `cfg.input` into `cfg.output`.
pub fn run(cfg: &VerifyConfig, ctx: &Context) -> Result<StageReport> {
    let started = Instant::now();
    let (Some(input_path), Some(output_path)) = (&cfg.input, &cfg.output) else {
        return Err(Error::usage("`forge verify` needs `--input` and `--output`, or `--gold` and `--pred`"));
    };
    let format = cfg.format.or_else(|| Format::of(output_path)).filter(|f| *f != Format::Csv).ok_or_else(|| {
        Error::usage(format!("cannot tell the output format of `{}`", output_path.display()))
            .with_hint("name it `.jsonl` or `.parquet`, or pass `--format`")
    })?;
    let input = Input::open(input_path)?;
    let progress = Progress::rows("verify", input.rows(), ctx.quiet);
    let mut sink = Sink::create(output_path, format)?;
    let mut report = StageReport::new("verify", 0, 0, 0.0);
    let pool = cfg.settings.thread_pool()?;
    let mut records = input.records(0..input.rows()).peekable();
    while records.peek().is_some() {
        let batch: Vec<_> = records.by_ref().take(1024).collect::<Result<_>>()?;
        let verdicts: Vec<Verdict> = pool.install(|| {
            use rayon::prelude::*;
            batch.par_iter().map(|r| verify_record(&r.fields, &r.location, cfg)).collect::<Result<_>>()
        })?;
        for verdict in &verdicts {
            *report.flagged.entry(if verdict.correct { "correct" } else { "incorrect" }.into()).or_default() += 1;
        }
        report.rows_in += batch.len() as u64;
        report.rows_out += batch.len() as u64;
        progress.inc(batch.len() as u64);
        sink.write(batch.into_iter().map(|r| r.fields).zip(verdicts).collect())?;
    }
    sink.finish()?;
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.rows_in as f64 / report.seconds.max(1e-9);
    Ok(report)
}

fn verify_record(fields: &Map<String, Value>, location: &Location, cfg: &VerifyConfig) -> Result<Verdict> {
    let column = |name: &str| -> Result<Option<&str>> {
        match fields.get(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Null) | None => Ok(None),
            Some(other) => Err(Error::data(
                location.clone().column(name),
                format!("expected a string, found {}", crate::dataset::json_type_name(other)),
            )),
        }
    };
    let required = |name: &str| -> Result<String> {
        match fields.get(name) {
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Null) => Err(Error::data(location.clone().column(name), "the value is null")
                .with_hint("every row needs a value here; filter out the rows without one first")),
            _ => column(name)?.map(str::to_string).ok_or_else(|| {
                Error::data(location.clone().column(name), "required column is missing")
                    .with_hint("name the columns with `--gold-col` and `--output-col`")
            }),
        }
    };
    let output = required(&cfg.output_col)?;
    let domain = Domain::of(column("domain")?.unwrap_or_default());
    let gold = if domain == Domain::Math { Some(required(&cfg.gold_col)?) } else { None };
    let tests = match fields.get("tests") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| Error::data(location.clone().column("tests"), "expected a list of strings"))?,
        ),
        Some(other) => {
            return Err(Error::data(
                location.clone().column("tests"),
                format!("expected a list of strings, found {}", crate::dataset::json_type_name(other)),
            ));
        }
    };
    let trace = TraceRef {
        domain,
        gold: gold.as_deref(),
        output: &output,
        prompt: column(&cfg.prompt_col)?,
        metadata: column("metadata")?,
        tests: tests.as_deref(),
        finish_reason: column("finish_reason")?,
    };
    verify_trace(&trace, &cfg.settings).map_err(|(col, message)| Error::data(location.clone().column(col), message))
}

/// The columns of one row that a verdict needs.
#[derive(Debug, Clone, Copy)]
pub struct TraceRef<'a> {
    /// Which verifier judges the output.
    pub domain: Domain,
    /// Without one, the verdict has the checks but `correct` stays false and `match_method` null.
    pub gold: Option<&'a str>,
    /// The text to judge.
    pub output: &'a str,
    /// For the language check (skipped without it).
    pub prompt: Option<&'a str>,
    /// A JSON object; Countdown's `nums` and `target`.
    pub metadata: Option<&'a str>,
    /// Code: the problem's tests (Python snippets).
    pub tests: Option<&'a [String]>,
    /// `length` marks the output truncated.
    pub finish_reason: Option<&'a str>,
}

impl<'a> TraceRef<'a> {
    /// A `traces` row's completion (no language check: its `prompt` is the bare problem).
    pub fn of(t: &'a crate::dataset::Trace) -> Self {
        TraceRef {
            domain: Domain::of(&t.domain),
            gold: t.gold.as_deref(),
            output: &t.completion,
            prompt: None,
            metadata: Some(&t.metadata),
            tests: t.tests.as_deref(),
            finish_reason: Some(&t.finish_reason),
        }
    }
}

/// A domain's judgement of an output: extraction, the domain's own check (answer equivalence, the
/// Countdown expression, the program against its tests), format and repetition checks. An `Err` names the
/// column that is unusable and why.
pub trait Verifier: Sync {
    /// Judge one output; an `Err` names the unusable column and why.
    fn verify(&self, t: &TraceRef, settings: &VerifySettings) -> std::result::Result<Verdict, (&'static str, String)>;
}

/// Math: the extracted answer against the gold one ([`verify_answer`]); without gold, the checks only.
pub struct MathVerifier;

impl Verifier for MathVerifier {
    fn verify(&self, t: &TraceRef, settings: &VerifySettings) -> std::result::Result<Verdict, (&'static str, String)> {
        Ok(match t.gold {
            Some(gold) => verify_answer(gold, t.output, settings),
            None => base_verdict(t.output, settings),
        })
    }
}

/// Countdown: the extracted expression against the row's `nums` and `target` ([`verify_countdown`]).
pub struct CountdownVerifier;

impl Verifier for CountdownVerifier {
    fn verify(&self, t: &TraceRef, settings: &VerifySettings) -> std::result::Result<Verdict, (&'static str, String)> {
        let meta: Value = t.metadata.and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
        let nums: Option<Vec<i128>> =
            meta["nums"].as_array().map(|a| a.iter().filter_map(Value::as_i64).map(i128::from).collect());
        match (nums, meta["target"].as_i64()) {
            (Some(nums), Some(target)) => Ok(verify_countdown(&nums, i128::from(target), t.output, settings)),
            _ => Err(("metadata", "a countdown row needs `nums` and `target` in its metadata".into())),
        }
    }
}

/// Code: the program against the problem's tests, in the sandbox ([`code::verify`]).
pub struct CodeVerifier;

impl Verifier for CodeVerifier {
    fn verify(&self, t: &TraceRef, settings: &VerifySettings) -> std::result::Result<Verdict, (&'static str, String)> {
        code::verify(t, settings)
    }
}

/// The verifier of `domain`.
pub fn verifier(domain: Domain) -> &'static dyn Verifier {
    match domain {
        Domain::Math => &MathVerifier,
        Domain::Code => &CodeVerifier,
        Domain::Countdown => &CountdownVerifier,
    }
}

/// Verify one row with its domain's verifier, then the checks every domain shares (language, a
/// generation cut at its limit); an `Err` names the column that is unusable and why.
pub fn verify_trace(t: &TraceRef, settings: &VerifySettings) -> std::result::Result<Verdict, (&'static str, String)> {
    let mut verdict = verifier(t.domain).verify(t, settings)?;
    if let Some(prompt) = t.prompt {
        check_language(&mut verdict, prompt, t.output, settings);
    }
    if t.finish_reason.and_then(Finish::of) == Some(Finish::Length) && !verdict.truncated {
        verdict.truncated = true;
        verdict.format_ok = false;
        verdict.failed.push(Failure::Truncated);
    }
    Ok(verdict)
}

/// The output file: written under a temporary name and renamed when complete.
struct Sink {
    path: PathBuf,
    temp: PathBuf,
    kind: SinkKind,
}

#[allow(clippy::large_enum_variant)] // one per run
enum SinkKind {
    Jsonl(std::io::BufWriter<fs_err::File>),
    Parquet(Option<parquet::arrow::ArrowWriter<std::fs::File>>, Option<Arc<arrow_schema::Schema>>),
}

impl Sink {
    fn create(path: &Path, format: Format) -> Result<Sink> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
        let temp = path.with_file_name(format!(".{name}.tmp"));
        let file = fs_err::File::create(&temp)?;
        let kind = match format {
            Format::Parquet => SinkKind::Parquet(None, None),
            _ => SinkKind::Jsonl(std::io::BufWriter::with_capacity(1 << 20, file)),
        };
        Ok(Sink { path: path.to_path_buf(), temp, kind })
    }

    /// Write each row with its verdict's columns (which replace input columns of the same names).
    fn write(&mut self, rows: Vec<(Map<String, Value>, Verdict)>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match &mut self.kind {
            SinkKind::Jsonl(w) => {
                for (fields, verdict) in rows {
                    // The common case, written without building the merged row.
                    if !verdict_columns().iter().any(|c| fields.contains_key(c)) {
                        serde_json::to_writer(&mut *w, &Merged { fields: &fields, verdict: &verdict })
                            .map_err(std::io::Error::from)?;
                    } else {
                        serde_json::to_writer(&mut *w, &merged(fields, &verdict)).map_err(std::io::Error::from)?;
                    }
                    w.write_all(b"\n")?;
                }
            }
            SinkKind::Parquet(writer, schema) => {
                let rows: Vec<Value> = rows.into_iter().map(|(f, v)| merged(f, &v)).collect();
                let rows = rows.as_slice();
                // The schema is inferred from the first rows, with all-null columns read as text and
                // numbers accepted in text columns, so that later rows fit it.
                let schema = match schema {
                    Some(schema) => schema.clone(),
                    None => {
                        let inferred = arrow_json::reader::infer_json_schema_from_iterator(rows.iter().map(Ok))
                            .map_err(|e| Error::arrow(self.path.display().to_string(), e))?;
                        let fields: Vec<arrow_schema::Field> = inferred
                            .fields()
                            .iter()
                            .map(|f| {
                                let known = verdict_type(f.name());
                                f.as_ref().clone().with_data_type(known.unwrap_or_else(|| widen(f.data_type())))
                            })
                            .collect();
                        schema.insert(Arc::new(arrow_schema::Schema::new(fields))).clone()
                    }
                };
                let arrow = |e: arrow_schema::ArrowError| {
                    Error::arrow(self.path.display().to_string(), e)
                        .with_hint("a column changed type after the first rows; write `.jsonl` instead")
                };
                let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
                    .with_coerce_primitive(true)
                    .build_decoder()
                    .map_err(arrow)?;
                decoder.serialize(rows).map_err(arrow)?;
                let Some(batch) = decoder.flush().map_err(arrow)? else { return Ok(()) };
                if writer.is_none() {
                    let file = fs_err::File::create(&self.temp)?.into_file();
                    *writer = Some(
                        parquet::arrow::ArrowWriter::try_new(file, schema, None)
                            .map_err(|e| Error::parquet(&self.temp, e))?,
                    );
                }
                writer.as_mut().expect("created").write(&batch).map_err(|e| Error::parquet(&self.temp, e))?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        match &mut self.kind {
            SinkKind::Jsonl(w) => {
                w.flush()?;
                w.get_ref().sync_all()?;
            }
            SinkKind::Parquet(writer, _) => {
                // No rows came: a valid Parquet file with the verdict columns, not the empty temporary file.
                let w = match writer.take() {
                    Some(w) => w,
                    None => {
                        let fields: Vec<arrow_schema::Field> = verdict_columns()
                            .iter()
                            .map(|c| arrow_schema::Field::new(c, verdict_type(c).expect("a verdict column"), true))
                            .collect();
                        let file = fs_err::File::create(&self.temp)?.into_file();
                        parquet::arrow::ArrowWriter::try_new(file, Arc::new(arrow_schema::Schema::new(fields)), None)
                            .map_err(|e| Error::parquet(&self.temp, e))?
                    }
                };
                let file = w.into_inner().map_err(|e| Error::parquet(&self.temp, e))?;
                file.sync_all()?;
            }
        }
        fs_err::rename(&self.temp, &self.path)?;
        self.temp = PathBuf::new();
        Ok(())
    }
}

/// A row and its verdict as one JSON object (for rows with no column named as a verdict column).
#[derive(Serialize)]
struct Merged<'a> {
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

/// A row with its verdict's columns set.
fn merged(mut row: Map<String, Value>, verdict: &Verdict) -> Value {
    if let Value::Object(v) = serde_json::to_value(verdict).expect("serialisable") {
        row.extend(v);
    }
    Value::Object(row)
}

/// The names of the verdict columns.
fn verdict_columns() -> &'static [String] {
    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let v = verify_answer("1", "1", &VerifySettings::default());
        match serde_json::to_value(&v).expect("serialisable") {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    });
    &NAMES
}

/// The types of the verdict columns, whatever the first rows happened to hold.
fn verdict_type(column: &str) -> Option<arrow_schema::DataType> {
    use arrow_schema::DataType;
    Some(match column {
        "extracted" | "extraction_rule" | "match_method" | "verifier" | "test_error" => DataType::Utf8,
        "correct" | "format_ok" | "truncated" | "repetition" | "language_ok" => DataType::Boolean,
        "foreign_script_share" | "tests_passed" => DataType::Float64,
        "failed" => DataType::List(Arc::new(arrow_schema::Field::new("item", DataType::Utf8, true))),
        _ => return None,
    })
}

/// `Null` (a column without values so far) becomes text, recursively.
fn widen(data_type: &arrow_schema::DataType) -> arrow_schema::DataType {
    use arrow_schema::DataType;
    match data_type {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(item.as_ref().clone().with_data_type(widen(item.data_type())))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| f.as_ref().clone().with_data_type(widen(f.data_type()))).collect())
        }
        other => other.clone(),
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            #[allow(clippy::disallowed_methods)] // cleanup on drop: an error is ignored, its path never shown
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// `forge verify`: one pair on the command line, or a whole file.
pub struct Verify;

impl crate::stage::Stage for Verify {
    const NAME: &'static str = "verify";
    const ABOUT: &'static str = "Check model outputs: answers against gold (extraction, equivalence), code against its tests in a sandbox, format";
    const EXAMPLES: &'static str =
        "  forge verify --gold '\\frac12' --pred 'so the answer is \\boxed{0.5}'   # exit 0: equivalent, 1: not
  forge verify --input traces.jsonl --output verdicts.jsonl
  forge verify --input runs.parquet --output checked.parquet --gold-col gold --output-col response
  forge verify --input code.jsonl --output verdicts.jsonl --sandbox-timeout 5   # rows with domain = code and tests";
    type Config = VerifyConfig;
    type Target = crate::stage::NoTarget;

    fn run(cfg: &VerifyConfig, _: &crate::stage::NoTarget, ctx: &Context) -> Result<crate::stage::Done> {
        if let (Some(gold), Some(pred)) = (&cfg.gold, &cfg.pred) {
            let mut verdict = verify_answer(gold, pred, &cfg.settings);
            if let Some(prompt) = &cfg.prompt {
                check_language(&mut verdict, prompt, pred, &cfg.settings);
            }
            let text = serde_json::to_string_pretty(&verdict).expect("serialisable") + "\n";
            return Ok(crate::stage::Done { stdout: Some(text), check_failed: !verdict.correct, ..Default::default() });
        }
        let report = run(cfg, ctx)?;
        Ok(crate::stage::Done {
            rows_in: Some(report.rows_in),
            rows_out: Some(report.rows_out),
            summary: report.to_string(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that writes no rows leaves a Parquet file readers open (with the verdict columns), not 0 bytes.
    #[test]
    fn parquet_sink_without_rows_writes_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.parquet");
        Sink::create(&path, Format::Parquet).unwrap().finish().unwrap();
        let file = fs_err::File::open(&path).unwrap().into_file();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, verdict_columns());
    }

    /// The team's table of whole outputs: `tests/fixtures/output_cases.tsv` (gold, output, yes/no).
    #[test]
    fn output_table() {
        let mut wrong = Vec::new();
        let mut n = 0;
        for line in include_str!("../../tests/fixtures/output_cases.tsv").lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 3, "bad case line: {line}");
            let output = f[1].replace('⏎', "\n");
            let v = verify_answer(f[0], &output, &VerifySettings::default());
            if v.correct != (f[2] == "yes") {
                wrong.push(format!(
                    "{:?} vs {output:?}: expected {}, extracted {:?} by {:?}",
                    f[0], f[2], v.extracted, v.extraction_rule
                ));
            }
            n += 1;
        }
        assert!(n >= 50, "{n} cases");
        assert!(wrong.is_empty(), "{} of {n} cases wrong:\n{}", wrong.len(), wrong.join("\n"));
    }

    /// A Countdown expression with a number not given fails as `wrong_numbers`, the name written.
    #[test]
    fn failure_codes_are_their_names() {
        let nums = [44, 19, 35];
        let v = verify_countdown(&nums, 98, "\\boxed{35 + 44 + 18}", &VerifySettings::default());
        assert_eq!(v.failed, [Failure::WrongNumbers]);
        assert_eq!(serde_json::to_value(&v.failed).unwrap(), serde_json::json!(["wrong_numbers"]));
    }

    /// Each domain's verifier judges its rows: a Countdown row by its expression, a math one by its answer.
    #[test]
    fn the_domain_picks_the_verifier() {
        let settings = VerifySettings::default();
        let meta = r#"{"nums": [44, 19, 35], "target": 98}"#;
        let row = |domain, output| TraceRef {
            domain,
            gold: Some("98"),
            output,
            prompt: None,
            metadata: Some(meta),
            tests: None,
            finish_reason: None,
        };
        let countdown = verify_trace(&row(Domain::Countdown, "\\boxed{35 + (44 + 19)}"), &settings).unwrap();
        assert!(countdown.correct);
        let as_math = verify_trace(&row(Domain::Math, "\\boxed{35 + (44 + 19)}"), &settings).unwrap();
        assert_eq!(as_math.extracted.as_deref(), Some("35 + (44 + 19)"));
        assert_eq!(verify_trace(&row(Domain::Code, "\\boxed{98}"), &settings).unwrap_err().0, "tests");
        let no_meta = TraceRef { metadata: None, ..row(Domain::Countdown, "\\boxed{98}") };
        assert_eq!(verify_trace(&no_meta, &settings).unwrap_err().0, "metadata");
    }
}
