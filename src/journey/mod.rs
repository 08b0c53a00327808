//! `forge journey`: training conversations that show a mistake, the moment it is noticed and the repair
//! (Journey Learning; `../shared/notes/journey.md`), written as an `sft` table.
//!
//! A solution is built as typed segments ([`Seg`]: step, error, detect, fix, verify, final) and rendered to
//! text only at the end, so the loss mask (`segments` with a `train` flag) and the surface forms are
//! choices. Guarantees, checked per row: every inserted error is rejected by the step checker, every fix
//! accepted, and the final answer verified against the gold answer; a row that fails is not written and
//! is counted in the report.
//!
//! Strategies today: `synthetic` (retries on checkable steps of `forge synth` problems and GSM8K's
//! calculator annotations: [`synthetic`]), `verify` (clean solutions with checks that confirm correct
//! work), `splice` (a teacher's wrong sample cut at its first failing step, then a right sample of the
//! same problem: [`splice`]) and `teacher` (the same wrong prefix and a cue, continued by a teacher; kept
//! when the continuation's calculations check out and its answer verifies: `teacher`); one file per
//! strategy, and this module holds what they share (segments, the checks every row passes, grouping
//! traces by problem).
//!
//! ```text
//! forge journey --input igsm/ --error-rate 0.5 -o sft/
//! forge journey --input traces/ --strategy splice -o sft-splice/
//! forge journey --input traces/ --strategy teacher --teacher local:teacher/ -o sft-teacher/
//! ```

pub mod splice;
pub mod synthetic;
mod teacher;

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dataset::{
    ChatMessage, DatasetWriter, Input, Problem, Provenance, SegmentKind as Kind, SegmentSpan, SftRow, Start, TableKind,
    Trace,
};
use crate::error::{Error, Result};
use crate::formats::domain::Domain;
use crate::formats::prompt::{answer_line, instruction};
use crate::progress::Progress;
use crate::report::StageReport;
use crate::rng::Rng;
use crate::verify::{TraceRef, VerifySettings, verify_trace};
use crate::{Context, Outcome, OutputArgs};
use synthetic::{ErrorType, Knobs};

/// A piece of a solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    /// What the piece is.
    pub kind: Kind,
    /// Its text (one line of the reply).
    pub text: String,
    /// Whether the loss covers it.
    pub train: bool,
}

/// The reply text of `segs` (one segment per line) and each segment's character span in it.
pub fn render(segs: &[Seg]) -> (String, Vec<SegmentSpan>) {
    let (mut text, mut spans, mut at) = (String::new(), Vec::new(), 0u32);
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            text.push('\n');
            at += 1;
        }
        let len = s.text.chars().count() as u32;
        // the newline before a segment belongs to it, so the spans cover the whole reply
        let start = if i > 0 { at - 1 } else { 0 };
        spans.push(SegmentSpan { kind: s.kind.name().into(), start, end: at + len, train: s.train });
        text.push_str(&s.text);
        at += len;
    }
    (text, spans)
}

/// How `forge journey` makes its solutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Wrong steps of chosen types, each detected by its checkable reason and fixed
    Synthetic,
    /// Clean solutions with checks that confirm correct steps (the control for "Wait" meaning "error")
    Verify,
    /// A teacher's wrong sample up to its first failing step, a transition, then a right sample of the same
    /// problem (input: traces from `forge generate` with several samples per problem)
    Splice,
    /// A teacher's wrong sample up to its first failing step and a cue ("Wait, let me check that."), continued
    /// by the teacher (`--teacher`); a continuation is kept only if its calculations check out and the verifier
    /// accepts its answer
    Teacher,
}

/// How a detected error is marked in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// A sentence that states the recomputation ("Wait, 12 + 11 is 23, not 24.")
    Wait,
    /// The `[BACK]` token of Physics of Language Models 2.2
    Back,
}

/// `forge journey`'s settings (the `[journey]` section of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct JourneyConfig {
    /// Problems with reference steps that carry calculations (`forge synth`, `forge import --preset gsm8k`);
    /// with `--strategy splice` or `teacher`, traces from `forge generate`
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// How the solutions are made
    #[arg(long, value_enum, default_value_t = defaults::strategy())]
    #[serde(default = "defaults::strategy")]
    pub strategy: Strategy,
    /// Probability that a checkable step is first written wrong (per step)
    #[arg(long, default_value_t = defaults::error_rate(), value_name = "P")]
    #[serde(default = "defaults::error_rate")]
    pub error_rate: f64,
    /// Share of problems that get a journey; the others get their clean solution
    #[arg(long, default_value_t = defaults::one(), value_name = "X")]
    #[serde(default = "defaults::one")]
    pub journey_share: f64,
    /// Error types to draw from, uniformly
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ErrorType::ALL)]
    #[serde(default = "defaults::types")]
    pub error_types: Vec<ErrorType>,
    /// At most this many errors per solution
    #[arg(long, default_value_t = defaults::max_errors(), value_name = "N")]
    #[serde(default = "defaults::max_errors")]
    pub max_errors: u32,
    /// Probability that a correct step is followed by a check confirming it (default: 0, or 0.4 with
    /// `--strategy verify`)
    #[arg(long, value_name = "P")]
    pub verify_share: Option<f64>,
    /// How a detection is written
    #[arg(long, value_enum, default_value_t = defaults::marker())]
    #[serde(default = "defaults::marker")]
    pub marker: Marker,
    /// Notice a wrong calculation this many steps late: the steps after it that do not need its result are
    /// written first, then the detection names the earlier step and the fix redoes it (fewer steps where
    /// the next one needs the wrong result; `unavailable` errors are always noticed at once)
    #[arg(long, default_value_t, value_name = "N")]
    #[serde(default)]
    pub detect_after: u32,
    /// `--strategy teacher`: the teacher that continues the wrong prefixes: `local:PATH`, or a server
    /// (`openai:URL` with `--api completions --chat-template DIR`: the prefixes are prefills)
    #[arg(long, value_name = "SPEC")]
    #[serde(default)]
    pub teacher: Option<String>,
    /// `--strategy teacher`: continuations sampled per wrong prefix; the first one the verifier accepts is kept
    #[arg(long, default_value_t = defaults::continuations(), value_name = "N")]
    #[serde(default = "defaults::continuations")]
    pub continuations: u32,
    /// `--strategy teacher`: the continuations' sampling temperature and length
    #[arg(long, default_value_t = defaults::temperature())]
    #[serde(default = "defaults::temperature")]
    pub temperature: f32,
    /// New tokens at most per continuation (`--strategy teacher`)
    #[arg(long = "max-tokens", default_value_t = defaults::max_tokens(), value_name = "N")]
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: u32,
    /// Leave the wrong steps out of the loss (`train = false` on error segments)
    #[arg(long)]
    #[serde(default)]
    pub mask_errors: bool,
    /// Seed of the error placement and of the teacher's samples
    #[arg(long, default_value_t = defaults::seed())]
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// How to reach an HTTP `--teacher`
    #[command(flatten)]
    #[serde(flatten)]
    pub http: crate::teacher::HttpConfig,
}

mod defaults {
    pub fn strategy() -> super::Strategy {
        super::Strategy::Synthetic
    }
    pub fn error_rate() -> f64 {
        0.2
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn types() -> Vec<super::ErrorType> {
        super::ErrorType::ALL.to_vec()
    }
    pub fn max_errors() -> u32 {
        3
    }
    pub fn marker() -> super::Marker {
        super::Marker::Wait
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn continuations() -> u32 {
        4
    }
    pub fn temperature() -> f32 {
        0.7
    }
    pub fn max_tokens() -> u32 {
        512
    }
}

/// Why a row was not written (counted in the report under its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// The problem's reference steps carry no calculation to get wrong.
    NoSteps,
    /// The problem has no answer for a final line (no gold; a Countdown row without `solution`).
    NoAnswer,
    /// The written row's final answer did not verify.
    CheckFailed,
    /// Splice and teacher: no sample of the problem is wrong with an answer.
    NoWrong,
    /// Splice: no sample of the problem is right with every calculation checking out.
    NoRight,
    /// The wrong sample fails at once: nothing before the failure to keep.
    NothingBefore,
    /// Teacher: no continuation ended, checked out and verified.
    NotAccepted,
}

impl Reject {
    fn name(self) -> &'static str {
        match self {
            Reject::NoSteps => "no_checkable_steps",
            Reject::NoAnswer => "no_answer",
            Reject::CheckFailed => "check_failed",
            Reject::NoWrong => "no_wrong_sample",
            Reject::NoRight => "no_right_sample",
            Reject::NothingBefore => "nothing_before_the_failure",
            Reject::NotAccepted => "no_continuation_accepted",
        }
    }
}

/// Count a rejected problem in `report`.
fn count(report: &mut StageReport, reason: Reject) {
    *report.rejected.entry(reason.name().to_string()).or_default() += 1;
}

/// The numbers of a problem's text: wrong operands come from here.
fn numbers(text: &str) -> Vec<i128> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect()
}

/// The row of one problem, or the reason there is none.
fn row(cfg: &JourneyConfig, problem: &Problem, index: u64) -> std::result::Result<SftRow, Reject> {
    let steps = problem.steps.as_deref().unwrap_or_default();
    if !steps.iter().any(|s| !s.calcs.is_empty()) {
        return Err(Reject::NoSteps);
    }
    let answer =
        answer_line(Domain::of(&problem.domain), problem.gold.as_deref(), &problem.metadata).ok_or(Reject::NoAnswer)?;
    let mut rng = Rng::for_row(cfg.seed, "journey", index);
    let journey = rng.chance(cfg.journey_share);
    let verify = cfg.verify_share.unwrap_or(if cfg.strategy == Strategy::Verify { 0.4 } else { 0.0 });
    let knobs = Knobs {
        error_rate: if journey && cfg.strategy == Strategy::Synthetic { cfg.error_rate } else { 0.0 },
        types: &cfg.error_types,
        max_errors: cfg.max_errors,
        verify_rate: if journey { verify } else { 0.0 },
        back_token: cfg.marker == Marker::Back,
        mask_errors: cfg.mask_errors,
        detect_after: cfg.detect_after,
    };
    let (mut segs, inserted) = synthetic::build(steps, &numbers(&problem.prompt), &knobs, &mut rng);
    segs.push(Seg { kind: Kind::Final, text: answer, train: true });
    if !inserted.iter().all(|e| e.checked) {
        return Err(Reject::CheckFailed);
    }
    let metadata = serde_json::json!({
        "strategy": cfg.strategy,
        "journey": journey,
        "error_rate": knobs.error_rate,
        "verify_share": knobs.verify_rate,
        "marker": cfg.marker,
        "mask_errors": cfg.mask_errors,
        "detect_after": cfg.detect_after,
        "errors": inserted,
        "verifies": segs.iter().filter(|s| s.kind == Kind::Verify).count(),
        "checks": { "errors_rejected": true, "fixes_accepted": true, "final_verified": true },
    });
    let p = problem;
    sft_row(&p.id, &p.id, &p.source, &p.domain, &p.prompt, p.gold.as_deref(), &p.metadata, &segs, metadata)
}

/// The `sft` row of a solution `segs` to `problem` (the bare problem text, asked under `forge generate`'s
/// instruction for its domain), if its final answer verifies.
#[allow(clippy::too_many_arguments)]
fn sft_row(
    id: &str,
    problem_id: &str,
    source: &str,
    domain: &str,
    problem: &str,
    gold: Option<&str>,
    problem_metadata: &str,
    segs: &[Seg],
    metadata: serde_json::Value,
) -> std::result::Result<SftRow, Reject> {
    let (reply, spans) = render(segs);
    let trace = TraceRef {
        domain: Domain::of(domain),
        gold,
        output: &reply,
        prompt: None,
        metadata: Some(problem_metadata),
        tests: None,
        finish_reason: None,
    };
    if !verify_trace(&trace, &VerifySettings::default()).is_ok_and(|v| v.correct) {
        return Err(Reject::CheckFailed);
    }
    let user = instruction(Domain::of(domain), problem);
    let prompt = vec![ChatMessage { role: "user".into(), content: user }];
    let completion = vec![ChatMessage { role: "assistant".into(), content: reply }];
    Ok(SftRow {
        id: id.to_string(),
        problem_id: problem_id.to_string(),
        source: source.to_string(),
        domain: domain.to_string(),
        messages: [prompt.clone(), completion.clone()].concat(),
        prompt,
        completion,
        segments: spans,
        gold: gold.map(str::to_string),
        metadata: metadata.to_string(),
    })
}

/// A problem's wrong samples (each with its answer; ones cut short are left out) and right ones (right answer,
/// every calculation checks out).
type Judged<'a> = (Vec<(&'a Trace, String)>, Vec<&'a Trace>);

/// A sample the verifier cannot judge (a math problem without gold, a Countdown row without its numbers)
/// stops the run with the trace named: it is bad input, not a wrong sample.
fn judge(samples: &[Trace]) -> Result<Judged<'_>> {
    // Code is left alone: a program has no calculations to cut at or check, so its samples are not run.
    if samples.iter().any(|t| Domain::of(&t.domain) == Domain::Code) {
        return Ok((Vec::new(), Vec::new()));
    }
    let settings = VerifySettings::default();
    let verdict = |t: &Trace| {
        verify_trace(&TraceRef::of(t), &settings)
            .map(Some)
            .map_err(|(column, message)| Error::usage(format!("trace `{}`, column `{column}`: {message}", t.id)))
    };
    let judged: Vec<_> = samples.iter().map(|t| Ok((t, verdict(t)?))).collect::<Result<_>>()?;
    // a wrong sample must state an answer, and not merely have been cut short
    let wrong: Vec<(&Trace, String)> = judged
        .iter()
        .filter_map(|(t, v)| {
            let v = v.as_ref()?;
            (!v.correct && !v.truncated).then_some((*t, v.extracted.clone()?))
        })
        .collect();
    // a right sample whose calculations do not all check out is no fix
    let right: Vec<&Trace> = judged
        .iter()
        .filter(|(t, v)| v.as_ref().is_some_and(|v| v.correct) && splice::checks_out(&t.completion))
        .map(|(t, _)| *t)
        .collect();
    Ok((wrong, right))
}

/// The traces grouped by problem, in the order the problems first appear, each with its index in that
/// order; with `--shard I/N`, the I-th slice of the problems (not of the rows, so that no problem's samples
/// are split between shards, and every problem gets the same index, and so the same row, as unsharded).
fn problem_groups(input: &Input, shard: crate::dataset::Shard) -> Result<Vec<(u64, Vec<Trace>)>> {
    let (mut groups, mut at) = (Vec::<Vec<Trace>>::new(), std::collections::HashMap::new());
    for batch in input.rows_of::<Trace>(TableKind::Traces, 0..input.rows()) {
        for t in batch? {
            let i = *at.entry(t.problem_id.clone()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(t);
        }
    }
    let range = shard.range(groups.len() as u64);
    Ok((0u64..).zip(groups).skip(range.start as usize).take((range.end - range.start) as usize).collect())
}

/// `forge journey`: read the input, write one training conversation per problem (or spliced pair) to
/// `out`.
pub fn run(cfg: &JourneyConfig, out: &OutputArgs, ctx: &Context) -> Result<Outcome> {
    let rate = |x: f64| (0.0..=1.0).contains(&x);
    if !rate(cfg.error_rate) || !rate(cfg.journey_share) || !cfg.verify_share.is_none_or(rate) {
        return Err(Error::usage("`--error-rate`, `--journey-share` and `--verify-share` must be in [0, 1]"));
    }
    let started = Instant::now();
    let input = Input::open(&cfg.input)?;
    let reads = if matches!(cfg.strategy, Strategy::Splice | Strategy::Teacher) {
        TableKind::Traces
    } else {
        TableKind::Problems
    };
    if let Some(kind) = input.kind.filter(|&k| k != reads) {
        return Err(Error::usage(format!(
            "`--strategy {}` reads a {} table, and `{}` is a {} table",
            serde_json::to_value(cfg.strategy).expect("json").as_str().unwrap_or_default(),
            reads.name(),
            cfg.input.display(),
            kind.name()
        ))
        .with_hint("splice and teacher take `forge generate`'s traces; synthetic and verify take problems"));
    }
    let provenance = Provenance::start("journey", &ctx.command, cfg, vec![input.reference()?]);
    let mut writer = match DatasetWriter::create(&out.output, TableKind::Sft, out.shard, &out.write, provenance)? {
        Start::UpToDate(m) => return Ok(Outcome::UpToDate(m)),
        Start::Write(w) => w,
    };
    let mut report = StageReport::new("journey", 0, 0, 0.0);
    if matches!(cfg.strategy, Strategy::Splice | Strategy::Teacher) {
        let groups = problem_groups(&input, out.shard)?;
        // a row per problem: the report counts problems in, rows out and problems rejected
        report.rows_in = groups.len() as u64;
        let progress = Progress::rows("journey", groups.len() as u64, ctx.quiet);
        let rows = if cfg.strategy == Strategy::Teacher {
            teacher::rows(cfg, &groups, &mut report, &progress)?
        } else {
            let mut rows = Vec::new();
            for (i, samples) in &groups {
                match splice::row(cfg, samples, *i)? {
                    Ok(r) => rows.push(r),
                    Err(reason) => count(&mut report, reason),
                }
                progress.inc(1);
            }
            rows
        };
        report.rows_out = rows.len() as u64;
        writer.write_rows(&rows)?;
        progress.finish();
        report.seconds = started.elapsed().as_secs_f64();
        report.rows_per_second = report.rows_in as f64 / report.seconds.max(1e-9);
        return Ok(Outcome::Written(writer.finish(report)?));
    }
    let range = out.shard.range(input.rows());
    let progress = Progress::rows("journey", range.end - range.start, ctx.quiet);
    let mut index = range.start;
    for batch in input.rows_of::<Problem>(TableKind::Problems, range) {
        let problems = batch?;
        let mut rows = Vec::with_capacity(problems.len());
        for p in &problems {
            match row(cfg, p, index) {
                Ok(r) => rows.push(r),
                Err(reason) => count(&mut report, reason),
            }
            index += 1;
        }
        report.rows_in += problems.len() as u64;
        report.rows_out += rows.len() as u64;
        writer.write_rows(&rows)?;
        progress.inc(problems.len() as u64);
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.rows_in as f64 / report.seconds.max(1e-9);
    Ok(Outcome::Written(writer.finish(report)?))
}

/// `forge journey`.
pub struct Journey;

impl crate::stage::Stage for Journey {
    const NAME: &'static str = "journey";
    const ABOUT: &'static str =
        "Write training conversations with verified wrong-then-corrected steps (journey learning)";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Write training conversations that show a mistake, its detection and the fix (an `sft` \
                      table: `messages`, `prompt`/`completion`, and `segments` labelling each span as step, \
                      error, detect, fix, verify or final, with a `train` flag). `--strategy synthetic` \
                      writes, at each checkable step and with probability `--error-rate`, a wrong version of \
                      the step (arithmetic slip, wrong operand, wrong operator, misread number, a quantity \
                      used before it is computed), then a \
                      detection stating the recomputation, then the correct step; `--strategy verify` writes \
                      clean solutions with checks that confirm correct steps; `--strategy splice` takes a \
                      teacher's traces and, for a problem with a wrong and a right sample, writes the wrong one \
                      up to its first failing calculation (or its wrong answer), a transition that says what \
                      failed, then the right one; `--strategy teacher` gives the same wrong prefix and a cue \
                      (\"Wait, let me check that again.\") to `--teacher` and keeps a continuation whose \
                      calculations check out and whose answer verifies. Every error is rejected by the \
                      step checker, every fix accepted and every final answer verified, or the row is not \
                      written (the report counts it). Input: problems with reference steps that carry \
                      calculations (`forge synth`, GSM8K imported with `--preset gsm8k`); for `splice`, \
                      traces from `forge generate` with several samples per problem (`splice`, `teacher`).",
    );
    const EXAMPLES: &'static str = "  forge journey --input igsm/ --error-rate 0.5 -o sft/
  forge journey --input igsm/ --error-rate 0.5 --mask-errors -o sft-masked/
  forge journey --input gsm8k-train/ --error-rate 0.2 --marker back --error-types arithmetic,operand -o sft/
  forge journey --input igsm/ --error-rate 0.5 --detect-after 2 -o sft-late/
  forge journey --input igsm/ --strategy verify --verify-share 0.4 -o sft-verify/
  forge journey --input igsm/ --error-rate 0 -o sft-clean/          # clean solutions, same format
  forge journey --input traces/ --strategy splice -o sft-splice/     # traces of `forge generate -n 4`
  forge journey --input traces/ --strategy teacher --teacher local:teacher/ --continuations 4 -o sft-teacher/";
    type Config = JourneyConfig;
    type Target = OutputArgs;

    fn run(cfg: &JourneyConfig, out: &OutputArgs, ctx: &Context) -> Result<crate::stage::Done> {
        Ok(crate::stage::Done::dataset(&run(cfg, out, ctx)?, &out.output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans cover the reply end to end, in order, and each one holds its segment's text.
    #[test]
    fn spans_cover_the_reply() {
        let segs = vec![
            Seg { kind: Kind::Step, text: "2 + 2 = 5".into(), train: true },
            Seg { kind: Kind::Detect, text: "Wait, 2 + 2 = 4 ✓".into(), train: true },
            Seg { kind: Kind::Final, text: "The answer is \\boxed{4}.".into(), train: false },
        ];
        let (text, spans) = render(&segs);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(spans[0].start, 0);
        assert_eq!(spans.last().unwrap().end as usize, chars.len());
        for (w, (s, seg)) in spans.windows(2).zip(spans.iter().zip(&segs)) {
            assert_eq!(w[0].end, w[1].start);
            let inside: String = chars[s.start as usize..s.end as usize].iter().collect();
            assert_eq!(inside.trim_start_matches('\n'), seg.text);
        }
    }
}
