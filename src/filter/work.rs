//! The filter's working files (`OUT/.forge-filter/`): what one map/reduce step hands the next. Each file
//! is written under a temporary name and renamed when complete, so a file that exists is whole; a
//! `fingerprint.json` ties them to one command, config and input.
//!
//! Encoding: little-endian integers, strings as a `u32` length then UTF-8, options as a `u8` tag.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::dataset::Shard;
use crate::error::{Error, Result};

pub const DIR: &str = ".forge-filter";

pub struct Work {
    pub dir: PathBuf,
}

impl Work {
    /// Open (or start) the working directory of `out` for `fingerprint`; files of another fingerprint
    /// are an error unless `overwrite`, which removes them.
    pub fn open(out: &Path, fingerprint: &str, overwrite: bool) -> Result<Work> {
        let dir = out.join(DIR);
        let stamp = dir.join("fingerprint.json");
        if stamp.exists() {
            let found: serde_json::Value = serde_json::from_slice(&fs_err::read(&stamp)?).unwrap_or_default();
            if found["fingerprint"].as_str() != Some(fingerprint) {
                if !overwrite {
                    return Err(Error::usage(format!(
                        "`{}` holds working files of a different filter command, config or input",
                        dir.display()
                    ))
                    .with_hint("pass `--overwrite` to replace them"));
                }
                fs_err::remove_dir_all(&dir)?;
            }
        }
        fs_err::create_dir_all(&dir)?;
        if !stamp.exists() {
            let stamp_json = serde_json::json!({ "fingerprint": fingerprint });
            write_file(&stamp, &serde_json::to_vec_pretty(&stamp_json).expect("serialisable"))?;
        }
        Ok(Work { dir })
    }

    pub fn facts(&self, shard: Shard) -> PathBuf {
        self.dir.join(format!("facts-{}-of-{}.bin", shard.index, shard.count))
    }

    pub fn band(&self, band: usize, shard: Shard) -> PathBuf {
        self.dir.join(format!("band-{band:03}-{}-of-{}.bin", shard.index, shard.count))
    }

    /// `--semantic-dedup`: a `u32` dimension, then per problem first met in the slice its row (`u64`) and
    /// its prompt's unit vector (`f32`s).
    pub fn vectors(&self, shard: Shard) -> PathBuf {
        self.dir.join(format!("vectors-{}-of-{}.bin", shard.index, shard.count))
    }

    pub fn edges(&self, band: usize) -> PathBuf {
        self.dir.join(format!("edges-{band:03}.bin"))
    }

    pub fn decisions(&self, shard: Shard) -> PathBuf {
        self.dir.join(format!("decisions-{}-of-{}.bin", shard.index, shard.count))
    }

    pub fn evals(&self) -> PathBuf {
        self.dir.join("evals.json")
    }

    /// How many slices the signatures step was run in: every `facts-I-of-N` must be there.
    pub fn map_shards(&self) -> Result<u64> {
        let mut counts = std::collections::BTreeMap::<u64, Vec<u64>>::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("facts-").and_then(|r| r.strip_suffix(".bin")) else { continue };
            if let Some((i, n)) = rest.split_once("-of-")
                && let (Ok(i), Ok(n)) = (i.parse(), n.parse())
            {
                counts.entry(n).or_default().push(i);
            }
        }
        let hint = "run `forge filter ... --step signatures --shard I/N` for every I first";
        let Some((&n, done)) = counts.iter().next_back() else {
            return Err(Error::usage(format!("no signatures in `{}`", self.dir.display())).with_hint(hint));
        };
        if counts.len() > 1 {
            return Err(Error::usage(format!(
                "`{}` holds signatures of different shard counts ({:?})",
                self.dir.display(),
                counts.keys().collect::<Vec<_>>()
            ))
            .with_hint("pass `--overwrite` to the signatures step to start again"));
        }
        let missing: Vec<u64> = (0..n).filter(|i| !done.contains(i)).collect();
        if !missing.is_empty() {
            return Err(Error::usage(format!(
                "signatures of shard(s) {missing:?} of {n} are missing in `{}`",
                self.dir.display()
            ))
            .with_hint(hint));
        }
        Ok(n)
    }
}

/// Write `bytes` to `path` atomically (temporary name, then rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_name(path);
    fs_err::write(&temp, bytes)?;
    fs_err::rename(&temp, path)?;
    Ok(())
}

/// `.NAME.PID.tmp`: tasks of one step running at once (a Slurm array) may write the same file (the
/// fingerprint), each whole under its own temporary name.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("work");
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// A buffered file that appears under its name only when [`Sink::finish`] is called.
pub struct Sink {
    path: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<fs_err::File>>,
}

impl Sink {
    pub fn create(path: PathBuf) -> Result<Sink> {
        let temp = temp_name(&path);
        let writer = BufWriter::with_capacity(1 << 20, fs_err::File::create(&temp)?);
        Ok(Sink { path, temp, writer: Some(writer) })
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.as_mut().expect("open").write_all(bytes)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.writer.take().expect("open").flush()?;
        fs_err::rename(&self.temp, &self.path)?;
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            #[allow(clippy::disallowed_methods)] // cleanup on drop: an error is ignored, its path never shown
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v.as_bytes());
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    pub fn opt_bool(&mut self, v: Option<bool>) {
        self.u8(match v {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }
}

/// Reads values back in the order [`Enc`] wrote them; a short or malformed file is an error naming it.
pub struct Dec<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl<'a> Dec<'a> {
    pub fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Dec { bytes, path }
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::usage(format!("`{}` is cut short", self.path.display()))
                .with_hint("rerun the step that wrote it with `--overwrite`"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    pub fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::usage(format!("`{}` is corrupt", self.path.display())))
    }
    pub fn opt_string(&mut self) -> Result<Option<String>> {
        Ok(if self.u8()? == 0 { None } else { Some(self.string()?) })
    }
    pub fn opt_bool(&mut self) -> Result<Option<bool>> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        })
    }
}
