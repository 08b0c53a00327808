//! Writing: [`DatasetWriter`] pushes record batches into Parquet shards of a fixed row count and finishes
//! with the manifest.
//!
//! Each shard is written to a hidden temporary name, fsynced and renamed, so a file named `part-*` is
//! always complete. A run keeps `.forge-progress.json` (its fingerprint) until the manifest is written; a
//! rerun with the same fingerprint resumes: shards already on disk are kept and the rows they hold are
//! skipped ([`DatasetWriter::skips`]), so nothing is redone or duplicated. A run that fails on bad input
//! removes what it wrote, so no half dataset is left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, Type, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::lock::Lock;
use super::manifest::{Manifest, Provenance, ShardFile};
use super::{Shard, TableKind, to_batch};
use crate::error::{Error, Location, Result};
use crate::report::StageReport;

/// Rows per Parquet shard file.
pub const DEFAULT_ROWS_PER_SHARD: u64 = 100_000;
/// Rows per Parquet row group: small enough that `--shard` slices skip most of a file undecoded.
pub const ROW_GROUP_ROWS: usize = 16_384;

/// How a dataset is written: shard size and compression (shared by every stage that writes one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct WriteOptions {
    /// Rows per Parquet shard file
    #[arg(long, default_value_t = DEFAULT_ROWS_PER_SHARD, value_name = "N")]
    pub rows_per_shard: u64,
    /// Replace an existing output made by a different command (the same command's output is kept: it is up
    /// to date, or resumes)
    #[arg(long)]
    pub overwrite: bool,
    /// Names the writing stage keeps beside the rows (a report, a `rejected/` dataset): they count as
    /// forge's own when the directory is checked before writing. Set by the stage, never by a flag.
    #[arg(skip)]
    #[serde(skip)]
    pub companions: &'static [&'static str],
    /// Write again even when the directory holds this same run, finished (a stage whose finished output
    /// still has work to redo: `generate`'s error rows). Set by the stage, never by a flag.
    #[arg(skip)]
    #[serde(skip)]
    pub redo_finished: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { rows_per_shard: DEFAULT_ROWS_PER_SHARD, overwrite: false, companions: &[], redo_finished: false }
    }
}

/// What [`DatasetWriter::create`] found.
#[allow(clippy::large_enum_variant)] // made once per run; boxing buys nothing
pub enum Start {
    /// Write (a fresh run, or the rest of an interrupted one).
    Write(DatasetWriter),
    /// The output already holds this run's finished dataset.
    UpToDate(Manifest),
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    fingerprint: String,
    rows_per_shard: u64,
}

struct OpenShard {
    index: u64,
    temp: PathBuf,
    writer: ArrowWriter<std::fs::File>,
    rows: u64,
}

/// Writes a dataset directory: rows into Parquet shards (each renamed into place once complete), then the
/// manifest last; holds a lock on the directory while it lives.
pub struct DatasetWriter {
    /// Held while this writer lives; dropped first, so that a fresh run's directory can be removed.
    lock: Option<Lock>,
    dir: PathBuf,
    kind: TableKind,
    schema: SchemaRef,
    shard: Shard,
    names: Names,
    rows_per_shard: u64,
    provenance: Provenance,
    done: BTreeMap<u64, ShardFile>,
    open: Option<OpenShard>,
    rows: u64,
    fresh: bool,
    finished: bool,
}

impl DatasetWriter {
    /// Start writing a `kind` dataset into `dir` for input slice `shard`. `provenance.fingerprint` is
    /// filled here from the stage, config and inputs.
    pub fn create(
        dir: &Path,
        kind: TableKind,
        shard: Shard,
        options: &WriteOptions,
        mut provenance: Provenance,
    ) -> Result<Start> {
        if options.rows_per_shard == 0 {
            return Err(Error::usage("`--rows-per-shard` must be at least 1"));
        }
        provenance.fingerprint = fingerprint(&provenance, kind, options.rows_per_shard);
        let names = Names { shard };
        let progress_path = dir.join(names.progress());
        let manifest_path = dir.join(names.manifest());
        let mut fresh = !dir.exists();
        if !fresh {
            check_is_forge_dir(dir, options.companions)?;
        }
        fs_err::create_dir_all(dir)?;
        // before looking at what the directory holds: another process may be writing it
        let lock = Lock::take(dir, &names.lock())?;
        if !fresh {
            let existing = if manifest_path.exists() {
                Some(("finished", Manifest::read(&manifest_path)?.provenance.fingerprint))
            } else if progress_path.exists() {
                Some(("unfinished", read_progress(&progress_path)?.fingerprint))
            } else {
                None
            };
            // The same run is up to date or resumes, `--overwrite` or not: it only replaces other runs.
            let replaced = existing.as_ref().is_some_and(|(_, f)| *f != provenance.fingerprint) && options.overwrite;
            match &existing {
                None => {}
                Some(("finished", f)) if *f == provenance.fingerprint && options.redo_finished => {
                    remove_run(dir, shard)?;
                }
                Some(("finished", f)) if *f == provenance.fingerprint => {
                    return Ok(Start::UpToDate(Manifest::read(&manifest_path)?));
                }
                Some(("unfinished", f)) if *f == provenance.fingerprint => {} // resume
                Some(_) if options.overwrite => remove_run(dir, shard)?,
                Some((state, _)) => {
                    return Err(Error::usage(format!(
                        "`{}` holds {state} output of a different command, config or input",
                        dir.display()
                    ))
                    .with_hint("pass `--overwrite` to replace it, or write to another directory"));
                }
            }
            fresh = existing.is_none() || replaced || options.redo_finished;
        }
        let mut writer = DatasetWriter {
            lock: Some(lock),
            dir: dir.to_path_buf(),
            kind,
            schema: kind.schema(),
            shard,
            names,
            rows_per_shard: options.rows_per_shard,
            provenance,
            done: BTreeMap::new(),
            open: None,
            rows: 0,
            fresh,
            finished: false,
        };
        writer.scan_finished_shards()?;
        let progress =
            Progress { fingerprint: writer.provenance.fingerprint.clone(), rows_per_shard: options.rows_per_shard };
        write_atomic(&progress_path, &serde_json::to_vec_pretty(&progress).expect("serialisable"))?;
        Ok(Start::Write(writer))
    }

    /// Add columns after the kind's own (a filter's `rejected` table: the input columns plus the reason);
    /// readers of the kind ignore them. Call before writing.
    pub fn append_columns(&mut self, fields: impl IntoIterator<Item = arrow_schema::Field>) {
        let mut all: Vec<arrow_schema::Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        all.extend(fields);
        self.schema = std::sync::Arc::new(arrow_schema::Schema::new(all));
    }

    /// The schema rows are written with.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Does output row `row` fall in a shard an earlier, interrupted run already wrote? Producers ask
    /// this to skip work; [`DatasetWriter::write`] drops such rows either way.
    pub fn skips(&self, row: u64) -> bool {
        self.done.contains_key(&(row / self.rows_per_shard))
    }

    /// The shards an earlier, interrupted run finished from the first one on, without a gap: the rows
    /// a producer whose rows per input vary (adaptive sampling) reads back to know where it stopped.
    pub fn finished_prefix(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (at, (&index, file)) in self.done.iter().enumerate() {
            if index != at as u64 {
                break;
            }
            out.push(self.dir.join(&file.path));
        }
        out
    }

    /// How many of the next `max` rows from output row `row` lie in one shard: such a run is either all
    /// finished already ([`DatasetWriter::skips`]) or all still to do.
    pub fn run_length(&self, row: u64, max: u64) -> u64 {
        (self.rows_per_shard - row % self.rows_per_shard).min(max)
    }

    /// Step over `rows` rows that an earlier run finished, without producing them.
    pub fn skip(&mut self, rows: u64) -> Result<()> {
        if rows > 0 && !(self.skips(self.rows) && self.skips(self.rows + rows - 1)) {
            return Err(Error::usage(format!(
                "rows {}..{} are not finished yet and cannot be skipped",
                self.rows,
                self.rows + rows
            )));
        }
        self.rows += rows;
        Ok(())
    }

    /// Write `rows` (serialised by their field names into the schema's columns).
    pub fn write_rows<T: Serialize>(&mut self, rows: &[T]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&self.schema, rows)?;
        self.write(&batch)
    }

    /// Append rows in output order.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let index = self.rows / self.rows_per_shard;
            let room = self.rows_per_shard - self.rows % self.rows_per_shard;
            let take = room.min((batch.num_rows() - offset) as u64);
            if !self.done.contains_key(&index) {
                if self.open.as_ref().is_some_and(|s| s.index != index) {
                    self.close_shard()?;
                }
                if self.open.is_none() {
                    self.open_shard(index)?;
                }
                let open = self.open.as_mut().expect("opened above");
                let slice = batch.slice(offset, take as usize);
                open.writer.write(&slice).map_err(|e| Error::parquet(&open.temp, e))?;
                open.rows += take;
                if open.rows == self.rows_per_shard {
                    self.close_shard()?;
                }
            }
            self.rows += take;
            offset += take as usize;
        }
        Ok(())
    }

    /// Close the last shard and write the manifest: from here on the directory is a finished dataset.
    pub fn finish(mut self, report: StageReport) -> Result<Manifest> {
        if !report.check() {
            return Err(Error::usage(format!(
                "{}: the {} report does not add up ({} in, {} out, {:?} rejected); nothing was finished",
                self.dir.display(),
                report.stage,
                report.rows_in,
                report.rows_out,
                report.rejected
            )));
        }
        if self.open.is_some() {
            self.close_shard()?;
        }
        let files: Vec<ShardFile> = self.done.values().cloned().collect();
        let rows = files.iter().map(|f| f.rows).sum();
        if rows != self.rows {
            return Err(Error::usage(format!(
                "{}: {rows} rows in shards but {} were written; rerun with `--overwrite`",
                self.dir.display(),
                self.rows
            )));
        }
        self.provenance.finished_at = now();
        let manifest = Manifest {
            kind: self.kind,
            schema_version: self.kind.version(),
            rows,
            shard: self.shard,
            files,
            provenance: self.provenance.clone(),
            report,
        };
        let path = self.dir.join(self.names.manifest());
        write_atomic(&path, &serde_json::to_vec_pretty(&manifest).expect("serialisable"))?;
        fs_err::remove_file(self.dir.join(self.names.progress()))?;
        self.finished = true;
        Ok(manifest)
    }

    fn open_shard(&mut self, index: u64) -> Result<()> {
        let temp = self.dir.join(self.names.temp(index));
        let file = fs_err::File::create(&temp)?.into_file();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Floats (log-probabilities above all: a teacher's top k is most of a traces shard) in byte
        // stream split: their bytes regrouped by significance, which zstd then packs; lossless, and read
        // by every Parquet reader
        let parquet_schema = ArrowSchemaConverter::new().convert(&self.schema).map_err(|e| Error::parquet(&temp, e))?;
        for column in parquet_schema.columns() {
            if matches!(column.physical_type(), Type::FLOAT | Type::DOUBLE) {
                props = props
                    .set_column_dictionary_enabled(column.path().clone(), false)
                    .set_column_encoding(column.path().clone(), Encoding::BYTE_STREAM_SPLIT);
            }
        }
        let props = props.build();
        let writer =
            ArrowWriter::try_new(file, self.schema.clone(), Some(props)).map_err(|e| Error::parquet(&temp, e))?;
        self.open = Some(OpenShard { index, temp, writer, rows: 0 });
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let file = open.writer.into_inner().map_err(|e| Error::parquet(&open.temp, e))?;
        file.sync_all()
            .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", open.temp.display()))))?;
        let bytes = file.metadata()?.len();
        let name = self.names.part(open.index);
        fs_err::rename(&open.temp, self.dir.join(&name))?;
        sync_dir(&self.dir)?;
        self.done.insert(open.index, ShardFile { path: name, rows: open.rows, bytes });
        Ok(())
    }

    /// Keep full shards left by an interrupted run; anything else of this run's naming is redone.
    fn scan_finished_shards(&mut self) -> Result<()> {
        for entry in fs_err::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            let Some(index) = self.names.index_of(&name) else { continue };
            let rows = fs_err::File::open(&path)
                .ok()
                .map(fs_err::File::into_parts)
                .map(|(f, _)| f)
                .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
                .map(|r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows() as u64);
            if !self.fresh && !name.ends_with(".tmp") && rows == Some(self.rows_per_shard) {
                let bytes = fs_err::metadata(&path)?.len();
                self.done.insert(index, ShardFile { path: name, rows: self.rows_per_shard, bytes });
            } else {
                fs_err::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

impl Drop for DatasetWriter {
    /// A run that stops on an error removes its temporary shard; a fresh run removes all it wrote, so bad
    /// input leaves nothing behind. (A killed process runs no destructor: its finished shards stay, and
    /// the rerun resumes from them.)
    fn drop(&mut self) {
        drop(self.lock.take());
        if self.finished {
            return;
        }
        if let Some(open) = self.open.take() {
            drop(open.writer);
            #[allow(clippy::disallowed_methods)] // cleanup on drop: an error is ignored, its path never shown
            let _ = std::fs::remove_file(&open.temp);
        }
        if self.fresh {
            let _ = remove_run(&self.dir, self.shard);
            #[allow(clippy::disallowed_methods)] // cleanup on drop: an error is ignored, its path never shown
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn read_progress(path: &Path) -> Result<Progress> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| Error::data(Location::file(path), format!("unreadable progress file: {e}")))
}

/// Names forge writes into a dataset directory; anything else means the directory is not ours.
fn is_forge_name(name: &str) -> bool {
    (name.starts_with("part-") && name.ends_with(".parquet"))
        || (name.starts_with("manifest") && name.ends_with(".json"))
        || name.starts_with(".forge-progress")
        || name.starts_with(".forge-lock")
        || (name.starts_with(".part-") && name.ends_with(".tmp"))
        || (name.starts_with(".manifest") && name.ends_with(".tmp"))
}

/// `dir` exists and holds nothing but what forge writes (so forge may write there): shards, manifests,
/// progress files, and the writing stage's `companions`.
pub fn check_is_forge_dir(dir: &Path, companions: &[&str]) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::usage(format!("`{}` exists and is not a directory", dir.display())));
    }
    for entry in fs_err::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        // a file being written (`write_atomic`'s `.NAME.tmp`; other shards' runs write at the same time)
        let name = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")).unwrap_or(&name);
        if !is_forge_name(name) && !companions.contains(&name) {
            return Err(Error::usage(format!(
                "`{}` exists and is not a forge dataset (it holds `{name}`)",
                dir.display()
            ))
            .with_hint("write to a new directory; forge never deletes files it did not write"));
        }
    }
    Ok(())
}

/// Remove this shard-run's files (shards, manifest, progress), leaving other shard-runs' files alone.
fn remove_run(dir: &Path, shard: Shard) -> Result<()> {
    let names = Names { shard };
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if names.index_of(name).is_some() || name == names.manifest() || name == names.progress() {
            fs_err::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The shard counts N of the runs whose files `dir` holds (`1` for unsharded ones), from their names:
/// a directory written in one layout and then in another must be cleared first.
pub fn shard_counts(dir: &Path) -> Result<std::collections::BTreeSet<u64>> {
    let mut counts = std::collections::BTreeSet::new();
    if !dir.is_dir() {
        return Ok(counts);
    }
    for entry in fs_err::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let name = name.trim_start_matches('.');
        if !(name.starts_with("part-") || name.starts_with("manifest") || name.starts_with("forge-progress")) {
            continue;
        }
        match name.split_once("-of-") {
            Some((_, rest)) => {
                if let Some(n) = rest.get(..5).and_then(|d| d.parse().ok()) {
                    counts.insert(n);
                }
            }
            None => {
                counts.insert(1);
            }
        }
    }
    Ok(counts)
}

/// File names of one shard-run (`--shard I/N`) in a dataset directory.
#[derive(Debug, Clone, Copy)]
struct Names {
    shard: Shard,
}

impl Names {
    fn part(self, index: u64) -> String {
        if self.shard.count == 1 {
            format!("part-{index:05}.parquet")
        } else {
            format!("part-{:05}-of-{:05}-{index:05}.parquet", self.shard.index, self.shard.count)
        }
    }

    fn temp(self, index: u64) -> String {
        format!(".{}.tmp", self.part(index))
    }

    /// The shard index of one of this run's part files (or their temporary names).
    fn index_of(self, name: &str) -> Option<u64> {
        let name = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")).unwrap_or(name);
        let prefix = self.part(0);
        let prefix = prefix.strip_suffix("00000.parquet").expect("part names end in the index");
        let digits = name.strip_suffix(".parquet")?.strip_prefix(prefix)?;
        (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
    }

    fn progress(self) -> String {
        if self.shard.count == 1 {
            ".forge-progress.json".into()
        } else {
            format!(".forge-progress-{:05}-of-{:05}.json", self.shard.index, self.shard.count)
        }
    }

    fn manifest(self) -> String {
        Manifest::file_name(self.shard)
    }

    fn lock(self) -> String {
        if self.shard.count == 1 {
            ".forge-lock.json".into()
        } else {
            format!(".forge-lock-{:05}-of-{:05}.json", self.shard.index, self.shard.count)
        }
    }
}

fn fingerprint(p: &Provenance, kind: TableKind, rows_per_shard: u64) -> String {
    let key = serde_json::json!([p.forge_version, p.stage, kind, rows_per_shard, p.config, p.inputs]);
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.to_string().as_bytes()))
}

/// The time now, RFC 3339 (UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Write a small file so that it is either absent or complete: temp name, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = fs_err::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs_err::rename(&temp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}
