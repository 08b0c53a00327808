//! forge's benchmarks: one criterion target, a module per stage. Figures and the machine they came from
//! are kept in `benches/README.md`.

#![allow(clippy::disallowed_methods)] // tests and benches may use std::fs: a failure names its test
#![allow(missing_docs)] // `criterion_group!` writes an undocumented public function

use criterion::{criterion_group, criterion_main};

mod dataset;
mod filter;
mod generate;
mod train;
mod verify;

criterion_group!(
    benches,
    dataset::read_write,
    verify::throughput,
    filter::throughput,
    generate::decode,
    generate::batching,
    train::step
);
criterion_main!(benches);
