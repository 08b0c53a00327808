use std::path::Path;

use candle_core::{Device, Var};
use forge::formats::conversation::conversation;
use forge::model::tiny::{Size, write};
use forge::model::{Arch, Checkpoint};
use forge::train::data::{Example, Renderer};
use forge::train::{metrics, pack};
use serde_json::Value;

use crate::util::{Scratch, forge, ok, run};

type Args<'a> = Vec<&'a dyn AsRef<std::ffi::OsStr>>;

/// A tiny model trained on arithmetic: the loss falls, every step is in `metrics.csv`, the output is a
/// checkpoint forge loads back with the weights training ended with, and a rerun of the same command does
/// nothing; a different command refuses to write over it.
#[test]
fn train_sft_learns_and_writes_a_checkpoint() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"300", &"--ops", &"2", &"--seed", &"4", &"-o", &data, &"-q"]);
    for arch in [Arch::Qwen2, Arch::Llama] {
        let init = s.path(&format!("init-{arch:?}"));
        write(&init, arch, Size::default(), 3).unwrap();
        let out = s.path(&format!("out-{arch:?}"));
        let args: Args = vec![
            &"train-sft",
            &"--model",
            &init,
            &"--data",
            &data,
            &"-o",
            &out,
            &"--epochs",
            &"1",
            &"--lr",
            &"3e-3",
            &"--batch-tokens",
            &"1024",
            &"--max-length",
            &"256",
            &"--eval-every",
            &"10",
            &"-q",
        ];
        ok(&args);
        let report: Value = serde_json::from_slice(&std::fs::read(out.join("train-report.json")).unwrap()).unwrap();
        let rows = metrics::read(&out.join("metrics.csv")).unwrap();
        assert_eq!(rows.len() as u64, report["steps"].as_u64().unwrap());
        assert!(rows.len() > 20, "{} steps", rows.len());
        let (first, last) = (rows[0].loss, rows.last().unwrap().loss);
        assert!(last < first - 2.0, "{arch:?}: loss {first} -> {last}");
        assert!(rows.last().unwrap().eval_loss.is_some_and(|e| e < first - 2.0));
        assert!(rows.iter().filter(|r| r.eval_loss.is_some()).count() >= 2);
        assert_eq!(&std::fs::read(out.join("loss.png")).unwrap()[1..4], b"PNG");
        assert!(!out.join("checkpoints").exists(), "checkpoints are removed once the model is written");
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"] {
            assert!(out.join(f).exists(), "{f} copied from the base");
        }
        let trained = Checkpoint::load(&out, &Device::Cpu).unwrap();
        let base = Checkpoint::load(&init, &Device::Cpu).unwrap();
        let diff = |a: &Checkpoint, b: &Checkpoint| {
            let (a, b) = (a.vars.data().lock().unwrap(), b.vars.data().lock().unwrap());
            a.iter()
                .map(|(n, v)| {
                    (v.as_tensor() - b[n].as_tensor())
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .fold(0f32, f32::max)
        };
        assert!(diff(&trained, &base) > 1e-3, "training changed the weights");
        // the file's header as transformers reads it: `{"format": "pt"}` metadata, transformers' tensor
        // names, the config's dtype
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        assert_eq!(header["__metadata__"], serde_json::json!({"format": "pt"}));
        let config: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let dtype = match config["torch_dtype"].as_str().or(config["dtype"].as_str()) {
            Some("bfloat16") => "BF16",
            Some("float16") => "F16",
            _ => "F32",
        };
        let embed = &header["model.embed_tokens.weight"];
        assert_eq!(embed["dtype"], dtype, "{embed}");
        assert!(header["model.layers.0.self_attn.q_proj.weight"].is_object(), "transformers' names");

        let before = std::fs::read(out.join("model.safetensors")).unwrap();
        let (code, _, stderr) = run(&args[..args.len() - 1]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("nothing to do"), "{stderr}");
        assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before);
        let (code, _, stderr) =
            run(&[&"train-sft", &"--model", &init, &"--data", &data, &"-o", &out, &"--lr", &"1e-3"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("different command") && stderr.contains("--overwrite"), "{stderr}");
    }
}

/// A run killed (SIGKILL) after a checkpoint and run again ends with the same weights, bit for bit, and
/// the same per-step losses as an uninterrupted run.
#[test]
fn killed_training_resumes_to_the_same_weights() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"400", &"--ops", &"3", &"--seed", &"5", &"-o", &data, &"-q"]);
    let init = s.path("init");
    write(&init, Arch::Llama, Size { hidden: 96, intermediate: 192, layers: 3, heads: 4, kv_heads: 2 }, 8).unwrap();
    let args = |out: &Path| -> Vec<std::ffi::OsString> {
        [
            "train-sft",
            "--model",
            init.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--max-steps",
            "24",
            "--save-every",
            "4",
            "--eval-every",
            "6",
            "--lr",
            "2e-3",
            "--batch-tokens",
            "2048",
            "--max-length",
            "256",
            "--micro-batch-tokens",
            "512",
            "-q",
        ]
        .map(Into::into)
        .to_vec()
    };
    let straight = s.path("straight");
    let status = forge().args(args(&straight)).status().unwrap();
    assert!(status.success());

    let killed = s.path("killed");
    crate::util::kill_when(&args(&killed), &killed.join("checkpoints/step-00000008"));
    assert!(!killed.join("train-report.json").exists(), "the run was killed before it finished");
    let rows_at_kill = metrics::read(&killed.join("metrics.csv")).unwrap().len();
    assert!((8..24).contains(&rows_at_kill), "{rows_at_kill} rows at the kill");

    crate::util::resumes_to_the_same_weights(&args(&killed), &straight, &killed);
    let losses = |dir: &Path| -> Vec<(u64, String, Option<String>)> {
        metrics::read(&dir.join("metrics.csv"))
            .unwrap()
            .iter()
            .map(|r| (r.step, format!("{:.6}", r.loss), r.eval_loss.map(|e| format!("{e:.6}"))))
            .collect()
    };
    assert_eq!(losses(&straight), losses(&killed));

    let fresh = s.path("fresh");
    let mut resume = args(&fresh);
    resume.push("--resume".into());
    let out = forge().args(resume).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint to resume from"));
}

/// Prompt tokens and completion spans marked `train = false` get no gradient; every other completion
/// token does. Checked at the decoder's final hidden states, where the loss attaches.
#[test]
fn masked_tokens_get_no_gradient() {
    let dir = Scratch::new();
    let ck_dir = dir.path("ck");
    write(&ck_dir, Arch::Qwen2, Size::default(), 2).unwrap();
    let ck = Checkpoint::load(&ck_dir, &Device::Cpu).unwrap();
    let renderer = Renderer::new(
        forge::model::chat::ChatTemplate::from_dir(&ck_dir).unwrap(),
        forge::model::tokenizer::Tokenizer::from_dir(&ck_dir).unwrap(),
        512,
    );
    let row = serde_json::json!({"prompt": "What is 3 + 4?", "completion": "3 + 4 = 8. Wait, 3 + 4 = 7. Answer: 7",
        "segments": [{"kind": "error", "start": 0, "end": 11, "train": false},
                     {"kind": "fix", "start": 11, "end": 37, "train": true}]});
    let example: Example = renderer.example(&conversation(row.as_object().unwrap()).unwrap()).unwrap().unwrap();
    let batch = pack::batch(std::slice::from_ref(&example), &[vec![0]], &Device::Cpu).unwrap();
    let hidden = ck.model.hidden(&batch.ids, &batch.positions, &batch.mask, None).unwrap();
    let hidden = Var::from_tensor(&hidden.detach()).unwrap();
    let loss = forge::train::nll_of_hidden(&ck.model, hidden.as_tensor(), &batch).unwrap();
    let grads = loss.backward().unwrap();
    let g: Vec<Vec<f32>> = grads.get(hidden.as_tensor()).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
    let text = |range: std::ops::Range<usize>| renderer.tokenizer().decode(&example.ids[range], false).unwrap();
    let mut trained = String::new();
    for (j, row) in g.iter().enumerate() {
        let has_grad = row.iter().any(|&x| x != 0.0);
        let should = example.train.get(j + 1) == Some(&true);
        assert_eq!(has_grad, should, "position {j} (predicting {:?})", text(j + 1..j + 2));
        if should {
            trained += &text(j + 1..j + 2);
        }
    }
    assert_eq!(trained, "Wait, 3 + 4 = 7. Answer: 7<|im_end|>");
    assert!(!example.train[..example.ids.len() - 30].iter().any(|&t| t), "the prompt is not trained");
}

/// `--lora-rank` trains only the adapter: the output is a peft adapter directory (keys under
/// `base_model.model.`, the targeted modules only), the loss falls, and the base is untouched.
#[test]
fn lora_training_writes_a_peft_adapter() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"200", &"--ops", &"2", &"--seed", &"6", &"-o", &data, &"-q"]);
    let init = s.path("init");
    write(&init, Arch::Llama, Size::default(), 4).unwrap();
    let before = std::fs::read(init.join("model.safetensors")).unwrap();
    let out = s.path("lora");
    ok(&[
        &"train-sft",
        &"--model",
        &init,
        &"--data",
        &data,
        &"-o",
        &out,
        &"--epochs",
        &"1",
        &"--lr",
        &"1e-2",
        &"--batch-tokens",
        &"1024",
        &"--max-length",
        &"256",
        &"--lora-rank",
        &"4",
        &"--lora-targets",
        &"q_proj,up_proj",
        &"-q",
    ]);
    assert_eq!(std::fs::read(init.join("model.safetensors")).unwrap(), before);
    assert!(!out.join("config.json").exists() && !out.join("model.safetensors").exists());
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    let tensors = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 2 * 2 * 2, "A and B for q_proj and up_proj of 2 layers");
    let a = &tensors["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"];
    let b = &tensors["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"];
    assert_eq!((a.dims(), b.dims()), (&[4, 64][..], &[128, 4][..]));
    let rows = metrics::read(&out.join("metrics.csv")).unwrap();
    assert!(rows.last().unwrap().loss < rows[0].loss - 0.5, "{} -> {}", rows[0].loss, rows.last().unwrap().loss);
}

/// With the real tokenizers and templates of Qwen2.5, Qwen2.5-Math, Qwen3, DeepSeek-R1-Distill and
/// Llama 3.2, exactly the reply and its end-of-turn token carry the loss, reasoning included (R1's
/// template drops `<think>` from assistant turns: the final turn is then rendered as at generation; the
/// R1 directory has no `tokenizer.json`, so Qwen2.5's tokenizes its template's text).
#[test]
#[ignore = "needs ../shared/data"]
fn real_templates_train_the_reply_and_its_end_of_turn_token() {
    let reply = "<think>\n2 + 2 is 4.\n</think>\n\nThe answer is \\boxed{4}.";
    let row = serde_json::json!({"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                              {"role": "assistant", "content": reply}]});
    let qwen = "Qwen--Qwen2.5-1.5B-Instruct";
    let cases = [
        (qwen, qwen, "<|im_end|>"),
        ("Qwen--Qwen2.5-Math-1.5B", "Qwen--Qwen2.5-Math-1.5B", "<|im_end|>"),
        ("Qwen--Qwen3-4B", "Qwen--Qwen3-4B", "<|im_end|>"),
        ("deepseek-ai--DeepSeek-R1-Distill-Qwen-32B", qwen, "<｜end▁of▁sentence｜>"),
        ("meta-llama--Llama-3.2-3B-Instruct", "meta-llama--Llama-3.2-3B-Instruct", "<|eot_id|>"),
    ];
    for (name, tokenizer, end) in cases {
        let dir = |n: &str| crate::util::shared_data("hf-configs").join(n);
        let renderer = Renderer::new(
            forge::model::chat::ChatTemplate::from_dir(&dir(name)).unwrap(),
            forge::model::tokenizer::Tokenizer::from_dir(&dir(tokenizer)).unwrap(),
            4096,
        );
        let e = renderer.example(&conversation(row.as_object().unwrap()).unwrap()).unwrap().unwrap();
        let ids: Vec<u32> = e.ids.iter().zip(&e.train).filter(|(_, t)| **t).map(|(i, _)| *i).collect();
        let trained = renderer.tokenizer().decode(&ids, false).unwrap();
        assert!(trained.ends_with(end), "{name}: {trained:?}");
        assert!(trained.contains("2 + 2 is 4.") && trained.contains("\\boxed{4}"), "{name}: {trained:?}");
        assert!(!trained.contains("What is"), "{name}: the prompt is not trained");
    }
}

/// Mixed precision: with `--dtype bf16` the model computes in bf16 while the weights, their gradients and
/// AdamW stay f32 (the saved weights are f32 and move by updates far below bf16's resolution); the loss
/// follows the f32 run closely.
#[test]
fn bf16_compute_keeps_f32_master_weights() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"120", &"--ops", &"2", &"--seed", &"7", &"-o", &data, &"-q"]);
    let init = s.path("init");
    write(&init, Arch::Qwen2, Size::default(), 5).unwrap();
    let train = |dtype: &str| {
        let out = s.path(dtype);
        ok(&[
            &"train-sft",
            &"--model",
            &init,
            &"--data",
            &data,
            &"-o",
            &out,
            &"--max-steps",
            &"6",
            &"--lr",
            &"1e-5",
            &"--batch-tokens",
            &"1024",
            &"--max-length",
            &"256",
            &"--dtype",
            &dtype,
            &"-q",
        ]);
        let rows = metrics::read(&out.join("metrics.csv")).unwrap();
        let report: Value = serde_json::from_slice(&std::fs::read(out.join("train-report.json")).unwrap()).unwrap();
        // `--max-steps` ends the run inside the first of the 3 default epochs: the report says so
        assert_eq!(report["epochs"], rows.last().unwrap().epoch + 1);
        assert_eq!(report["epochs"], 1);
        (rows, Checkpoint::load(&out, &Device::Cpu).unwrap())
    };
    let (f32_rows, _) = train("f32");
    let (bf16_rows, bf16) = train("bf16");
    for (a, b) in f32_rows.iter().zip(&bf16_rows) {
        assert!((a.loss - b.loss).abs() < 0.02 * a.loss, "step {}: f32 {} vs bf16 {}", a.step, a.loss, b.loss);
    }
    let base = Checkpoint::load(&init, &Device::Cpu).unwrap();
    let (w, w0) = (bf16.vars.data().lock().unwrap(), base.vars.data().lock().unwrap());
    let name = "model.layers.0.mlp.up_proj.weight";
    let before: Vec<f32> = w0[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let after: Vec<f32> = w[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    // half a bf16 step at the weight's magnitude: a pure-bf16 update smaller than this rounds away
    let half_ulp = |x: f32| 2f32.powi(x.abs().log2().floor() as i32 - 8);
    let kept = before.iter().zip(&after).filter(|(b, a)| **a != **b && (**a - **b).abs() < half_ulp(**b)).count();
    assert!(after.iter().zip(&before).all(|(a, b)| a != b), "every weight moved");
    assert!(kept > before.len() / 4, "updates below bf16's resolution are kept ({kept} of {})", before.len());
}

/// `--checkpoint-layers` recomputes each layer in the backward pass: the same losses step by step and the
/// same weights at the end as without it (up to the order gradients are summed in).
#[test]
fn checkpointed_layers_train_to_the_same_weights() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"60", &"--ops", &"2", &"--seed", &"8", &"-o", &data, &"-q"]);
    let init = s.path("init");
    write(&init, Arch::Llama, Size::default(), 6).unwrap();
    let train = |name: &str, extra: &[&str]| {
        let out = s.path(name);
        let fixed = ["--max-steps", "3", "--lr", "1e-3", "--batch-tokens", "1024", "--max-length", "256", "-q"];
        let mut args: Args = vec![&"train-sft", &"--model", &init, &"--data", &data, &"-o", &out];
        args.extend(fixed.iter().chain(extra).map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        ok(&args);
        (metrics::read(&out.join("metrics.csv")).unwrap(), Checkpoint::load(&out, &Device::Cpu).unwrap())
    };
    let (plain_rows, plain) = train("plain", &[]);
    let (rows, checkpointed) = train("checkpointed", &["--checkpoint-layers"]);
    assert_eq!(rows.len(), 3);
    for (a, b) in plain_rows.iter().zip(&rows) {
        assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss, "step {}: {} vs {} checkpointed", a.step, a.loss, b.loss);
    }
    // Both run the layers' hand-written backward pass (`model/layer_node.rs`), the checkpointed one after
    // recomputing the layer's forward pass, which is deterministic: the weights agree to the bit today.
    // That the flag takes effect shows in peak memory (benches/README.md), not here.
    let (a, b) = (plain.vars.data().lock().unwrap(), checkpointed.vars.data().lock().unwrap());
    for (name, var) in a.iter() {
        let x: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let worst = x.iter().zip(&y).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: weights differ by {worst:e}");
    }
}

/// `--packing false`: one example per row, so a step of `--batch-tokens / --max-length` rows takes that many
/// examples, and an epoch is ceil(examples / rows per step) steps (packing takes fewer).
#[test]
fn unpacked_training_takes_one_example_per_row() {
    let s = Scratch::new();
    let data = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"40", &"--ops", &"1", &"--seed", &"2", &"-o", &data, &"-q"]);
    let init = s.path("init");
    write(&init, Arch::Qwen2, Size::default(), 1).unwrap();
    let steps = |packing: &str| {
        let out = s.path(&format!("out-{packing}"));
        let args: Args = vec![
            &"train-sft",
            &"--model",
            &init,
            &"--data",
            &data,
            &"-o",
            &out,
            &"--epochs",
            &"1",
            &"--eval-data",
            &data,
            &"--batch-tokens",
            &"4096",
            &"--max-length",
            &"1024",
            &"--packing",
            &packing,
            &"-q",
        ];
        ok(&args);
        let report: Value = serde_json::from_slice(&std::fs::read(out.join("train-report.json")).unwrap()).unwrap();
        (report["steps"].as_u64().unwrap(), report["examples"].as_u64().unwrap())
    };
    let (unpacked, examples) = steps("false");
    assert_eq!(examples, 40);
    assert_eq!(unpacked, examples.div_ceil(4096 / 1024), "4 examples a step");
    let (packed, _) = steps("true");
    assert!(packed < unpacked, "packing puts several short examples in a row: {packed} vs {unpacked}");
}

/// `init-model --tokenizer-from`: the new model takes another checkpoint's tokenizer and chat template, and
/// its vocabulary size.
#[test]
fn init_model_takes_another_checkpoints_tokenizer() {
    let s = Scratch::new();
    let out = s.path("init");
    ok(&[
        &"init-model",
        &"--hidden",
        &"32",
        &"--layers",
        &"1",
        &"--tokenizer-from",
        &"samples/tiny-teacher",
        &"-o",
        &out,
        &"-q",
    ]);
    let teacher = Path::new("samples/tiny-teacher");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(teacher.join(f)).unwrap(), "{f}");
    }
    let vocab = |dir: &Path| {
        let c: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        c["vocab_size"].as_u64().unwrap()
    };
    assert_eq!(vocab(&out), vocab(teacher));
    assert_eq!(Checkpoint::load(&out, &Device::Cpu).unwrap().config.hidden_size, 32);
}

/// `forge train-rm` on the sample teacher's own samples of arithmetic (six per problem at temperature
/// 1, judged by the verifier): the score head starts at zero (the first step's loss is ln 2, pairwise and
/// pointwise), the loss falls, and the reward model written (a `Qwen2ForSequenceClassification` config)
/// ranks the right samples of a problem above its wrong ones. Training data of one label only, and LoRA,
/// are refused.
#[test]
fn train_rm_learns_to_rank_right_samples_above_wrong() {
    use forge::model::chat::Message;
    use forge::teacher::reward_model::{RewardModel, conversation};
    let s = Scratch::new();
    let (problems, samples, out) = (s.path("problems"), s.path("samples"), s.path("rm"));
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"60",
        &"--ops",
        &"2",
        &"--max-operand",
        &"20",
        &"--seed",
        &"7",
        &"-o",
        &problems,
        &"-q",
    ]);
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
    let generate: Args = vec![
        &"generate",
        &"--teacher",
        &"local:samples/tiny-teacher",
        &"--problems",
        &problems,
        &"-n",
        &"6",
        &"--temperature",
        &"1.0",
        &"--max-tokens",
        &"80",
        &"-o",
        &samples,
        &"-q",
    ];
    ok(&generate);
    let train = |out: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Args = vec![
            &"train-rm",
            &"--model",
            &teacher,
            &"--data",
            &samples,
            &"-o",
            &out,
            &"--lr",
            &"1e-3",
            &"--batch-tokens",
            &"4096",
            &"--max-length",
            &"1024",
            &"--eval-share",
            &"0",
            &"-q",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        metrics::read(&out.join("metrics.csv")).unwrap()
    };
    let rows = train(&out, &[&"--epochs", &"6"]);
    assert!(
        (rows[0].loss - std::f64::consts::LN_2).abs() < 1e-4,
        "a zero head scores 0: loss ln 2, got {}",
        rows[0].loss
    );
    let last = rows.last().unwrap().loss;
    assert!(last < 0.5, "loss {} -> {last}", rows[0].loss);
    let pointwise = train(&s.path("pointwise"), &[&"--objective", &"pointwise", &"--max-steps", &"1"]);
    assert!((pointwise[0].loss - std::f64::consts::LN_2).abs() < 1e-4, "pointwise: {}", pointwise[0].loss);
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "Qwen2ForSequenceClassification");

    let model = RewardModel::open(&out).unwrap();
    let traces = crate::util::records(&samples);
    let prompt = forge::teacher::traces::PromptConfig::default();
    let conversations: Vec<Vec<Message>> = traces
        .iter()
        .map(|t| {
            let text = |c: &str| t[c].as_str().unwrap().to_string();
            conversation(&prompt, &text("domain"), &text("prompt"), &text("completion"))
        })
        .collect();
    let mut by_problem: std::collections::BTreeMap<String, Vec<(bool, f32)>> = Default::default();
    for (t, r) in traces.iter().zip(model.score(&conversations).unwrap()) {
        by_problem.entry(t["problem_id"].as_str().unwrap().into()).or_default().push((crate::util::verdict(t).0, r));
    }
    let (mut pairs, mut ordered) = (0, 0);
    for samples in by_problem.values() {
        for (a, b) in samples.iter().flat_map(|a| samples.iter().map(move |b| (a, b))) {
            if a.0 && !b.0 {
                pairs += 1;
                ordered += usize::from(a.1 > b.1);
            }
        }
    }
    assert!(pairs >= 10, "{pairs} right-wrong pairs");
    assert!(ordered as f64 >= 0.9 * pairs as f64, "{ordered} of {pairs} pairs ranked right above wrong");

    let lora_out = s.path("lora");
    let lora: Args =
        vec![&"train-rm", &"--model", &teacher, &"--data", &samples, &"-o", &lora_out, &"--lora-rank", &"4"];
    let (code, _, err) = run(&lora);
    assert!(code != 0 && err.contains("--lora-rank"), "{err}");
    let right = |p: &str| crate::util::trace(p, 0, "What is 2 + 3?", Some("5"), "2 + 3 = 5\nThe answer is \\boxed{5}.");
    let one_label = s.write("right.jsonl", crate::util::jsonl(&[right("a"), right("b")]));
    let (code, _, err) = run(&[&"train-rm", &"--model", &teacher, &"--data", &one_label, &"-o", &s.path("x")]);
    assert!(code != 0 && err.contains("needs right and wrong"), "{err}");
}
