//! Tiny checkpoints made in code, so tests (and the quickstart's from-scratch models) never download
//! anything: a byte-level tokenizer (256 byte tokens plus ChatML's special tokens), a ChatML chat template,
//! and a randomly initialised Qwen2 or Llama decoder, written as a Hugging Face checkpoint directory.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use tokenizers::AddedToken;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::{Arch, Checkpoint, ModelConfig};
use crate::error::{Error, Result};

/// The special tokens of the tiny tokenizer, after the 256 byte tokens.
pub const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML, as Qwen2.5 writes it (without the default system prompt).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Sizes of a tiny model.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

impl Default for Size {
    fn default() -> Self {
        Size { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2 }
    }
}

/// The byte-level tokenizer: every byte is a token whose id is the byte (no merges), plus [`SPECIAL`].
pub fn tokenizer() -> Result<tokenizers::Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = (0..=255u8).map(|b| (byte_char(b).to_string(), u32::from(b))).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().map_err(|e| Error::usage(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(SPECIAL.map(|s| AddedToken::from(s, true))).map_err(|e| Error::usage(e.to_string()))?;
    Ok(tok)
}

/// A byte-level BPE tokenizer of `vocab_size` tokens trained on `texts` (GPT-2's pre-tokenizer, every
/// byte kept as a token so any text encodes), with [`SPECIAL`] first.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BpeTrainer;
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(SPECIAL.map(|s| AddedToken::from(s, true)).to_vec())
        .build()
        .into();
    tok.train(&mut trainer, texts.iter()).map_err(|e| Error::usage(format!("training the tokenizer: {e}")))?;
    Ok(tok)
}

/// The text of every message of the datasets' rows (as `forge train-sft` reads them), or their `prompt`.
fn corpus(data: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for path in data {
        let input = crate::dataset::Input::open(path)?;
        for record in input.records(0..input.rows()) {
            let record = record?;
            match crate::train::data::conversation(&record.fields) {
                Ok(conv) => texts.extend(conv.messages.into_iter().map(|m| m.content)),
                Err(e) => match record.fields.get("prompt").and_then(|p| p.as_str()) {
                    Some(prompt) => texts.push(prompt.to_string()),
                    None => return Err(crate::train::data::located(&record, e)),
                },
            }
        }
    }
    Ok(texts)
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for 256 + their rank.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("a valid char")
}

/// The config of a tiny model of `arch` over the tiny tokenizer.
pub fn config(arch: Arch, size: Size) -> ModelConfig {
    let model_type = match arch {
        Arch::Qwen2 => "qwen2",
        Arch::Llama => "llama",
    };
    serde_json::from_value(serde_json::json!({
        "model_type": model_type,
        "architectures": [if arch == Arch::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "vocab_size": 256 + SPECIAL.len(),
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "head_dim": size.hidden / size.heads,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": arch == Arch::Qwen2,
        "bos_token_id": 256,
        "eos_token_id": 258,
        "torch_dtype": "float32",
    }))
    .expect("a valid config")
}

/// Parameters of a model of `arch` and `size` over a vocabulary of `vocab` tokens.
pub fn parameters(arch: Arch, size: Size, vocab: usize) -> usize {
    let d = size.hidden / size.heads;
    let attn = size.hidden * size.heads * d * 2 + size.hidden * size.kv_heads * d * 2;
    let bias = if arch == Arch::Qwen2 { size.heads * d + 2 * size.kv_heads * d } else { 0 };
    let layer = attn + bias + 3 * size.hidden * size.intermediate + 2 * size.hidden;
    let head = if arch == Arch::Qwen2 { 0 } else { vocab * size.hidden };
    vocab * size.hidden + size.layers * layer + size.hidden + head
}

/// `forge init-model`: a fresh model of a family and size (flags and pipeline TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Architecture
    #[arg(long, visible_alias = "arch", value_enum, default_value_t = Arch::Qwen2)]
    #[serde(default = "qwen2", alias = "arch")]
    pub family: Arch,
    #[arg(long, default_value_t = 64)]
    #[serde(default = "d64")]
    pub hidden: usize,
    #[arg(long, default_value_t = 128)]
    #[serde(default = "d128")]
    pub intermediate: usize,
    #[arg(long, default_value_t = 2)]
    #[serde(default = "d2")]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    #[serde(default = "d4")]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    #[serde(default = "d2")]
    pub kv_heads: usize,
    /// Seed of the weights
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Take the tokenizer (and chat template) of this checkpoint or tokenizer directory instead of the
    /// byte-level one
    #[arg(long, value_name = "DIR")]
    pub tokenizer_from: Option<std::path::PathBuf>,
    /// Train a byte-level BPE tokenizer of `--vocab-size` tokens on the text of these datasets (repeatable)
    /// instead of using the byte-level one: a from-scratch model then reads several times fewer tokens
    /// per row
    #[arg(long, value_name = "DATA", conflicts_with = "tokenizer_from")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokenizer_data: Vec<std::path::PathBuf>,
    /// Vocabulary size of the trained tokenizer (`--tokenizer-data`), special tokens included
    #[arg(long, default_value_t = 1024)]
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

/// Write a tiny random checkpoint directory: config, weights, tokenizer, chat template.
pub fn write(dir: &Path, arch: Arch, size: Size, seed: u64) -> Result<()> {
    let config = config(arch, size);
    let checkpoint = Checkpoint::random(&config, seed, &Device::Cpu)?;
    checkpoint.save(dir)?;
    write_tokenizer(dir)
}

/// Write a random checkpoint whose tokenizer comes from `from` (a checkpoint or tokenizer directory):
/// its tokenizer files are copied, the vocabulary size and end-of-sequence ids follow them.
pub fn write_with_tokenizer(dir: &Path, arch: Arch, size: Size, seed: u64, from: &Path) -> Result<()> {
    let tokenizer = super::tokenizer::Tokenizer::from_dir(from)?;
    let mut config = config(arch, size);
    config.vocab_size = tokenizer.vocab_size();
    let eos: Vec<u32> = tokenizer.eos_ids.clone();
    config.eos_token_id = (!eos.is_empty()).then(|| serde_json::json!(eos));
    config.bos_token_id = super::chat::ChatTemplate::from_dir(from)
        .ok()
        .and_then(|t| t.tokens.get("bos_token").and_then(|b| b.as_str()).and_then(|b| tokenizer.token_id(b)))
        .map(|id| serde_json::json!(id));
    Checkpoint::random(&config, seed, &Device::Cpu)?.save(dir)?;
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"] {
        if from != dir && from.join(name).exists() {
            fs_err::copy(from.join(name), dir.join(name))?;
        }
    }
    if !eos.is_empty() {
        let generation = serde_json::json!({ "eos_token_id": eos });
        fs_err::write(dir.join("generation_config.json"), serde_json::to_vec_pretty(&generation).expect("json"))?;
    }
    Ok(())
}

/// The tokenizer files of a tiny checkpoint (`tokenizer.json`, `tokenizer_config.json`,
/// `generation_config.json`).
pub fn write_tokenizer(dir: &Path) -> Result<()> {
    write_tokenizer_files(dir, &tokenizer()?)
}

/// `tok` (which knows [`SPECIAL`]) as the tokenizer files of a ChatML checkpoint.
fn write_tokenizer_files(dir: &Path, tok: &tokenizers::Tokenizer) -> Result<()> {
    tok.save(dir.join("tokenizer.json"), true).map_err(|e| Error::usage(e.to_string()))?;
    let id = |t: &str| tok.token_to_id(t).expect("the special tokens are in the vocabulary");
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHATML,
        "model_max_length": 2048,
    });
    fs_err::write(dir.join("tokenizer_config.json"), serde_json::to_vec_pretty(&config).expect("json"))?;
    let generation =
        serde_json::json!({ "eos_token_id": [id(SPECIAL[2]), id(SPECIAL[0])], "pad_token_id": id(SPECIAL[0]) });
    fs_err::write(dir.join("generation_config.json"), serde_json::to_vec_pretty(&generation).expect("json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tokenizer_round_trips_bytes_and_knows_chatml() {
        let tok = tokenizer().unwrap();
        let text = "<|im_start|>user\nWhat is 2 + 3? Ünïcode ✓<|im_end|>";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids[0], 257);
        assert_eq!(*ids.last().unwrap(), 258);
        assert_eq!(ids[1], u32::from(b'u'), "byte tokens are their byte values");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn tiny_checkpoint_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Arch::Qwen2, Size::default(), 5).unwrap();
        let ck = Checkpoint::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(ck.config.vocab_size, 259);
        let written = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(!written.contains("null"), "transformers reads a null as a value: {written}");
        let tok = super::super::tokenizer::Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.eos_ids, vec![258, 256]);
        let chat = super::super::chat::ChatTemplate::from_dir(dir.path()).unwrap();
        let text = chat.render(&[super::super::chat::Message::new("user", "hi")], true, &Default::default()).unwrap();
        assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

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
        std::fs::write(&data, rows.join("\n")).unwrap();
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
        let tok = super::super::tokenizer::Tokenizer::from_dir(&out).unwrap();
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
