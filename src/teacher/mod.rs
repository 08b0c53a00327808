//! Teachers: what writes the traces. One trait; `local` runs a Hugging Face checkpoint in candle. An
//! OpenAI-compatible backend (vLLM, SGLang servers) comes later behind the same trait.

pub mod local;
pub mod sampling;
pub mod traces;

pub use crate::dataset::Finish;
use crate::error::{Error, Result};
use crate::model::chat::Message;
pub use sampling::SamplingConfig;

/// One prompt to sample `n` completions of.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Seeds the samples' random streams (the problem id).
    pub key: String,
    pub messages: Vec<Message>,
    /// Text the assistant's turn starts with (e.g. `<think>\n`); the completion continues it.
    pub prefill: String,
    pub n: u32,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The generated text (after the prefill; without the end-of-sequence token).
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish: Finish,
    /// Log-probability of each generated token under the model.
    pub logprobs: Vec<f32>,
    /// The `top_logprobs` most likely tokens at each generated position (empty when not asked).
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
}

pub trait Teacher {
    /// `local:<path>` or `openai:<model>@<url>`, recorded in every trace.
    fn id(&self) -> &str;
    /// `n` samples for each prompt, in order.
    fn generate(&mut self, prompts: &[Prompt], sampling: &SamplingConfig) -> Result<Vec<Vec<Sample>>>;
}

/// Open the teacher `spec` names (`local:PATH`).
pub fn open(spec: &str) -> Result<Box<dyn Teacher>> {
    match spec.split_once(':') {
        Some(("local", path)) => Ok(Box::new(local::Local::open(std::path::Path::new(path))?)),
        _ => Err(Error::usage(format!("unknown teacher `{spec}`"))
            .with_hint("use `local:PATH` for a Hugging Face checkpoint directory")),
    }
}
