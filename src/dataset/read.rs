//! Reading: a path (dataset directory, Parquet file, JSONL, CSV) becomes an [`Input`], a list of files
//! with their row counts, which streams either untyped [`Record`]s (for import and stats) or record
//! batches checked against a table schema (for the stages). Every error names the file, the line or
//! row, and the column.

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::manifest::{InputRef, Manifest};
use super::schema::{TableKind, type_name};
use super::value::{check_object, json_type_name, to_batch, to_objects};
use crate::error::{Error, Location, Result};

/// Rows per record batch when reading.
pub const BATCH_ROWS: usize = 4096;

/// A data file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet (`.parquet`, `.pq`)
    Parquet,
    /// JSON Lines (`.jsonl`, `.ndjson`, `.json`)
    Jsonl,
    /// Comma-separated values with a header (`.csv`)
    Csv,
}

impl Format {
    /// The format a file name implies: `.parquet`/`.pq`, `.jsonl`/`.ndjson`/`.json`, `.csv`.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One data file of an input.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Rows in it.
    pub rows: u64,
}

/// One untyped input row and where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where it was read (file and line or row).
    pub location: Location,
    /// Its columns and values.
    pub fields: Map<String, Value>,
}

/// An opened input: its files in reading order, and the table kind when a manifest says it.
#[derive(Debug, Clone)]
pub struct Input {
    /// The dataset directory or file.
    pub path: PathBuf,
    /// Its data files, in reading order.
    pub files: Vec<InputFile>,
    /// The table kind its manifest names, if any.
    pub kind: Option<TableKind>,
}

impl Input {
    /// Open a dataset directory, a Parquet file or a JSONL/CSV file, and count its rows.
    pub fn open(path: &Path) -> Result<Input> {
        Input::open_as(path, None)
    }

    /// As [`Input::open`], with the format of a single file given instead of taken from its extension.
    pub fn open_as(path: &Path, format: Option<Format>) -> Result<Input> {
        let meta = fs_err::metadata(path)?;
        if meta.is_dir() {
            return open_dir(path);
        }
        let format = format.or_else(|| Format::of(path)).ok_or_else(|| {
            Error::data(Location::file(path), "cannot tell the file's format from its extension")
                .with_hint("name it `.parquet`, `.jsonl` or `.csv`, or pass `--format`")
        })?;
        let rows = count_rows(path, format)?;
        if rows == 0 {
            return Err(Error::data(Location::file(path), "the file has no rows"));
        }
        Ok(Input {
            path: path.to_path_buf(),
            files: vec![InputFile { path: path.to_path_buf(), format, rows }],
            kind: None,
        })
    }

    /// Rows in all files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// What a manifest records of this input: path, rows and a content hash (xxh3 runs at several GB/s,
    /// far faster than any stage reads).
    pub fn reference(&self) -> Result<InputRef> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        for file in &self.files {
            let mut f = fs_err::File::open(&file.path)?;
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(InputRef { path: self.path.clone(), rows: self.rows(), xxh3: format!("{:032x}", hasher.digest128()) })
    }

    /// Untyped rows `range` (global row indices over all files, in order).
    pub fn records(&self, range: Range<u64>) -> impl Iterator<Item = Result<Record>> + '_ {
        self.per_file(range).flat_map(|(file, local)| -> Box<dyn Iterator<Item = Result<Record>>> {
            match file.format {
                Format::Jsonl => Box::new(JsonlRecords::open(&file.path, local)),
                Format::Csv => csv_records(&file.path, local),
                Format::Parquet => Box::new(parquet_batches(&file.path, None, local).flat_map(|batch| {
                    match batch {
                        Err(e) => vec![Err(e)],
                        Ok((first_row, batch)) => match to_objects(&batch) {
                            Err(e) => vec![Err(e)],
                            Ok(objects) => objects
                                .into_iter()
                                .zip(first_row..)
                                .map(|(fields, row)| Ok(Record { location: Location::row(&file.path, row), fields }))
                                .collect(),
                        },
                    }
                })),
            }
        })
    }

    /// Rows `range` as record batches of `kind`'s schema: columns checked, cast where the type is
    /// compatible (e.g. `large_string` from polars), missing optional columns filled with nulls.
    pub fn batches(&self, kind: TableKind, range: Range<u64>) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let schema = kind.schema();
        self.per_file(range).flat_map(move |(file, local)| -> Box<dyn Iterator<Item = Result<RecordBatch>>> {
            match file.format {
                Format::Parquet => {
                    let schema = schema.clone();
                    let path = file.path.clone();
                    Box::new(
                        parquet_batches(&file.path, Some(&schema), local)
                            .map(move |b| b.and_then(|(row, batch)| conform(&path, row, batch, &schema))),
                    )
                }
                Format::Jsonl => Box::new(checked_json_batches(JsonlRecords::open(&file.path, local), schema.clone())),
                Format::Csv => Box::new(std::iter::once(Err(Error::data(
                    Location::file(&file.path),
                    format!("a `{}` table cannot be read from CSV", kind.name()),
                )
                .with_hint("`forge import` reads CSV; use it to make a problems dataset first")))),
            }
        })
    }

    /// Typed rows of `range`, deserialised from `kind`'s record batches.
    pub fn rows_of<T: serde::de::DeserializeOwned>(
        &self,
        kind: TableKind,
        range: Range<u64>,
    ) -> impl Iterator<Item = Result<Vec<T>>> + '_ {
        self.batches(kind, range).map(move |batch| {
            let batch = batch?;
            serde_arrow::from_record_batch(&batch)
                .map_err(|e| Error::usage(format!("cannot read {} rows: {e}", kind.name())))
        })
    }

    /// Split a global row range into (file, file-local range) pairs.
    fn per_file(&self, range: Range<u64>) -> impl Iterator<Item = (&InputFile, Range<u64>)> {
        let mut start = 0u64;
        self.files.iter().filter_map(move |file| {
            let file_range = start..start + file.rows;
            start += file.rows;
            let lo = range.start.max(file_range.start);
            let hi = range.end.min(file_range.end);
            (lo < hi).then(|| (file, lo - file_range.start..hi - file_range.start))
        })
    }
}

fn open_dir(dir: &Path) -> Result<Input> {
    let manifest_path = dir.join("manifest.json");
    let mut manifests = Vec::new();
    if manifest_path.exists() {
        manifests.push(Manifest::read(&manifest_path)?);
    } else {
        let mut sharded: Vec<Manifest> = Vec::new();
        for entry in sorted_entries(dir)? {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("manifest-") && name.ends_with(".json") {
                sharded.push(Manifest::read(&entry)?);
            }
        }
        if let Some(first) = sharded.first() {
            let count = first.shard.count;
            let missing: Vec<String> = (0..count)
                .filter(|i| !sharded.iter().any(|m| m.shard.index == *i && m.shard.count == count))
                .map(|i| i.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(Error::data(
                    Location::file(dir),
                    format!("the dataset is incomplete: shard(s) {} of {count} have not finished", missing.join(", ")),
                )
                .with_hint(format!("run (or rerun) the missing `--shard I/{count}` jobs")));
            }
            sharded.sort_by_key(|m| m.shard.index);
            manifests = sharded;
        }
    }
    if !manifests.is_empty() {
        let kind = manifests[0].kind;
        let mut files = Vec::new();
        for m in &manifests {
            if m.kind != kind {
                return Err(Error::data(Location::file(dir), "shard manifests disagree on the table kind"));
            }
            files.extend(m.files.iter().map(|f| InputFile {
                path: dir.join(&f.path),
                format: Format::Parquet,
                rows: f.rows,
            }));
        }
        return Ok(Input { path: dir.to_path_buf(), files, kind: Some(kind) });
    }
    let mut files = Vec::new();
    let mut unfinished = false;
    collect_files(dir, &mut files, &mut unfinished)?;
    if unfinished {
        return Err(Error::data(Location::file(dir), "this is an unfinished forge run: it has no manifest.json")
            .with_hint("rerun the command that writes it: it resumes where it stopped"));
    }
    if files.is_empty() {
        return Err(Error::data(Location::file(dir), "no dataset here: no manifest.json, *.parquet or *.jsonl files"));
    }
    let files = files
        .into_iter()
        .map(|(path, format)| Ok(InputFile { rows: count_rows(&path, format)?, path, format }))
        .collect::<Result<Vec<_>>>()?;
    Ok(Input { path: dir.to_path_buf(), files, kind: None })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = fs_err::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

/// Parquet and JSONL files under `dir` (sorted, recursive, hidden names skipped), as other tools lay
/// them out (`data/train-00000-of-00002.parquet`).
fn collect_files(dir: &Path, files: &mut Vec<(PathBuf, Format)>, unfinished: &mut bool) -> Result<()> {
    for path in sorted_entries(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(".forge-progress") {
            *unfinished = true;
        }
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, files, unfinished)?;
        } else if let Some(format @ (Format::Parquet | Format::Jsonl)) = Format::of(&path) {
            files.push((path, format));
        }
    }
    Ok(())
}

fn count_rows(path: &Path, format: Format) -> Result<u64> {
    match format {
        Format::Parquet => Ok(parquet_builder(path)?.metadata().file_metadata().num_rows() as u64),
        Format::Jsonl => {
            let mut reader = BufReader::with_capacity(1 << 20, fs_err::File::open(path)?);
            let mut line = Vec::new();
            let mut rows = 0;
            while reader.read_until(b'\n', &mut line)? > 0 {
                rows += u64::from(!is_blank(&line));
                line.clear();
            }
            Ok(rows)
        }
        Format::Csv => {
            let mut reader = csv_reader(path)?;
            let mut record = csv::ByteRecord::new();
            let mut rows = 0;
            while reader.read_byte_record(&mut record).map_err(|e| csv_error(path, e))? {
                rows += 1;
            }
            Ok(rows)
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// JSON objects, one per non-blank line.
struct JsonlRecords {
    path: PathBuf,
    reader: Option<BufReader<fs_err::File>>,
    open_error: Option<Error>,
    range: Range<u64>,
    line: Vec<u8>,
    line_no: u64,
    row: u64,
}

impl JsonlRecords {
    fn open(path: &Path, range: Range<u64>) -> Self {
        let (reader, open_error) = match fs_err::File::open(path) {
            Ok(f) => (Some(BufReader::with_capacity(1 << 20, f)), None),
            Err(e) => (None, Some(e.into())),
        };
        JsonlRecords { path: path.to_path_buf(), reader, open_error, range, line: Vec::new(), line_no: 0, row: 0 }
    }

    fn parse(&self) -> Result<Map<String, Value>> {
        let location = || Location::line(&self.path, self.line_no);
        let mut bytes = self.line.as_slice();
        if self.line_no == 1 {
            bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::data(location(), format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1))
                .with_hint("forge reads UTF-8 text; convert the file, e.g. `iconv -f latin1 -t utf-8`")
        })?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(other) => {
                Err(Error::data(location(), format!("expected a JSON object, found {}", json_type_name(&other))))
            }
            Err(e) => Err(Error::data(location(), format!("JSON syntax error at character {}: {e}", e.column()))),
        }
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.open_error.take() {
            return Some(Err(e));
        }
        let reader = self.reader.as_mut()?;
        loop {
            if self.row >= self.range.end {
                return None;
            }
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.reader = None;
                    return Some(Err(e.into()));
                }
            }
            self.line_no += 1;
            if is_blank(&self.line) {
                continue;
            }
            self.row += 1;
            if self.row <= self.range.start {
                continue;
            }
            let record =
                self.parse().map(|fields| Record { location: Location::line(&self.path, self.line_no), fields });
            if record.is_err() {
                self.reader = None;
            }
            return Some(record);
        }
    }
}

/// Check JSON records against `schema` and gather them into batches.
fn checked_json_batches(
    mut records: impl Iterator<Item = Result<Record>>,
    schema: SchemaRef,
) -> impl Iterator<Item = Result<RecordBatch>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut rows = Vec::with_capacity(BATCH_ROWS);
        while rows.len() < BATCH_ROWS {
            let record = match records.next() {
                None => break,
                Some(Ok(record)) => record,
                Some(Err(e)) => {
                    failed = true;
                    return Some(Err(e));
                }
            };
            if let Err(m) = check_object(&record.fields, schema.fields(), "") {
                failed = true;
                return Some(Err(Error::data(record.location.column(m.column), m.message)));
            }
            rows.push(Value::Object(record.fields));
        }
        (!rows.is_empty()).then(|| to_batch(&schema, &rows))
    })
}

fn csv_reader(path: &Path) -> Result<csv::Reader<fs_err::File>> {
    Ok(csv::ReaderBuilder::new().flexible(false).from_reader(fs_err::File::open(path)?))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(csv::Position::line).unwrap_or(0);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the row has {len} fields, the header has {expected_len}")
        }
        _ => e.to_string(),
    };
    Error::data(Location::line(path, line), message)
}

fn csv_records(path: &Path, range: Range<u64>) -> Box<dyn Iterator<Item = Result<Record>>> {
    let path = path.to_path_buf();
    let opened = csv_reader(&path).and_then(|mut r| {
        let headers = r.headers().map_err(|e| csv_error(&path, e))?.clone();
        Ok((r, headers))
    });
    let (mut reader, headers) = match opened {
        Ok(state) => state,
        Err(e) => return Box::new(std::iter::once(Err(e))),
    };
    let mut row = 0u64;
    let mut failed = false;
    Box::new(std::iter::from_fn(move || {
        let mut record = csv::StringRecord::new();
        loop {
            if failed || row >= range.end {
                return None;
            }
            match reader.read_record(&mut record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    failed = true;
                    return Some(Err(csv_error(&path, e)));
                }
            }
            row += 1;
            if row > range.start {
                break;
            }
        }
        let line = record.position().map(csv::Position::line).unwrap_or(row);
        let fields =
            headers.iter().zip(record.iter()).map(|(h, v)| (h.to_string(), Value::String(v.to_string()))).collect();
        Some(Ok(Record { location: Location::line(&path, line), fields }))
    }))
}

fn parquet_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    let file = fs_err::File::open(path)?.into_file();
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        Error::data(Location::file(path), format!("not a readable Parquet file: {e}"))
            .with_hint("the file may be truncated, or still being written by another program")
    })
}

/// Batches of rows `range` of one Parquet file, each with the index of its first row. With a schema,
/// only the columns it names are decoded.
fn parquet_batches(
    path: &Path,
    schema: Option<&SchemaRef>,
    range: Range<u64>,
) -> Box<dyn Iterator<Item = Result<(u64, RecordBatch)>>> {
    let open = || -> Result<ParquetRecordBatchReader> {
        let mut builder = parquet_builder(path)?
            .with_batch_size(BATCH_ROWS)
            .with_offset(range.start as usize)
            .with_limit((range.end - range.start) as usize);
        if let Some(schema) = schema {
            let file_schema = builder.schema().clone();
            let wanted: Vec<usize> = (0..file_schema.fields().len())
                .filter(|&i| schema.field_with_name(file_schema.field(i).name()).is_ok())
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
            builder = builder.with_projection(mask);
        }
        builder.build().map_err(|e| Error::data(Location::file(path), format!("cannot read Parquet: {e}")))
    };
    let path = path.to_path_buf();
    match open() {
        Err(e) => Box::new(std::iter::once(Err(e))),
        Ok(reader) => {
            let mut row = range.start;
            let mut failed = false;
            Box::new(reader.map_while(move |batch| {
                if failed {
                    return None;
                }
                let first = row;
                Some(match batch {
                    Ok(batch) => {
                        row += batch.num_rows() as u64;
                        Ok((first, batch))
                    }
                    Err(e) => {
                        failed = true;
                        Err(Error::data(Location::row(&path, first), format!("cannot decode Parquet: {e}"))
                            .with_hint("the file may be truncated or corrupt"))
                    }
                })
            }))
        }
    }
}

/// Can a column of type `from` be read as `to` without losing meaning?
fn compatible(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (List(a) | LargeList(a), List(b) | LargeList(b)) => compatible(a.data_type(), b.data_type()),
        (Struct(a), Struct(b)) => {
            b.iter().all(|fb| match a.iter().find(|fa| fa.name() == fb.name()) {
                Some(fa) => compatible(fa.data_type(), fb.data_type()),
                None => false,
            }) && a.len() == b.len()
        }
        (a, b) if a.is_integer() && b.is_integer() => true,
        (a, b) if (a.is_integer() || a.is_floating()) && b.is_floating() => true,
        (a, b) => a == b,
    }
}

/// Make a Parquet batch match `schema`: order columns, cast compatible types, fill missing optional
/// columns, and reject nulls in required ones.
fn conform(path: &Path, first_row: u64, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let location = || Location::file(path).column(field.name());
        let Some(column) = batch.column_by_name(field.name()) else {
            if field.is_nullable() {
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
                continue;
            }
            return Err(Error::data(location(), "required column is missing"));
        };
        if !compatible(column.data_type(), field.data_type()) {
            return Err(Error::data(
                location(),
                format!("expected {}, found {}", type_name(field.data_type()), type_name(column.data_type())),
            ));
        }
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            arrow_cast::cast(column, field.data_type())
                .map_err(|e| Error::data(location(), format!("cannot read as {}: {e}", type_name(field.data_type()))))?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            let row = (0..column.len()).find(|&i| column.is_null(i)).unwrap_or(0) as u64;
            return Err(Error::data(
                Location::row(path, first_row + row).column(field.name()),
                "is null, but the column is required",
            ));
        }
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::arrow(format!("{}", path.display()), e))
}
