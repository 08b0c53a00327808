//! Step 4 (per input slice): the kept rows into the output dataset, the rejected ones into `rejected/`
//! with `reject_reason` and `reject_detail`.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};

use super::clusters::{Decision, read_decisions};
use super::work::Work;
use super::{FilterConfig, Source};
use crate::dataset::{DatasetWriter, Manifest, Provenance, Start, TableKind, WriteOptions};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::StageReport;
use crate::{Context, OutputArgs};

pub const REJECTED_DIR: &str = "rejected";

fn reject_columns() -> [Field; 2] {
    [Field::new("reject_reason", DataType::Utf8, false), Field::new("reject_detail", DataType::Utf8, true)]
}

fn writers(source: &Source, out: &OutputArgs, provenance: &Provenance) -> Result<(Start, Start)> {
    let kind = source.output_kind();
    let options = WriteOptions { companions: super::COMPANIONS, ..out.write.clone() };
    let kept = DatasetWriter::create(&out.output, kind, out.shard, &options, provenance.clone())?;
    let mut rejected =
        DatasetWriter::create(&out.output.join(REJECTED_DIR), kind, out.shard, &out.write, provenance.clone())?;
    if let Start::Write(w) = &mut rejected {
        w.append_columns(reject_columns());
    }
    Ok((kept, rejected))
}

/// The finished output of this very command, when it is already there.
pub fn up_to_date(
    dir: &std::path::Path,
    source: &Source,
    out: &OutputArgs,
    provenance: &Provenance,
) -> Result<Option<Manifest>> {
    if !dir.join(Manifest::file_name(out.shard)).exists() {
        return Ok(None);
    }
    match writers(source, out, provenance)? {
        (Start::UpToDate(kept), Start::UpToDate(_)) => Ok(Some(kept)),
        _ => Ok(None),
    }
}

pub fn run(
    _cfg: &FilterConfig,
    source: &Source,
    work: &Work,
    out: &OutputArgs,
    provenance: Provenance,
    started: Instant,
    ctx: &Context,
) -> Result<Manifest> {
    let shards = work.map_shards()?;
    if out.shard.count != shards {
        return Err(Error::usage(format!(
            "`--step write` must use the shard count of `--step signatures` ({shards}), not {}",
            out.shard.count
        )));
    }
    let decisions_path = work.decisions(out.shard);
    if !decisions_path.exists() {
        return Err(Error::usage(format!("no decisions for shard {} yet", out.shard))
            .with_hint("run `forge filter ... --step clusters` first"));
    }
    let decisions = read_decisions(&decisions_path)?;
    let range = out.shard.range(source.input.rows());
    if decisions.len() as u64 != range.end - range.start {
        return Err(Error::usage(format!("`{}` does not match the input", decisions_path.display()))
            .with_hint("the input changed since the signatures step: rerun all steps with `--overwrite`"));
    }
    let (Start::Write(mut kept), Start::Write(mut rejected)) = writers(source, out, &provenance)? else {
        return Err(Error::usage(format!(
            "`{}` holds part of this filter's output; rerun with `--overwrite`",
            out.output.display()
        )));
    };
    let progress = Progress::rows("filter 2/2", range.end - range.start, ctx.quiet);
    let mut report = StageReport::new("filter", 0, 0, 0.0);
    let mut rejected_report = StageReport::new("filter/rejected", 0, 0, 0.0);
    let mut at = 0usize;
    for batch in source.input.batches(source.kind, range) {
        let batch = batch?;
        let ds = &decisions[at..at + batch.num_rows()];
        at += batch.num_rows();
        let batch = with_verdicts(&batch, ds, source.kind)?;
        let keep = BooleanArray::from(ds.iter().map(|d| d.reason.is_none()).collect::<Vec<_>>());
        let drop = BooleanArray::from(ds.iter().map(|d| d.reason.is_some()).collect::<Vec<_>>());
        let kept_rows =
            arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| Error::arrow("filter", e))?;
        kept.write(&kept_rows)?;
        let mut columns: Vec<ArrayRef> = arrow_select::filter::filter_record_batch(&batch, &drop)
            .map_err(|e| Error::arrow("filter", e))?
            .columns()
            .to_vec();
        let gone: Vec<&Decision> = ds.iter().filter(|d| d.reason.is_some()).collect();
        columns.push(Arc::new(StringArray::from_iter_values(gone.iter().map(|d| d.reason.expect("rejected").name()))));
        columns.push(Arc::new(StringArray::from(gone.iter().map(|d| d.detail.as_deref()).collect::<Vec<_>>())));
        rejected
            .write(&RecordBatch::try_new(rejected.schema().clone(), columns).map_err(|e| Error::arrow("filter", e))?)?;
        report.rows_in += batch.num_rows() as u64;
        report.rows_out += kept_rows.num_rows() as u64;
        for d in gone {
            *report.rejected.entry(d.reason.expect("rejected").name().to_string()).or_default() += 1;
        }
        let voted = ds.iter().filter(|d| d.reason.is_none() && d.majority_gold.is_some()).count() as u64;
        if voted > 0 {
            *report.flagged.entry("majority_gold".into()).or_default() += voted;
        }
        progress.inc(batch.num_rows() as u64);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    rejected_report.rows_in = report.rows_in - report.rows_out;
    rejected_report.rows_out = rejected_report.rows_in;
    rejected_report.seconds = seconds;
    rejected.finish(rejected_report)?;
    report.seconds = seconds;
    report.rows_per_second = report.rows_in as f64 / seconds.max(1e-9);
    kept.finish(report)
}

/// A traces batch with the verdict columns of `curated` (and `gold` filled in by majority votes); a
/// problems batch as it is.
fn with_verdicts(batch: &RecordBatch, ds: &[Decision], kind: TableKind) -> Result<RecordBatch> {
    if kind != TableKind::Traces {
        return Ok(batch.clone());
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let gold_at = batch.schema().index_of("gold").expect("traces have gold");
    let gold = batch.column(gold_at).as_any().downcast_ref::<StringArray>().expect("gold is text");
    let filled: StringArray = (0..batch.num_rows())
        .map(|i| if gold.is_null(i) { ds[i].majority_gold.as_deref() } else { Some(gold.value(i)) })
        .collect();
    columns[gold_at] = Arc::new(filled);
    columns.push(Arc::new(StringArray::from(ds.iter().map(|d| d.extracted.as_deref()).collect::<Vec<_>>())));
    columns.push(Arc::new(BooleanArray::from(ds.iter().map(|d| d.correct).collect::<Vec<_>>())));
    let origin: StringArray = (0..batch.num_rows())
        .map(|i| {
            if !gold.is_null(i) {
                Some("reference")
            } else if ds[i].majority_gold.is_some() {
                Some("majority")
            } else {
                None
            }
        })
        .collect();
    columns.push(Arc::new(origin));
    RecordBatch::try_new(TableKind::Curated.schema(), columns).map_err(|e| Error::arrow("filter", e))
}
