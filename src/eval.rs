//! `forge eval`: how well a model solves a problems dataset. Generation as `forge generate` does it
//! (greedy by default, or `n` samples), every sample checked by the verifiers, then per problem and per
//! source: pass@1 (the mean share of correct samples), pass@n (unbiased estimator, Chen et al. 2021) and
//! maj@n (the majority answer is correct), best-of-n by the model's own mean log-probability (and, with
//! `--reward-model`, by an outcome reward model: [`crate::teacher::reward_model`]), the tokens
//! spent per problem, the mean completion length and the share cut at `--max-tokens`. The traces are
//! kept in the output directory (a traces dataset, resumable like `forge generate`), with
//! `eval-report.json` beside them. Code problems are scored by their tests in the sandbox (pass@1, pass@n
//! as for answers; maj@n there votes on identical programs).
//!
//! Inference-time scaling: `--strategy` says how a problem is answered (greedy, sampling, majority vote,
//! best-of-n, beam search), and the report's `accuracy` is that strategy's, with the tokens it spent per
//! problem so that strategies compare at equal compute. `--max-thinking-tokens` / `--min-thinking-tokens`
//! force a thinking budget ([`crate::teacher::budget`]). `--sweep n=1,2,4,8` (or `budget=…`) scores the
//! strategy at each point and draws accuracy against tokens per problem (`scaling.png`, `sweep.csv`).
//!
//! ```text
//! forge eval --model teacher/ --problems igsm-test/ -n 8 --json
//! forge eval --model teacher/ --problems igsm-test/ --strategy maj@8 --sweep n=1,2,4,8
//! forge eval --model teacher/ --problems igsm-test/ --strategy best-of-8 --reward-model rm/
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{Finish, Input, TableKind, Trace, WriteOptions};
use crate::error::{Error, Result};
use crate::model::chat::Message;
use crate::progress::Progress;
use crate::teacher::budget::BudgetConfig;
use crate::teacher::reward_model::{RewardModel, conversation};
use crate::teacher::traces::{GenerateConfig, PromptConfig, write_traces};
use crate::teacher::{HttpConfig, SamplingConfig};
use crate::verify::vote::majority;
use crate::verify::{DEFAULT_TOLERANCE, TraceRef, VerifySettings, verify_trace};
use crate::{Context, OutputArgs};

/// `forge eval`'s settings (the `[eval]` section of a pipeline).
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
    /// How a problem is answered, and what `accuracy` is: `greedy`; `sample` (the `-n` samples, pass@1);
    /// `maj@K` (majority vote of K samples); `best-of-N` (N samples, the verifier picks: right when any
    /// is, i.e. pass@N); `beam@W` (beam search, its best beam). Default: `sample`
    #[arg(long, value_name = "STRATEGY")]
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Score the strategy at several points: `n=1,2,4,8` (its K, N or W) or `budget=64,128,256`
    /// (`--max-thinking-tokens`); writes `sweep.csv` and `scaling.png` (accuracy against tokens per problem)
    #[arg(long, value_name = "AXIS=LIST")]
    #[serde(default)]
    pub sweep: Option<Sweep>,
    /// An outcome reward model (a `*ForSequenceClassification` checkpoint, e.g. Skywork-Reward) that
    /// scores every sample; the report's `best_by_reward` is best-of-n with it picking (no gold needed)
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub reward_model: Option<PathBuf>,
    /// Beam search scores `sum of log-probabilities / length^P` (`beam@W`)
    #[arg(long, default_value_t = length_penalty(), value_name = "P")]
    #[serde(default = "length_penalty")]
    pub length_penalty: f32,
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
    /// Seed of the samples (with the problem id and sample index)
    #[arg(long, default_value_t = seed())]
    #[serde(default = "seed")]
    pub seed: u64,
    /// The prompt template and chat settings
    #[command(flatten)]
    #[serde(flatten)]
    pub prompt: PromptConfig,
    /// Budget forcing (`--max-thinking-tokens`, `--min-thinking-tokens`)
    #[command(flatten)]
    #[serde(flatten)]
    pub budget: BudgetConfig,
    /// Problems decoded together
    #[arg(long, default_value_t = batch(), value_name = "N")]
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// How to reach an HTTP model
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
fn length_penalty() -> f32 {
    crate::teacher::SamplingConfig::default().length_penalty
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

/// How a problem is answered from what the model generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One sample, the most likely token at each step.
    Greedy,
    /// `-n` samples, each scored on its own (pass@1).
    Sample,
    /// The majority answer of K samples.
    Majority(u32),
    /// N samples, the verifier picking one: right when any of them is (pass@N).
    BestOf(u32),
    /// Beam search with W beams, its best beam.
    Beam(u32),
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Greedy => write!(f, "greedy"),
            Strategy::Sample => write!(f, "sample"),
            Strategy::Majority(k) => write!(f, "maj@{k}"),
            Strategy::BestOf(n) => write!(f, "best-of-{n}"),
            Strategy::Beam(w) => write!(f, "beam@{w}"),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a strategy: expected greedy, sample, maj@K, best-of-N or beam@W");
        let count = |n: &str| n.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(bad);
        match s {
            "greedy" => Ok(Strategy::Greedy),
            "sample" => Ok(Strategy::Sample),
            _ => match s.split_once('@').or_else(|| s.rsplit_once('-')) {
                Some(("maj", k)) => Ok(Strategy::Majority(count(k)?)),
                Some(("best-of" | "best", n)) => Ok(Strategy::BestOf(count(n)?)),
                Some(("beam", w)) => Ok(Strategy::Beam(count(w)?)),
                _ => Err(bad()),
            },
        }
    }
}

crate::serde_as_string!(Strategy);

impl Strategy {
    /// The same strategy with `count` samples or beams.
    fn with(self, count: u32) -> Strategy {
        match self {
            Strategy::Majority(_) => Strategy::Majority(count),
            Strategy::BestOf(_) => Strategy::BestOf(count),
            Strategy::Beam(_) => Strategy::Beam(count),
            other => other,
        }
    }
}

/// What `--sweep` varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// The strategy's count: K of maj@K, N of best-of-N, W of beam@W.
    N(Vec<u32>),
    /// `--max-thinking-tokens`.
    Budget(Vec<u32>),
}

impl std::fmt::Display for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (axis, points) = match self {
            Sweep::N(p) => ("n", p),
            Sweep::Budget(p) => ("budget", p),
        };
        let points: Vec<String> = points.iter().map(u32::to_string).collect();
        write!(f, "{axis}={}", points.join(","))
    }
}

impl std::str::FromStr for Sweep {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a sweep: expected n=1,2,4,8 or budget=64,128,256");
        let (axis, list) = s.split_once('=').ok_or_else(bad)?;
        let mut points: Vec<u32> = list
            .split(',')
            .map(|p| p.trim().parse::<u32>().ok().filter(|&p| p > 0).ok_or_else(bad))
            .collect::<std::result::Result<_, _>>()?;
        points.sort_unstable();
        points.dedup();
        match axis.trim() {
            "n" => Ok(Sweep::N(points)),
            "budget" => Ok(Sweep::Budget(points)),
            _ => Err(bad()),
        }
    }
}

crate::serde_as_string!(Sweep);

impl EvalConfig {
    /// The strategy: `--strategy`, or `sample`.
    pub fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or(Strategy::Sample)
    }

    /// The generation this evaluation runs.
    pub fn generate(&self) -> GenerateConfig {
        self.generation(self.strategy(), &self.budget)
    }

    /// The generation `strategy` runs under `budget`.
    fn generation(&self, strategy: Strategy, budget: &BudgetConfig) -> GenerateConfig {
        let teacher = if self.model.contains(':') { self.model.clone() } else { format!("local:{}", self.model) };
        let (n, beams) = match strategy {
            Strategy::Greedy => (1, 1),
            Strategy::Sample => (self.n, 1),
            Strategy::Majority(k) | Strategy::BestOf(k) => (k, 1),
            Strategy::Beam(w) => (1, w),
        };
        let sampled = !matches!(strategy, Strategy::Greedy | Strategy::Beam(_));
        let temperature = if sampled { self.temperature.unwrap_or(if n > 1 { 0.6 } else { 0.0 }) } else { 0.0 };
        GenerateConfig {
            teacher,
            problems: self.problems.clone(),
            n,
            sampling: SamplingConfig {
                temperature,
                top_p: if temperature > 0.0 { self.top_p } else { 1.0 },
                max_new_tokens: self.max_new_tokens,
                seed: self.seed,
                beams,
                length_penalty: self.length_penalty,
                ..SamplingConfig::default()
            },
            prompt: self.prompt.clone(),
            budget: budget.clone(),
            adaptive: Default::default(),
            batch_size: self.batch_size,
            model: None,
            http: self.http.clone(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::usage("`-n` must be at least 1"));
        }
        let strategy = self.strategy();
        if self.n > 1 && strategy != Strategy::Sample {
            return Err(Error::usage(format!("`-n {}` with `--strategy {strategy}`", self.n)).with_hint(
                "the strategy names its own count (`maj@8`, `best-of-8`, `beam@4`); `-n` goes with `sample`",
            ));
        }
        let one =
            matches!(strategy, Strategy::Greedy | Strategy::Beam(_)) || strategy == Strategy::Sample && self.n == 1;
        if self.reward_model.is_some() && one {
            return Err(Error::usage(format!("`--reward-model` picks among samples; `{strategy}` draws one"))
                .with_hint("use `--strategy best-of-N` or `maj@K`, or `-n N` with `sample`"));
        }
        if matches!(strategy, Strategy::Greedy | Strategy::Beam(_)) && self.temperature.is_some_and(|t| t > 0.0) {
            return Err(Error::usage(format!("`--temperature` with `--strategy {strategy}`, which does not sample")));
        }
        match (&self.sweep, strategy) {
            (Some(Sweep::N(_)), Strategy::Greedy | Strategy::Sample) => {
                Err(Error::usage(format!("`--sweep n=…` varies a strategy's count; `{strategy}` has none"))
                    .with_hint("use `--strategy maj@K`, `best-of-N` or `beam@W`"))
            }
            (Some(Sweep::Budget(_)), _) if self.budget.max_thinking_tokens.is_some() => {
                Err(Error::usage("`--sweep budget=…` sets `--max-thinking-tokens` itself"))
            }
            _ => Ok(()),
        }
    }
}

/// Scores over a set of problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Problems scored.
    pub problems: u64,
    /// Samples scored.
    pub samples: u64,
    /// Mean share of correct samples per problem (= accuracy with one greedy sample).
    pub pass_at_1: f64,
    /// Unbiased pass@n over the n samples (with n > 1): best-of-n with the verifier picking.
    pub pass_at_n: Option<f64>,
    /// The majority answer of the n samples is correct (with n > 1).
    pub maj_at_n: Option<f64>,
    /// The sample of highest mean token log-probability is correct (with n > 1): best-of-n with the
    /// model picking, no gold needed.
    #[serde(default)]
    pub best_by_logprob: Option<f64>,
    /// The sample the reward model (`--reward-model`) scores highest is correct (with n > 1): best-of-n
    /// with a reward model picking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_by_reward: Option<f64>,
    /// Tokens generated per problem (all its samples; a beam search: every beam's tokens).
    #[serde(default)]
    pub tokens_per_problem: f64,
    /// Mean tokens per sample.
    pub mean_completion_tokens: f64,
    /// Share of samples cut at `--max-tokens`.
    pub truncated: f64,
    /// Share of samples with no final answer found.
    pub no_answer: f64,
}

impl Scores {
    /// The score `strategy` is judged by.
    pub fn of(&self, strategy: Strategy) -> f64 {
        match strategy {
            Strategy::Majority(_) => self.maj_at_n.unwrap_or(self.pass_at_1),
            Strategy::BestOf(_) => self.pass_at_n.unwrap_or(self.pass_at_1),
            Strategy::Greedy | Strategy::Sample | Strategy::Beam(_) => self.pass_at_1,
        }
    }
}

/// `eval-report.json`, and with `--json` the one object on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: String,
    /// The problems dataset.
    pub problems: PathBuf,
    /// How each problem was answered (`greedy`, `sample`, `maj@K`, `best-of-N`, `beam@W`).
    #[serde(default = "sample")]
    pub strategy: String,
    /// Samples per problem.
    pub n: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// The strategy's score over all problems: pass@1 for `greedy`, `sample` and `beam@W`, maj@K for
    /// `maj@K`, pass@N for `best-of-N`.
    pub accuracy: f64,
    /// Scores over all problems.
    pub overall: Scores,
    /// Per `source` column (e.g. `synth/igsm`, `math500/test`).
    pub by_source: BTreeMap<String, Scores>,
    /// Where the traces are.
    pub traces: PathBuf,
    /// `--sweep`: the strategy at each point, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<Point>,
}

fn sample() -> String {
    "sample".into()
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The strategy at this point (`maj@4`), or the thinking budget (`budget=128`).
    pub point: String,
    /// The strategy at this point (`maj@4`, `beam@2`, ...).
    pub strategy: String,
    /// The thinking budget at this point, if any.
    pub max_thinking_tokens: Option<u32>,
    /// The strategy's score.
    pub accuracy: f64,
    /// Tokens generated per problem.
    pub tokens_per_problem: f64,
    /// All scores at this point.
    pub scores: Scores,
    /// Where this point's traces are.
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
    /// Tokens generated for it, where more than its own (a beam search's, over all beams).
    spent: Option<u64>,
    mean_logprob: Option<f64>,
    /// The reward model's score (`--reward-model`).
    reward: Option<f32>,
    truncated: bool,
}

/// Each problem's samples in the order they were read, with its source.
type Judgements = Vec<(String, Vec<Judged>)>;

#[derive(Default)]
struct Tally {
    problems: u64,
    samples: u64,
    pass1: f64,
    pass_n: f64,
    maj: f64,
    by_logprob: f64,
    by_reward: f64,
    rewarded: bool,
    tokens: u64,
    spent: u64,
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
        let picked = |key: fn(&Judged) -> f64| f64::from(u8::from(first_best(samples, key).is_some_and(|s| s.correct)));
        self.by_logprob += picked(|s| s.mean_logprob.unwrap_or(f64::NEG_INFINITY));
        if samples.iter().any(|s| s.reward.is_some()) {
            self.rewarded = true;
            self.by_reward += picked(|s| s.reward.map_or(f64::NEG_INFINITY, f64::from));
        }
        let tokens = samples.iter().map(|s| u64::from(s.tokens)).sum::<u64>();
        self.tokens += tokens;
        self.spent += samples.iter().filter_map(|s| s.spent).max().unwrap_or(tokens);
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
            best_by_logprob: (n > 1).then(|| self.by_logprob / p),
            best_by_reward: (n > 1 && self.rewarded).then(|| self.by_reward / p),
            tokens_per_problem: self.spent as f64 / p,
            mean_completion_tokens: self.tokens as f64 / s,
            truncated: self.truncated as f64 / s,
            no_answer: self.no_answer as f64 / s,
        }
    }
}

/// The first of the samples `key` ranks highest (samples without a score rank last).
fn first_best(samples: &[Judged], key: fn(&Judged) -> f64) -> Option<&Judged> {
    let best = samples.iter().enumerate().max_by(|(i, a), (j, b)| key(a).total_cmp(&key(b)).then(j.cmp(i)));
    best.map(|(_, s)| s)
}

/// The scores of the first `k` samples of each problem, overall and per source.
fn score(judged: &Judgements, k: usize) -> (Scores, BTreeMap<String, Scores>) {
    let (mut all, mut by_source) = (Tally::default(), BTreeMap::<String, Tally>::new());
    for (source, samples) in judged {
        let first = &samples[..k.min(samples.len())];
        all.add(first);
        by_source.entry(source.clone()).or_default().add(first);
    }
    let n = k as u32;
    (all.scores(n), by_source.iter().map(|(s, t)| (s.clone(), t.scores(n))).collect())
}

/// The report written beside the traces.
pub const REPORT: &str = "eval-report.json";
/// A sweep's points as CSV, and its curve.
pub const SWEEP_CSV: &str = "sweep.csv";
/// The sweep's curve: accuracy against tokens per problem.
pub const SWEEP_PNG: &str = "scaling.png";

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

/// Generate `generate`'s traces into `dir` (unless up to date) and judge every sample (and score it with
/// the reward model, when given); the flag says whether generation ran.
fn judge(
    generate: &GenerateConfig,
    dir: &Path,
    settings: &VerifySettings,
    reward: Option<&RewardModel>,
    ctx: &Context,
) -> Result<(Judgements, bool)> {
    // an evaluation's traces are derived: a different evaluation into the same directory replaces them
    let companions = &[REPORT, SWEEP_CSV, SWEEP_PNG, "sweep"];
    let write = WriteOptions { overwrite: true, companions, ..WriteOptions::default() };
    let out = OutputArgs { output: dir.to_path_buf(), shard: Default::default(), write };
    let ran = matches!(write_traces(generate, &out, ctx)?, crate::Outcome::Written(_));

    let input = Input::open(dir)?;
    let pool = settings.thread_pool()?;
    let progress = Progress::rows("reward", if reward.is_some() { input.rows() } else { 0 }, ctx.quiet);
    let mut per_problem: BTreeMap<String, usize> = BTreeMap::new();
    let mut judged: Judgements = Vec::new();
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
        let rewards = match reward {
            Some(model) => {
                let conversations: Vec<Vec<Message>> =
                    batch.iter().map(|t| conversation(&generate.prompt, &t.domain, &t.prompt, &t.completion)).collect();
                let rewards = model.score(&conversations)?;
                progress.inc(rewards.len() as u64);
                rewards.into_iter().map(Some).collect()
            }
            None => vec![None; batch.len()],
        };
        for ((t, verdict), reward) in batch.into_iter().zip(verdicts).zip(rewards) {
            let at = *per_problem.entry(t.problem_id.clone()).or_insert_with(|| {
                judged.push((t.source.clone(), Vec::new()));
                judged.len() - 1
            });
            let spent = t
                .server
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["decoded_tokens"].as_u64());
            let mean_logprob = t
                .token_logprobs
                .as_ref()
                .filter(|l| !l.is_empty())
                .map(|l| l.iter().map(|&x| f64::from(x)).sum::<f64>() / l.len() as f64);
            judged[at].1.push(Judged {
                correct: verdict.correct,
                answer: verdict.extracted,
                tokens: t.completion_tokens,
                spent,
                mean_logprob,
                reward,
                truncated: Finish::of(&t.finish_reason) == Some(Finish::Length),
            });
        }
    }
    progress.finish();
    Ok((judged, ran))
}

/// Run the evaluation; the flag says whether generation ran (false: the traces were up to date).
pub fn run(cfg: &EvalConfig, output: Option<&Path>, ctx: &Context) -> Result<(EvalReport, bool)> {
    cfg.check()?;
    let reward = cfg.reward_model.as_deref().map(RewardModel::open).transpose()?;
    let dir = output.map(Path::to_path_buf).unwrap_or_else(|| default_output(cfg));
    let strategy = cfg.strategy();
    let report = |strategy: Strategy,
                  g: &GenerateConfig,
                  (overall, by_source): (Scores, BTreeMap<String, Scores>),
                  traces: &Path| EvalReport {
        model: cfg.model.clone(),
        problems: cfg.problems.clone(),
        strategy: strategy.to_string(),
        n: g.n,
        temperature: g.sampling.temperature,
        accuracy: overall.of(strategy),
        overall,
        by_source,
        traces: traces.to_path_buf(),
        sweep: Vec::new(),
    };
    let Some(sweep) = &cfg.sweep else {
        let generate = cfg.generate();
        let (judged, ran) = judge(&generate, &dir, &cfg.verify, reward.as_ref(), ctx)?;
        let out = report(strategy, &generate, score(&judged, generate.n as usize), &dir);
        crate::dataset::write_atomic(&dir.join(REPORT), &serde_json::to_vec_pretty(&out).expect("json"))?;
        return Ok((out, ran));
    };
    // each point: (label, strategy, budget, generation, scores, traces)
    let mut points = Vec::new();
    let mut any_ran = false;
    match sweep {
        // sample k of a problem depends on (seed, problem, k) only: the first k of the largest run are a
        // run of k, so the sampled strategies generate once
        Sweep::N(ns) if !matches!(strategy, Strategy::Beam(_)) => {
            let most = strategy.with(*ns.last().expect("a point"));
            let generate = cfg.generation(most, &cfg.budget);
            let (judged, ran) = judge(&generate, &dir, &cfg.verify, reward.as_ref(), ctx)?;
            any_ran |= ran;
            for &k in ns {
                let s = strategy.with(k);
                points.push((
                    s.to_string(),
                    s,
                    cfg.generation(s, &cfg.budget),
                    score(&judged, k as usize),
                    dir.clone(),
                ));
            }
        }
        Sweep::N(ns) => {
            for &w in ns {
                let s = strategy.with(w);
                let (generate, at) = (cfg.generation(s, &cfg.budget), dir.join("sweep").join(s.to_string()));
                let (judged, ran) = judge(&generate, &at, &cfg.verify, reward.as_ref(), ctx)?;
                any_ran |= ran;
                points.push((s.to_string(), s, generate, score(&judged, 1), at));
            }
        }
        Sweep::Budget(budgets) => {
            for &b in budgets {
                let budget = BudgetConfig { max_thinking_tokens: Some(b), ..cfg.budget.clone() };
                let (generate, at) = (cfg.generation(strategy, &budget), dir.join("sweep").join(format!("budget={b}")));
                let (judged, ran) = judge(&generate, &at, &cfg.verify, reward.as_ref(), ctx)?;
                any_ran |= ran;
                let n = generate.n as usize;
                points.push((format!("budget={b}"), strategy, generate, score(&judged, n), at));
            }
        }
    }
    let sweep: Vec<Point> = points
        .iter()
        .map(|(label, s, g, (overall, _), traces)| Point {
            point: label.clone(),
            strategy: s.to_string(),
            max_thinking_tokens: g.budget.max_thinking_tokens,
            accuracy: overall.of(*s),
            tokens_per_problem: overall.tokens_per_problem,
            scores: overall.clone(),
            traces: traces.clone(),
        })
        .collect();
    let (_, s, g, scores, traces) = points.pop().expect("a point");
    let mut out = report(s, &g, scores, &traces);
    out.sweep = sweep;
    fs_err::create_dir_all(&dir)?;
    write_sweep(&out, &dir)?;
    crate::dataset::write_atomic(&dir.join(REPORT), &serde_json::to_vec_pretty(&out).expect("json"))?;
    Ok((out, any_ran))
}

/// `sweep.csv` and `scaling.png`: the strategy's accuracy (blue) and pass@n (orange) against tokens
/// per problem.
fn write_sweep(report: &EvalReport, dir: &Path) -> Result<()> {
    let mut csv = String::from(
        "point,strategy,max_thinking_tokens,accuracy,pass_at_1,pass_at_n,maj_at_n,best_by_logprob,tokens_per_problem,problems\n",
    );
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.6}")).unwrap_or_default();
    for p in &report.sweep {
        let s = &p.scores;
        csv += &format!(
            "{},{},{},{:.6},{:.6},{},{},{},{:.1},{}\n",
            p.point,
            p.strategy,
            p.max_thinking_tokens.map(|b| b.to_string()).unwrap_or_default(),
            p.accuracy,
            s.pass_at_1,
            opt(s.pass_at_n),
            opt(s.maj_at_n),
            opt(s.best_by_logprob),
            s.tokens_per_problem,
            s.problems
        );
    }
    crate::dataset::write_atomic(&dir.join(SWEEP_CSV), csv.as_bytes())?;
    let accuracy = report.sweep.iter().map(|p| (p.tokens_per_problem, p.accuracy)).collect();
    let pass =
        report.sweep.iter().map(|p| (p.tokens_per_problem, p.scores.pass_at_n.unwrap_or(p.scores.pass_at_1))).collect();
    let png = crate::plot::curves([("ACCURACY", accuracy), ("PASS@N", pass)], "TOKENS PER PROBLEM");
    crate::dataset::write_atomic(&dir.join(SWEEP_PNG), &png)
}

impl EvalReport {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let opt = |x: Option<f64>| x.map(pct).unwrap_or_else(|| "-".into());
        let many = self.n > 1;
        let (pass_n, maj_n) =
            if many { (format!("pass@{}", self.n), format!("maj@{}", self.n)) } else { (String::new(), String::new()) };
        let mut out = String::new();
        for p in &self.sweep {
            out += &format!(
                "{:<24} accuracy {:>6}  {:>9.1} tokens/problem\n",
                p.point,
                pct(p.accuracy),
                p.tokens_per_problem
            );
        }
        out += &format!("{}: accuracy {}\n", self.strategy, pct(self.accuracy));
        out += &format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9}\n",
            "source", "problems", "pass@1", pass_n, maj_n, "toks/prob", "mean toks", "truncated"
        );
        let rows = self.by_source.iter().map(|(s, x)| (s.as_str(), x)).chain(std::iter::once(("all", &self.overall)));
        for (name, s) in rows {
            out += &format!(
                "{:<24} {:>8} {:>8} {:>8} {:>8} {:>10.1} {:>10.1} {:>9}\n",
                name,
                s.problems,
                pct(s.pass_at_1),
                if many { opt(s.pass_at_n) } else { String::new() },
                if many { opt(s.maj_at_n) } else { String::new() },
                s.tokens_per_problem,
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

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        self.output.as_mut()
    }
}

/// `forge eval`.
pub struct Eval;

impl crate::stage::Stage for Eval {
    const NAME: &'static str = "eval";
    const ABOUT: &'static str = "Score a model on problems: generate (greedy, sampling, majority vote, best-of-n, beam search, \
         thinking budgets), verify, report accuracy against tokens spent";
    const EXAMPLES: &'static str = "  forge eval --model student/ --problems igsm-test/                    # greedy, one sample
  forge eval --model student/ --problems igsm-test/ -n 8 --json | jq .accuracy
  forge eval --model r1-distill/ --problems math500/ -n 4 --temperature 0.6 --prefill '<think>\\n' --max-tokens 8192 -o eval-math500/
  forge eval --model openai:NAME@http://127.0.0.1:8000/v1 --problems math500/ -n 4 --concurrency 128
  forge eval --model openai:NAME@http://127.0.0.1:8000/v1 --problems humaneval/ -n 10 --sandbox-timeout 5   # pass@10
  forge eval --model teacher/ --problems igsm-test/ --strategy maj@8 --json | jq .accuracy
  forge eval --model teacher/ --problems igsm-test/ --strategy beam@4 --length-penalty 1.0
  forge eval --model r1-distill/ --problems math500/ --prefill '<think>\\n' --max-thinking-tokens 2048 --min-thinking-tokens 512
  forge eval --model teacher/ --problems igsm-test/ --strategy maj@8 --sweep n=1,2,4,8 -o sweep/   # sweep/scaling.png
  forge eval --model teacher/ --problems igsm-test/ --thinking-end 'The answer is' --answer-cue ' ' --sweep budget=8,16,32";
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
