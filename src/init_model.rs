//! `forge init-model`: a fresh, randomly initialised model of a family and size, written as a Hugging Face
//! checkpoint, with the byte-level tokenizer, another checkpoint's, or a byte-level BPE trained on
//! datasets' rows ([`crate::model::tiny`] builds the model and the tokenizers).
//!
//! ```text
//! forge init-model --family qwen2 --hidden 256 --layers 4 --heads 4 --kv-heads 2 --intermediate 704 -o init/
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Context;
use crate::dataset::Input;
use crate::error::{Error, Result};
use crate::formats::conversation::{conversation, located};
use crate::model::tiny::{
    SPECIAL, Size, parameters, train_tokenizer, write, write_tokenizer_files, write_with_tokenizer,
};
use crate::model::{Arch, ModelConfig};
use crate::stage::{Done, Stage};

/// `forge init-model`: a fresh model of a family and size (flags and pipeline TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Architecture
    #[arg(long, visible_alias = "arch", value_enum, default_value_t = qwen2())]
    #[serde(default = "qwen2", alias = "arch")]
    pub family: Arch,
    /// Width of the residual stream
    #[arg(long, default_value_t = d64())]
    #[serde(default = "d64")]
    pub hidden: usize,
    /// Width of the MLP's hidden layer
    #[arg(long, default_value_t = d128())]
    #[serde(default = "d128")]
    pub intermediate: usize,
    /// Decoder layers
    #[arg(long, default_value_t = d2())]
    #[serde(default = "d2")]
    pub layers: usize,
    /// Query heads
    #[arg(long, default_value_t = d4())]
    #[serde(default = "d4")]
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads)
    #[arg(long, default_value_t = d2())]
    #[serde(default = "d2")]
    pub kv_heads: usize,
    /// Seed of the weights
    #[arg(long, default_value_t)]
    #[serde(default)]
    pub seed: u64,
    /// Take the tokenizer (and chat template) of this checkpoint or tokenizer directory instead of the
    /// byte-level one
    #[arg(long, value_name = "DIR")]
    pub tokenizer_from: Option<PathBuf>,
    /// Train a byte-level BPE tokenizer of `--vocab-size` tokens on the text of these datasets (repeatable)
    /// instead of using the byte-level one: a from-scratch model then reads several times fewer tokens
    /// per row
    #[arg(long, value_name = "DATA", conflicts_with = "tokenizer_from")]
    #[serde(default)]
    pub tokenizer_data: Vec<PathBuf>,
    /// Vocabulary size of the trained tokenizer (`--tokenizer-data`), special tokens included
    #[arg(long, default_value_t = d1024())]
    #[serde(default = "d1024")]
    pub vocab_size: usize,
}

fn qwen2() -> Arch {
    Arch::Qwen2
}
fn d1024() -> usize {
    1024
}
fn d64() -> usize {
    64
}
fn d128() -> usize {
    128
}
fn d2() -> usize {
    2
}
fn d4() -> usize {
    4
}

/// Write the model `cfg` describes into `dir` (which must not hold anything); returns its parameter count.
pub fn init(cfg: &InitConfig, dir: &Path) -> Result<usize> {
    if dir.exists() && fs_err::read_dir(dir)?.next().is_some() {
        return Err(Error::usage(format!("`{}` exists and is not empty", dir.display())));
    }
    if cfg.heads == 0
        || cfg.kv_heads == 0
        || !cfg.hidden.is_multiple_of(cfg.heads)
        || !cfg.heads.is_multiple_of(cfg.kv_heads)
    {
        return Err(Error::usage("`--heads` must divide `--hidden`, and `--kv-heads` must divide `--heads`"));
    }
    let size = Size {
        hidden: cfg.hidden,
        intermediate: cfg.intermediate,
        layers: cfg.layers,
        heads: cfg.heads,
        kv_heads: cfg.kv_heads,
    };
    if !cfg.tokenizer_data.is_empty() {
        if cfg.vocab_size < 256 + SPECIAL.len() {
            return Err(Error::usage(format!("`--vocab-size` must be at least {}", 256 + SPECIAL.len())));
        }
        let texts = corpus(&cfg.tokenizer_data)?;
        fs_err::create_dir_all(dir)?;
        write_tokenizer_files(dir, &train_tokenizer(&texts, cfg.vocab_size)?)?;
        write_with_tokenizer(dir, cfg.family, size, cfg.seed, dir)?;
    } else {
        match &cfg.tokenizer_from {
            Some(from) => write_with_tokenizer(dir, cfg.family, size, cfg.seed, from)?,
            None => write(dir, cfg.family, size, cfg.seed)?,
        }
    }
    let vocab = ModelConfig::read(&dir.join("config.json"))?.vocab_size;
    Ok(parameters(cfg.family, size, vocab))
}

/// Where `forge init-model` writes.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct InitTarget {
    /// Checkpoint directory to write
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Replace what the directory holds when it is not this same model
    #[arg(long)]
    pub overwrite: bool,
}

/// The file that records what a checkpoint directory was initialised from: the settings, and the content
/// of the datasets a tokenizer was trained on. The same command again finds it and does nothing.
const MARKER: &str = ".forge-init.json";

impl crate::stage::Target for InitTarget {
    fn in_pipeline(dir: &std::path::Path) -> Option<InitTarget> {
        Some(InitTarget { output: dir.to_path_buf(), overwrite: true })
    }

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        Some(&mut self.output)
    }
}

/// `forge init-model`.
pub struct InitModel;

impl Stage for InitModel {
    const NAME: &'static str = "init-model";
    const ABOUT: &'static str =
        "Write a fresh, randomly initialised model (byte-level tokenizer, ChatML template) as a checkpoint";
    const EXAMPLES: &'static str =
        "  forge init-model --family qwen2 -o tiny/                                   # 64 wide, 2 layers
  forge init-model --family llama --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 688 -o small/
  forge init-model --arch qwen2 --hidden 256 --layers 4 --heads 4 --tokenizer-from Qwen2.5-0.5B/ -o init/";
    type Config = InitConfig;
    type Target = InitTarget;

    fn run(cfg: &InitConfig, target: &InitTarget, _: &Context) -> Result<Done> {
        let dir = &target.output;
        let marker = dir.join(MARKER);
        let inputs: Vec<_> = cfg.tokenizer_data.iter().map(|d| Input::open(d)?.reference()).collect::<Result<_>>()?;
        let wanted = serde_json::to_string(&(cfg, inputs)).expect("json");
        if marker.exists() && fs_err::read_to_string(&marker)? == wanted {
            let summary = format!("`{}` already holds this model; nothing to do", dir.display());
            return Ok(Done { up_to_date: true, summary, ..Done::default() });
        }
        if target.overwrite && dir.exists() {
            fs_err::remove_dir_all(dir)?;
        }
        let params = init(cfg, dir)?;
        crate::dataset::write_atomic(&marker, wanted.as_bytes())?;
        let summary = format!("wrote a {:?} model of {params} parameters to `{}`", cfg.family, dir.display());
        Ok(Done { summary, ..Done::default() })
    }
}

/// The text of every message of the datasets' rows (as `forge train-sft` reads them), or their `prompt`.
fn corpus(data: &[PathBuf]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for path in data {
        let input = Input::open(path)?;
        for record in input.records(0..input.rows()) {
            let record = record?;
            match conversation(&record.fields) {
                Ok(conv) => texts.extend(conv.messages.into_iter().map(|m| m.content)),
                Err(e) => match record.fields.get("prompt").and_then(|p| p.as_str()) {
                    Some(prompt) => texts.push(prompt.to_string()),
                    None => return Err(located(&record, e)),
                },
            }
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::Checkpoint;

    #[test]
    fn a_trained_tokenizer_compresses_its_corpus_and_round_trips_any_text() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("rows.jsonl");
        let rows: Vec<String> = (0..300)
            .map(|i| {
                let user = format!("The number of lamps in Maple School is {}. What is it?", i % 23);
                let reply = format!("Define a as the number of lamps in Maple School. a = {}.", i % 23);
                serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
                    .to_string()
            })
            .collect();
        fs_err::write(&data, rows.join("\n")).unwrap();
        let out = dir.path().join("model");
        let cfg = InitConfig {
            family: Arch::Llama,
            hidden: 32,
            intermediate: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            seed: 1,
            tokenizer_from: None,
            tokenizer_data: vec![data.clone()],
            vocab_size: 300,
        };
        let params = init(&cfg, &out).unwrap();
        let ck = Checkpoint::load(&out, &Device::Cpu).unwrap();
        let tok = crate::model::tokenizer::Tokenizer::from_dir(&out).unwrap();
        assert_eq!(ck.config.vocab_size, tok.vocab_size());
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 270, "{}", tok.vocab_size());
        assert_eq!(
            params,
            parameters(
                Arch::Llama,
                Size { hidden: 32, intermediate: 64, layers: 1, heads: 2, kv_heads: 1 },
                tok.vocab_size()
            )
        );
        assert_eq!(tok.eos_ids, vec![2, 0], "<|im_end|>, then <|endoftext|>");
        let seen = "Define a as the number of lamps in Maple School. a = 7.";
        let ids = tok.encode(seen).unwrap();
        assert!(ids.len() * 3 < seen.len(), "{} tokens for {} bytes", ids.len(), seen.len());
        let unseen = "<|im_start|>user\nZebra ✓ 12345 {}\n\t<|im_end|>";
        assert_eq!(tok.decode(&tok.encode(unseen).unwrap(), false).unwrap(), unseen);

        let small = InitConfig { vocab_size: 100, ..cfg };
        let err = init(&small, &dir.path().join("small")).unwrap_err();
        assert!(err.to_string().contains("at least 259"), "{err}");
    }
}
