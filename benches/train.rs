//! Training throughput on the CPU: one optimizer step (forward, masked cross-entropy, backward, AdamW) of
//! a 9.5M-parameter Qwen2 (hidden 384, 6 layers, intermediate 1024, byte-level vocabulary) on 2 rows of
//! 512 tokens. `scripts/compare_torch_train.py` runs the same model in PyTorch. And attention on its own
//! (forward and backward) at the shapes of that script's two models: 8 rows of 512 tokens, 6 heads over 2
//! kv heads, and 2 rows of 2,048, 12 heads over 4 (heads of 64): after the linear layers' products, the
//! largest part of a step. And the rate of one large matrix product, the ceiling a step's products run
//! against.

use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
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
            opt.accumulate(&ck.model.backward(&loss).unwrap()).unwrap();
            opt.step(1e-4, 1.0).unwrap();
        });
    });
    // the attention of the two models `scripts/compare_torch_train.py` compares, at its sequence lengths
    for (rows, t, heads, kv) in [(8, 512, 6, 2), (2, 2048, 12, 4)] {
        let d = 64;
        let var = |width: usize, seed: f32| {
            let x: Vec<f32> = (0..rows * t * width).map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.2).collect();
            Var::from_tensor(&Tensor::from_vec(x, (rows, t, width), &Device::Cpu).unwrap()).unwrap()
        };
        let (q, k, v) = (var(heads * d, 0.1), var(kv * d, 0.2), var(kv * d, 0.3));
        let mask = attention_mask(&vec![vec![true; t]; rows], 0, t);
        group.throughput(Throughput::Elements((rows * t) as u64));
        group.bench_function(format!("flash_attention_fwd_bwd_{rows}x{t}"), |b| {
            b.iter(|| {
                let out = fused::flash_attention(&q, &k, &v, [heads, kv], &mask, 0.125).unwrap();
                out.sum_all().unwrap().backward().unwrap()
            });
        });
    }
    // the machine's matrix-product rate, the ceiling of a step: the large model's up projection over one
    // step's 4,096 tokens, forward (throughput in floating-point operations)
    let (x, w) = (
        Tensor::ones((4096, 768), DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones((2048, 768), DType::F32, &Device::Cpu).unwrap(),
    );
    group.throughput(Throughput::Elements(2 * 4096 * 768 * 2048));
    group.bench_function("product_4096x768x2048_flop", |b| b.iter(|| fused::linear(&x, &w, None).unwrap()));
    group.finish();
}
