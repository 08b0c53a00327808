//! Curation throughput, one core: MinHash signatures and LSH band keys of 10,000 synthetic iGSM prompts
//! (about 1 KB each, made by `forge synth`'s generator, so the bench needs no data files).

use std::time::Duration;

use criterion::{Criterion, Throughput};
use forge::filter::near_dup::{MinHashConfig, MinHasher};
use forge::synth::{SynthConfig, Task};

pub fn throughput(c: &mut Criterion) {
    let cfg = SynthConfig {
        task: Task::Igsm,
        n: 10_000,
        seed: 0,
        ops: None,
        modulus: forge::synth::DEFAULT_MODULUS,
        distractors: forge::synth::DEFAULT_DISTRACTORS,
        max_operand: forge::synth::DEFAULT_MAX_OPERAND,
        names: Default::default(),
    };
    let docs: Vec<String> = (0..cfg.n).map(|i| cfg.problem(Task::Igsm.default_ops(), i).prompt).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    let hasher = MinHasher::new(MinHashConfig::default());
    let mut group = c.benchmark_group("near_dup");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("band_keys_10k_igsm_prompts", |b| {
        b.iter(|| docs.iter().filter_map(|d| hasher.band_keys(d)).count());
    });
    group.finish();
}
