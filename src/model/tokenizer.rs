//! The checkpoint's `tokenizer.json` (Hugging Face `tokenizers`) and the token ids generation stops at.

use std::path::Path;

use crate::error::{Error, Location, Result};

/// A checkpoint's tokenizer (`tokenizer.json`) and its end-of-sequence ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// End-of-sequence ids: `generation_config.json`, else `config.json`, else the `eos_token`.
    pub eos_ids: Vec<u32>,
}

impl Tokenizer {
    /// Read `tokenizer.json` and the end-of-sequence ids from a checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::data(Location::file(dir), "no `tokenizer.json` in the checkpoint directory")
                .with_hint("forge reads the fast-tokenizer file that `tokenizer.save_pretrained` writes"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::data(Location::file(&path), format!("cannot read the tokenizer: {e}")))?;
        let mut tokenizer = Tokenizer { inner, eos_ids: Vec::new() };
        for file in ["generation_config.json", "config.json"] {
            let p = dir.join(file);
            if tokenizer.eos_ids.is_empty() && p.exists() {
                let v: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&p)?).unwrap_or_default();
                tokenizer.eos_ids = super::ModelConfig::ids(&Some(v["eos_token_id"].clone()));
            }
        }
        if tokenizer.eos_ids.is_empty()
            && let Ok(t) = super::chat::ChatTemplate::from_dir(dir)
            && let Some(eos) = t.tokens.get("eos_token").and_then(|e| e.as_str())
            && let Some(id) = tokenizer.token_id(eos)
        {
            tokenizer.eos_ids.push(id);
        }
        Ok(tokenizer)
    }

    /// A tokenizer from its parts.
    pub fn from_inner(inner: tokenizers::Tokenizer, eos_ids: Vec<u32>) -> Tokenizer {
        Tokenizer { inner, eos_ids }
    }

    /// Token ids of `text`, special tokens in it recognised, none added (the chat template adds them).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::usage(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with each token's byte range in it.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, (usize, usize))>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::usage(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().iter().copied().zip(enc.get_offsets().iter().copied()).collect())
    }

    /// Text of `ids`; special tokens dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::usage(format!("detokenizing: {e}")))
    }

    /// The special added tokens (`<|im_end|>`, `<|eot_id|>`, ...), as text.
    pub fn special_tokens(&self) -> Vec<String> {
        self.inner.get_added_tokens_decoder().into_values().filter(|t| t.special).map(|t| t.content).collect()
    }

    /// The id of `token` (added tokens included), if it is one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every token with its id, added tokens included.
    pub fn vocab(&self) -> std::collections::HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Write `tokenizer.json` to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, true).map_err(|e| Error::usage(format!("saving the tokenizer: {e}")))
    }
}
