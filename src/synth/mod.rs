//! `forge synth`: seeded generators of verifiable problems with step-by-step reference solutions, for
//! tests, the quickstart and training tiny models. Every step carries a checkable calculation.
//!
//! Row `i` depends only on (task, seed, i): output is byte-identical across runs, and `--shard I/N`
//! runs produce exactly the rows of the unsharded run.
//!
//! ```text
//! forge synth igsm --n 1000 --seed 7 --ops 3..6 -o problems/
//! ```

mod arith;
pub mod countdown;
mod igsm;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::rng::Rng;

use crate::dataset::{DatasetWriter, Problem, Provenance, Start, TableKind};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::StageReport;
use crate::{Context, Outcome, OutputArgs};

/// Problems generated when `--n` is not given.
pub const DEFAULT_N: u64 = 1000;
/// The default seed.
pub const DEFAULT_SEED: u64 = 0;
/// iGSM's default prime modulus.
pub const DEFAULT_MODULUS: u64 = 23;
/// Small primes keep the arithmetic doable by a tiny model (and far from overflow).
pub const MAX_MODULUS: u64 = 1000;
/// iGSM's default count of quantities that do not lead to the answer.
pub const DEFAULT_DISTRACTORS: u64 = 2;
/// Largest operand when `--max-operand` is not given.
pub const DEFAULT_MAX_OPERAND: u64 = 20;

/// What `forge synth` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Multi-step arithmetic: "Compute (17 + 25) * 3 - 8."
    Arith,
    /// iGSM-style word problems over a dependency graph of quantities, modulo a prime
    Igsm,
    /// Countdown: reach the target from the given numbers, each used once
    Countdown,
}

/// How iGSM names its quantities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Names {
    /// Words ("the number of lamps in Riverside Zoo")
    #[default]
    Words,
    /// Letters ("A", "B", then "A1" once 26 are taken)
    Letters,
}

impl Task {
    /// The task's name, as `--task` and the `source` column spell it.
    pub fn name(self) -> &'static str {
        match self {
            Task::Arith => "arith",
            Task::Igsm => "igsm",
            Task::Countdown => "countdown",
        }
    }

    /// Operations per problem when `--ops` is not given.
    pub fn default_ops(self) -> Span {
        match self {
            Task::Arith => Span { min: 2, max: 4 },
            Task::Igsm => Span { min: 3, max: 6 },
            Task::Countdown => Span { min: 2, max: 3 },
        }
    }
}

/// An inclusive range of counts: `3` or `2..5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// At least.
    pub min: u64,
    /// At most.
    pub max: u64,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max { write!(f, "{}", self.min) } else { write!(f, "{}..{}", self.min, self.max) }
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a count or range: expected e.g. `4` or `2..5`");
        let (lo, hi) = s.split_once("..").unwrap_or((s, s));
        let min = lo.trim().parse().map_err(|_| bad())?;
        let max = hi.trim_start_matches('=').trim().parse().map_err(|_| bad())?;
        if min > max {
            return Err(bad());
        }
        Ok(Span { min, max })
    }
}

/// Written as a string in TOML and JSON (`ops = "2..5"`); a bare count (`ops = 4`) is read too.
impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Span { min: n, max: n }),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `forge synth` settings; the same struct is a `kind = "synth"` pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// The kind of problem to generate
    #[arg(value_enum)]
    pub task: Task,
    /// Number of problems
    #[arg(long, default_value_t = default_n())]
    #[serde(default = "default_n")]
    pub n: u64,
    /// Seed: the same seed gives the same problems, byte for byte
    #[arg(long, default_value_t)]
    #[serde(default)]
    pub seed: u64,
    /// Operations per problem, a count or an inclusive range (`4`, `2..5`); defaults: arith 2..4,
    /// igsm 3..6, countdown 2..3 (3 to 4 numbers; at most 4)
    #[arg(long, value_name = "N|MIN..MAX")]
    #[serde(default)]
    pub ops: Option<Span>,
    /// igsm: the prime all arithmetic is taken modulo
    #[arg(long, default_value_t = default_modulus())]
    #[serde(default = "default_modulus")]
    pub modulus: u64,
    /// igsm: quantities in the problem that the answer does not depend on
    #[arg(long, default_value_t = default_distractors())]
    #[serde(default = "default_distractors")]
    pub distractors: u64,
    /// igsm: how quantities are named: in words ("the number of lamps in Maple School") or with capital
    /// letters ("Q"), which makes rows several times shorter for models trained from scratch
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub names: Names,
    /// arith: largest operand
    #[arg(long, default_value_t = default_max_operand())]
    #[serde(default = "default_max_operand")]
    pub max_operand: u64,
}

fn default_n() -> u64 {
    DEFAULT_N
}
fn default_modulus() -> u64 {
    DEFAULT_MODULUS
}
fn default_distractors() -> u64 {
    DEFAULT_DISTRACTORS
}
fn default_max_operand() -> u64 {
    DEFAULT_MAX_OPERAND
}

impl SynthConfig {
    fn check(&self) -> Result<Span> {
        let ops = self.ops.unwrap_or(self.task.default_ops());
        if self.task == Task::Countdown && !(1..=4).contains(&ops.min.max(ops.max)) || ops.max == 0 {
            return Err(Error::usage(format!("`--ops {ops}` is out of range for {}", self.task.name()))
                .with_hint("countdown takes 1..4 operations (2 to 5 numbers); other tasks at least 1"));
        }
        let m = self.modulus;
        if self.task == Task::Igsm
            && (!(3..=MAX_MODULUS).contains(&m) || (2..).take_while(|d| d * d <= m).any(|d| m.is_multiple_of(d)))
        {
            return Err(Error::usage(format!("`--modulus {m}` must be a prime between 3 and {MAX_MODULUS}")));
        }
        Ok(ops)
    }

    /// Problem number `index` (ids are `<task>-<seed>-<index>`).
    pub fn problem(&self, ops: Span, index: u64) -> Problem {
        let mut rng = Rng::for_row(self.seed, self.task.name(), index);
        let ops = rng.range(ops.min, ops.max);
        let mut problem = match self.task {
            Task::Arith => arith::problem(&mut rng, ops, self),
            Task::Igsm => igsm::problem(&mut rng, ops, self),
            Task::Countdown => countdown::problem(&mut rng, ops, self),
        };
        problem.id = format!("{}-{}-{index}", self.task.name(), self.seed);
        problem.source = format!("synth/{}", self.task.name());
        problem
    }
}

/// Rows generated per parallel chunk.
const CHUNK: u64 = 4096;

/// `forge synth`: generate `cfg.n` problems of the task, seeded, and write them to `out`.
pub fn run(cfg: &SynthConfig, out: &OutputArgs, ctx: &Context) -> Result<Outcome> {
    let started = Instant::now();
    let ops = cfg.check()?;
    let provenance = Provenance::start("synth", &ctx.command, cfg, vec![]);
    let mut writer = match DatasetWriter::create(&out.output, TableKind::Problems, out.shard, &out.write, provenance)? {
        Start::UpToDate(m) => return Ok(Outcome::UpToDate(m)),
        Start::Write(w) => w,
    };
    let range = out.shard.range(cfg.n);
    let progress = Progress::rows("synth", range.end - range.start, ctx.quiet);
    let mut row = 0;
    while row < range.end - range.start {
        let len = writer.run_length(row, CHUNK.min(range.end - range.start - row));
        if writer.skips(row) {
            writer.skip(len)?;
        } else {
            let first = range.start + row;
            let rows: Vec<Problem> = (first..first + len).into_par_iter().map(|i| cfg.problem(ops, i)).collect();
            writer.write_rows(&rows)?;
        }
        row += len;
        progress.inc(len);
    }
    progress.finish();
    let count = range.end - range.start;
    let report = StageReport::new("synth", count, count, started.elapsed().as_secs_f64());
    Ok(Outcome::Written(writer.finish(report)?))
}

/// `forge synth`.
pub struct Synth;

impl crate::stage::Stage for Synth {
    const NAME: &'static str = "synth";
    const ABOUT: &'static str = "Generate verifiable problems with step-by-step reference solutions";
    const EXAMPLES: &'static str = "  forge synth igsm --n 1000 --seed 7 -o igsm/
  forge synth igsm --n 200 --ops 8..10 --seed 8 -o igsm-hard/   # harder, out-of-distribution split
  forge synth arith --n 5000 --ops 3 -o arith/
  forge synth countdown --n 1000 --ops 3 -o countdown/           # 4 numbers";
    type Config = SynthConfig;
    type Target = OutputArgs;

    fn run(cfg: &SynthConfig, out: &OutputArgs, ctx: &Context) -> Result<crate::stage::Done> {
        Ok(crate::stage::Done::dataset(&run(cfg, out, ctx)?, &out.output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr;

    fn cfg(task: Task) -> SynthConfig {
        SynthConfig {
            task,
            n: 50,
            seed: 3,
            ops: None,
            modulus: DEFAULT_MODULUS,
            distractors: DEFAULT_DISTRACTORS,
            max_operand: DEFAULT_MAX_OPERAND,
            names: Names::Words,
        }
    }

    #[test]
    fn every_calc_in_every_reference_solution_checks_out() {
        for task in [Task::Arith, Task::Igsm, Task::Countdown] {
            let cfg = cfg(task);
            let ops = cfg.check().unwrap();
            for i in 0..200 {
                let p = cfg.problem(ops, i);
                let steps = p.steps.as_ref().unwrap();
                assert!(!steps.is_empty());
                for step in steps {
                    for calc in &step.calcs {
                        let value = expr::parse(&calc.expr).unwrap().eval().unwrap();
                        assert_eq!(value.to_string(), calc.result, "{task:?} {}: {}", p.id, step.text);
                    }
                }
                let last = steps.last().unwrap();
                if task != Task::Countdown && !last.calcs.is_empty() {
                    assert_eq!(Some(&last.calcs[0].result), p.gold.as_ref(), "{}", p.id);
                }
            }
        }
    }

    #[test]
    fn igsm_solution_length_is_the_requested_ops() {
        let mut cfg = cfg(Task::Igsm);
        for ops in [1, 4, 12] {
            cfg.ops = Some(Span { min: ops, max: ops });
            for i in 0..50 {
                let p = cfg.problem(cfg.check().unwrap(), i);
                let computed = p.steps.unwrap().iter().filter(|s| !s.calcs.is_empty()).count() as u64;
                assert_eq!(computed, ops, "{}", p.id);
            }
        }
    }

    #[test]
    fn igsm_letter_names_are_distinct_and_short_even_past_26() {
        let mut cfg = cfg(Task::Igsm);
        cfg.names = Names::Letters;
        for (ops, distractors) in [(2, 1), (20, 10)] {
            cfg.ops = Some(Span { min: ops, max: ops });
            cfg.distractors = distractors;
            for i in 0..20 {
                let p = cfg.problem(cfg.check().unwrap(), i);
                let meta: serde_json::Value = serde_json::from_str(&p.metadata).unwrap();
                let names: Vec<&str> =
                    meta["quantities"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
                let distinct: std::collections::HashSet<_> = names.iter().collect();
                assert_eq!(distinct.len(), names.len(), "{names:?}");
                assert!(names.iter().all(|n| n.len() <= 2 && n.starts_with(|c: char| c.is_ascii_uppercase())));
                assert_eq!(names.iter().all(|n| n.len() == 1), names.len() <= 26, "{names:?}");
                for step in p.steps.unwrap() {
                    assert!(step.text.starts_with("Define "), "{}", step.text);
                }
            }
        }
    }

    #[test]
    fn rows_depend_only_on_seed_and_index() {
        let cfg = cfg(Task::Igsm);
        let ops = cfg.check().unwrap();
        assert_eq!(cfg.problem(ops, 17), cfg.problem(ops, 17));
        assert_ne!(cfg.problem(ops, 17).prompt, cfg.problem(ops, 18).prompt);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: SynthConfig,
    }

    /// Flags and pipeline TOML share one struct; their defaults must agree.
    #[test]
    fn flag_defaults_equal_serde_defaults() {
        use clap::Parser;
        let flags = Cli::parse_from(["synth", "igsm"]).config;
        let table: SynthConfig = serde_json::from_value(serde_json::json!({ "task": "igsm" })).unwrap();
        assert_eq!(flags, table);
        let table: SynthConfig = serde_json::from_value(serde_json::json!({ "task": "igsm", "ops": 4 })).unwrap();
        assert_eq!(table.ops, Some(Span { min: 4, max: 4 }));
    }

    #[test]
    fn span_parses_counts_and_ranges() {
        assert_eq!("4".parse::<Span>().unwrap(), Span { min: 4, max: 4 });
        assert_eq!("2..5".parse::<Span>().unwrap(), Span { min: 2, max: 5 });
        assert_eq!("2..=5".parse::<Span>().unwrap(), Span { min: 2, max: 5 });
        assert!("5..2".parse::<Span>().is_err());
    }
}
