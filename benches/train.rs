//! Training throughput on the CPU: one optimizer step (forward, masked cross-entropy, backward, AdamW) of
//! a 9.5M-parameter Qwen2 (hidden 384, 6 layers, intermediate 1024, byte-level vocabulary) on 2 rows of
//! 512 tokens. `scripts/compare_torch_train.py` runs the same model in PyTorch. And the attention of the
//! 38M model's step on its own (forward and backward, 2 rows of 2,048 tokens, 12 heads over 4 kv heads of
//! 64), the largest part of that step after the linear layers' products.

use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, Throughput};
use forge::model::tiny::{Size, config};
use forge::model::{Checkpoint, attention_mask, fused};
use forge::train::data::Example;
use forge::train::{nll, optim::AdamW, pack};

pub fn step(c: &mut Criterion) {
    forge::keep_freed_memory(); // as the binary does
    let size = Size { hidden: 384, intermediate: 1024, layers: 6, heads: 6, kv_heads: 2 };
    let ck = Checkpoint::random(&config(forge::model::Arch::Qwen2, size), 1, &Device::Cpu).unwrap();
    let text: Vec<u32> =
        b"The quick brown fox jumps over the lazy dog. ".iter().cycle().take(512).map(|&b| u32::from(b)).collect();
    let examples = vec![Example::new(text.clone(), vec![true; 512]); 2];
    let batch = pack::batch(&examples, &[vec![0], vec![1]], &Device::Cpu).unwrap();
    let mut opt = AdamW::new(&ck.vars, 0.01);
    let mut group = c.benchmark_group("train");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(2 * 512));
    group.bench_function("qwen2_9.5M_step_2x512", |b| {
        b.iter(|| {
            let loss = (nll(&ck.model, &batch).unwrap() / batch.tokens as f64).unwrap();
            opt.accumulate(&loss.backward().unwrap()).unwrap();
            opt.step(1e-4, 1.0).unwrap();
        });
    });
    let (rows, t, heads, kv, d) = (2, 2048, 12, 4, 64);
    let var = |width: usize, seed: f32| {
        let x: Vec<f32> = (0..rows * t * width).map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.2).collect();
        Var::from_tensor(&Tensor::from_vec(x, (rows, t, width), &Device::Cpu).unwrap()).unwrap()
    };
    let (q, k, v) = (var(heads * d, 0.1), var(kv * d, 0.2), var(kv * d, 0.3));
    let mask = attention_mask(&vec![vec![true; t]; rows], 0, t);
    group.throughput(Throughput::Elements((rows * t) as u64));
    group.bench_function("flash_attention_fwd_bwd_2x2048", |b| {
        b.iter(|| {
            let out = fused::flash_attention(&q, &k, &v, [heads, kv], &mask, 0.125).unwrap();
            out.sum_all().unwrap().backward().unwrap()
        });
    });
    group.finish();
}
