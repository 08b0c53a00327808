//! Datasets: the only module that touches Parquet, JSONL and CSV.
//!
//! A dataset is a directory of Parquet shards (`part-00000.parquet`, ...) plus `manifest.json` (kind,
//! schema version, row counts, provenance). Readers also take a single Parquet file, JSONL, CSV (import
//! only) and directories of Parquet written by other tools. Work streams: readers pull record batches
//! or records one at a time, writers push batches into shards, so memory does not grow with input size.
//!
//! `--shard I/N` selects the I-th of N contiguous row ranges of the input, so N copies of a stage (a
//! Slurm array, a Kubernetes indexed Job) together cover every row once. Each copy writes its own
//! files and `manifest-I-of-N.json` into the same directory; readers treat the directory as one dataset
//! once all N manifests are there.

mod lock;
mod manifest;
mod read;
pub mod remote;
mod schema;
mod value;
mod write;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use manifest::{InputRef, Manifest, Provenance, ShardFile};
pub use read::{Format, Input, InputFile, Record};
pub use schema::{
    Calc, ChatMessage, Finish, Problem, Sampling, SegmentKind, SegmentSpan, SftRow, Step, TableKind, TokenLogprob,
    Trace, problems_schema, traces_schema, type_name,
};
pub use value::{json_type_name, to_batch};
pub(crate) use write::write_atomic;
pub use write::{
    DEFAULT_ROWS_PER_SHARD, DatasetWriter, Start, WriteOptions, check_is_forge_dir as check_output_dir, now,
    shard_counts,
};

/// The I-th of N deterministic slices of an input (`--shard I/N`, 0-based); written `"I/N"` in TOML, JSON
/// and manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which slice (0-based).
    pub index: u64,
    /// How many slices.
    pub count: u64,
}

impl Shard {
    /// The whole input: one slice.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The rows of `0..total` this shard covers: contiguous, so order is kept and Parquet row groups
    /// outside the slice are never decoded.
    pub fn range(self, total: u64) -> Range<u64> {
        let at = |i: u64| (u128::from(total) * u128::from(i) / u128::from(self.count)) as u64;
        at(self.index)..at(self.index + 1)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

crate::serde_as_string!(Shard);

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a shard: expected I/N with 0 <= I < N, e.g. `3/8`");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_row_once() {
        for total in [0u64, 1, 7, 100, 1001] {
            for count in [1u64, 2, 3, 8] {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next, "total {total}, shard {index}/{count}");
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn shards_are_written_as_i_slash_n() {
        let shard = Shard { index: 3, count: 8 };
        assert_eq!(serde_json::to_string(&shard).unwrap(), "\"3/8\"");
        assert_eq!(serde_json::from_str::<Shard>("\"3/8\"").unwrap(), shard);
        assert!(serde_json::from_str::<Shard>("\"8/8\"").is_err());
    }

    #[test]
    fn shard_parse_rejects_out_of_range() {
        assert_eq!("3/8".parse::<Shard>().unwrap(), Shard { index: 3, count: 8 });
        assert!("8/8".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("3".parse::<Shard>().is_err());
    }
}
