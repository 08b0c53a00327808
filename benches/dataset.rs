//! Read and write throughput of a 1M-row `problems` dataset (synthetic `arith` rows, 10 shards of 100k).
//! Throughput is declared in on-disk Parquet bytes; rows/s is 1M divided by the time.

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use forge::dataset::{DatasetWriter, Input, Problem, Provenance, Shard, Start, TableKind, WriteOptions};
use forge::report::StageReport;
use forge::synth::{SynthConfig, Task};

const ROWS: u64 = 1_000_000;
const BATCH: usize = 4096;

fn rows() -> Vec<Problem> {
    let cfg = SynthConfig {
        task: Task::Arith,
        n: ROWS,
        seed: 0,
        ops: None,
        modulus: forge::synth::DEFAULT_MODULUS,
        distractors: 0,
        max_operand: forge::synth::DEFAULT_MAX_OPERAND,
        names: Default::default(),
    };
    (0..ROWS).map(|i| cfg.problem(Task::Arith.default_ops(), i)).collect()
}

fn write(dir: &Path, rows: &[Problem]) {
    let provenance = Provenance::start("bench", &[], &(), vec![]);
    let Start::Write(mut writer) =
        DatasetWriter::create(dir, TableKind::Problems, Shard::ALL, &WriteOptions::default(), provenance).unwrap()
    else {
        panic!("fresh directory")
    };
    for chunk in rows.chunks(BATCH) {
        writer.write_rows(chunk).unwrap();
    }
    writer.finish(StageReport::new("bench", ROWS, ROWS, 0.0)).unwrap();
}

fn read(dir: &Path) -> u64 {
    let input = Input::open(dir).unwrap();
    input.batches(TableKind::Problems, 0..input.rows()).map(|b| b.unwrap().num_rows() as u64).sum()
}

pub fn read_write(c: &mut Criterion) {
    let rows = rows();
    let scratch = tempfile::tempdir().unwrap();
    let reference = scratch.path().join("reference");
    write(&reference, &rows);
    let bytes: u64 =
        Input::open(&reference).unwrap().files.iter().map(|f| std::fs::metadata(&f.path).unwrap().len()).sum();

    let mut group = c.benchmark_group("problems_1m");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).throughput(Throughput::Bytes(bytes));
    let mut n = 0;
    group.bench_function("write", |b| {
        b.iter_batched(
            || {
                n += 1;
                scratch.path().join(format!("w{n}"))
            },
            |dir| {
                write(&dir, &rows);
                std::fs::remove_dir_all(&dir).unwrap();
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("read", |b| b.iter(|| assert_eq!(read(&reference), ROWS)));
    group.finish();
}
