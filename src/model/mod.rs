//! Models forge runs and trains: Hugging Face checkpoint directories (`config.json`, `*.safetensors`)
//! of the Qwen2 and Llama families, in candle. One decoder ([`decoder`]) serves both: they differ in
//! configuration (q/k/v bias, rope scaling, tied embeddings), not in structure.
//!
//! Weights are `Var`s in a `VarMap` under transformers' tensor names, so the same model trains and saves
//! back to a checkpoint transformers loads ([`Checkpoint::save`]).

pub mod chat;
pub mod config;
pub mod decoder;
pub mod embeddings;
pub mod encoder;
pub mod fused;
pub mod infer;
mod layer_node;
pub mod lora;
pub mod tiny;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

pub use config::{Arch, ModelConfig};
pub use decoder::{Decoder, KvCache, attention_mask, positions};
pub use fused::Mask;

use crate::error::{Error, Location, Result};

/// A loaded checkpoint: its config, its weights and the decoder over them.
pub struct Checkpoint {
    /// The checkpoint's directory.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: ModelConfig,
    /// The weights as trainable variables, by name.
    pub vars: VarMap,
    /// The decoder over the weights.
    pub model: Decoder,
}

fn candle(context: impl std::fmt::Display) -> impl FnOnce(candle_core::Error) -> Error {
    move |e| Error::usage(format!("{context}: {e}"))
}

impl Checkpoint {
    /// Load `dir` (config.json plus one or more `*.safetensors`, f32/bf16/f16), in f32 on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
        let config = ModelConfig::read(&dir.join("config.json"))?;
        let files = safetensors_files(dir)?;
        let vars = VarMap::new();
        let model = Decoder::new(&config, VarBuilder::from_varmap(&vars, DType::F32, device))
            .map_err(candle(format!("building the model of `{}`", dir.display())))?;
        // SAFETY: the files are memory-mapped read-only; forge does not modify them while they are open.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
            .map_err(|e| Error::data(Location::file(&files[0]), format!("cannot read safetensors: {e}")))?;
        for (name, var) in vars.data().lock().expect("not poisoned").iter() {
            let tensor = tensors.load(name, device).map_err(|_| {
                Error::data(Location::file(dir), format!("the checkpoint has no tensor `{name}`"))
                    .with_hint("is `config.json` the config of these weights?")
            })?;
            if tensor.dims() != var.dims() {
                return Err(Error::data(
                    Location::file(dir),
                    format!("tensor `{name}` has shape {:?}, the config says {:?}", tensor.dims(), var.dims()),
                ));
            }
            var.set(&tensor.to_dtype(DType::F32).map_err(candle(name))?).map_err(candle(name))?;
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), config, vars, model })
    }

    /// Load `dir` for inference only: plain tensors (no `Var`s), so no operation records a gradient
    /// graph (with `Var`s, a decoding loop would keep every step's tensors alive through the KV cache).
    /// A LoRA adapter directory (peft's `adapter_config.json`) loads its base with the adapter attached.
    pub fn load_frozen(dir: &Path, device: &Device) -> Result<(ModelConfig, Decoder)> {
        if lora::is_adapter(dir) {
            return lora::load_with_base(dir, device);
        }
        let config = ModelConfig::read(&dir.join("config.json"))?;
        let files = safetensors_files(dir)?;
        // SAFETY: as in `load`.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
            .map_err(|e| Error::data(Location::file(&files[0]), format!("cannot read safetensors: {e}")))?;
        let model = Decoder::new(&config, vb).map_err(|e| {
            Error::data(Location::file(dir), format!("the weights do not fit the config: {e}"))
                .with_hint("is `config.json` the config of these weights?")
        })?;
        Ok((config, model))
    }

    /// A fresh model of `config` with weights drawn from `N(0, 0.02²)` by forge's own seeded generator
    /// (the same numbers on every machine), norms at 1.
    pub fn random(config: &ModelConfig, seed: u64, device: &Device) -> Result<Checkpoint> {
        config.arch()?;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let model = Decoder::new(config, vb).map_err(candle("building the model"))?;
        let data = vars.data().lock().expect("not poisoned");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for (k, name) in names.into_iter().enumerate() {
            let var = &data[name];
            let n = var.elem_count();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else {
                let mut rng = crate::rng::Rng::for_row(seed, "init", k as u64);
                (0..n).map(|_| rng.normal() as f32 * 0.02).collect()
            };
            var.set(&Tensor::from_vec(values, var.dims(), device).map_err(candle(name))?).map_err(candle(name))?;
        }
        drop(data);
        Ok(Checkpoint { dir: PathBuf::new(), config: config.clone(), vars, model })
    }

    /// Write `config.json` and `model.safetensors` (f32, transformers' names) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs_err::create_dir_all(dir)?;
        let config = serde_json::to_vec_pretty(&self.config).expect("serialisable");
        fs_err::write(dir.join("config.json"), config)?;
        self.vars.save(dir.join("model.safetensors")).map_err(candle(dir.display()))?;
        Ok(())
    }
}

/// The files of a checkpoint besides its weights: what a trained or merged model copies from its base.
pub const CONFIG_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Copy the [`CONFIG_FILES`] that `from` has into `to`, except those `skip` says.
pub fn copy_config_files(from: &Path, to: &Path, skip: impl Fn(&str) -> bool) -> Result<()> {
    for name in CONFIG_FILES.into_iter().filter(|n| !skip(n)) {
        if from.join(name).exists() {
            crate::dataset::write_atomic(&to.join(name), &fs_err::read(from.join(name))?)?;
        }
    }
    Ok(())
}

/// Save tensors as safetensors with the metadata transformers and peft write (`{"format": "pt"}`; older
/// transformers reject files without it), atomically.
pub fn save_safetensors(tensors: &std::collections::HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let temp = path.with_extension("tmp");
    safetensors::tensor::serialize_to_file(sorted, Some(metadata), &temp)
        .map_err(|e| Error::usage(format!("writing `{}`: {e}", path.display())))?;
    fs_err::File::open(&temp)?.sync_all()?;
    fs_err::rename(&temp, path)?;
    Ok(())
}

/// The dtype to save a checkpoint of `config` in: its `torch_dtype` (f32 when unset).
pub fn save_dtype(config: &ModelConfig) -> DType {
    match config.torch_dtype.as_deref() {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    }
}

/// xxh3-128 of a checkpoint directory's files (names and bytes, in name order), so a retrained model
/// counts as a changed input; an adapter's base is included.
pub fn checkpoint_hash(dir: &Path) -> Result<String> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut dirs = vec![dir.to_path_buf()];
    if lora::is_adapter(dir) {
        dirs.push(lora::AdapterConfig::read(dir)?.base_dir(dir, None)?);
    }
    let mut buf = vec![0u8; 1 << 20];
    for d in dirs {
        let mut files: Vec<PathBuf> = fs_err::read_dir(&d)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            hasher.update(f.file_name().unwrap_or_default().as_encoded_bytes());
            let mut file = fs_err::File::open(f)?;
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// CUDA when forge was built with it and a GPU is there, else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::data(Location::file(dir), "no `*.safetensors` weights in the checkpoint directory"));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny(model_type: &str) -> ModelConfig {
        serde_json::from_value(serde_json::json!({
            "model_type": model_type, "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": model_type == "qwen2",
            "max_position_embeddings": 128,
        }))
        .unwrap()
    }

    fn ids(rows: &[Vec<u32>]) -> Tensor {
        Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
    }

    fn positions(valid: &[Vec<bool>], past: usize) -> Tensor {
        decoder::positions(valid, past, &Device::Cpu).unwrap()
    }

    /// The trap of candle-transformers: a fused op without backward silently stops the gradient. Every
    /// parameter of forge's decoder must receive a non-zero gradient.
    #[test]
    fn every_parameter_gets_a_gradient() {
        for arch in ["qwen2", "llama"] {
            let ck = Checkpoint::random(&tiny(arch), 1, &Device::Cpu).unwrap();
            let valid = vec![vec![true; 6], vec![false, false, true, true, true, true]];
            let x = ids(&[vec![1, 2, 3, 4, 5, 6], vec![0, 0, 7, 8, 9, 10]]);
            let mask = attention_mask(&valid, 0, 6);
            let logits = ck.model.forward(&x, &positions(&valid, 0), &mask, None).unwrap();
            let targets = ids(&[vec![2, 3, 4, 5, 6, 7], vec![0, 0, 8, 9, 10, 11]]).flatten_all().unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits.flatten_to(1).unwrap(), &targets).unwrap();
            let grads = ck.model.backward(&loss).unwrap();
            let data = ck.vars.data().lock().unwrap();
            assert_eq!(data.len(), if arch == "qwen2" { 2 + 2 * 12 } else { 3 + 2 * 9 });
            for (name, var) in data.iter() {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm > 0.0, "{arch}: zero gradient for {name}");
            }
        }
    }

    /// The layers as one node each with a hand-written backward pass ([`layer_node`], the default), and
    /// checkpointed, give the loss and every gradient of the graph with a node per fused kernel: full
    /// fine-tuning (the embedding trained through the layers' input gradients; Qwen2's q/k/v biases) and
    /// LoRA (frozen embedding: the first layer's input records no graph, its adapters are trained all the
    /// same); rows with left padding and with two examples packed into one.
    #[test]
    fn layer_nodes_and_checkpointed_layers_give_the_gradients_of_the_per_op_graph() {
        let dev = Device::Cpu;
        let valid = vec![vec![true; 6], vec![false, false, true, true, true, true]];
        let x = ids(&[vec![1, 2, 3, 4, 5, 6], vec![0, 0, 7, 8, 9, 10]]);
        let targets = ids(&[vec![2, 3, 4, 5, 6, 7], vec![0, 0, 8, 9, 10, 11]]).flatten_all().unwrap();
        let packed = Mask::new(
            vec![(0, 0), (0, 1), (0, 2), (3, 3), (3, 4), (3, 5), (0, 0), (0, 0), (2, 2), (2, 3), (2, 4), (2, 5)],
            2,
            6,
            6,
        );
        for (arch, lora, mask) in
            [("qwen2", false, attention_mask(&valid, 0, 6)), ("llama", false, packed.clone()), ("qwen2", true, packed)]
        {
            let mut ck = Checkpoint::random(&tiny(arch), 3, &dev).unwrap();
            if lora {
                let mut frozen = ck.model.detached();
                ck.vars = candle_nn::VarMap::new();
                let adapter = lora::AdapterConfig {
                    r: 2,
                    lora_alpha: 4.0,
                    target_modules: lora::TARGETS.map(String::from).to_vec(),
                    base_model_name_or_path: None,
                    use_rslora: false,
                };
                lora::attach_trainable(&mut frozen, &ck.vars, &adapter, 1).unwrap();
                ck.model = frozen;
            }
            let gradients = |model: &Decoder| {
                let logits = model.forward(&x, &positions(&valid, 0), &mask, None).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits.flatten_to(1).unwrap(), &targets).unwrap();
                let grads = model.backward(&loss).unwrap();
                // a gradient that records a graph keeps that graph's activations alive until the optimizer
                // step (a checkpointed layer's recomputed activations, once)
                for id in grads.get_ids() {
                    assert!(!grads.get_id(*id).unwrap().track_op(), "{arch} lora {lora}: a gradient holds a graph");
                }
                let data = ck.vars.data().lock().unwrap();
                let mut out: Vec<(String, Vec<f32>)> = data
                    .iter()
                    .map(|(name, var)| {
                        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
                        (name.clone(), g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    })
                    .collect();
                out.push(("loss".into(), vec![loss.to_scalar::<f32>().unwrap()]));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            };
            let nodes = gradients(&ck.model);
            ck.model.per_op = true;
            let per_op = gradients(&ck.model);
            ck.model.per_op = false;
            ck.model.checkpoint_layers();
            let checkpointed = gradients(&ck.model);
            let params = match (lora, arch) {
                (true, _) => 2 * 7 * 2,
                (false, "qwen2") => 2 + 2 * 12,
                (false, _) => 3 + 2 * 9,
            };
            assert_eq!(per_op.len(), 1 + params, "{arch}");
            for (way, got) in [("layer nodes", &nodes), ("checkpointed", &checkpointed)] {
                assert_eq!(got.len(), per_op.len(), "{arch} lora {lora} {way}");
                for ((name, a), (_, b)) in per_op.iter().zip(got) {
                    // the backward passes sum a tensor's gradient contributions in different orders
                    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                    assert!(
                        worst <= 1e-5 * scale,
                        "{arch} lora {lora} {way}: {name} differs by {worst:e} (largest {scale:e})"
                    );
                }
            }
            for (name, a) in &per_op {
                if name.ends_with("lora_B.weight") || !lora {
                    assert!(a.iter().any(|&v| v != 0.0), "{arch} lora {lora}: zero gradient for {name}");
                }
            }
        }
    }

    /// Decoding with the KV cache, one token at a time, gives the logits of the full forward pass; a
    /// left-padded row gives the logits of the same row unpadded.
    #[test]
    fn cache_and_left_padding_do_not_change_logits() {
        let dev = Device::Cpu;
        for arch in ["qwen2", "llama"] {
            let ck = Checkpoint::random(&tiny(arch), 2, &dev).unwrap();
            let tokens = vec![5u32, 9, 13, 2, 40, 7];
            let full_valid = vec![vec![true; 6]];
            let full = ck
                .model
                .forward(
                    &ids(std::slice::from_ref(&tokens)),
                    &positions(&full_valid, 0),
                    &attention_mask(&full_valid, 0, 6),
                    None,
                )
                .unwrap();
            let mut cache = KvCache::default();
            let prefix = vec![vec![true; 4]];
            ck.model
                .forward(
                    &ids(&[tokens[..4].to_vec()]),
                    &positions(&prefix, 0),
                    &attention_mask(&prefix, 0, 4),
                    Some(&mut cache),
                )
                .unwrap();
            for (step, &token) in tokens.iter().enumerate().skip(4) {
                let valid = vec![vec![true; step + 1]];
                let logits = ck
                    .model
                    .forward(
                        &ids(&[vec![token]]),
                        &positions(&valid, step),
                        &attention_mask(&valid, step, 1),
                        Some(&mut cache),
                    )
                    .unwrap();
                let want = full.narrow(1, step, 1).unwrap();
                let diff = (logits - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-5, "{arch}: step {step} differs by {diff}");
            }
            let padded_valid = vec![vec![false, false, true, true, true, true, true, true]];
            let padded = ck
                .model
                .forward(
                    &ids(&[[vec![0, 0], tokens.clone()].concat()]),
                    &positions(&padded_valid, 0),
                    &attention_mask(&padded_valid, 0, 8),
                    None,
                )
                .unwrap();
            let diff = (padded.narrow(1, 2, 6).unwrap() - &full)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{arch}: left padding changes logits by {diff}");
        }
    }

    /// Saved weights load back to the same model (names and shapes as transformers writes them).
    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ck = Checkpoint::random(&tiny("llama"), 3, &Device::Cpu).unwrap();
        ck.save(dir.path()).unwrap();
        let back = Checkpoint::load(dir.path(), &Device::Cpu).unwrap();
        let a = ck.vars.data().lock().unwrap();
        let b = back.vars.data().lock().unwrap();
        for (name, var) in a.iter() {
            let diff = (var.as_tensor() - b[name].as_tensor()).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
        }
        fs_err::remove_file(dir.path().join("model.safetensors")).unwrap();
        let err = Checkpoint::load(dir.path(), &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("no `*.safetensors`"), "{err}");
        fs_err::write(dir.path().join("config.json"), r#"{"model_type": "mamba", "vocab_size": 1, "hidden_size": 1, "intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1}"#).unwrap();
        let err = Checkpoint::load(dir.path(), &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("unsupported architecture `mamba`"), "{err}");
    }
}
