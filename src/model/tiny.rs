//! Tiny checkpoints made in code, so tests (and the quickstart's from-scratch models) never download
//! anything: a byte-level tokenizer (256 byte tokens plus ChatML's special tokens), a ChatML chat template,
//! and a randomly initialised Qwen2 or Llama decoder, written as a Hugging Face checkpoint directory.

use std::path::Path;

use candle_core::Device;
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
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
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
pub fn write_tokenizer_files(dir: &Path, tok: &tokenizers::Tokenizer) -> Result<()> {
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
        let written = fs_err::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(!written.contains("null"), "transformers reads a null as a value: {written}");
        let tok = super::super::tokenizer::Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.eos_ids, vec![258, 256]);
        let chat = super::super::chat::ChatTemplate::from_dir(dir.path()).unwrap();
        let text = chat.render(&[super::super::chat::Message::new("user", "hi")], true, &Default::default()).unwrap();
        assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }
}
