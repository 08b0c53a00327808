//! `forge stats`: what is in a dataset. Row count, and per column: types seen, nulls, lengths (characters
//! of strings, items of lists) as percentiles, numeric range, and the top values of columns with few
//! distinct values. Works on any input forge reads, its own datasets or not.
//!
//! Memory stays flat: lengths are kept as a histogram and value counts are dropped once a column shows
//! more than [`MAX_DISTINCT`] distinct values.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::dataset::{Input, TableKind, json_type_name};
use crate::error::Result;
use crate::progress::Progress;

/// Value counts are kept up to this many distinct values per column.
pub const MAX_DISTINCT: usize = 1000;
/// A column is shown as categorical when it has at most this many distinct values.
pub const CATEGORICAL: usize = 50;
const TOP: usize = 5;

/// What `forge stats` reports about a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    /// The dataset's directory or file.
    pub path: PathBuf,
    /// The table kind its manifest names, if any.
    pub kind: Option<TableKind>,
    /// Data files read.
    pub files: usize,
    /// Rows in all of them.
    pub rows: u64,
    /// One entry per column.
    pub columns: Vec<ColumnStats>,
}

/// One column's summary.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnStats {
    /// The column's name.
    pub name: String,
    /// JSON types seen (`a string`, `a number`, ...) and how often.
    pub types: BTreeMap<String, u64>,
    /// Null values.
    pub nulls: u64,
    /// Characters of strings, items of lists.
    pub length: Option<Summary>,
    /// Range of numeric values, when there are some.
    pub numbers: Option<NumberRange>,
    /// Distinct values, exact up to `MAX_DISTINCT`; null when the column holds lists, objects or long text.
    pub distinct: Option<u64>,
    /// More than `MAX_DISTINCT` distinct values.
    pub many_distinct: bool,
    /// The most frequent values and their counts (categorical columns).
    pub top: Vec<(String, u64)>,
}

/// Range of a numeric column.
#[derive(Debug, Clone, Serialize)]
pub struct NumberRange {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
}

/// Distribution of lengths: quantiles and mean.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Shortest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

#[derive(Default)]
struct Acc {
    types: BTreeMap<String, u64>,
    non_null: u64,
    lengths: HashMap<u64, u64>,
    number_count: u64,
    number_sum: f64,
    number_min: f64,
    number_max: f64,
    values: Option<HashMap<String, u64>>,
    /// Lists, objects or strings too long to count as values.
    uncountable: bool,
}

impl Acc {
    fn new() -> Self {
        Acc {
            values: Some(HashMap::new()),
            number_min: f64::INFINITY,
            number_max: f64::NEG_INFINITY,
            ..Default::default()
        }
    }

    fn add(&mut self, value: &Value) {
        *self
            .types
            .entry(json_type_name(value).trim_start_matches("a ").trim_start_matches("an ").to_string())
            .or_default() += 1;
        if value.is_null() {
            return;
        }
        self.non_null += 1;
        let key = match value {
            Value::String(s) => {
                *self.lengths.entry(s.chars().count() as u64).or_default() += 1;
                (s.len() <= 200).then(|| s.clone())
            }
            Value::Array(items) => {
                *self.lengths.entry(items.len() as u64).or_default() += 1;
                None
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                self.number_count += 1;
                self.number_sum += x;
                self.number_min = self.number_min.min(x);
                self.number_max = self.number_max.max(x);
                Some(n.to_string())
            }
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match (key, &mut self.values) {
            (Some(key), Some(values)) => {
                *values.entry(key).or_default() += 1;
                if values.len() > MAX_DISTINCT {
                    self.values = None;
                }
            }
            (None, _) => self.uncountable = true,
            _ => {}
        }
    }

    fn finish(self, name: String, rows: u64) -> ColumnStats {
        let length = summary(&self.lengths);
        let numbers = (self.number_count > 0).then(|| NumberRange {
            min: self.number_min,
            max: self.number_max,
            mean: self.number_sum / self.number_count as f64,
        });
        let many_distinct = self.values.is_none();
        let values = if self.uncountable { None } else { self.values };
        let distinct = values.as_ref().map(|v| v.len() as u64);
        let mut top: Vec<(String, u64)> = match values {
            Some(values) if values.len() <= CATEGORICAL && values.len() as u64 * 2 <= self.non_null.max(2) => {
                values.into_iter().collect()
            }
            _ => vec![],
        };
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP);
        ColumnStats {
            name,
            types: self.types,
            nulls: rows - self.non_null,
            length,
            numbers,
            distinct,
            many_distinct,
            top,
        }
    }
}

fn summary(histogram: &HashMap<u64, u64>) -> Option<Summary> {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<(u64, u64)> = histogram.iter().map(|(k, v)| (*k, *v)).collect();
    sorted.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (len, n) in &sorted {
            seen += n;
            if seen >= rank {
                return *len as f64;
            }
        }
        sorted.last().expect("non-empty").0 as f64
    };
    let sum: f64 = sorted.iter().map(|(len, n)| *len as f64 * *n as f64).sum();
    Some(Summary {
        min: sorted[0].0 as f64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: sorted.last().expect("non-empty").0 as f64,
        mean: sum / total as f64,
    })
}

/// `forge stats`: read the dataset at `path` and summarise every column.
pub fn run(path: &Path, quiet: bool) -> Result<DatasetStats> {
    let input = Input::open(path)?;
    let rows = input.rows();
    let progress = Progress::rows("stats", rows, quiet);
    let mut columns: Vec<(String, Acc)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for record in input.records(0..rows) {
        let record = record?;
        for (name, value) in &record.fields {
            let i = *index.entry(name.clone()).or_insert_with(|| {
                columns.push((name.clone(), Acc::new()));
                columns.len() - 1
            });
            columns[i].1.add(value);
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(DatasetStats {
        path: path.to_path_buf(),
        kind: input.kind,
        files: input.files.len(),
        rows,
        columns: columns.into_iter().map(|(name, acc)| acc.finish(name, rows)).collect(),
    })
}

impl DatasetStats {
    /// A readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let kind = self.kind.map(|k| format!("{}, ", k.name())).unwrap_or_default();
        let _ = writeln!(
            out,
            "{} ({kind}{} file{}, {} rows)",
            self.path.display(),
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.rows
        );
        let width = self.columns.iter().map(|c| c.name.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(
            out,
            "{:width$}  {:<8} {:>8}  {:<28}  values",
            "column", "type", "nulls", "length min/p50/p90/p99/max"
        );
        for c in &self.columns {
            let mut types: Vec<&str> = c.types.keys().filter(|t| *t != "null").map(String::as_str).collect();
            if types.is_empty() {
                types.push("null");
            }
            let length = c
                .length
                .as_ref()
                .map(|s| format!("{}/{}/{}/{}/{}", s.min, s.p50, s.p90, s.p99, s.max))
                .unwrap_or_else(|| "-".into());
            let values = if !c.top.is_empty() {
                c.top.iter().map(|(v, n)| format!("{} {n}", shorten(v, 40))).collect::<Vec<_>>().join(", ")
            } else if let Some(n) = &c.numbers {
                format!("min {} max {} mean {:.2}", n.min, n.max, n.mean)
            } else if let Some(d) = c.distinct.filter(|_| c.nulls < self.rows) {
                format!("{d} distinct")
            } else if c.many_distinct {
                format!("> {MAX_DISTINCT} distinct")
            } else {
                "-".into()
            };
            let _ = writeln!(out, "{:width$}  {:<8} {:>8}  {:<28}  {values}", c.name, types.join("|"), c.nulls, length);
        }
        out
    }
}

/// `"text"`, cut to `max` characters with an ellipsis.
fn shorten(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        format!("{value:?}")
    } else {
        format!("{:?}…", value.chars().take(max).collect::<String>())
    }
}

/// `forge stats` settings.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// A dataset directory, Parquet file or JSONL file
    pub dataset: std::path::PathBuf,
}

/// How `forge stats` prints.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct StatsTarget {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

impl crate::stage::Target for StatsTarget {
    fn in_pipeline(_: &Path) -> Option<StatsTarget> {
        None
    }
}

/// `forge stats`.
pub struct Stats;

impl crate::stage::Stage for Stats {
    const NAME: &'static str = "stats";
    const ABOUT: &'static str = "Summarise a dataset: rows, and per column nulls, lengths and top values";
    const EXAMPLES: &'static str = "  forge stats problems/
  forge stats problems/ --json | jq '.columns[] | {name, nulls}'
  forge stats ../shared/data/gsm8k/test.jsonl";
    type Config = StatsConfig;
    type Target = StatsTarget;

    fn run(cfg: &StatsConfig, target: &StatsTarget, ctx: &crate::Context) -> Result<crate::stage::Done> {
        let stats = run(&cfg.dataset, ctx.quiet)?;
        let text = if target.json {
            serde_json::to_string_pretty(&stats).expect("serialisable") + "\n"
        } else {
            stats.table()
        };
        Ok(crate::stage::Done { rows_in: Some(stats.rows), stdout: Some(text), ..Default::default() })
    }
}
