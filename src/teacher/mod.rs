//! Teachers: what writes the traces. One trait; `local` runs a Hugging Face checkpoint in candle,
//! `openai` calls an OpenAI-compatible server (vLLM, SGLang, llama.cpp, hosted APIs).

pub mod adaptive;
pub mod beam;
pub mod budget;
pub mod engine;
pub mod journal;
pub mod local;
pub mod openai;
pub mod reward_model;
pub mod sampling;
pub mod traces;

pub use crate::dataset::Finish;
use crate::error::{Error, Result};
use crate::model::chat::{ChatTemplate, Message};
use crate::progress::Progress;
pub use openai::HttpConfig;
pub use sampling::SamplingConfig;

/// One prompt to sample `n` completions of.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Seeds the samples' random streams (the problem id).
    pub key: String,
    /// The conversation up to the assistant's turn.
    pub messages: Vec<Message>,
    /// Text the assistant's turn starts with (e.g. `<think>\n`); the completion continues it.
    pub prefill: String,
    /// Samples to draw.
    pub n: u32,
    /// New tokens at most for this prompt's samples, when below the sampling's `max_new_tokens`
    /// (budget forcing continues each sample with what is left of its budget).
    pub max_new_tokens: Option<u32>,
    /// The index of the first of the `n` samples (adaptive sampling asks for a problem's samples in
    /// rounds: `first_sample..first_sample + n`); a sample's random stream depends on its index.
    pub first_sample: u32,
}

impl Prompt {
    /// The new tokens at most of this prompt under `sampling`.
    pub fn limit(&self, sampling: &SamplingConfig) -> u32 {
        self.max_new_tokens.map_or(sampling.max_new_tokens, |m| m.min(sampling.max_new_tokens))
    }
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The generated text (after the prefill; without the end-of-sequence token).
    pub text: String,
    /// The thinking, when the server returned it apart from the text (`reasoning_content`, `reasoning`).
    pub reasoning: Option<String>,
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// The generated token ids, ending with the end-of-sequence token when the sample ended with one
    /// (the local teacher; empty from a server).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: Finish,
    /// Log-probability of each generated token under the model.
    pub logprobs: Vec<f32>,
    /// The `top_logprobs` most likely tokens at each generated position (empty when not asked).
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    /// Why there is no sample (`finish` is [`Finish::Error`]): the request failed past its retries.
    pub error: Option<String>,
    /// What an HTTP server reported about the response (a JSON object).
    pub server: Option<String>,
}

impl Sample {
    /// The stand-in for a sample whose request failed.
    pub fn error(message: &str) -> Sample {
        Sample {
            text: String::new(),
            reasoning: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            tokens: Vec::new(),
            finish: Finish::Error,
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            error: Some(message.to_string()),
            server: None,
        }
    }
}

/// A model that writes solutions: the local candle backend, or an OpenAI-compatible server.
pub trait Teacher {
    /// `local:<path>` or `openai:<model>@<url>`, recorded in every trace.
    fn id(&self) -> &str;
    /// The teacher's tokenizer, where forge has it (the local teacher): budget forcing counts with it.
    fn tokenizer(&self) -> Option<&crate::model::tokenizer::Tokenizer> {
        None
    }
    /// `n` samples for each prompt, at most `slots` samples decoding at once (the local teacher gives a
    /// finished sample's place to the next prompt; a server batches by itself): each prompt's samples go to
    /// `done(i, samples)` as soon as they are all finished, in no set order; `progress` counts the samples.
    fn generate_each(
        &mut self,
        prompts: &[Prompt],
        sampling: &SamplingConfig,
        slots: usize,
        progress: &Progress,
        done: &mut dyn FnMut(usize, Vec<Sample>) -> Result<()>,
    ) -> Result<()>;

    /// `n` samples for each prompt, in order, all decoding at once.
    fn generate(
        &mut self,
        prompts: &[Prompt],
        sampling: &SamplingConfig,
        progress: &Progress,
    ) -> Result<Vec<Vec<Sample>>> {
        let mut out = vec![Vec::new(); prompts.len()];
        self.generate_each(prompts, sampling, usize::MAX, progress, &mut |i, samples| {
            out[i] = samples;
            Ok(())
        })?;
        Ok(out)
    }
}

/// The text a model continues for `prompt`: the chat template's rendering with the generation prompt,
/// then the prefill.
pub fn render(template: &ChatTemplate, prompt: &Prompt) -> Result<String> {
    Ok(template.render(&prompt.messages, true, &Default::default())? + &prompt.prefill)
}

/// How to reach a teacher: the spec (`local:PATH`, `openai:URL`), and for an HTTP teacher the served model
/// name, the client settings, and the run whose journal entries are its own.
pub struct Connect<'a> {
    /// `local:PATH` or `openai:URL`.
    pub spec: &'a str,
    /// The served model name (`--model`); the server's only one when absent.
    pub model: Option<&'a str>,
    /// The HTTP client's settings.
    pub http: &'a HttpConfig,
    /// This run's id in the request journal.
    pub run: u64,
}

/// Open the teacher `spec` names (`local:PATH` or `openai:URL`).
pub fn open(c: &Connect) -> Result<Box<dyn Teacher>> {
    match c.spec.split_once(':') {
        Some(("local", path)) => Ok(Box::new(local::Local::open(std::path::Path::new(path))?)),
        Some(("openai", urls)) => Ok(Box::new(openai::OpenAi::open(urls, c.model, c.http, c.run)?)),
        _ => Err(Error::usage(format!("unknown teacher `{}`", c.spec)).with_hint(
            "use `local:PATH` for a Hugging Face checkpoint directory, `openai:http://HOST:PORT/v1` for a server",
        )),
    }
}
