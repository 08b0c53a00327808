//! A training run's directory: periodic checkpoints (weights, optimizer moments, position) that a rerun
//! resumes from, and at the end a Hugging Face checkpoint (transformers' tensor names, safetensors with
//! `{"format": "pt"}` metadata, the base's config and tokenizer files) plus `train-report.json`, written
//! last: a directory with the report is a finished run.
//!
//! ```text
//! OUT/config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json
//! OUT/metrics.csv, loss.png, train-report.json
//! OUT/.forge-train.json            the fingerprint of the run in progress
//! OUT/checkpoints/step-00000050/   model.safetensors, optimizer.safetensors, state.json
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{TrainOutput, TrainReport, candle_err, checkpoints_dir, optim::AdamW};
use crate::dataset::Input;
use crate::error::{Error, Location, Result};
use crate::model::Checkpoint;
use crate::model::lora::AdapterConfig;

/// Where a run stands in its output directory.
pub enum Resume {
    /// Nothing to resume: start from the model.
    Fresh,
    /// Continue from this checkpoint directory.
    From(PathBuf),
    /// The run is finished: its report.
    Finished(TrainReport),
}

/// What a checkpoint records beside the weights and moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done; the data order is a function of the seed, so this is the data position too.
    pub step: u64,
    /// Tokens read.
    pub tokens: u64,
    /// Tokens with a loss.
    pub trained_tokens: u64,
    /// The last held-out loss, if any.
    pub eval_loss: Option<f64>,
    /// Distillation: trained tokens with a teacher distribution.
    #[serde(default)]
    pub distilled_tokens: u64,
}

#[derive(Serialize, Deserialize)]
struct InProgress {
    fingerprint: String,
}

const IN_PROGRESS: &str = ".forge-train.json";
const REPORT: &str = "train-report.json";
/// Everything a run writes (what `--overwrite` may remove).
const WRITTEN: [&str; 10] = [
    "reward.png",
    "rollouts",
    "model.safetensors",
    "adapter_model.safetensors",
    "adapter_config.json",
    "metrics.csv",
    "loss.png",
    REPORT,
    IN_PROGRESS,
    "checkpoints",
];

/// Hash of what determines the result: forge's version, the config, the data and the base weights.
pub fn fingerprint(
    (stage, settings): (&str, serde_json::Value),
    model: &Path,
    data: &[Input],
    eval: Option<&Input>,
) -> Result<String> {
    let key = serde_json::json!([
        env!("CARGO_PKG_VERSION"),
        stage,
        settings,
        data.iter().map(|d| d.reference().map(|r| r.xxh3)).collect::<Result<Vec<_>>>()?,
        eval.map(Input::reference).transpose()?.map(|r| r.xxh3),
        crate::model::checkpoint_hash(model)?,
    ]);
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.to_string().as_bytes())))
}

fn is_ours(name: &str) -> bool {
    WRITTEN.contains(&name) || crate::model::CONFIG_FILES.contains(&name) || name.starts_with('.')
}

/// Decide between a fresh run, a resumed one and a finished one, and mark the directory as this run's.
pub fn prepare(dir: &Path, fingerprint: &str, out: &TrainOutput) -> Result<Resume> {
    let marker = dir.join(IN_PROGRESS);
    if dir.exists() {
        let mut names = Vec::new();
        for entry in fs_err::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        if let Some(other) = names.iter().find(|n| !is_ours(n)) {
            return Err(Error::usage(format!(
                "`{}` exists and is not a forge training run (it holds `{other}`)",
                dir.display()
            ))
            .with_hint("write to a new directory; forge never deletes files it did not write"));
        }
        let report_path = dir.join(REPORT);
        let previous = if report_path.exists() {
            let report: TrainReport = read_json(&report_path)?;
            Some((report.fingerprint.clone(), Some(report)))
        } else if marker.exists() {
            Some((read_json::<InProgress>(&marker)?.fingerprint, None))
        } else {
            None
        };
        match previous {
            Some((f, Some(report))) if f == fingerprint => return Ok(Resume::Finished(report)),
            Some((f, None)) if f == fingerprint => {
                if let Some(last) = checkpoints(dir)?.pop() {
                    return Ok(Resume::From(last));
                }
            }
            Some(_) if out.overwrite => {
                for name in names {
                    let path = dir.join(name);
                    if path.is_dir() { fs_err::remove_dir_all(path)? } else { fs_err::remove_file(path)? }
                }
            }
            Some((_, finished)) => {
                let state = if finished.is_some() { "a finished" } else { "an unfinished" };
                return Err(Error::usage(format!(
                    "`{}` holds {state} run of a different command, config, model or data",
                    dir.display()
                ))
                .with_hint("pass `--overwrite` to replace it, or write to another directory"));
            }
            None => {}
        }
    }
    fs_err::create_dir_all(dir)?;
    crate::dataset::write_atomic(
        &marker,
        &serde_json::to_vec(&InProgress { fingerprint: fingerprint.into() }).expect("json"),
    )?;
    Ok(Resume::Fresh)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| Error::data(Location::file(path), format!("unreadable: {e}")))
}

/// Finished checkpoints, oldest first.
fn checkpoints(out: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(out);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = fs_err::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
        .collect();
    found.sort();
    Ok(found)
}

use crate::model::save_safetensors as save_tensors;

fn weights(checkpoint: &Checkpoint, dtype: DType) -> Result<HashMap<String, Tensor>> {
    let data = checkpoint.vars.data().lock().expect("not poisoned");
    data.iter().map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(dtype).map_err(candle_err)?))).collect()
}

/// Write a checkpoint atomically (a temporary directory renamed into place), keeping the last two.
pub fn save_checkpoint(out: &Path, checkpoint: &Checkpoint, opt: &AdamW, state: &TrainState) -> Result<()> {
    let root = checkpoints_dir(out);
    let dir = root.join(format!("step-{:08}", state.step));
    let temp = root.join(format!(".step-{:08}.tmp", state.step));
    if temp.exists() {
        fs_err::remove_dir_all(&temp)?;
    }
    fs_err::create_dir_all(&temp)?;
    save_tensors(&weights(checkpoint, DType::F32)?, &temp.join("model.safetensors"))?;
    save_tensors(&opt.state().map_err(candle_err)?, &temp.join("optimizer.safetensors"))?;
    crate::dataset::write_atomic(&temp.join("state.json"), &serde_json::to_vec_pretty(state).expect("json"))?;
    fs_err::rename(&temp, &dir)?;
    fs_err::File::open(&root)?.sync_all()?;
    let all = checkpoints(out)?;
    for old in &all[..all.len().saturating_sub(2)] {
        fs_err::remove_dir_all(old)?;
    }
    Ok(())
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::data(Location::file(path), format!("cannot read the checkpoint: {e}")))
}

/// Load a checkpoint's weights and optimizer state; returns its position.
pub fn restore(dir: &Path, checkpoint: &Checkpoint, opt: &mut AdamW) -> Result<TrainState> {
    let state: TrainState = read_json(&dir.join("state.json"))?;
    let tensors = load_tensors(&dir.join("model.safetensors"))?;
    for (name, var) in checkpoint.vars.data().lock().expect("not poisoned").iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::data(Location::file(dir), format!("the checkpoint has no `{name}`")))?;
        var.set(&t.to_device(var.device()).map_err(candle_err)?).map_err(candle_err)?;
    }
    let moments = load_tensors(&dir.join("optimizer.safetensors"))?;
    opt.restore(&moments, state.step).map_err(candle_err)?;
    Ok(state)
}

/// Write the trained model as a Hugging Face checkpoint beside the metrics, then the report.
/// With LoRA, the output is a peft adapter directory (no `config.json`, so it is not mistaken for a full
/// checkpoint), with the tokenizer files beside it.
pub fn finish(
    out: &Path,
    base: &Path,
    checkpoint: &Checkpoint,
    report: &TrainReport,
    lora: Option<&AdapterConfig>,
) -> Result<()> {
    match lora {
        Some(cfg) => crate::model::lora::save(out, &checkpoint.vars, cfg)?,
        None => {
            let dtype = crate::model::save_dtype(&checkpoint.config);
            save_tensors(&weights(checkpoint, dtype)?, &out.join("model.safetensors"))?;
        }
    }
    crate::model::copy_config_files(base, out, |name| lora.is_some() && name == "config.json")?;
    super::metrics::plot(out)?;
    crate::dataset::write_atomic(&out.join(REPORT), &serde_json::to_vec_pretty(report).expect("json"))?;
    let root = checkpoints_dir(out);
    if root.exists() {
        fs_err::remove_dir_all(root)?;
    }
    fs_err::remove_file(out.join(IN_PROGRESS))?;
    Ok(())
}
