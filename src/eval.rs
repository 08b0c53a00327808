//! `forge eval`: how well a model solves a problems dataset. Generation as `forge generate` does it
//! (greedy by default, or `n` samples), every sample checked by the verifiers, then per problem and per
//! source: pass@1 (the mean share of correct samples), pass@n (unbiased estimator, Chen et al. 2021) and
//! maj@n (the majority answer is correct), the mean completion length and the share cut at
//! `--max-tokens`. The traces are kept in the output directory (a traces dataset, resumable like
//! `forge generate`), with `eval-report.json` beside them. Code problems are scored by their tests in the
//! sandbox (pass@1, pass@n as for answers; maj@n there votes on identical programs).
//!
//! ```text
//! forge eval --model teacher/ --problems igsm-test/ -n 8 --json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{Finish, Input, TableKind, Trace, WriteOptions};
use crate::error::{Error, Result};
use crate::teacher::traces::{GenerateConfig, PromptConfig, write_traces};
use crate::teacher::{HttpConfig, SamplingConfig};
use crate::verify::vote::majority;
use crate::verify::{DEFAULT_TOLERANCE, TraceRef, VerifySettings, verify_trace};
use crate::{Context, OutputArgs};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The model: a checkpoint directory (`local:PATH` works too), or a server: `openai:URL` or
    /// `openai:NAME@URL`
    #[arg(long, value_name = "DIR")]
    pub model: String,
    /// Problems dataset with gold answers (directory, Parquet or JSONL)
    #[arg(long, value_name = "DIR")]
    pub problems: PathBuf,
    /// Samples per problem (pass@n and maj@n when above 1)
    #[arg(short = 'n', long = "samples", default_value_t = one(), value_name = "N")]
    #[serde(default = "one")]
    pub n: u32,
    /// Softmax temperature (default: 0, greedy, for one sample; 0.6 for several)
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold (with a temperature above 0)
    #[arg(long, default_value_t = top_p())]
    #[serde(default = "top_p")]
    pub top_p: f32,
    /// Generated tokens at most per sample
    #[arg(long = "max-tokens", default_value_t = max_tokens(), value_name = "N")]
    #[serde(default = "max_tokens")]
    pub max_new_tokens: u32,
    #[arg(long, default_value_t = seed())]
    #[serde(default = "seed")]
    pub seed: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub prompt: PromptConfig,
    /// Problems decoded together
    #[arg(long, default_value_t = batch(), value_name = "N")]
    #[serde(default = "batch")]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpConfig,
    /// How samples are judged (`[verify]` in a pipeline): tolerance, and the sandbox code runs in
    #[command(flatten)]
    #[serde(default)]
    pub verify: VerifySettings,
}

fn one() -> u32 {
    1
}
fn top_p() -> f32 {
    0.95
}
fn max_tokens() -> u32 {
    1024
}
fn seed() -> u64 {
    1
}
fn batch() -> usize {
    16
}

impl EvalConfig {
    /// The generation this evaluation runs.
    pub fn generate(&self) -> GenerateConfig {
        let teacher = if self.model.contains(':') { self.model.clone() } else { format!("local:{}", self.model) };
        let temperature = self.temperature.unwrap_or(if self.n > 1 { 0.6 } else { 0.0 });
        GenerateConfig {
            teacher,
            problems: self.problems.clone(),
            n: self.n,
            sampling: SamplingConfig {
                temperature,
                top_p: if temperature > 0.0 { self.top_p } else { 1.0 },
                max_new_tokens: self.max_new_tokens,
                seed: self.seed,
                ..SamplingConfig::default()
            },
            prompt: self.prompt.clone(),
            batch_size: self.batch_size,
            model: None,
            http: self.http.clone(),
        }
    }
}

/// Scores over a set of problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub problems: u64,
    pub samples: u64,
    /// Mean share of correct samples per problem (= accuracy with one greedy sample).
    pub pass_at_1: f64,
    /// Unbiased pass@n over the n samples (with n > 1).
    pub pass_at_n: Option<f64>,
    /// The majority answer of the n samples is correct (with n > 1).
    pub maj_at_n: Option<f64>,
    pub mean_completion_tokens: f64,
    /// Share of samples cut at `--max-tokens`.
    pub truncated: f64,
    /// Share of samples with no final answer found.
    pub no_answer: f64,
}

/// `eval-report.json`, and with `--json` the one object on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub problems: PathBuf,
    pub n: u32,
    pub temperature: f32,
    /// pass@1 over all problems.
    pub accuracy: f64,
    pub overall: Scores,
    /// Per `source` column (e.g. `synth/igsm`, `math500/test`).
    pub by_source: BTreeMap<String, Scores>,
    /// Where the traces are.
    pub traces: PathBuf,
}

/// Unbiased pass@k from `c` correct of `n` samples: 1 - C(n-c, k) / C(n, k).
pub fn pass_at_k(n: u64, c: u64, k: u64) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// One sample's verdict, as the scores need it.
struct Judged {
    correct: bool,
    answer: Option<String>,
    tokens: u32,
    truncated: bool,
}

#[derive(Default)]
struct Tally {
    problems: u64,
    samples: u64,
    pass1: f64,
    pass_n: f64,
    maj: f64,
    tokens: u64,
    truncated: u64,
    no_answer: u64,
}

impl Tally {
    fn add(&mut self, samples: &[Judged]) {
        let n = samples.len() as u64;
        let c = samples.iter().filter(|s| s.correct).count() as u64;
        self.problems += 1;
        self.samples += n;
        self.pass1 += c as f64 / n as f64;
        self.pass_n += pass_at_k(n, c, n);
        let vote = majority(samples.iter().filter_map(|s| s.answer.as_deref()), DEFAULT_TOLERANCE);
        if let Some(v) = vote
            && samples.iter().any(|s| s.correct && s.answer.as_deref() == Some(v.answer.as_str()))
        {
            self.maj += 1.0;
        }
        self.tokens += samples.iter().map(|s| u64::from(s.tokens)).sum::<u64>();
        self.truncated += samples.iter().filter(|s| s.truncated).count() as u64;
        self.no_answer += samples.iter().filter(|s| s.answer.is_none()).count() as u64;
    }

    fn scores(&self, n: u32) -> Scores {
        let p = self.problems.max(1) as f64;
        let s = self.samples.max(1) as f64;
        Scores {
            problems: self.problems,
            samples: self.samples,
            pass_at_1: self.pass1 / p,
            pass_at_n: (n > 1).then(|| self.pass_n / p),
            maj_at_n: (n > 1).then(|| self.maj / p),
            mean_completion_tokens: self.tokens as f64 / s,
            truncated: self.truncated as f64 / s,
            no_answer: self.no_answer as f64 / s,
        }
    }
}

/// The report written beside the traces.
pub const REPORT: &str = "eval-report.json";

/// The directory traces go to when `-o` is not given: `eval-<model>-<problems>` here.
pub fn default_output(cfg: &EvalConfig) -> PathBuf {
    let name = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "x".into());
    let model = match cfg.model.split_once(':') {
        Some(("openai", rest)) => rest.split_once('@').map_or("openai", |(name, _)| name),
        Some((_, path)) => path,
        None => &cfg.model,
    };
    PathBuf::from(format!("eval-{}-{}", name(Path::new(model.trim_end_matches('/'))), name(&cfg.problems)))
}

/// Run the evaluation; the flag says whether generation ran (false: the traces were up to date).
pub fn run(cfg: &EvalConfig, output: Option<&Path>, ctx: &Context) -> Result<(EvalReport, bool)> {
    if cfg.n == 0 {
        return Err(Error::usage("`-n` must be at least 1"));
    }
    let dir = output.map(Path::to_path_buf).unwrap_or_else(|| default_output(cfg));
    let generate = cfg.generate();
    // an evaluation's traces are derived: a different evaluation into the same directory replaces them
    let write = WriteOptions { overwrite: true, companions: &[REPORT], ..WriteOptions::default() };
    let out = OutputArgs { output: dir.clone(), shard: Default::default(), write };
    let ran = matches!(write_traces(&generate, &out, ctx)?, crate::Outcome::Written(_));

    let input = Input::open(&dir)?;
    let settings = &cfg.verify;
    let pool = settings.thread_pool()?;
    let mut per_problem: BTreeMap<String, (String, Vec<Judged>)> = BTreeMap::new();
    let mut order = Vec::new();
    for batch in input.rows_of::<Trace>(TableKind::Traces, 0..input.rows()) {
        let batch = batch?;
        if let Some(t) = batch.iter().find(|t| Finish::of(&t.finish_reason) == Some(Finish::Error)) {
            return Err(Error::usage(format!(
                "sample `{}` failed past its retries: {}",
                t.id,
                t.error.as_deref().unwrap_or("no error recorded")
            ))
            .with_hint("rerun the same command: only the failed requests are sent again"));
        }
        let verdicts: Vec<_> = pool.install(|| {
            use rayon::prelude::*;
            batch
                .par_iter()
                .map(|t| {
                    verify_trace(&TraceRef::of(t), settings).map_err(|(column, message)| {
                        Error::usage(format!("problem `{}`, column `{column}`: {message}", t.problem_id))
                    })
                })
                .collect::<Result<_>>()
        })?;
        for (t, verdict) in batch.into_iter().zip(verdicts) {
            let entry = per_problem.entry(t.problem_id.clone()).or_insert_with(|| {
                order.push(t.problem_id.clone());
                (t.source.clone(), Vec::new())
            });
            entry.1.push(Judged {
                correct: verdict.correct,
                answer: verdict.extracted,
                tokens: t.completion_tokens,
                truncated: Finish::of(&t.finish_reason) == Some(Finish::Length),
            });
        }
    }
    let (mut all, mut by_source) = (Tally::default(), BTreeMap::<String, Tally>::new());
    for id in &order {
        let (source, samples) = &per_problem[id];
        all.add(samples);
        by_source.entry(source.clone()).or_default().add(samples);
    }
    let overall = all.scores(cfg.n);
    let report = EvalReport {
        model: cfg.model.clone(),
        problems: cfg.problems.clone(),
        n: cfg.n,
        temperature: generate.sampling.temperature,
        accuracy: overall.pass_at_1,
        overall,
        by_source: by_source.iter().map(|(s, t)| (s.clone(), t.scores(cfg.n))).collect(),
        traces: dir.clone(),
    };
    crate::dataset::write_atomic(&dir.join(REPORT), &serde_json::to_vec_pretty(&report).expect("json"))?;
    Ok((report, ran))
}

impl EvalReport {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let opt = |x: Option<f64>| x.map(pct).unwrap_or_else(|| "-".into());
        let many = self.n > 1;
        let (pass_n, maj_n) =
            if many { (format!("pass@{}", self.n), format!("maj@{}", self.n)) } else { (String::new(), String::new()) };
        let mut out = format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9}\n",
            "source", "problems", "pass@1", pass_n, maj_n, "mean toks", "truncated"
        );
        let rows = self.by_source.iter().map(|(s, x)| (s.as_str(), x)).chain(std::iter::once(("all", &self.overall)));
        for (name, s) in rows {
            out += &format!(
                "{:<24} {:>8} {:>8} {:>8} {:>8} {:>10.1} {:>9}\n",
                name,
                s.problems,
                pct(s.pass_at_1),
                if many { opt(s.pass_at_n) } else { String::new() },
                if many { opt(s.maj_at_n) } else { String::new() },
                s.mean_completion_tokens,
                pct(s.truncated)
            );
        }
        out
    }
}

/// Where `forge eval` writes, and how it prints.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct EvalTarget {
    /// Where the traces and eval-report.json go (default: `eval-<model>-<problems>`)
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Print the report as one JSON object on stdout (with `accuracy` = pass@1)
    #[arg(long)]
    pub json: bool,
}

impl crate::stage::Target for EvalTarget {
    fn in_pipeline(dir: &std::path::Path) -> Option<EvalTarget> {
        Some(EvalTarget { output: Some(dir.to_path_buf()), json: false })
    }
}

/// `forge eval`.
pub struct Eval;

impl crate::stage::Stage for Eval {
    const NAME: &'static str = "eval";
    const ABOUT: &'static str =
        "Score a model on problems: generate, verify, report pass@1, pass@n, maj@n, length, truncation";
    const EXAMPLES: &'static str = "  forge eval --model student/ --problems igsm-test/                    # greedy, one sample
  forge eval --model student/ --problems igsm-test/ -n 8 --json | jq .accuracy
  forge eval --model r1-distill/ --problems math500/ -n 4 --temperature 0.6 --prefill '<think>\\n' --max-tokens 8192 -o eval-math500/
  forge eval --model openai:NAME@http://127.0.0.1:8000/v1 --problems math500/ -n 4 --concurrency 128
  forge eval --model openai:NAME@http://127.0.0.1:8000/v1 --problems humaneval/ -n 10 --sandbox-timeout 5   # pass@10";
    type Config = EvalConfig;
    type Target = EvalTarget;

    fn run(cfg: &EvalConfig, target: &EvalTarget, ctx: &Context) -> Result<crate::stage::Done> {
        let quiet = Context { quiet: ctx.quiet || target.json, ..ctx.clone() };
        let (report, ran) = run(cfg, target.output.as_deref(), &quiet)?;
        let stdout =
            if target.json { serde_json::to_string(&report).expect("serialisable") + "\n" } else { report.table() };
        Ok(crate::stage::Done {
            up_to_date: !ran,
            rows_in: Some(report.overall.problems),
            rows_out: Some(report.overall.samples),
            accuracy: Some(report.accuracy),
            stdout: Some(stdout),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(4, 0, 4), 0.0);
        assert_eq!(pass_at_k(4, 1, 4), 1.0);
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
        // 1 - C(3,2)/C(5,2) = 1 - 3/10
        assert!((pass_at_k(5, 2, 2) - 0.7).abs() < 1e-12);
    }
}
