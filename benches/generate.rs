//! Teacher decoding on the CPU, f32: the prompts' prefill and one decoding step at batch 1, 8 and 32 of
//! a random 9.9M-parameter Qwen2 (hidden 256, 10 layers, 8 heads over 4 kv heads, intermediate 1024,
//! byte-level vocabulary), the checkpoint `scripts/compare_transformers_generate.py` times against
//! transformers; and the decoding matrix product against gemm's: the model's shapes at 1, 8 and 32 rows, a
//! 40 MiB weight (streamed from memory, as a real teacher's are) and 128 rows (where gemm wins).

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use forge::model::tiny::{Size, write};
use forge::model::{Arch, Checkpoint, KvCache, attention_mask, infer::decode_matmul, positions};

/// Prompt length: about an `arith` problem's chat-rendered prompt with the default instruction.
const PROMPT: usize = 117;

pub fn decode(c: &mut Criterion) {
    forge::keep_freed_memory(); // as the binary does
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let size = Size { hidden: 256, intermediate: 1024, layers: 10, heads: 8, kv_heads: 4 };
    write(dir.path(), Arch::Qwen2, size, 1).unwrap();
    let (_, model) = Checkpoint::load_frozen(dir.path(), &dev).unwrap();

    let mut group = c.benchmark_group("generate");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for batch in [1usize, 8, 32] {
        let ids: Vec<Vec<u32>> =
            (0..batch).map(|b| (0..PROMPT).map(|t| ((b * 31 + t * 7) % 250) as u32).collect()).collect();
        let valid = vec![vec![true; PROMPT]; batch];
        let input = Tensor::new(ids, &dev).unwrap();
        let pos = positions(&valid, 0, &dev).unwrap();
        let mask = attention_mask(&valid, 0, PROMPT);
        let prefill = |cache: &mut KvCache| model.forward(&input, &pos, &mask, Some(cache)).unwrap();
        group.throughput(Throughput::Elements((batch * PROMPT) as u64));
        group.bench_function(BenchmarkId::new("prefill_117", batch), |b| b.iter(|| prefill(&mut KvCache::default())));

        // one step after the prompt; every iteration writes the same cache position again
        let mut cache = KvCache::default();
        prefill(&mut cache);
        let valid: Vec<Vec<bool>> = vec![vec![true; PROMPT + 1]; batch];
        let step = Tensor::new(vec![vec![42u32]; batch], &dev).unwrap();
        let pos = positions(&valid, PROMPT, &dev).unwrap();
        let mask = attention_mask(&valid, PROMPT, 1);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("decode_step", batch), |b| {
            b.iter(|| model.forward(&step, &pos, &mask, Some(&mut cache.clone())).unwrap());
        });
    }

    for (m, k, n) in
        [(1, 256, 1024), (8, 256, 1024), (32, 256, 1024), (32, 1024, 256), (8, 256, 40960), (128, 256, 1024)]
    {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        group.bench_function(BenchmarkId::new("decode_matmul", &shape), |b| b.iter(|| decode_matmul(&x, &w).unwrap()));
        group.bench_function(BenchmarkId::new("gemm", &shape), |b| b.iter(|| x.matmul(&w.t().unwrap()).unwrap()));
    }
    group.finish();
}

/// Budgets shaped as MATH's reference solutions (`../shared/data/math/test.jsonl`): the lengths at the
/// 64 quantiles (i + 0.5) / 64, in characters divided by 8.5 and kept within 16..160; the 5th to 95th
/// percentile of those solutions span 12.7× (108 to 1,367 characters), most are short, a few long. Shuffled
/// by a fixed permutation (i * 37 mod 64) so that batches mix them.
const MATH_SHAPED: [u32; 64] = [
    16, 16, 16, 16, 16, 16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34, 35, 36, 37, 38, 39, 40, 42,
    43, 44, 46, 47, 49, 50, 52, 53, 55, 56, 58, 60, 62, 64, 66, 69, 71, 73, 76, 79, 82, 86, 90, 94, 98, 102, 108, 115,
    122, 131, 144, 156, 160, 160, 160,
];

/// Static against continuous batching when completions vary tenfold in length: 64 prompts of the same
/// random 9.9M-parameter Qwen2, each with its own budget of new tokens (greedy; the random model ends earlier
/// now and then, the same way in both), 8 sequences decoding at once. Two sets of budgets: `uniform`, 16 to
/// 160 in steps of 16, cycling; `math`, [`MATH_SHAPED`]. Static decodes the prompts 8 by 8, each batch until
/// its longest sequence ends; continuous gives a finished sequence's slot to the next prompt. Throughput is
/// generated tokens (the same count in both).
pub fn batching(c: &mut Criterion) {
    use forge::model::chat::Message;
    use forge::progress::Progress;
    use forge::teacher::local::Local;
    use forge::teacher::{Prompt, SamplingConfig, Teacher};

    forge::keep_freed_memory();
    let dir = tempfile::tempdir().unwrap();
    let size = Size { hidden: 256, intermediate: 1024, layers: 10, heads: 8, kv_heads: 4 };
    write(dir.path(), Arch::Qwen2, size, 1).unwrap();
    let mut local = Local::open(dir.path()).unwrap();
    let cfg = SamplingConfig { temperature: 0.0, max_new_tokens: 160, ..Default::default() };
    let hidden = Progress::hidden();
    let slots = 8;
    let mut group = c.benchmark_group("batching");
    group.sample_size(10).measurement_time(Duration::from_secs(40));
    for name in ["uniform", "math"] {
        let budget = |i: u32| match name {
            "uniform" => 16 * (1 + (i * 7) % 10),
            _ => MATH_SHAPED[(i as usize * 37) % 64],
        };
        let prompts: Vec<Prompt> = (0..64u32)
            .map(|i| Prompt {
                key: format!("p{i}"),
                messages: vec![Message::new("user", &format!("Problem {i}: what is {} + {}?", i * 7, i * 13))],
                prefill: String::new(),
                n: 1,
                max_new_tokens: Some(budget(i)),
                first_sample: 0,
            })
            .collect();
        let samples = local.generate(&prompts, &cfg, &hidden).unwrap();
        let tokens: u32 = samples.iter().flatten().map(|s| s.completion_tokens).sum();
        group.throughput(Throughput::Elements(u64::from(tokens)));
        group.bench_function(BenchmarkId::new("static", name), |b| {
            b.iter(|| {
                for chunk in prompts.chunks(slots) {
                    local.generate(chunk, &cfg, &hidden).unwrap();
                }
            });
        });
        group.bench_function(BenchmarkId::new("continuous", name), |b| {
            b.iter(|| local.generate_each(&prompts, &cfg, slots, &hidden, &mut |_, _| Ok(())).unwrap());
        });
    }
    group.finish();
}
