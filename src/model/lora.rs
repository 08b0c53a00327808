//! LoRA adapters in peft's format: `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_A.weight` (`[rank, in]`) and `.lora_B.weight` (`[out, rank]`), and
//! `adapter_config.json` (`r`, `lora_alpha`, `target_modules`, `base_model_name_or_path`, ...), so peft
//! (`PeftModel.from_pretrained`), vLLM (`--lora-modules`) and forge itself load them. Initialisation as
//! peft's: A from kaiming-uniform (a = √5, i.e. U(±1/√in)), B zero, so training starts at the base model;
//! the update is `scale · B A` with `scale = alpha / r`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::decoder::{Decoder, Lora};
use crate::error::{Error, Location, Result};

/// The module names a LoRA may target (all of them by default).
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// What `adapter_config.json` holds (the fields forge reads and writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// The rank.
    pub r: usize,
    /// The scale's numerator: the update is `alpha / r · B A` (or `alpha / sqrt(r)` with rsLoRA).
    pub lora_alpha: f64,
    /// Which projections carry an adapter (`q_proj`, `v_proj`, ...).
    pub target_modules: Vec<String>,
    /// The checkpoint the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// rsLoRA's scale `alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
}

impl AdapterConfig {
    /// The update's scale.
    pub fn scale(&self) -> f64 {
        if self.use_rslora { self.lora_alpha / (self.r as f64).sqrt() } else { self.lora_alpha / self.r as f64 }
    }

    /// Read `adapter_config.json` from `dir`.
    pub fn read(dir: &Path) -> Result<AdapterConfig> {
        let path = dir.join("adapter_config.json");
        let text = fs_err::read_to_string(&path)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::data(Location::file(&path), format!("not a LoRA adapter config: {e}")))
    }

    /// The full `adapter_config.json` peft writes.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": 0.0,
            "target_modules": self.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": self.use_rslora,
            "modules_to_save": null,
            "inference_mode": true,
            "init_lora_weights": true,
            "base_model_name_or_path": self.base_model_name_or_path,
        })
    }

    /// The base checkpoint of an adapter in `dir`: `base_model_name_or_path`, relative to `dir` unless
    /// absolute, unless `base` says otherwise.
    pub fn base_dir(&self, dir: &Path, base: Option<&Path>) -> Result<PathBuf> {
        if let Some(b) = base {
            return Ok(b.to_path_buf());
        }
        let named = self.base_model_name_or_path.as_deref().ok_or_else(|| {
            Error::data(Location::file(dir.join("adapter_config.json")), "no `base_model_name_or_path`")
                .with_hint("pass the base checkpoint with `--base DIR`")
        })?;
        let path = dir.join(named);
        if !path.join("config.json").exists() {
            return Err(Error::data(
                Location::file(dir.join("adapter_config.json")),
                format!("the base model `{named}` is not a checkpoint directory here"),
            )
            .with_hint("pass the base checkpoint with `--base DIR`"));
        }
        Ok(path)
    }
}

fn key(module: &str, part: &str) -> String {
    format!("base_model.model.{module}.lora_{part}.weight")
}

fn candle(e: candle_core::Error) -> Error {
    Error::usage(format!("LoRA: {e}"))
}

/// Add trainable adapters (`Var`s in `vars`, under peft's names) to the targeted layers of `model`.
pub fn attach_trainable(model: &mut Decoder, vars: &VarMap, cfg: &AdapterConfig, seed: u64) -> Result<()> {
    let device = model.device().clone();
    let mut attached = 0;
    for (k, (module, linear)) in model.linears_mut().into_iter().enumerate() {
        if !cfg.target_modules.iter().any(|t| module.ends_with(&format!(".{t}"))) {
            continue;
        }
        let (out, inp) = linear.weight.dims2().map_err(candle)?;
        let bound = 1.0 / (inp as f64).sqrt();
        let mut rng = crate::rng::Rng::for_row(seed, "lora", k as u64);
        let init: Vec<f32> = (0..cfg.r * inp).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect();
        let a = vars
            .get((cfg.r, inp), &key(&module, "A"), candle_nn::Init::Const(0.0), DType::F32, &device)
            .map_err(candle)?;
        let b = vars
            .get((out, cfg.r), &key(&module, "B"), candle_nn::Init::Const(0.0), DType::F32, &device)
            .map_err(candle)?;
        let data = vars.data().lock().expect("not poisoned");
        data[&key(&module, "A")]
            .set(&Tensor::from_vec(init, (cfg.r, inp), &device).map_err(candle)?)
            .map_err(candle)?;
        drop(data);
        linear.lora = Some(Lora { a, b, scale: cfg.scale() });
        attached += 1;
    }
    if attached == 0 {
        return Err(Error::usage(format!("no layer matches the LoRA targets {:?}", cfg.target_modules)));
    }
    Ok(())
}

/// Add the adapter saved in `dir` to `model` (plain tensors, for inference).
pub fn attach_saved(model: &mut Decoder, dir: &Path) -> Result<()> {
    let cfg = AdapterConfig::read(dir)?;
    let path = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&path, model.device())
        .map_err(|e| Error::data(Location::file(&path), format!("cannot read the adapter: {e}")))?;
    for (module, linear) in model.linears_mut() {
        if let (Some(a), Some(b)) = (tensors.get(&key(&module, "A")), tensors.get(&key(&module, "B"))) {
            let (a, b) = (a.to_dtype(DType::F32).map_err(candle)?, b.to_dtype(DType::F32).map_err(candle)?);
            linear.lora = Some(Lora { a, b, scale: cfg.scale() });
        }
    }
    Ok(())
}

/// Fold every adapter of `model` into its base weight (`W + scale · B A`) and drop the adapters.
pub fn merge(model: &mut Decoder) -> Result<Vec<(String, Tensor)>> {
    let mut merged = Vec::new();
    for (module, linear) in model.linears_mut() {
        if let Some(l) = linear.lora.take() {
            let delta = (l.b.matmul(&l.a).map_err(candle)? * l.scale).map_err(candle)?;
            linear.weight = (&linear.weight + delta).map_err(candle)?;
            merged.push((format!("{module}.weight"), linear.weight.clone()));
        }
    }
    Ok(merged)
}

/// Write `adapter_model.safetensors` (the `Var`s of `vars`) and `adapter_config.json` into `dir`.
pub fn save(dir: &Path, vars: &VarMap, cfg: &AdapterConfig) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> =
        vars.data().lock().expect("not poisoned").iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    super::save_safetensors(&tensors, &dir.join("adapter_model.safetensors"))?;
    let json = serde_json::to_vec_pretty(&cfg.to_json()).expect("json");
    crate::dataset::write_atomic(&dir.join("adapter_config.json"), &json)
}

/// Is `dir` an adapter directory (rather than a full checkpoint)?
pub fn is_adapter(dir: &Path) -> bool {
    dir.join("adapter_config.json").exists() && !dir.join("config.json").exists()
}

/// Load an adapter's base from `dir` with the adapter attached (inference).
pub fn load_with_base(dir: &Path, device: &Device) -> Result<(super::ModelConfig, Decoder)> {
    let cfg = AdapterConfig::read(dir)?;
    let base = cfg.base_dir(dir, None)?;
    let (config, mut model) = super::Checkpoint::load_frozen(&base, device)?;
    attach_saved(&mut model, dir)?;
    Ok((config, model))
}

/// `forge merge-lora`: the base checkpoint with the adapter in `adapter` folded into its weights, written
/// as a full checkpoint to `out` (the base's dtype, config and tokenizer files).
pub fn merge_dir(adapter: &Path, base: Option<&Path>, out: &Path) -> Result<()> {
    if out.exists() && fs_err::read_dir(out)?.next().is_some() {
        return Err(Error::usage(format!("`{}` exists and is not empty", out.display())));
    }
    let cfg = AdapterConfig::read(adapter)?;
    let base = cfg.base_dir(adapter, base)?;
    let mut ck = super::Checkpoint::load(&base, &Device::Cpu)?;
    attach_saved(&mut ck.model, adapter)?;
    let merged = merge(&mut ck.model)?;
    let dtype = super::save_dtype(&ck.config);
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in ck.vars.data().lock().expect("not poisoned").iter() {
        tensors.insert(name.clone(), var.as_tensor().to_dtype(dtype).map_err(candle)?);
    }
    for (name, w) in merged {
        tensors.insert(name, w.to_dtype(dtype).map_err(candle)?);
    }
    fs_err::create_dir_all(out)?;
    super::copy_config_files(&base, out, |_| false)?;
    super::save_safetensors(&tensors, &out.join("model.safetensors"))
}
