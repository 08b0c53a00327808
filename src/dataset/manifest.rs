//! `manifest.json`: what a dataset directory holds and how it was made. A directory without a manifest is
//! not a finished forge dataset, which is how a crashed run is told apart from a finished one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Shard, TableKind};
use crate::error::{Error, Location, Result};
use crate::report::StageReport;

/// `manifest.json`: what a dataset directory holds and how it was made; written last, so a directory
/// with a manifest is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The table kind.
    pub kind: TableKind,
    /// The kind's schema version when written.
    pub schema_version: u32,
    /// Rows in all files.
    pub rows: u64,
    /// Which slice of the stage's input this run covered (`0/1` when unsharded).
    pub shard: Shard,
    /// The data files, in order.
    pub files: Vec<ShardFile>,
    /// How the rows were made.
    pub provenance: Provenance,
    /// The stage's counts (rows in, out, rejected by reason).
    pub report: StageReport,
}

/// One data file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// Relative to the dataset directory.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// How a dataset was made: the stage, its command and settings, its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The forge version that wrote it.
    pub forge_version: String,
    /// The stage (`generate`, `filter`, ...).
    pub stage: String,
    /// The command line, as given.
    pub command: Vec<String>,
    /// The stage's whole configuration, defaults included.
    pub config: serde_json::Value,
    /// The datasets read.
    pub inputs: Vec<InputRef>,
    /// Hash of stage, config and inputs: a rerun with the same fingerprint resumes or is up to date.
    pub fingerprint: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
}

impl Provenance {
    /// The provenance of a run starting now; the fingerprint and end time are filled in by the writer.
    pub fn start(stage: &str, command: &[String], config: &impl Serialize, inputs: Vec<InputRef>) -> Provenance {
        Provenance {
            forge_version: env!("CARGO_PKG_VERSION").into(),
            stage: stage.into(),
            command: command.to_vec(),
            config: serde_json::to_value(config).expect("configs serialise"),
            inputs,
            fingerprint: String::new(),
            started_at: super::now(),
            finished_at: String::new(),
        }
    }
}

/// A dataset a stage read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// Where it was.
    pub path: PathBuf,
    /// Rows read from it.
    pub rows: u64,
    /// xxh3-128 of the input files' bytes, in reading order: a changed input is a different run.
    #[serde(default)]
    pub xxh3: String,
}

impl Manifest {
    /// The manifest's file name: `manifest.json`, or `manifest-00003-of-00008.json` for a sharded run.
    pub fn file_name(shard: Shard) -> String {
        if shard.count == 1 {
            "manifest.json".to_string()
        } else {
            format!("manifest-{:05}-of-{:05}.json", shard.index, shard.count)
        }
    }

    /// Read a `manifest.json`; a located error when it is not one.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = fs_err::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::data(Location::line(path, e.line() as u64), format!("invalid manifest: {e}"))
                .with_hint("the manifest is written by forge; if it was edited by hand, restore it or rerun the stage")
        })
    }
}
