//! forge makes reasoning data and trains on it.
//!
//! ```text
//! problems ──generate──▶ traces ──filter──▶ curated ──journey──▶ sft set ──train-sft──▶ checkpoint ──eval──▶ report
//!    ▲ (import, synth)
//! ```
//!
//! Every stage reads a dataset and writes a dataset ([`dataset`]); each stage module exposes a config
//! struct shared by its CLI flags and pipeline TOML, and a `run` function returning the output's
//! manifest with its [`report::StageReport`]. [`pipeline`] chains the stages from a TOML file.

/// Serialize a type as its `Display` text and read it back with `FromStr`, so flags, pipeline TOML and
/// manifests all write it the same way (`"3/8"`, `"0.1:0.9"`).
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_string;

// Layers, bottom up, a blank line between them (README's Layout section; `tests/it/layers.rs` checks
// that imports go downwards).
pub mod cache;
pub mod error;
pub mod expr;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rng;

pub mod config;
pub mod dataset;

pub mod stage;

pub mod model;

pub mod formats;

pub mod verify;

pub mod teacher;

// The stages (`pipeline::registry::STAGES` lists them in pipeline order).
pub mod eval;
pub mod export;
pub mod filter;
pub mod generate;
pub mod import;
pub mod init_model;
pub mod journey;
pub mod merge_lora;
pub mod serve;
pub mod stats;
pub mod synth;
pub mod train;

pub mod pipeline;

pub use error::{Error, Location, Result};

use std::path::PathBuf;

use dataset::{Manifest, Shard, WriteOptions};

/// Where and how a stage writes its output dataset (flattened into every writing subcommand).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
pub struct OutputArgs {
    /// Output dataset directory
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Process only the I-th of N slices of the input (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/64`;
    /// the N runs write into the same directory
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    pub shard: Shard,
    /// How the output is written
    #[command(flatten)]
    #[serde(flatten)]
    pub write: WriteOptions,
}

/// How this invocation was made, for provenance and for how much to print.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The command line, as given (recorded in provenance).
    pub command: Vec<String>,
    /// Print nothing but errors and results (`--quiet`).
    pub quiet: bool,
}

/// A writing stage's result.
#[derive(Debug)]
pub enum Outcome {
    /// The output was written (or its unfinished part was).
    Written(Manifest),
    /// The output already held the finished result of this same command; nothing was done.
    UpToDate(Manifest),
}

impl Outcome {
    /// The output's manifest.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Outcome::Written(m) | Outcome::UpToDate(m) => m,
        }
    }
}

/// candle allocates a fresh buffer for every tensor operation. glibc serves large ones with `mmap` and
/// gives them back with `munmap`, so each operation of a training or decoding step faulted in freshly
/// zeroed pages: 45% of a training step's time went to page faults (perf, 10M-parameter model). Serve
/// every allocation from the heap and keep freed memory there for reuse (training: 415 -> 755 tokens/s).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; call it before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // read as SIZE_MAX: never trim
    }
}
