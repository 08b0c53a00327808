//! `manifest.json`: what a dataset directory holds and how it was made. A directory without a manifest is
//! not a finished forge dataset, which is how a crashed run is told apart from a finished one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Shard, TableKind};
use crate::error::{Error, Location, Result};
use crate::report::StageReport;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: TableKind,
    pub schema_version: u32,
    pub rows: u64,
    /// Which slice of the stage's input this run covered (`0/1` when unsharded).
    pub shard: Shard,
    pub files: Vec<ShardFile>,
    pub provenance: Provenance,
    pub report: StageReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// Relative to the dataset directory.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub forge_version: String,
    pub stage: String,
    pub command: Vec<String>,
    pub config: serde_json::Value,
    pub inputs: Vec<InputRef>,
    /// Hash of stage, config and inputs: a rerun with the same fingerprint resumes or is up to date.
    pub fingerprint: String,
    pub started_at: String,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    pub path: PathBuf,
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

    pub fn read(path: &Path) -> Result<Manifest> {
        let text = fs_err::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::data(Location::line(path, e.line() as u64), format!("invalid manifest: {e}"))
                .with_hint("the manifest is written by forge; if it was edited by hand, restore it or rerun the stage")
        })
    }
}
