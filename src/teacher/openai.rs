//! The HTTP teacher: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, hosted APIs).
//! Requests go out concurrently (`--concurrency`), spread over one or more endpoints, paced by
//! `--max-rps`, retried with exponential backoff and jitter on 429, 5xx, timeouts, resets and truncated or
//! malformed bodies (a `Retry-After` wins over the backoff). Every response is journaled
//! ([`super::journal`]) before it counts, so no finished request is paid for twice. A request that still
//! fails after `--retries` becomes samples with `finish_reason = "error"` and the error text; a rerun
//! sends only those again.
//!
//! One request per sample, with the sample's own seed (from the run seed, the problem id and the sample
//! index): servers disagree on `n` (llama.cpp gives `n` copies of one seed's sample, llama-cpp-python
//! ignores it), and a sample must not depend on the batch or the endpoint that served it. Servers with
//! prefix caching (vLLM, SGLang, llama.cpp) read a prompt once for its `n` requests.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::journal::{Appender, Journal};
use super::{Finish, Prompt, Sample, SamplingConfig, Teacher};
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::progress::Progress;

/// How forge talks to an HTTP teacher: the same settings for `forge generate` and `forge eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct HttpConfig {
    /// HTTP teacher: `chat` (/v1/chat/completions: the server renders its chat template) or `completions`
    /// (/v1/completions: forge renders the template of `--chat-template`, so a `--prefill` works)
    #[arg(long, value_enum, default_value_t = DEFAULT.api, value_name = "API")]
    pub api: Api,
    /// HTTP teacher: the teacher's checkpoint or tokenizer directory; with `--api completions` its chat
    /// template renders the prompt, and its tokenizer names the top-logprob tokens of servers that give
    /// only their text (hosted APIs)
    #[arg(long, value_name = "DIR")]
    pub chat_template: Option<PathBuf>,
    /// HTTP teacher: the environment variable holding the API key (never written anywhere)
    #[arg(long, default_value = KEY_ENV, value_name = "VAR")]
    pub api_key_env: String,
    /// HTTP teacher: requests in flight at once
    #[arg(long, default_value_t = DEFAULT.concurrency, value_name = "N")]
    pub concurrency: usize,
    /// HTTP teacher: requests started per second at most (default: no limit)
    #[arg(long, value_name = "R")]
    pub max_rps: Option<f64>,
    /// HTTP teacher: seconds one request may take before it is retried
    #[arg(long = "timeout", default_value_t = DEFAULT.timeout_s, value_name = "SECONDS")]
    pub timeout_s: f64,
    /// HTTP teacher: retries of a failing request before it becomes an error row
    #[arg(long, default_value_t = DEFAULT.retries, value_name = "N")]
    pub retries: u32,
    /// HTTP teacher: the request journal (default: `$FORGE_CACHE/requests`, else
    /// `~/.cache/forge/requests`); delete it to clear the cache
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
    /// HTTP teacher: answer only from this run's own journaled responses, not from other runs'
    #[arg(long)]
    pub no_cache: bool,
    /// HTTP teacher: do not ask for token log-probabilities (some hosted reasoning APIs refuse them)
    #[arg(long)]
    pub no_logprobs: bool,
}

/// Which API an HTTP teacher is asked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/chat/completions`: the server renders the chat template
    Chat,
    /// `/v1/completions`: forge renders the chat template (`--chat-template DIR`), so a `--prefill` works
    Completions,
}

/// Where the API key is read from unless `--api-key-env` says otherwise.
const KEY_ENV: &str = "OPENAI_API_KEY";

const DEFAULT: HttpConfig = HttpConfig {
    api: Api::Chat,
    chat_template: None,
    api_key_env: String::new(), // KEY_ENV: a `String` cannot be made in a const
    concurrency: 64,
    max_rps: None,
    timeout_s: 600.0,
    retries: 8,
    journal: None,
    no_cache: false,
    no_logprobs: false,
};

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { api_key_env: KEY_ENV.into(), ..DEFAULT }
    }
}

/// Where requests go, and whether the endpoint is resting after failures.
struct Endpoint {
    url: String,
    fails: Cell<u32>,
    down_until: Cell<Option<Instant>>,
}

/// Counts shown while the run goes.
#[derive(Default)]
struct Stats {
    in_flight: Cell<u64>,
    retries: Cell<u64>,
    errors: Cell<u64>,
    cached: Cell<u64>,
    tokens: Cell<u64>,
}

/// The HTTP teacher: an OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted API), or several
/// sharing the requests, behind the request journal.
pub struct OpenAi {
    id: String,
    model: String,
    cfg: HttpConfig,
    key: Option<String>,
    endpoints: Vec<Endpoint>,
    next: Cell<usize>,
    pace: Cell<Option<Instant>>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// With the completions API, the template forge renders prompts with.
    template: Option<ChatTemplate>,
    /// With the completions API, the tokenizer of the template's directory when it has one (budget forcing
    /// counts thinking tokens with it).
    tokenizer: Option<Tokenizer>,
    journal: Journal,
    appender: Appender,
    /// Which server software answers: self-hosted ones take sampling extras, and fill in their own defaults
    /// for what a request leaves out. Asked when the first request must be sent (a run answered from the
    /// journal needs no server).
    kind: tokio::sync::OnceCell<ServerKind>,
    stats: Stats,
    started: Instant,
}

/// The endpoints of `urls` (comma-separated, each up to `/v1`).
fn endpoints(urls: &str) -> Result<Vec<Endpoint>> {
    let endpoints: Vec<Endpoint> = urls
        .split(',')
        .map(|u| Endpoint {
            url: u.trim().trim_end_matches('/').to_string(),
            fails: Cell::new(0),
            down_until: Cell::new(None),
        })
        .collect();
    if let Some(bad) = endpoints.iter().find(|e| !(e.url.starts_with("http://") || e.url.starts_with("https://"))) {
        return Err(Error::usage(format!("teacher endpoint `{}` is not an http(s) URL", bad.url))
            .with_hint("write `--teacher openai:http://HOST:PORT/v1` (several: comma-separated)"));
    }
    Ok(endpoints)
}

/// The chat template forge renders prompts with: the completions API's, none for chat.
fn template(cfg: &HttpConfig) -> Result<Option<ChatTemplate>> {
    match (cfg.api, &cfg.chat_template) {
        (Api::Chat, _) => Ok(None),
        (Api::Completions, Some(dir)) => Ok(Some(ChatTemplate::from_dir(dir)?)),
        (Api::Completions, None) => Err(Error::usage("`--api completions` needs the teacher's chat template")
            .with_hint("add `--chat-template DIR` (the teacher's checkpoint or tokenizer directory)")),
    }
}

/// Why a request ended without a response.
enum Failed {
    /// Out of retries, or refused for this request alone (a 400): the sample becomes an error row.
    Row(String),
    /// Wrong for every request (bad key, unknown model or path): the run stops.
    Run(Error),
}

impl OpenAi {
    /// Connect to `spec` (`URL[,URL…]` or `MODEL@URL[,URL…]`, each URL up to `/v1`). `model` names the
    /// served model (default: from the spec, else the server's only one); `run` keys this run's journal
    /// entries.
    pub fn open(spec: &str, model: Option<&str>, cfg: &HttpConfig, run: u64) -> Result<OpenAi> {
        if cfg.concurrency == 0 || cfg.timeout_s <= 0.0 || cfg.max_rps.is_some_and(|r| r <= 0.0) {
            return Err(Error::usage("`--concurrency`, `--timeout` and `--max-rps` must be above 0"));
        }
        let (named, urls) = match spec.split_once('@') {
            Some((m, urls)) if !m.contains('/') => (Some(m), urls),
            _ => (None, spec),
        };
        let endpoints = endpoints(urls)?;
        let key = std::env::var(&cfg.api_key_env).ok().filter(|k| !k.is_empty());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_s))
            .connect_timeout(Duration::from_secs_f64(cfg.timeout_s.min(10.0)))
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(|e| Error::usage(format!("HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::usage(format!("async runtime: {e}")))?;
        let kind = tokio::sync::OnceCell::new();
        let model = match model.or(named) {
            Some(m) => m.to_string(),
            None => {
                let (served, server) = runtime.block_on(models(&client, &endpoints, key.as_deref()))?;
                kind.set(server).expect("unset");
                match served.as_slice() {
                    [one] => one.clone(),
                    _ => {
                        return Err(Error::usage(format!(
                            "the server serves {} models: {}",
                            served.len(),
                            served.join(", ")
                        ))
                        .with_hint("name one with `--model NAME` (or `openai:NAME@URL`)"));
                    }
                }
            }
        };
        let template = template(cfg)?;
        // also with the chat API: it names the top-logprob tokens of servers that give only their text
        let tokenizer = match &cfg.chat_template {
            Some(dir) if dir.join("tokenizer.json").exists() => Some(Tokenizer::from_dir(dir)?),
            _ => None,
        };
        let mut journal =
            Journal::open(&cfg.journal.clone().unwrap_or_else(super::journal::default_dir), run, !cfg.no_cache)?;
        let appender = journal.appender()?;
        let urls: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
        Ok(OpenAi {
            id: format!("openai:{model}@{}", urls.join(",")),
            model,
            cfg: cfg.clone(),
            key,
            endpoints,
            next: Cell::new(0),
            pace: Cell::new(None),
            client,
            runtime,
            template,
            tokenizer,
            journal,
            appender,
            kind,
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    fn path(&self) -> &'static str {
        match self.cfg.api {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
        }
    }

    /// What a request for `prompt` sends: its messages (chat), or the prompt forge rendered with its
    /// prefill (completions).
    fn content(&self, prompt: &Prompt) -> Result<Value> {
        Ok(match &self.template {
            None => json!({
                "messages": prompt.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>()
            }),
            Some(template) => json!({ "prompt": super::render(template, prompt)? }),
        })
    }

    /// The journal key of sample `k` of `prompt`: what is asked (API, model, messages or rendered prompt,
    /// sampling settings, sample index), not where or of which server software.
    fn key(&self, content: &Value, prompt: &Prompt, s: &SamplingConfig, k: u32) -> u128 {
        // beam search and its length penalty are the local teacher's: a server is never asked for them,
        // and the keys of journals written before they existed stay the same
        let mut sampling = json!(s);
        for local_only in ["beams", "length_penalty"] {
            sampling.as_object_mut().expect("an object").remove(local_only);
        }
        let mut what = json!({
            "api": self.path(),
            "model": self.model,
            "content": content,
            "sampling": sampling,
            "seed_of": prompt.key,
            "sample": k,
            "logprobs": !self.cfg.no_logprobs,
        });
        if let Some(limit) = prompt.max_new_tokens {
            what["limit"] = json!(limit);
        }
        xxhash_rust::xxh3::xxh3_128(what.to_string().as_bytes())
    }

    /// The request for sample `k` of `prompt` (its `content`), to a `kind` server.
    fn body(&self, content: &Value, prompt: &Prompt, s: &SamplingConfig, k: u32, kind: ServerKind) -> Value {
        let mut body = content.clone();
        body["model"] = json!(self.model);
        body["temperature"] = json!(s.temperature);
        body["top_p"] = json!(s.top_p);
        body["max_tokens"] = json!(prompt.limit(s));
        // the sample's own seed, below 2^31 (which every server accepts)
        body["seed"] = json!(super::sampling::stream(s.seed, &prompt.key, k).next_u64() >> 33);
        if !s.stop.is_empty() {
            body["stop"] = json!(s.stop);
        }
        if !self.cfg.no_logprobs || s.top_logprobs > 0 {
            match self.cfg.api {
                Api::Chat => {
                    body["logprobs"] = json!(true);
                    if s.top_logprobs > 0 {
                        body["top_logprobs"] = json!(s.top_logprobs);
                    }
                }
                // the legacy API: `logprobs` is the number of top tokens, and llama.cpp gives none with 0
                Api::Completions => body["logprobs"] = json!(s.top_logprobs.max(1)),
            }
            if s.top_logprobs > 0 && matches!(kind, ServerKind::Vllm | ServerKind::Forge) {
                // otherwise vLLM (and forge's legacy completions) name top-logprob tokens by their text only
                body["return_tokens_as_token_ids"] = json!(true);
            }
        }
        if self.cfg.api == Api::Completions && kind == ServerKind::Vllm {
            body["add_special_tokens"] = json!(false); // the rendered template has its own
        }
        // Sampling extras. Self-hosted servers get them always: left out, llama.cpp applies top_k 40 and
        // min_p 0.05, vLLM the checkpoint's generation_config.json. Other APIs get them only when set: hosted
        // APIs refuse keys they do not know.
        let off = if kind == ServerKind::Vllm { -1 } else { 0 };
        match (kind, s.top_k) {
            (_, Some(k)) => body["top_k"] = json!(k),
            (ServerKind::Other, None) => {}
            (_, None) => body["top_k"] = json!(off),
        }
        if s.min_p > 0.0 || kind != ServerKind::Other {
            body["min_p"] = json!(s.min_p);
        }
        body
    }

    /// The next endpoint to use: round robin over those not resting; waits when all rest.
    async fn endpoint(&self) -> &Endpoint {
        loop {
            let now = Instant::now();
            let n = self.endpoints.len();
            for step in 0..n {
                let i = (self.next.get() + step) % n;
                if self.endpoints[i].down_until.get().is_none_or(|t| t <= now) {
                    self.next.set(i + 1);
                    return &self.endpoints[i];
                }
            }
            let wake = self.endpoints.iter().filter_map(|e| e.down_until.get()).min().unwrap_or(now);
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    /// Wait for this request's turn under `--max-rps`.
    async fn paced(&self) {
        let Some(rps) = self.cfg.max_rps else { return };
        let now = Instant::now();
        let slot = self.pace.get().map_or(now, |t| t.max(now));
        self.pace.set(Some(slot + Duration::from_secs_f64(1.0 / rps)));
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Ask the server for sample `k` of `prompt`, retrying until a valid response or the retry budget is
    /// spent.
    async fn send(
        &self,
        content: &Value,
        prompt: &Prompt,
        s: &SamplingConfig,
        k: u32,
        key: u128,
    ) -> std::result::Result<(Value, f64), Failed> {
        let kind = *self
            .kind
            .get_or_try_init(|| async {
                models(&self.client, &self.endpoints, self.key.as_deref()).await.map(|(_, kind)| kind)
            })
            .await
            .map_err(Failed::Run)?;
        let body = serde_json::to_vec(&self.body(content, prompt, s, k, kind)).expect("JSON");
        let body = body.as_slice();
        let mut rng = crate::rng::Rng::for_row(key as u64, "backoff", 0);
        let mut attempt = 0u32;
        loop {
            let endpoint = self.endpoint().await;
            self.paced().await;
            let started = Instant::now();
            self.stats.in_flight.set(self.stats.in_flight.get() + 1);
            let outcome = self.attempt(endpoint, body).await;
            self.stats.in_flight.set(self.stats.in_flight.get() - 1);
            let (message, retry_after, endpoint_fault) = match outcome {
                Attempt::Done(response) => {
                    endpoint.fails.set(0);
                    return Ok((response, started.elapsed().as_secs_f64()));
                }
                Attempt::Fatal(e) => return Err(Failed::Run(e)),
                Attempt::Refused(m) => return Err(Failed::Row(m)),
                Attempt::Retry { message, retry_after, endpoint_fault } => (message, retry_after, endpoint_fault),
            };
            attempt += 1;
            if attempt > self.cfg.retries {
                return Err(Failed::Row(format!("gave up after {attempt} attempts: {message}")));
            }
            self.stats.retries.set(self.stats.retries.get() + 1);
            // jitter: half the step fixed, half random
            let wait =
                retry_after.unwrap_or_else(|| Duration::from_secs_f64(backoff(attempt) * (0.5 + 0.5 * rng.uniform())));
            if endpoint_fault {
                let fails = endpoint.fails.get() + 1;
                endpoint.fails.set(fails);
                let rest = Duration::from_secs_f64(backoff(fails));
                endpoint.down_until.set(Some(Instant::now() + rest));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, endpoint: &Endpoint, body: &[u8]) -> Attempt {
        let url = format!("{}{}", endpoint.url, self.path());
        let mut request =
            self.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_vec());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::retry(format!("{url}: {}", chain(&e)), None, true),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(600.0)));
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::retry(format!("{url}: reading the body: {}", chain(&e)), None, true),
        };
        let text = || String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
        match status.as_u16() {
            200..=299 => match valid(&bytes) {
                Ok(response) => Attempt::Done(response),
                Err(why) => Attempt::retry(format!("{url}: {why}"), None, false),
            },
            408 | 409 | 429 => Attempt::retry(format!("{url}: HTTP {status}: {}", text()), retry_after, false),
            401 | 403 | 404 => Attempt::Fatal(
                Error::usage(format!("{url}: HTTP {status}: {}", text()))
                    .with_hint("check the URL (up to `/v1`), `--model` and the API key's variable (`--api-key-env`)"),
            ),
            500..=599 => Attempt::retry(format!("{url}: HTTP {status}: {}", text()), retry_after, true),
            _ => Attempt::Refused(format!("{url}: HTTP {status}: {}", text())),
        }
    }

    /// Sample `k` of `prompt`: from the journal, else from the server (journaled before it counts).
    async fn sample(&self, prompt: &Prompt, k: u32, s: &SamplingConfig) -> Result<Sample> {
        let content = self.content(prompt)?;
        let key = self.key(&content, prompt, s, k);
        let (response, latency_s, cached) = match self.journal.get(key)? {
            Some(r) => {
                self.stats.cached.set(self.stats.cached.get() + 1);
                (r.response, r.latency_s, true)
            }
            None => match self.send(&content, prompt, s, k, key).await {
                Ok((response, latency)) => {
                    self.appender.append(key, &response, latency).await.map_err(|e| {
                        Error::usage(format!("request journal: {e}")).with_hint("is the journal's disk full?")
                    })?;
                    (response, latency, false)
                }
                Err(Failed::Run(e)) => return Err(e),
                Err(Failed::Row(message)) => {
                    self.stats.errors.set(self.stats.errors.get() + 1);
                    return Ok(Sample::error(&message));
                }
            },
        };
        let sample = choice(&response, s, latency_s, cached, self.tokenizer.as_ref())
            .map_err(|e| Error::usage(format!("problem `{}`: the server's response: {e}", prompt.key)))?;
        self.stats.tokens.set(self.stats.tokens.get() + u64::from(sample.completion_tokens));
        Ok(sample)
    }

    fn status(&self) -> String {
        let st = &self.stats;
        format!(
            "{:.0} tok/s, {} in flight, {} cached, {} retries, {} errors",
            st.tokens.get() as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
            st.in_flight.get(),
            st.cached.get(),
            st.retries.get(),
            st.errors.get()
        )
    }
}

/// Seconds to wait after the `n`-th failure in a row: 0.5 doubling, at most 30.
fn backoff(n: u32) -> f64 {
    (0.5 * 2f64.powi(n.min(16) as i32 - 1)).min(30.0)
}

enum Attempt {
    Done(Value),
    Retry { message: String, retry_after: Option<Duration>, endpoint_fault: bool },
    Refused(String),
    Fatal(Error),
}

impl Attempt {
    fn retry(message: String, retry_after: Option<Duration>, endpoint_fault: bool) -> Attempt {
        Attempt::Retry { message, retry_after, endpoint_fault }
    }
}

/// An error with its causes (reqwest's own message hides whether it was a timeout or a reset).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A body is a response when it is one JSON object with a non-empty `choices` list: anything else (a
/// truncated or garbled body, an error object sent with 200) is retried, never journaled.
fn valid(bytes: &[u8]) -> std::result::Result<Value, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON body: {e}"))?;
    match value["choices"].as_array() {
        Some(choices) if !choices.is_empty() => Ok(value),
        Some(_) => Err("a response without choices".into()),
        None => Err("not a completion response: no `choices` list".into()),
    }
}

/// The server software, told by `owned_by` in `/v1/models`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Vllm,
    Sglang,
    LlamaCpp,
    /// `forge serve`
    Forge,
    Other,
}

/// The models `/v1/models` lists on the first endpoint that answers, and the server software.
async fn models(
    client: &reqwest::Client,
    endpoints: &[Endpoint],
    key: Option<&str>,
) -> Result<(Vec<String>, ServerKind)> {
    let mut errors = Vec::new();
    for e in endpoints {
        let url = format!("{}/models", e.url);
        let mut request = client.get(&url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let body = match request.send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()),
                Err(e) => Err(chain(&e)),
            },
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(err) => Err(chain(&err)),
        };
        match body {
            Ok(v) => {
                let data = v["data"].as_array().cloned().unwrap_or_default();
                let ids = data.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
                let kind = match data.first().and_then(|m| m["owned_by"].as_str()) {
                    Some("vllm") => ServerKind::Vllm,
                    Some("sglang") => ServerKind::Sglang,
                    Some("llamacpp") => ServerKind::LlamaCpp,
                    Some("forge") => ServerKind::Forge,
                    _ => ServerKind::Other,
                };
                return Ok((ids, kind));
            }
            Err(why) => errors.push(format!("{url}: {why}")),
        }
    }
    Err(Error::usage(format!("no teacher endpoint answered: {}", errors.join("; ")))
        .with_hint("start the server first; the URL ends in `/v1`"))
}

/// The sample a response holds (its first choice: forge asks for one per request).
/// `tokenizer` (the teacher's, from `--chat-template DIR`) names top-logprob tokens a server gives by text only.
fn choice(
    response: &Value,
    s: &SamplingConfig,
    latency_s: f64,
    cached: bool,
    tokenizer: Option<&Tokenizer>,
) -> std::result::Result<Sample, String> {
    let c = &response["choices"][0];
    let usage = &response["usage"];
    let message = &c["message"];
    let text = message["content"].as_str().or_else(|| c["text"].as_str()).unwrap_or("").to_string();
    let reasoning = message["reasoning_content"]
        .as_str()
        .or_else(|| message["reasoning"].as_str())
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let raw_finish = c["finish_reason"].as_str().unwrap_or("stop");
    let mut positions = logprob_positions(&c["logprobs"]);
    // llama.cpp lists the end-of-sequence token too (as ""); forge's samples end before it
    if raw_finish == "stop" && positions.last().is_some_and(|p| end_of_sequence(p, &text)) {
        positions.pop();
    }
    let logprobs: Vec<f32> = positions.iter().map(|p| p["logprob"].as_f64().unwrap_or(f64::NAN) as f32).collect();
    let top_logprobs = if s.top_logprobs > 0 {
        let top = |p| top_of(p, s.top_logprobs as usize, tokenizer);
        positions.iter().map(top).collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let usage_tokens = usage["completion_tokens"].as_u64().map(|t| t as u32);
    let completion_tokens = if positions.is_empty() { usage_tokens.unwrap_or(0) } else { positions.len() as u32 };
    let server = json!({
        "model": response["model"],
        "system_fingerprint": response["system_fingerprint"],
        "finish_reason": raw_finish,
        // vLLM: the stop string that ended the sample (it leaves the string out of the text)
        "stop_reason": c["stop_reason"],
        "usage": usage,
        "latency_s": latency_s,
        "cached": cached,
    });
    Ok(Sample {
        text,
        reasoning,
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0) as u32,
        completion_tokens,
        tokens: Vec::new(),
        finish: if raw_finish == "length" { Finish::Length } else { Finish::Stop },
        logprobs,
        top_logprobs,
        error: None,
        server: Some(server.to_string()),
    })
}

/// Whether a choice's last logprob entry is an end-of-sequence token the text does not show: empty
/// (llama.cpp) or a special token such as `<|im_end|>` or `</s>` (vLLM, whose `token_id:N` names keep the
/// token's text in `bytes`).
fn end_of_sequence(position: &Value, text: &str) -> bool {
    let token = position["token"].as_str().unwrap_or("");
    let from_bytes = || -> Option<String> {
        let bytes: Vec<u8> =
            position["bytes"].as_array()?.iter().map(|b| b.as_u64().map(|b| b as u8)).collect::<Option<_>>()?;
        String::from_utf8(bytes).ok()
    };
    let token = if token.starts_with("token_id:") { from_bytes().unwrap_or_default() } else { token.to_string() };
    let special = (token.starts_with("<|") && token.ends_with("|>")) || token == "</s>";
    token.is_empty() || (special && !text.ends_with(&token))
}

/// The per-token entries of a choice's `logprobs`, in the chat form (`content[]`, also llama.cpp's
/// completions) or the legacy completions form (`tokens`, `token_logprobs`, `top_logprobs[{tok: lp}]`),
/// as chat-form objects.
fn logprob_positions(logprobs: &Value) -> Vec<Value> {
    if let Some(content) = logprobs["content"].as_array() {
        return content.clone();
    }
    let (Some(tokens), Some(lps)) = (logprobs["tokens"].as_array(), logprobs["token_logprobs"].as_array()) else {
        return Vec::new();
    };
    let tops = logprobs["top_logprobs"].as_array();
    tokens
        .iter()
        .zip(lps)
        .enumerate()
        .map(|(i, (t, lp))| {
            let top: Vec<Value> = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(tok, lp)| json!({"token": tok, "logprob": lp})).collect())
                .unwrap_or_default();
            json!({"token": t, "logprob": lp, "top_logprobs": top})
        })
        .collect()
}

/// The `k` most likely tokens at one position, by id: the entry's `id` (llama.cpp, forge serve), a
/// `token_id:N` token (vLLM with `return_tokens_as_token_ids`), else the token's text or bytes looked up in
/// the teacher's `tokenizer` (hosted APIs). Sorted and deduplicated: vLLM lists the sampled token first, then
/// the others.
fn top_of(position: &Value, k: usize, tokenizer: Option<&Tokenizer>) -> std::result::Result<Vec<(u32, f32)>, String> {
    let mut top = Vec::new();
    for t in position["top_logprobs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let id = t["id"]
            .as_u64()
            .map(|id| id as u32)
            .or_else(|| t["token"].as_str()?.strip_prefix("token_id:")?.parse().ok())
            .map(Ok)
            .unwrap_or_else(|| match tokenizer {
                Some(tokenizer) => id_of(tokenizer, t),
                None => Err(format!(
                    "a top-logprob token without an id ({}): this server names tokens by their text; \
                     give the teacher's tokenizer with `--chat-template DIR` to look them up",
                    t["token"]
                )),
            })?;
        top.push((id, t["logprob"].as_f64().unwrap_or(f64::NEG_INFINITY) as f32));
    }
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.dedup_by_key(|t| t.0);
    top.truncate(k);
    Ok(top)
}

/// The id of a top-logprob entry named by its text (`token`) and maybe its UTF-8 `bytes`: the bytes in the
/// byte-level alphabet of GPT-2-style vocabularies (Qwen, Llama 3, DeepSeek), else the text if it is one
/// token of `tokenizer`.
fn id_of(tokenizer: &Tokenizer, entry: &Value) -> std::result::Result<u32, String> {
    let text = entry["token"].as_str().unwrap_or("");
    let bytes: Option<Vec<u8>> =
        entry["bytes"].as_array().and_then(|b| b.iter().map(|x| x.as_u64().map(|x| x as u8)).collect());
    let bytes = bytes.unwrap_or_else(|| text.as_bytes().to_vec());
    if let Some(id) = tokenizer.token_id(&byte_level(&bytes)) {
        return Ok(id);
    }
    match tokenizer.encode(text).map_err(|e| e.to_string())?.as_slice() {
        [id] => Ok(*id),
        ids => {
            Err(format!("the top-logprob token {text:?} is {} tokens of the teacher's tokenizer, not one", ids.len()))
        }
    }
}

/// `bytes` in the byte-level alphabet GPT-2's tokenizer introduced: printable bytes stand for themselves,
/// the others for the characters from U+0100 on, in byte order.
fn byte_level(bytes: &[u8]) -> String {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    bytes
        .iter()
        .map(|&b| {
            if printable(b) {
                char::from(b)
            } else {
                let n = (0..b).filter(|&x| !printable(x)).count() as u32;
                char::from_u32(256 + n).expect("below U+0200")
            }
        })
        .collect()
}

impl Teacher for OpenAi {
    fn id(&self) -> &str {
        &self.id
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        // budget forcing continues samples by prefills, which only the completions API takes
        self.tokenizer.as_ref().filter(|_| self.template.is_some())
    }

    /// Every sample one request, `--concurrency` in flight, sent in prompt order; a prompt's samples go to
    /// `done` when its last one is answered, so the next prompts' requests keep the pipe full meanwhile
    /// (`slots` does not apply: the servers batch).
    fn generate_each(
        &mut self,
        prompts: &[Prompt],
        sampling: &SamplingConfig,
        _slots: usize,
        progress: &Progress,
        done: &mut dyn FnMut(usize, Vec<Sample>) -> Result<()>,
    ) -> Result<()> {
        if sampling.beams > 1 {
            return Err(Error::usage("beam search runs on the local teacher only")
                .with_hint("serve the checkpoint's directory with `--teacher local:DIR`, or sample with `-n`"));
        }
        if self.cfg.api == Api::Chat && prompts.iter().any(|p| !p.prefill.is_empty()) {
            return Err(Error::usage("a prefill cannot be sent to a chat API").with_hint(
                "use `--api completions --chat-template DIR`: forge renders the prompt and its prefill itself",
            ));
        }
        let this = &*self;
        let mut answered: Vec<Vec<Option<Sample>>> = prompts.iter().map(|p| vec![None; p.n as usize]).collect();
        let mut left: Vec<u32> = prompts.iter().map(|p| p.n).collect();
        for (i, _) in prompts.iter().enumerate().filter(|(_, p)| p.n == 0) {
            done(i, Vec::new())?;
        }
        let work = prompts.iter().enumerate().flat_map(|(i, p)| (0..p.n).map(move |k| (i, p, p.first_sample + k)));
        this.runtime.block_on(async {
            let mut jobs = futures_util::stream::iter(work)
                .map(|(i, p, k)| async move { (i, k, this.sample(p, k, sampling).await) })
                .buffer_unordered(this.cfg.concurrency);
            while let Some((i, k, sample)) = jobs.next().await {
                answered[i][(k - prompts[i].first_sample) as usize] = Some(sample?);
                progress.inc(1);
                progress.message(&this.status());
                left[i] -= 1;
                if left[i] == 0 {
                    let samples = std::mem::take(&mut answered[i]);
                    done(i, samples.into_iter().map(|s| s.expect("every sample answered")).collect())?;
                }
            }
            Ok::<_, Error>(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(top: u32) -> SamplingConfig {
        SamplingConfig { top_logprobs: top, ..SamplingConfig::default() }
    }

    /// vLLM's shape (`--reasoning-parser`, `return_tokens_as_token_ids`): the reasoning comes apart, the
    /// top list (sampled token first, unsorted, repeated) is sorted and deduplicated by id.
    #[test]
    fn vllm_reasoning_and_unsorted_top_logprobs() {
        let response = json!({
            "model": "tiny-qwen2",
            "choices": [{
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "42", "reasoning": "6 * 7"},
                "logprobs": {"content": [
                    {"token": "token_id:19", "logprob": -0.5, "top_logprobs": [
                        {"token": "token_id:19", "logprob": -0.5},
                        {"token": "token_id:3", "logprob": -0.1},
                        {"token": "token_id:7", "logprob": -2.0},
                        {"token": "token_id:19", "logprob": -0.5}
                    ]},
                    {"token": "token_id:20", "logprob": -0.01, "top_logprobs": [
                        {"token": "token_id:20", "logprob": -0.01}, {"token": "token_id:1", "logprob": -5.0}
                    ]},
                    {"token": "token_id:258", "logprob": -0.001, "top_logprobs": [],
                     "bytes": [60, 124, 105, 109, 95, 101, 110, 100, 124, 62]}
                ]}
            }],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3}
        });
        let s = choice(&response, &sampling(2), 0.25, false, None).unwrap();
        assert_eq!((s.text.as_str(), s.reasoning.as_deref()), ("42", Some("6 * 7")));
        assert_eq!(s.completion_tokens, 2, "the end-of-sequence token is not the sample's");
        assert_eq!(s.logprobs, vec![-0.5, -0.01]);
        assert_eq!(s.top_logprobs, vec![vec![(3, -0.1), (19, -0.5)], vec![(20, -0.01), (1, -5.0)]]);
        assert_eq!(s.prompt_tokens, 9);
        let server: Value = serde_json::from_str(s.server.as_deref().unwrap()).unwrap();
        assert_eq!(server["model"], "tiny-qwen2");
    }

    /// The legacy completions shape (`tokens`, `token_logprobs`, `top_logprobs[{tok: lp}]`) and a cut
    /// sample; a top token without an id is an error that says so.
    #[test]
    fn legacy_completions_logprobs_and_missing_ids() {
        let response = json!({"choices": [{"index": 0, "text": "ab", "finish_reason": "length", "logprobs": {
            "tokens": ["a", "b"], "token_logprobs": [-1.0, -2.0], "top_logprobs": [{"a": -1.0}, {"b": -2.0}]
        }}]});
        let s = choice(&response, &sampling(0), 0.0, true, None).unwrap();
        assert_eq!((s.finish, s.completion_tokens, s.logprobs.clone()), (Finish::Length, 2, vec![-1.0, -2.0]));
        let err = choice(&response, &sampling(1), 0.0, true, None).unwrap_err();
        assert!(err.contains("without an id"), "{err}");
    }

    /// A server that names top tokens by text only (hosted APIs): with the teacher's tokenizer the text
    /// and bytes are looked up, a space and a byte outside ASCII included; text that is not one token is
    /// an error that says so.
    #[test]
    fn top_tokens_named_by_text_are_looked_up_in_the_tokenizer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let id = |text: &str| tokenizer.encode(text).unwrap()[0];
        let response = json!({"choices": [{"index": 0, "text": "a ", "finish_reason": "length", "logprobs": {
            "tokens": ["a", " "], "token_logprobs": [-1.0, -0.5], "top_logprobs": [{"a": -1.0, "7": -1.5}, {" ": -0.5}]
        }}]});
        let s = choice(&response, &sampling(2), 0.0, true, Some(&tokenizer)).unwrap();
        assert_eq!(s.top_logprobs, vec![vec![(id("a"), -1.0), (id("7"), -1.5)], vec![(id(" "), -0.5)]]);
        // chat form: the bytes of half a character (é is two bytes, each its own token here)
        let e = "é".as_bytes();
        let chat = json!({"choices": [{"index": 0, "finish_reason": "length", "message": {"content": "é"},
            "logprobs": {"content": [{"token": "\\xc3", "logprob": -0.1, "top_logprobs": [
                {"token": "\\xc3", "bytes": [e[0]], "logprob": -0.1}]}]}}]});
        let s = choice(&chat, &sampling(1), 0.0, true, Some(&tokenizer)).unwrap();
        assert_eq!(s.top_logprobs, vec![vec![(tokenizer.encode("é").unwrap()[0], -0.1)]]);
        let two = json!({"choices": [{"index": 0, "text": "ab", "finish_reason": "length", "logprobs": {
            "tokens": ["ab"], "token_logprobs": [-1.0], "top_logprobs": [{"ab": -1.0}]
        }}]});
        let err = choice(&two, &sampling(1), 0.0, true, Some(&tokenizer)).unwrap_err();
        assert!(err.contains("2 tokens"), "{err}");
    }

    /// Bodies that are not a response are retried, never journaled.
    #[test]
    fn truncated_garbled_and_empty_bodies_are_not_responses() {
        let good = br#"{"choices": [{"index": 0, "message": {"content": "x"}}]}"#;
        assert!(valid(good).is_ok());
        assert!(valid(&good[..good.len() / 2]).unwrap_err().contains("malformed"));
        assert!(valid(br#"{"choices": []}"#).unwrap_err().contains("without choices"));
        assert!(valid(br#"{"error": {"message": "overloaded"}}"#).is_err());
    }
}
