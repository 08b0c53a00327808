//! `config.json` of a Hugging Face checkpoint: the fields the Qwen2 and Llama decoders need.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location, Result};

/// The architectures forge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen: bias on q/k/v.
    Qwen2,
    /// Llama 2 and 3.x, DeepSeek-R1-Distill-Llama: no bias (unless `attention_bias`), Llama 3 rope scaling.
    Llama,
}

/// Llama 3.1+ `rope_scaling` (`rope_type = "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `llama3` (the only scaling forge applies) or `default`.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// How much longer the context is than the original.
    #[serde(default = "one")]
    pub factor: f64,
    /// Wavelengths above `original / low_freq_factor` are scaled by `factor`.
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    /// Wavelengths below `original / high_freq_factor` are kept.
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    /// The context length the model was pretrained with.
    #[serde(default = "eight_k")]
    pub original_max_position_embeddings: usize,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn eight_k() -> usize {
    8192
}

/// A checkpoint's `config.json`: the fields forge reads (transformers' names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `qwen2` or `llama`.
    pub model_type: String,
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); the query heads when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Width of a head; `hidden_size / num_attention_heads` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Epsilon of the RMS norms.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary position embedding.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Llama 3.1+ scaling of the rotary embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5 writes `rope_theta` and the scaling here instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    /// The longest context the model supports.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// The output head shares the embedding's weights.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (Llama); Qwen2 always has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Beginning-of-sequence token id(s), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<serde_json::Value>,
    /// End-of-sequence token id(s), as written: one id or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    /// The dtype the weights were saved in, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// The transformers classes the checkpoint was saved from (`Qwen2ForCausalLM`, or a classifier's
    /// `Qwen2ForSequenceClassification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// A classifier's labels; their count is the width of its `score` head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    32_768
}

impl ModelConfig {
    /// Read and check `config.json`: refuses architectures and RoPE scalings forge does not run, naming
    /// the field.
    pub fn read(path: &Path) -> Result<ModelConfig> {
        let text = fs_err::read_to_string(path)?;
        let mut config: ModelConfig = serde_json::from_str(&text)
            .map_err(|e| Error::data(Location::line(path, e.line() as u64), format!("not a model config: {e}")))?;
        if let Some(params) = config.rope_parameters.clone() {
            if let Some(theta) = params["rope_theta"].as_f64() {
                config.rope_theta = theta;
            }
            if params["rope_type"].as_str().is_some_and(|t| t != "default") {
                config.rope_scaling = Some(serde_json::from_value(params).map_err(|e| {
                    Error::data(Location::file(path).column("rope_parameters"), format!("unreadable: {e}"))
                })?);
            }
        }
        // a scaling forge does not apply would give wrong logits without a word: refuse it
        if let Some(s) = &config.rope_scaling
            && !matches!(s.rope_type.as_str(), "llama3" | "default")
        {
            return Err(Error::data(
                Location::file(path).column("rope_scaling"),
                format!("unsupported RoPE scaling `{}`", s.rope_type),
            )
            .with_hint("forge applies `llama3` scaling (Llama 3.1+); other scalings are not implemented"));
        }
        config.arch().map_err(|e| e.with_hint("forge runs Qwen2/Qwen2.5 and Llama checkpoints"))?;
        if config.num_attention_heads == 0 || !config.num_attention_heads.is_multiple_of(config.kv_heads()) {
            return Err(Error::data(
                Location::file(path).column("num_key_value_heads"),
                "must divide num_attention_heads",
            ));
        }
        Ok(config)
    }

    /// With a sequence classifier (`*ForSequenceClassification`: a reward model), the width of its
    /// `score` head, which replaces the language-model head; `None` for a language model.
    pub fn classifier_labels(&self) -> Option<usize> {
        let classifier = self.architectures.iter().flatten().any(|a| a.ends_with("ForSequenceClassification"));
        classifier.then(|| self.id2label.as_ref().map_or(1, serde_json::Map::len).max(1))
    }

    /// The architecture `model_type` names.
    pub fn arch(&self) -> Result<Arch> {
        match self.model_type.as_str() {
            "qwen2" => Ok(Arch::Qwen2),
            "llama" => Ok(Arch::Llama),
            other => Err(Error::usage(format!("unsupported architecture `{other}`"))),
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of a head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Bias on the q, k and v projections (Qwen2 always; Llama when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        match self.arch() {
            Ok(Arch::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Inverse frequencies of the rotary embedding, with Llama 3 scaling applied when configured.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64)).collect();
        let Some(s) = self.rope_scaling.as_ref().filter(|s| s.rope_type == "llama3") else {
            return base.into_iter().map(|f| f as f32).collect();
        };
        let old = s.original_max_position_embeddings as f64;
        let (low_wavelen, high_wavelen) = (old / s.low_freq_factor, old / s.high_freq_factor);
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let scaled = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                scaled as f32
            })
            .collect()
    }

    /// Token ids of `bos_token_id` / `eos_token_id` (a number or a list).
    pub fn ids(value: &Option<serde_json::Value>) -> Vec<u32> {
        match value {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(serde_json::Value::as_u64).map(|n| n as u32).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(extra: &str) -> Result<ModelConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let text = format!(
            r#"{{"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2{extra}}}"#
        );
        fs_err::write(&path, text).unwrap();
        ModelConfig::read(&path)
    }

    /// A RoPE scaling forge does not apply is refused, never silently ignored (wrong logits).
    #[test]
    fn unknown_rope_scaling_is_refused() {
        let llama3 = r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#;
        assert_eq!(read(llama3).unwrap().rope_scaling.unwrap().factor, 8.0);
        let yarn = r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#;
        let err = read(yarn).unwrap_err().to_string();
        assert!(err.contains("column `rope_scaling`") && err.contains("unsupported RoPE scaling `yarn`"), "{err}");
        let bad = r#", "rope_parameters": {"rope_type": "llama3", "factor": "eight"}"#;
        let err = read(bad).unwrap_err().to_string();
        assert!(err.contains("rope_parameters"), "{err}");
    }
}
