//! Outcome reward models: a decoder whose language-model head is replaced by a one-label `score` head,
//! as transformers saves `Qwen2ForSequenceClassification` / `LlamaForSequenceClassification` (the
//! layout of Skywork-Reward and similar). A conversation (the prompt's messages, then the reply as the
//! assistant's message) is rendered with the model's chat template and the head read at its last token:
//! one number, higher for a better reply. `forge eval --reward-model DIR` picks best-of-n with it where
//! no gold answer is needed.
//!
//! ```text
//! forge eval --model student/ --problems test/ --strategy best-of-8 --reward-model rm/
//! ```

use std::path::Path;

use candle_core::Tensor;

use super::local::candle;
use super::traces::PromptConfig;
use crate::error::{Error, Location, Result};
use crate::model::chat::{ChatTemplate, Message};
use crate::model::tokenizer::Tokenizer;
use crate::model::{Checkpoint, Decoder, attention_mask, positions};

/// Conversations scored together.
const BATCH: usize = 8;

/// A loaded reward model.
pub struct RewardModel {
    model: Decoder,
    tokenizer: Tokenizer,
    chat: ChatTemplate,
    context: usize,
}

impl RewardModel {
    /// Load the reward model in `dir`; an error naming `config.json` when it is not a one-label sequence
    /// classifier.
    pub fn open(dir: &Path) -> Result<RewardModel> {
        let (tokenizer, chat) = (Tokenizer::from_dir(dir)?, ChatTemplate::from_dir(dir)?);
        let (config, model) = Checkpoint::load_frozen(dir, &crate::model::device())?;
        if config.classifier_labels() != Some(1) {
            return Err(Error::data(
                Location::file(dir.join("config.json")).column("architectures"),
                "not a reward model: expected a `*ForSequenceClassification` checkpoint with one label",
            )
            .with_hint("an outcome reward model as transformers saves it (a `score` head of one output)"));
        }
        Ok(RewardModel { model, tokenizer, chat, context: config.max_position_embeddings })
    }

    /// The reward of each conversation: its messages end with the assistant's reply.
    pub fn score(&self, conversations: &[Vec<Message>]) -> Result<Vec<f32>> {
        let mut rewards = Vec::with_capacity(conversations.len());
        for chunk in conversations.chunks(BATCH) {
            let mut ids = Vec::with_capacity(chunk.len());
            for messages in chunk {
                let row = conversation_ids(&self.chat, &self.tokenizer, messages)?;
                if row.is_empty() || row.len() > self.context {
                    return Err(Error::usage(format!(
                        "a conversation of {} tokens does not fit the reward model's context of {}",
                        row.len(),
                        self.context
                    )));
                }
                ids.push(row);
            }
            rewards.extend(self.batch(&ids).map_err(candle)?);
        }
        Ok(rewards)
    }

    /// Rewards of token rows scored together: left-padded, so every row's last token is the last place.
    fn batch(&self, ids: &[Vec<u32>]) -> candle_core::Result<Vec<f32>> {
        let t = ids.iter().map(Vec::len).max().unwrap_or(0);
        let valid: Vec<Vec<bool>> = ids.iter().map(|r| (0..t).map(|i| i >= t - r.len()).collect()).collect();
        let padded: Vec<Vec<u32>> =
            ids.iter().map(|r| std::iter::repeat_n(0, t - r.len()).chain(r.iter().copied()).collect()).collect();
        let device = self.model.device();
        let input = Tensor::new(padded, device)?;
        let hidden = self.model.hidden(&input, &positions(&valid, 0, device)?, &attention_mask(&valid, 0, t), None)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(self.model.head(&last)?.to_vec2::<f32>()?.into_iter().map(|r| r[0]).collect())
    }
}

/// The conversation a reward model scores for a sample: the messages the policy was given for the problem
/// (`domain`, `prompt`: the traces table's columns) under `prompt`'s template, then the sample (after the
/// prefill it continued) as the assistant's reply.
pub fn conversation(prompt: &PromptConfig, domain: &str, problem: &str, completion: &str) -> Vec<Message> {
    let mut messages = prompt.messages_of(domain, problem);
    messages.push(Message::new("assistant", &format!("{}{completion}", prompt.prefill())));
    messages
}

/// The tokens a reward model reads for `messages`: the whole conversation under its chat template (no
/// generation prompt), as transformers' `apply_chat_template` gives them; the head reads the last one.
pub fn conversation_ids(chat: &ChatTemplate, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    tokenizer.encode(&chat.render(messages, false, &Default::default())?)
}
