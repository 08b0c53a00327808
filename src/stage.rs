//! The shape every stage has: a name (its subcommand), one settings struct read from flags and from a
//! pipeline table alike, the flags that say where its result goes, and a `run` that reports what it did
//! in one form ([`Done`]). The registry (`src/pipeline/registry.rs`) lists the stages; the command line and `forge run` are built
//! from that list, so adding a stage is one module with an `impl Stage` and one line there.

use std::fmt::Debug;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::{Context, Outcome, OutputArgs};

/// A stage of forge: a subcommand, and (when it writes a directory) a `[[stage]]` table of `forge run`.
pub trait Stage {
    /// The subcommand (`train-sft`); a pipeline table is keyed by it with `_` for `-` (`train_sft`).
    const NAME: &'static str;
    /// One line for `forge --help`.
    const ABOUT: &'static str;
    /// The subcommand's longer description, when one line is not enough.
    const LONG_ABOUT: Option<&'static str> = None;
    /// The examples closing `forge NAME --help`.
    const EXAMPLES: &'static str;
    /// The settings: flags on the command line, a table in a pipeline (same names, same defaults).
    type Config: clap::Args + clap::FromArgMatches + Serialize + DeserializeOwned + Debug;
    /// Where the result goes and how it is shown (`-o DIR`, `--shard`, `--json`).
    type Target: Target;

    /// Run the stage: read its inputs, write its output to `target`, say what it did.
    fn run(cfg: &Self::Config, target: &Self::Target, ctx: &Context) -> Result<Done>;

    /// A TOML file of settings named by the target's flags (`filter --config FILE`): read first, flags
    /// given on the command line override it.
    fn settings_file(_target: &Self::Target) -> Option<&Path> {
        None
    }
}

/// Where a stage's result goes: flags on the command line, filled in from the step's directory in a
/// pipeline.
pub trait Target: clap::Args + clap::FromArgMatches + Serialize + Debug + Clone + Sized {
    /// The target of a pipeline step writing `dir`; `None` for a stage that cannot be a pipeline step
    /// (one that writes no directory, as `verify` and `stats`, or one left out of pipelines, as `export`).
    fn in_pipeline(dir: &Path) -> Option<Self>;

    /// A pipeline step's work cut into `shards` slices of its input: phases that run one after another,
    /// each of independent tasks (one Slurm job array per phase). A stage that does not shard has one
    /// task.
    fn phases(shards: u64) -> std::result::Result<Vec<Phase>, String> {
        match shards {
            1 => Ok(vec![Phase { step: None, tasks: 1 }]),
            _ => Err("runs as one task: it does not take `shards`".into()),
        }
    }

    /// The directory the stage writes, where it has one (a dataset path may be `s3://…`).
    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        None
    }

    /// This target narrowed to task `task` of phase `phase` of [`Target::phases`]`(shards)`.
    fn for_task(&mut self, _shards: u64, _phase: usize, _task: u64) {}
}

/// One phase of a pipeline step: `tasks` independent tasks; `step` names it where a stage has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// The step's name (`signatures`, `buckets`, ...), where the stage has several.
    pub step: Option<&'static str>,
    /// Independent tasks in the phase.
    pub tasks: u64,
}

/// A dataset stage in a pipeline writes `dir` whole (no `--shard`), replacing the output of other
/// settings: a step's output is determined by its settings and inputs alone.
impl Target for OutputArgs {
    fn in_pipeline(dir: &Path) -> Option<OutputArgs> {
        let write = crate::dataset::WriteOptions { overwrite: true, ..Default::default() };
        Some(OutputArgs { output: dir.to_path_buf(), shard: crate::dataset::Shard::ALL, write })
    }

    /// `shards` tasks, task I writing `--shard I/shards` into the one directory.
    fn phases(shards: u64) -> std::result::Result<Vec<Phase>, String> {
        Ok(vec![Phase { step: None, tasks: shards }])
    }

    fn for_task(&mut self, shards: u64, _phase: usize, task: u64) {
        self.shard = crate::dataset::Shard { index: task, count: shards };
    }

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        Some(&mut self.output)
    }
}

/// What a stage did, in the one form the command line and `forge run` both read (serialized: the
/// figures of `pipeline-summary.json` and of a pipeline task's record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Done {
    /// The output already held this same run's finished result; nothing was done.
    #[serde(skip)]
    pub up_to_date: bool,
    /// Rows read.
    pub rows_in: Option<u64>,
    /// Rows written.
    pub rows_out: Option<u64>,
    /// Evaluations: pass@1.
    pub accuracy: Option<f64>,
    /// Training: the final training and held-out losses.
    pub loss: Option<f64>,
    /// The final held-out loss.
    pub eval_loss: Option<f64>,
    /// Datasets: rows left out, by reason (`contaminated`, `incorrect`, ...).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// What the command line prints on stderr when the stage ends (unless `--quiet`).
    #[serde(skip)]
    pub summary: String,
    /// Data the command line prints on stdout (`stats`, `eval --json`, a `verify` pair's verdict).
    #[serde(skip)]
    pub stdout: Option<String>,
    /// A check the user asked for failed (`verify --gold --pred` not equivalent): exit status 1.
    #[serde(skip)]
    pub check_failed: bool,
}

impl Done {
    /// A dataset stage's result: rows in and out from the manifest's report, and the usual summary.
    pub fn dataset(outcome: &Outcome, dir: &Path) -> Done {
        let m = outcome.manifest();
        let up_to_date = matches!(outcome, Outcome::UpToDate(_));
        let summary = if up_to_date {
            format!("`{}` is up to date ({} rows); nothing to do", dir.display(), m.rows)
        } else {
            format!("{}\nwrote {} rows in {} file(s) to `{}`", m.report, m.rows, m.files.len(), dir.display())
        };
        Done {
            up_to_date,
            rows_in: Some(m.report.rows_in),
            rows_out: Some(m.report.rows_out),
            rejected: m.report.rejected.clone(),
            summary,
            ..Done::default()
        }
    }
}

/// For a stage whose result goes nowhere but the terminal: no flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, clap::Args)]
pub struct NoTarget {}

impl Target for NoTarget {
    fn in_pipeline(_: &Path) -> Option<NoTarget> {
        None
    }
}

/// For a stage that writes one directory: `-o DIR`.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct DirTarget {
    /// Directory to write
    #[arg(short, long, value_name = "DIR")]
    pub output: std::path::PathBuf,
}

impl Target for DirTarget {
    fn in_pipeline(_: &Path) -> Option<DirTarget> {
        None
    }

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        Some(&mut self.output)
    }
}
