use forge::model::chat::{ChatTemplate, Message};
use serde_json::Value;

use crate::util::shared_data;

/// Real chat templates (Qwen2.5, Qwen3, DeepSeek-R1-Distill, Llama 3.2, and llama.cpp/vLLM `.jinja` files)
/// render byte for byte as transformers renders them (`scripts/chat_template_fixtures.py` wrote the
/// expected texts with transformers 5.24).
#[test]
#[ignore = "needs ../shared/data"]
fn chat_templates_render_as_transformers_does() {
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/chat_templates.json")).expect("fixture JSON");
    let mut checked = 0;
    for case in &fixtures {
        let name = case["template"].as_str().unwrap();
        let path = shared_data("hf-configs").join(name);
        let template = if name.ends_with("tokenizer_config.json") {
            ChatTemplate::from_dir(path.parent().unwrap()).unwrap()
        } else {
            let tokens = case["tokens"].as_object().unwrap().clone();
            ChatTemplate::new(&std::fs::read_to_string(&path).unwrap(), tokens).unwrap()
        };
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&messages, add, case["extra"].as_object().unwrap()).unwrap();
        assert_eq!(got, case["expected"].as_str().unwrap(), "{name}, add_generation_prompt = {add}");
        checked += 1;
    }
    assert_eq!(checked, 32);
}

/// forge's decoder against transformers on tiny random checkpoints that transformers wrote
/// (`scripts/parity_fixtures.py`): logits of a left-padded batch agree to 1e-4 relative, and greedy
/// decoding with the KV cache picks the same 16 tokens. Both paths: the trainable model (differentiable
/// composite ops) and the frozen one (the inference kernels).
#[test]
fn logits_and_greedy_tokens_match_transformers() {
    use candle_core::Device;
    use forge::model::Checkpoint;

    let dev = Device::Cpu;
    for arch in ["qwen2", "llama"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(arch);
        let ck = Checkpoint::load(&dir, &dev).unwrap();
        check_against_transformers(&ck.model, &dir, &format!("{arch}, trainable"));
        let (_, frozen) = Checkpoint::load_frozen(&dir, &dev).unwrap();
        check_against_transformers(&frozen, &dir, &format!("{arch}, frozen"));
    }
}

fn check_against_transformers(model: &forge::model::Decoder, dir: &std::path::Path, arch: &str) {
    use candle_core::{Device, Tensor};
    use forge::model::{KvCache, attention_mask, positions};

    let dev = Device::Cpu;
    {
        let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let prompts: Vec<Vec<u32>> = serde_json::from_value(expected["prompts"].clone()).unwrap();
        let width = prompts.iter().map(Vec::len).max().unwrap();
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| [vec![0; width - p.len()], p.clone()].concat()).collect();
        let valid: Vec<Vec<bool>> =
            prompts.iter().map(|p| [vec![false; width - p.len()], vec![true; p.len()]].concat()).collect();
        let logits = model
            .forward(
                &Tensor::new(ids, &dev).unwrap(),
                &positions(&valid, 0, &dev).unwrap(),
                &attention_mask(&valid, 0, width),
                None,
            )
            .unwrap();
        let logits: Vec<Vec<Vec<f32>>> = logits.to_vec3().unwrap();
        let mut worst = 0f64;
        for (r, p) in prompts.iter().enumerate() {
            let want: Vec<Vec<f64>> = serde_json::from_value(expected["logits"][r].clone()).unwrap();
            for (i, row) in want.iter().enumerate() {
                for (v, w) in row.iter().enumerate() {
                    let got = f64::from(logits[r][width - p.len() + i][v]);
                    worst = worst.max((got - w).abs() / w.abs().max(1.0));
                }
            }
        }
        assert!(worst < 1e-4, "{arch}: logits differ by {worst:e} (relative)");
        for (r, p) in prompts.iter().enumerate() {
            let mut cache = KvCache::default();
            let mut valid = vec![vec![true; p.len()]];
            let mut next = model
                .forward(
                    &Tensor::new(vec![p.clone()], &dev).unwrap(),
                    &positions(&valid, 0, &dev).unwrap(),
                    &attention_mask(&valid, 0, p.len()),
                    Some(&mut cache),
                )
                .unwrap()
                .narrow(1, p.len() - 1, 1)
                .unwrap();
            let mut greedy = Vec::new();
            for _ in 0..16 {
                let row: Vec<f32> = next.flatten_all().unwrap().to_vec1().unwrap();
                let token = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
                greedy.push(token);
                let past = cache.len();
                valid[0].push(true);
                next = model
                    .forward(
                        &Tensor::new(vec![vec![token]], &dev).unwrap(),
                        &positions(&valid, past, &dev).unwrap(),
                        &attention_mask(&valid, past, 1),
                        Some(&mut cache),
                    )
                    .unwrap();
            }
            assert_eq!(
                greedy,
                serde_json::from_value::<Vec<u32>>(expected["greedy"][r].clone()).unwrap(),
                "{arch}: prompt {r}"
            );
        }
        eprintln!("{arch}: worst relative logit difference {worst:e}");
    }
}

/// Loss and gradients of a right-padded batch with masked labels agree with PyTorch (transformers'
/// model, same weights; `scripts/train_fixtures.py`) to 1e-4 relative, for every parameter.
#[test]
fn loss_and_gradients_match_pytorch() {
    use candle_core::Device;
    use forge::model::Checkpoint;
    use forge::train::{data::Example, pack};

    for arch in ["qwen2", "llama"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(arch);
        let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
        let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("grads.json")).unwrap()).unwrap();
        let rows: Vec<Vec<u32>> = serde_json::from_value(expected["rows"].clone()).unwrap();
        let train: Vec<Vec<bool>> = serde_json::from_value(expected["train"].clone()).unwrap();
        let examples: Vec<Example> = rows.into_iter().zip(train).map(|(ids, train)| Example::new(ids, train)).collect();
        let batch = pack::batch(&examples, &[vec![0], vec![1]], &Device::Cpu).unwrap();
        let loss = (forge::train::nll(&ck.model, &batch).unwrap() / batch.tokens as f64).unwrap();
        let value = f64::from(loss.to_scalar::<f32>().unwrap());
        let want = expected["loss"].as_f64().unwrap();
        assert!((value - want).abs() <= 1e-4 * want.abs(), "{arch}: loss {value} vs {want}");
        let grads = ck.model.backward(&loss).unwrap();
        let vars = ck.vars.data().lock().unwrap();
        let want_grads = expected["grads"].as_object().unwrap();
        assert_eq!(vars.len(), want_grads.len(), "{arch}: same parameters");
        for (name, want) in want_grads {
            let g = grads.get(vars[name].as_tensor()).unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            let norm = g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            let want_norm = want["norm"].as_f64().unwrap();
            assert!((norm - want_norm).abs() <= 1e-4 * want_norm, "{arch} {name}: |g| {norm} vs {want_norm}");
            for (i, w) in want["head"].as_array().unwrap().iter().enumerate() {
                let w = w.as_f64().unwrap();
                assert!((f64::from(g[i]) - w).abs() <= 1e-4 * want_norm, "{arch} {name}[{i}]: {} vs {w}", g[i]);
            }
        }
    }
}

/// Checkpoints written by `forge train-sft` (Qwen2 in f32, Llama in bf16) load in transformers as
/// `*ForCausalLM` and give the logits forge computes (`scripts/train_fixtures.py` trained them with forge
/// and recorded transformers' logits).
#[test]
fn trained_checkpoints_load_in_transformers_with_the_same_logits() {
    use candle_core::{Device, Tensor};
    use forge::model::{Checkpoint, attention_mask, positions};

    for (arch, dtype) in [("qwen2", "F32"), ("llama", "BF16")] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained").join(arch);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(header["__metadata__"]["format"], "pt", "{arch}: transformers' metadata");
        assert_eq!(header["model.norm.weight"]["dtype"], dtype, "{arch}: saved in the config's dtype");
        assert_eq!(header.get("lm_head.weight").is_some(), arch == "llama", "{arch}: tied head not written");
        let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
        let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let prompt: Vec<u32> = serde_json::from_value(expected["prompt"].clone()).unwrap();
        let valid = vec![vec![true; prompt.len()]];
        let logits = ck
            .model
            .forward(
                &Tensor::new(vec![prompt.clone()], &Device::Cpu).unwrap(),
                &positions(&valid, 0, &Device::Cpu).unwrap(),
                &attention_mask(&valid, 0, prompt.len()),
                None,
            )
            .unwrap();
        let got: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
        let scale = want.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= 1e-4 * scale, "{arch} position {p}: {a} vs {b}");
            }
        }
    }
}

/// A LoRA adapter written by `forge train-sft --lora-rank` loads in peft (`PeftModel.from_pretrained`,
/// `scripts/train_fixtures.py`) with the logits forge computes with the adapter attached, and folding it
/// into the base (`forge merge-lora`) gives the same logits again.
#[test]
fn lora_adapters_match_peft_and_merge_exactly() {
    use candle_core::{Device, Tensor};
    use forge::model::{Checkpoint, attention_mask, positions};

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora/qwen2");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(expected["prompt"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let logits = |model: &forge::model::Decoder| -> Vec<Vec<f32>> {
        let valid = vec![vec![true; prompt.len()]];
        let ids = Tensor::new(vec![prompt.clone()], &Device::Cpu).unwrap();
        let pos = positions(&valid, 0, &Device::Cpu).unwrap();
        let l = model.forward(&ids, &pos, &attention_mask(&valid, 0, prompt.len()), None).unwrap();
        l.squeeze(0).unwrap().to_vec2().unwrap()
    };
    let scale = want.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    let close = |got: &[Vec<f32>], what: &str| {
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= 1e-4 * scale, "{what}, position {p}: {a} vs {b}");
            }
        }
    };
    let (_, with_adapter) = Checkpoint::load_frozen(&dir, &Device::Cpu).unwrap();
    close(&logits(&with_adapter), "adapter attached");
    let base = dir.join("../../trained/qwen2");
    let (_, base_model) = Checkpoint::load_frozen(&base, &Device::Cpu).unwrap();
    let moved =
        logits(&base_model).iter().flatten().zip(want.iter().flatten()).any(|(a, b)| (a - b).abs() > 1e-3 * scale);
    assert!(moved, "the adapter changes the logits");

    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    forge::model::lora::merge_dir(&dir, None, &merged).unwrap();
    let ck = Checkpoint::load(&merged, &Device::Cpu).unwrap();
    close(&logits(&ck.model), "merged");
    assert!(merged.join("tokenizer.json").exists() && merged.join("config.json").exists());
}

/// f16 weights: the trained Qwen2 fixture stored in f16 loads (computed in f32) with the logits of its f32
/// weights, within f16's rounding of the weights.
#[test]
fn f16_checkpoints_load_with_the_logits_of_their_f32_weights() {
    use candle_core::{DType, Device, Tensor};
    use forge::model::{Checkpoint, attention_mask, positions};

    let f32_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/qwen2");
    let out = tempfile::tempdir().unwrap();
    let f16_dir = out.path();
    for entry in std::fs::read_dir(&f32_dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, f16_dir.join(path.file_name().unwrap())).unwrap();
    }
    let weights = candle_core::safetensors::load(f32_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let half: std::collections::HashMap<String, Tensor> =
        weights.into_iter().map(|(name, t)| (name, t.to_dtype(DType::F16).unwrap())).collect();
    candle_core::safetensors::save(&half, f16_dir.join("model.safetensors")).unwrap();
    let mut config: Value = serde_json::from_slice(&std::fs::read(f32_dir.join("config.json")).unwrap()).unwrap();
    config["torch_dtype"] = "float16".into();
    std::fs::write(f16_dir.join("config.json"), config.to_string()).unwrap();

    let expected: Value = serde_json::from_slice(&std::fs::read(f32_dir.join("expected.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(expected["prompt"].clone()).unwrap();
    let logits = |dir: &std::path::Path| -> Vec<f32> {
        let ck = Checkpoint::load(dir, &Device::Cpu).unwrap();
        let valid = vec![vec![true; prompt.len()]];
        let ids = Tensor::new(vec![prompt.clone()], &Device::Cpu).unwrap();
        let pos = positions(&valid, 0, &Device::Cpu).unwrap();
        let l = ck.model.forward(&ids, &pos, &attention_mask(&valid, 0, prompt.len()), None).unwrap();
        l.flatten_all().unwrap().to_vec1().unwrap()
    };
    let (full, half) = (logits(&f32_dir), logits(f16_dir));
    let scale = full.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = full.iter().zip(&half).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst > 0.0, "the f16 weights are rounded, so the logits move a little");
    assert!(worst <= 1e-2 * scale, "f16 logits off by {worst} (scale {scale})");
}

/// A transformers `Qwen2ForSequenceClassification` (one label: an outcome reward model's layout) with the
/// sample teacher's tokenizer and chat template (`scripts/reward_model_fixtures.py`): forge's rewards of
/// four conversations equal transformers', scored together (left-padded to the longest) and one by one.
#[test]
fn reward_model_scores_match_transformers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reward-model");
    let model = forge::teacher::reward_model::RewardModel::open(&dir).unwrap();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    let conversations: Vec<Vec<Message>> = cases
        .iter()
        .map(|c| {
            vec![
                Message::new("user", c["prompt"].as_str().unwrap()),
                Message::new("assistant", c["reply"].as_str().unwrap()),
            ]
        })
        .collect();
    let together = model.score(&conversations).unwrap();
    let lengths: Vec<usize> = cases.iter().map(|c| c["ids"].as_array().unwrap().len()).collect();
    assert!(lengths.iter().any(|&l| l != lengths[0]), "the batch pads: {lengths:?}");
    for (i, case) in cases.iter().enumerate() {
        let want = case["reward"].as_f64().unwrap() as f32;
        let alone = model.score(&conversations[i..=i]).unwrap()[0];
        for got in [together[i], alone] {
            assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "case {i}: {got} against {want}");
        }
    }
    // a language model is not a reward model, and a reward model does not generate
    let lm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
    let err = forge::teacher::reward_model::RewardModel::open(&lm).err().unwrap().to_string();
    assert!(err.contains("not a reward model"), "{err}");
    let err = forge::teacher::local::Local::open(&dir).err().unwrap().to_string();
    assert!(err.contains("reward model"), "{err}");
}
