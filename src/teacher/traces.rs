//! A problems dataset sampled into a traces dataset: `n` samples per problem from a teacher, one row per
//! sample, with the reasoning split from the solution and the provenance of each sample (teacher,
//! sampling, seed, index, token counts, finish reason). `forge generate` is this; `forge eval` samples the
//! same way before it verifies.
//!
//! Output row `i * n + k` is sample `k` of problem `i`, and each sample's random stream depends only on
//! (seed, problem id, k): a killed run resumes from its finished shards and ends equal to an
//! uninterrupted one.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::adaptive::AdaptiveConfig;
use super::budget::BudgetConfig;
use super::{Connect, Finish, HttpConfig, Prompt, SamplingConfig};
use crate::dataset::{
    DatasetWriter, Input, Problem, Provenance, Sampling, Start, TableKind, TokenLogprob, Trace, WriteOptions,
};
use crate::error::{Error, Result};
use crate::formats::domain::Domain;
use crate::formats::prompt::default_template;
use crate::model::chat::Message;
use crate::progress::Progress;
use crate::report::StageReport;
use crate::{Context, Outcome, OutputArgs};

/// `forge generate`'s settings (the `[generate]` section of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// The teacher: `local:PATH` (a Hugging Face checkpoint directory) or `openai:URL` (an OpenAI-compatible
    /// server, URL up to `/v1`; several comma-separated share the requests)
    #[arg(long, value_name = "SPEC")]
    pub teacher: String,
    /// The model an HTTP teacher asks for (default: the server's only model)
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Problems dataset (directory, Parquet or JSONL)
    #[arg(long, value_name = "DIR")]
    pub problems: PathBuf,
    /// Samples per problem
    #[arg(short = 'n', long = "samples", default_value_t = one(), value_name = "N")]
    #[serde(default = "one")]
    pub n: u32,
    /// How each sample is drawn
    #[command(flatten)]
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// How prompts are rendered
    #[command(flatten)]
    #[serde(flatten)]
    pub prompt: PromptConfig,
    /// Budget forcing
    #[command(flatten)]
    #[serde(flatten)]
    pub budget: BudgetConfig,
    /// Adaptive sampling
    #[command(flatten)]
    #[serde(flatten)]
    pub adaptive: AdaptiveConfig,
    /// Problems decoded together (their samples share one batch)
    #[arg(long, default_value_t = eight(), value_name = "N")]
    #[serde(default = "eight")]
    pub batch_size: usize,
    /// How to reach an HTTP teacher
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpConfig,
}

/// How a problem becomes chat messages: the same settings for `forge generate` and `forge eval`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct PromptConfig {
    /// The user message, `{prompt}` standing for the problem text (default: an instruction per domain;
    /// `'{prompt}'` sends the problem as it is)
    #[arg(long, value_name = "TEXT")]
    pub prompt_template: Option<String>,
    /// A system message
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Text the assistant's reply starts with, e.g. `'<think>\n'` as R1 recipes do (escapes \n and \t are read)
    #[arg(long, default_value_t, value_name = "TEXT")]
    #[serde(default)]
    pub prefill: String,
}

fn one() -> u32 {
    1
}
fn eight() -> usize {
    8
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

impl PromptConfig {
    /// The chat messages of `problem`.
    pub fn messages(&self, problem: &Problem) -> Vec<Message> {
        self.messages_of(&problem.domain, &problem.prompt)
    }

    /// The chat messages of a problem of `domain` posed as `prompt` (the `domain` and `prompt` columns).
    pub fn messages_of(&self, domain: &str, prompt: &str) -> Vec<Message> {
        let template = self.prompt_template.as_deref().map(unescape);
        let user = template.as_deref().unwrap_or(default_template(Domain::of(domain))).replace("{prompt}", prompt);
        let mut out = Vec::new();
        if let Some(system) = &self.system {
            out.push(Message::new("system", &unescape(system)));
        }
        out.push(Message::new("user", &user));
        out
    }

    /// The prefill, its escapes read.
    pub fn prefill(&self) -> String {
        unescape(&self.prefill)
    }

    /// The prompt of `problem`'s `n` samples.
    pub fn prompt(&self, problem: &Problem, key: String, n: u32) -> Prompt {
        Prompt {
            key,
            messages: self.messages(problem),
            prefill: self.prefill(),
            n,
            max_new_tokens: None,
            first_sample: 0,
        }
    }
}

/// The trace row of sample `k` of `problem`: the completion (after the prefill it continues), its
/// reasoning split off, and the sample's provenance.
pub fn trace(
    sampling: &SamplingConfig,
    problem: &Problem,
    k: u32,
    s: super::Sample,
    teacher: &str,
    prefill: &str,
) -> Trace {
    let (completion, reasoning, solution) = match s.reasoning {
        // the server split it (`reasoning_content`): the completion shows it as a local model writes it
        Some(r) => (format!("{prefill}<think>{r}</think>{}", s.text), Some(r), s.text),
        None => {
            let completion = format!("{prefill}{}", s.text);
            let parts = crate::verify::extract::split(&completion);
            match parts.reasoning {
                Some(r) => (completion.clone(), Some(r.to_string()), parts.solution.to_string()),
                None => (completion.clone(), None, completion),
            }
        }
    };
    Trace {
        id: format!("{}#{k}", problem.id),
        problem_id: problem.id.clone(),
        source: problem.source.clone(),
        domain: problem.domain.clone(),
        prompt: problem.prompt.clone(),
        gold: problem.gold.clone(),
        teacher: teacher.to_string(),
        sample_index: k,
        sampling: Sampling {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            max_new_tokens: sampling.max_new_tokens,
            seed: sampling.seed,
        },
        reasoning,
        solution,
        completion,
        prompt_tokens: s.prompt_tokens,
        completion_tokens: s.completion_tokens,
        finish_reason: s.finish.name().to_string(),
        metadata: problem.metadata.clone(),
        tests: problem.tests.clone(),
        token_logprobs: (s.error.is_none() && s.logprobs.len() == s.completion_tokens as usize).then_some(s.logprobs),
        top_logprobs: (sampling.top_logprobs > 0).then(|| {
            let position = |p: Vec<(u32, f32)>| p.into_iter().map(|(token, logprob)| TokenLogprob { token, logprob });
            s.top_logprobs.into_iter().map(|p| position(p).collect()).collect()
        }),
        error: s.error,
        server: s.server,
    }
}

/// Sample every problem of `cfg.problems` (the `--shard` slice `out` names) into a traces dataset at
/// `out`; resumes an interrupted run of the same settings, and does nothing when `out` is up to date.
/// Samples an HTTP teacher failed to get are error rows; a rerun of the same command retries only those
/// (the others come back from the request journal).
pub fn write_traces(cfg: &GenerateConfig, out: &OutputArgs, ctx: &Context) -> Result<Outcome> {
    if cfg.n == 0 || cfg.batch_size == 0 {
        return Err(Error::usage("`-n` and `--batch-size` must be at least 1"));
    }
    let started = Instant::now();
    let input = Input::open(&cfg.problems)?;
    let range = out.shard.range(input.rows());
    let mut inputs = vec![input.reference()?];
    let http = cfg.teacher.starts_with("openai:");
    if let Some(("local", path)) = cfg.teacher.split_once(':') {
        // a retrained teacher is a changed input, as changed problems are
        let path = PathBuf::from(path);
        let xxh3 = crate::model::checkpoint_hash(&path)?;
        inputs.push(crate::dataset::InputRef { path, rows: 0, xxh3 });
    }
    let provenance = Provenance::start("generate", &ctx.command, cfg, inputs);
    let mut writer = match start(out, provenance)? {
        Start::UpToDate(m) => return Ok(Outcome::UpToDate(m)),
        Start::Write(w) => w,
    };
    // the journal keys this run's own requests by what the run is: its settings, output and slice
    let what = format!(
        "{}\n{}\n{}/{}",
        serde_json::to_string(cfg).expect("JSON"),
        out.output.display(),
        out.shard.index,
        out.shard.count
    );
    let run = xxhash_rust::xxh3::xxh3_64(what.as_bytes());
    let connect = Connect { spec: &cfg.teacher, model: cfg.model.as_deref(), http: &cfg.http, run };
    let mut teacher = super::open(&connect)?;
    let n = u64::from(cfg.n);
    let total = (range.end - range.start) * n;
    if cfg.adaptive.active() {
        return write_adaptive(cfg, &input, range, writer, teacher.as_mut(), ctx, started);
    }
    let progress = Progress::rows("generate", total, ctx.quiet);
    // rows in: the samples to make (n per problem of the slice); the writer checks every one was written
    let mut report = StageReport::new("generate", total, 0, 0.0);
    let (mut tokens, mut index, mut errors) = (0u64, 0u64, 0u64);
    let prefill = cfg.prompt.prefill();
    // The local teacher decodes `--batch-size` problems' samples at a time and refills freed places with
    // the next problems; an HTTP teacher keeps `--concurrency` requests in flight, the next problems' as
    // earlier ones finish. So a chunk is as long as the output shard it fills (a resumed run steps over
    // whole finished shards); budget forcing runs in rounds, `--batch-size` problems at a time.
    let slots = cfg.batch_size * cfg.n as usize;
    let static_chunk = cfg.budget.active().then_some(cfg.batch_size);
    let id = teacher.id().to_string();
    for batch in input.rows_of::<Problem>(TableKind::Problems, range) {
        let problems = batch?;
        let mut at = 0;
        while at < problems.len() {
            let left = problems.len() - at;
            let take =
                static_chunk.unwrap_or_else(|| writer.run_length(index * n, left as u64 * n).div_ceil(n) as usize);
            let chunk = &problems[at..at + take.clamp(1, left)];
            at += chunk.len();
            let first = index * n;
            let rows = chunk.len() as u64 * n;
            index += chunk.len() as u64;
            // finished by an interrupted run of this same command; an HTTP teacher's rows come back from
            // its journal instead, so that its error rows are counted again
            if !http && writer.skips(first) && writer.skips(first + rows - 1) {
                writer.skip(rows)?;
                report.rows_out += rows;
                progress.inc(rows);
                continue;
            }
            let prompts: Vec<Prompt> = chunk.iter().map(|p| cfg.prompt.prompt(p, p.id.clone(), cfg.n)).collect();
            // each problem's rows are written once it and every problem before it are done
            let mut ready: Vec<Option<Vec<super::Sample>>> = vec![None; chunk.len()];
            let mut written = 0;
            let mut write = |i: usize, samples: Vec<super::Sample>| -> Result<()> {
                ready[i] = Some(samples);
                let mut traces = Vec::new();
                while let Some(samples) = ready.get_mut(written).and_then(Option::take) {
                    for (k, s) in samples.into_iter().enumerate() {
                        tokens += u64::from(s.completion_tokens);
                        errors += u64::from(s.finish == Finish::Error);
                        traces.push(trace(&cfg.sampling, &chunk[written], k as u32, s, &id, &prefill));
                    }
                    written += 1;
                }
                report.rows_out += traces.len() as u64;
                writer.write_rows(&traces)
            };
            if cfg.budget.active() {
                let samples =
                    super::budget::generate(teacher.as_mut(), &prompts, &cfg.sampling, &cfg.budget, &progress)?;
                for (i, s) in samples.into_iter().enumerate() {
                    write(i, s)?;
                }
            } else {
                teacher.generate_each(&prompts, &cfg.sampling, slots, &progress, &mut write)?;
            }
        }
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.rows_out as f64 / report.seconds.max(1e-9);
    if errors > 0 {
        report.flagged.insert(ERROR.into(), errors);
    }
    if !ctx.quiet {
        eprintln!("generate: {tokens} completion tokens, {:.0} tokens/s", tokens as f64 / report.seconds.max(1e-9));
    }
    if errors > 0 {
        eprintln!(
            "generate: {errors} samples failed past their retries (rows with finish_reason = \"error\"); \
             rerun the same command to retry only them"
        );
    }
    Ok(Outcome::Written(writer.finish(report)?))
}

/// [`write_traces`] with adaptive sampling: rows per problem vary, and the report counts why each
/// problem stopped and the samples saved against a fixed `-n`.
fn write_adaptive(
    cfg: &GenerateConfig,
    input: &Input,
    range: std::ops::Range<u64>,
    mut writer: DatasetWriter,
    teacher: &mut dyn super::Teacher,
    ctx: &Context,
    started: Instant,
) -> Result<Outcome> {
    let problems = range.end - range.start;
    let progress = Progress::rows("generate (problems)", problems, ctx.quiet);
    let mut run = super::adaptive::Run {
        teacher,
        sampling: &cfg.sampling,
        budget: &cfg.budget,
        prompt: &cfg.prompt,
        n: cfg.n,
        batch_size: cfg.batch_size,
        progress: &progress,
    };
    let done = super::adaptive::write(
        &cfg.adaptive,
        &mut run,
        input.rows_of::<Problem>(TableKind::Problems, range),
        &mut writer,
    )?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let mut report = StageReport::new("generate", done.samples, done.samples, seconds);
    report.flagged.extend(done.stopped.iter().map(|(k, v)| (k.to_string(), *v)));
    if done.errors > 0 {
        report.flagged.insert(ERROR.into(), done.errors);
    }
    let fixed = problems * u64::from(cfg.n);
    if !ctx.quiet {
        let stopped: Vec<String> = done.stopped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!(
            "generate: {} samples for {problems} problems ({:.1} per problem; a fixed -n {} takes {fixed}: {:.0}% fewer); {}",
            done.samples,
            done.samples as f64 / problems.max(1) as f64,
            cfg.n,
            100.0 * (1.0 - done.samples as f64 / fixed.max(1) as f64),
            stopped.join(", ")
        );
        eprintln!(
            "generate: {} completion tokens, {:.0} tokens/s",
            done.tokens,
            done.tokens as f64 / seconds.max(1e-9)
        );
    }
    Ok(Outcome::Written(writer.finish(report)?))
}

/// Start writing the traces; a finished output with error rows is written again (its good rows come back
/// from the request journal).
fn start(out: &OutputArgs, provenance: Provenance) -> Result<Start> {
    let create = |write: &WriteOptions, p: Provenance| {
        DatasetWriter::create(&out.output, TableKind::Traces, out.shard, write, p)
    };
    match create(&out.write, provenance.clone())? {
        Start::UpToDate(m) if m.report.flagged.get(ERROR).is_some_and(|&e| e > 0) => {
            create(&WriteOptions { redo_finished: true, ..out.write.clone() }, provenance)
        }
        start => Ok(start),
    }
}

/// The report's count of error rows (`finish_reason = "error"`).
pub const ERROR: &str = "error";
