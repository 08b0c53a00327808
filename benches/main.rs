//! forge's benchmarks: one criterion target, a module per stage. Figures and the machine they came from
//! are kept in `benches/README.md`.

use criterion::{criterion_group, criterion_main};

mod dataset;

criterion_group!(benches, dataset::read_write);
criterion_main!(benches);
