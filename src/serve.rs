//! `forge serve`: an OpenAI-compatible server over the local teacher, so that lm-eval-harness, the
//! `openai` client, a chat UI or forge's own HTTP teacher can use a forge-trained checkpoint.
//! `/v1/models`, `/v1/chat/completions` and `/v1/completions`, streamed (server-sent events) or not, with
//! `n`, `seed`, `logprobs`/`top_logprobs`, `stop`, `max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`,
//! `logit_bias`, and on the completions API several prompts in one request, `best_of` and `echo` (a prompt
//! scored: lm-eval-harness's loglikelihood).
//!
//! One thread decodes ([`crate::teacher::engine`]): requests join the running batch as soon as it has
//! room (continuous batching) and leave it as they finish; the HTTP side (axum on a single-threaded tokio
//! runtime) tokenizes, validates and turns the engine's tokens into responses. A client that goes away
//! frees its sequences at the next step. SIGINT or SIGTERM stops accepting connections, lets the requests
//! in flight finish, and exits.
//!
//! ```text
//! forge serve --model student/ --port 8000
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::{Error, Result};
use crate::model::chat::{ChatTemplate, Message};
use crate::model::tokenizer::Tokenizer;
use crate::rng::Rng;
use crate::teacher::engine::{Batch, Seq};
use crate::teacher::local::{Local, Scored};
use crate::teacher::{Finish, SamplingConfig};

/// `forge serve`'s settings.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct ServeConfig {
    /// The checkpoint to serve (a Hugging Face directory: config.json, safetensors, tokenizer.json,
    /// tokenizer_config.json with a chat template)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The model name clients ask for (default: the directory's name)
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free one; the URL printed says which)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Sequences decoding at once (a request with `n` samples takes `n`); requests beyond wait
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_batch: usize,
    /// New tokens at most when a request does not say (`max_tokens`)
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_tokens: u32,
}

/// `forge serve`: listen, hand `ready` the URL once requests are accepted, serve until SIGINT/SIGTERM.
pub fn serve(cfg: &ServeConfig, quiet: bool, ready: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    if cfg.max_batch == 0 {
        return Err(Error::usage("`--max-batch` must be at least 1"));
    }
    let local = Local::open(&cfg.model)?;
    let name = match &cfg.served_model_name {
        Some(n) => n.clone(),
        None => cfg
            .model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "forge".into()),
    };
    let shared = Arc::new(Shared {
        name,
        tokenizer: Tokenizer::from_dir(&cfg.model)?,
        chat: ChatTemplate::from_dir(&cfg.model)?,
        context: local.context(),
        vocab: local.vocab(),
        max_tokens: cfg.max_tokens,
        counts: Counts::default(),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let (jobs, queue) = mpsc::channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::usage(format!("starting the server's runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)))
        .map_err(|e| Error::usage(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port)))?;
    let addr = listener.local_addr().map_err(|e| Error::usage(format!("listening: {e}")))?;
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(App { shared: shared.clone(), jobs: jobs.clone() });
    drop(jobs);
    let http = std::thread::spawn(move || {
        runtime.block_on(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped());
            server.await
        })
    });
    ready(&format!("http://{addr}/v1"))?;
    if !quiet {
        eprintln!("forge serve: {} at http://{addr}/v1 (Ctrl-C stops)", shared.name);
    }
    decode(&local, &queue, cfg.max_batch, &shared.counts)?;
    http.join()
        .map_err(|_| Error::usage("the HTTP thread panicked"))?
        .map_err(|e| Error::usage(format!("serving: {e}")))?;
    if !quiet {
        eprintln!("forge serve: stopped");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// What every handler reads.
struct Shared {
    name: String,
    tokenizer: Tokenizer,
    chat: ChatTemplate,
    context: usize,
    vocab: usize,
    max_tokens: u32,
    counts: Counts,
    created: u64,
}

/// What the decoding thread reports on `/metrics` (Prometheus' text format, as vLLM's).
#[derive(Default)]
struct Counts {
    running: AtomicU64,
    waiting: AtomicU64,
    tokens: AtomicU64,
    requests: AtomicU64,
}

async fn metrics(State(app): State<App>) -> String {
    let c = &app.shared.counts;
    let mut out = String::new();
    for (name, kind, help, value) in [
        ("forge_running_sequences", "gauge", "Sequences decoding now", &c.running),
        ("forge_waiting_requests", "gauge", "Requests waiting for room in the batch", &c.waiting),
        ("forge_generated_tokens_total", "counter", "Tokens sampled since start", &c.tokens),
        ("forge_requests_total", "counter", "Requests admitted since start", &c.requests),
    ] {
        let value = value.load(Ordering::Relaxed);
        out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    }
    out
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
}

/// A request for the decoding thread: `n` samples of one of its prompts.
struct Job {
    ids: Vec<u32>,
    /// Which of the request's prompts this is, and the index of its first sample among the request's
    /// choices (its samples are numbered from there).
    prompt: u32,
    first: u32,
    n: u32,
    cfg: Arc<SamplingConfig>,
    limit: u32,
    seed: u64,
    ignore_eos: bool,
    bias: Arc<[(u32, f32)]>,
    /// The prompt's own log-probabilities, with this many most likely tokens at each place (`echo`).
    score: Option<u32>,
    events: UnboundedSender<Step>,
}

/// What the decoding thread tells a request, per sample (`choice`).
enum Step {
    /// Prompt `prompt`'s tokens after the first: their log-probabilities and the most likely tokens there.
    Prompt { prompt: u32, scores: Vec<Scored> },
    /// One more token, its log-probability and the most likely tokens at its position.
    Token { choice: u32, token: u32, logprob: f32, top: Vec<(u32, f32)> },
    /// The end-of-sequence token the sample ended with (not part of its text).
    Eos { choice: u32, token: u32, logprob: f32, top: Vec<(u32, f32)> },
    /// The sample ended.
    End { choice: u32, finish: Finish },
}

/// The decoding loop: admit waiting requests while the batch has room (one at least when it is empty),
/// step, tell each request its new tokens. Returns when the HTTP side is gone and nothing runs.
fn decode(local: &Local, queue: &mpsc::Receiver<Job>, slots: usize, counts: &Counts) -> Result<()> {
    let mut batch = Batch::new(local);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    // each running job's events, and the request's index of its first sample
    let mut live: HashMap<usize, (UnboundedSender<Step>, u32)> = HashMap::new();
    let mut next_id = 0usize;
    loop {
        if batch.is_empty() && waiting.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return Ok(()),
            }
        }
        waiting.extend(queue.try_iter());
        // requests whose client went away before or while they ran
        waiting.retain(|j| !j.events.is_closed());
        let gone: Vec<usize> = live.iter().filter(|(_, (tx, _))| tx.is_closed()).map(|(&id, _)| id).collect();
        if !gone.is_empty() {
            batch.cancel(|s| gone.contains(&s.owner))?;
            live.retain(|id, _| !gone.contains(id));
        }
        let (mut join, mut taken) = (Vec::new(), 0);
        while let Some(job) = waiting.front() {
            if !batch.fits(slots, taken, job.n as usize) {
                break;
            }
            let job = waiting.pop_front().expect("a job");
            counts.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(top) = job.score {
                let scores = local.score(&job.ids, top as usize)?;
                let _ = job.events.send(Step::Prompt { prompt: job.prompt, scores });
            }
            if job.limit == 0 {
                // `echo` of a prompt alone: nothing to decode
                for k in 0..job.n {
                    let _ = job.events.send(Step::End { choice: job.first + k, finish: Finish::Length });
                }
                continue;
            }
            taken += job.n as usize;
            let id = next_id;
            next_id += 1;
            let seq = |k| {
                let mut seq =
                    Seq::new(id, k, job.cfg.clone(), job.limit, Rng::for_row(job.seed, "serve", u64::from(k)));
                seq.ignore_eos = job.ignore_eos;
                seq.bias = job.bias.clone();
                seq
            };
            join.push((job.ids, (0..job.n).map(seq).collect()));
            live.insert(id, (job.events, job.first));
        }
        batch.admit(join)?;
        counts.waiting.store(waiting.len() as u64, Ordering::Relaxed);
        counts.running.store(batch.len() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        let ended = batch.step()?;
        counts.tokens.fetch_add((batch.len() + ended.len()) as u64, Ordering::Relaxed);
        counts.running.store(batch.len() as u64, Ordering::Relaxed);
        for seq in batch.seqs().iter().chain(&ended) {
            let Some((tx, first)) = live.get(&seq.owner) else { continue };
            let (choice, top) = (first + seq.sample, seq.top.last().cloned().unwrap_or_default());
            let step = match seq.eos {
                // the end-of-sequence token's position is listed too, as vLLM and llama.cpp list it
                Some(token) => Step::Eos { choice, token, logprob: seq.eos_logprob, top },
                None => match (seq.tokens.last(), seq.logprobs.last()) {
                    (Some(&token), Some(&logprob)) => Step::Token { choice, token, logprob, top },
                    _ => continue,
                },
            };
            let _ = tx.send(step);
        }
        for seq in ended {
            if let Some((tx, first)) = live.get(&seq.owner) {
                let finish = seq.finish.unwrap_or(Finish::Length);
                let _ = tx.send(Step::End { choice: first + seq.sample, finish });
            }
            if !batch.seqs().iter().any(|s| s.owner == seq.owner) {
                live.remove(&seq.owner);
            }
        }
    }
}

/// An OpenAI-style error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = if status.is_client_error() { "invalid_request_error" } else { "server_error" };
    let body = json!({"error": {"message": message.into(), "type": kind, "code": status.as_u16()}});
    (status, Json(body)).into_response()
}

async fn models(State(app): State<App>) -> Json<Value> {
    let s = &app.shared;
    Json(json!({"object": "list", "data": [{
        "id": s.name, "object": "model", "created": s.created, "owned_by": "forge", "max_model_len": s.context,
    }]}))
}

/// Which API a request came in on.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Completions,
}

/// A request's settings, read and checked.
struct Request {
    api: Api,
    /// One prompt (chat), one or several (completions); each has `best_of` choices, prompt by prompt.
    prompts: Vec<Prompted>,
    n: u32,
    /// Samples drawn per prompt: `best_of` of the completions API (the `n` with the highest mean
    /// log-probability per token are returned, as OpenAI's legacy API), else `n`.
    best_of: u32,
    cfg: SamplingConfig,
    seed: u64,
    stream: bool,
    usage_in_stream: bool,
    /// Log-probabilities asked (`logprobs: true`, or a number on the legacy API).
    logprobs: bool,
    /// Tokens named `token_id:N` (vLLM's `return_tokens_as_token_ids`).
    token_ids: bool,
    /// Sample past end-of-sequence tokens (vLLM's `ignore_eos`).
    ignore_eos: bool,
    /// OpenAI's `logit_bias`: added to these tokens' logits before each sample is drawn.
    bias: Arc<[(u32, f32)]>,
    /// The prompt, given back before each completion (`echo`, completions API), with its tokens' logprobs
    /// when they are asked; `max_tokens` may then be 0 (a prompt scored, as lm-eval-harness asks).
    echo: bool,
}

/// One prompt of a request: its tokens, its text, and its new tokens at most.
struct Prompted {
    ids: Vec<u32>,
    text: String,
    limit: u32,
}

async fn chat(State(app): State<App>, body: axum::body::Bytes) -> Response {
    respond(app, Api::Chat, &body).await
}

async fn completions(State(app): State<App>, body: axum::body::Bytes) -> Response {
    respond(app, Api::Completions, &body).await
}

async fn respond(app: App, api: Api, body: &[u8]) -> Response {
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match read(&app.shared, api, &v) {
            Ok(r) => r,
            Err(e) => return e,
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let (tx, rx) = unbounded_channel();
    let cfg = Arc::new(request.cfg.clone());
    for (p, prompt) in request.prompts.iter().enumerate() {
        let job = Job {
            ids: prompt.ids.clone(),
            prompt: p as u32,
            first: p as u32 * request.best_of,
            n: request.best_of,
            cfg: cfg.clone(),
            limit: prompt.limit,
            seed: request.seed,
            ignore_eos: request.ignore_eos,
            bias: request.bias.clone(),
            score: (request.echo && request.logprobs).then_some(request.cfg.top_logprobs),
            events: tx.clone(),
        };
        if app.jobs.send(job).is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
        }
    }
    drop(tx);
    let output = Output::new(app.shared.clone(), request);
    if output.request.stream {
        let events = futures_util::stream::unfold((output, rx, false), |(mut out, mut rx, done)| async move {
            if done {
                return None;
            }
            let events = match rx.recv().await {
                Some(step) => out.on(step),
                None => out.finish(),
            };
            let last = events.last().is_some_and(|e| e == "[DONE]");
            let events: Vec<std::result::Result<Event, std::convert::Infallible>> =
                events.into_iter().map(|e| Ok(Event::default().data(e))).collect();
            Some((futures_util::stream::iter(events), (out, rx, last)))
        });
        use futures_util::StreamExt as _;
        return Sse::new(events.flatten()).into_response();
    }
    let mut output = output;
    let mut rx: UnboundedReceiver<Step> = rx;
    while let Some(step) = rx.recv().await {
        output.on(step);
    }
    Json(output.whole()).into_response()
}

/// A request's prompt: text, or token ids.
enum PromptIn {
    Text(String),
    Ids(Vec<u32>),
}

/// A completions request's prompts: a string or a list of token ids, or a list of several of those.
fn prompts(p: &Value) -> Option<Vec<PromptIn>> {
    let one = |p: &Value| match p {
        Value::String(t) => Some(PromptIn::Text(t.clone())),
        Value::Array(ids) if !ids.is_empty() => {
            ids.iter().map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok())).collect::<Option<_>>().map(PromptIn::Ids)
        }
        _ => None,
    };
    match p {
        Value::Array(list) if !list.is_empty() && list.iter().all(|x| x.is_string() || x.is_array()) => {
            list.iter().map(one).collect()
        }
        p => one(p).map(|p| vec![p]),
    }
}

/// Read a request body into its settings; a 400 or 404 response when it cannot be served.
#[allow(clippy::result_large_err)]
fn read(s: &Shared, api: Api, v: &Value) -> std::result::Result<Request, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    if let Some(model) = v["model"].as_str()
        && model != s.name
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("the model `{model}` does not exist; this server has `{}`", s.name),
        ));
    }
    let asked = match api {
        Api::Chat => {
            let Some(list) = v["messages"].as_array() else { return Err(bad("`messages` is required".into())) };
            let mut messages = Vec::new();
            for (i, m) in list.iter().enumerate() {
                let (Some(role), content) = (m["role"].as_str(), content_text(&m["content"])) else {
                    return Err(bad(format!("messages[{i}]: `role` is required")));
                };
                let Some(content) = content else {
                    return Err(bad(format!("messages[{i}]: `content` must be a string or a list of text parts")));
                };
                messages.push(Message::new(role, &content));
            }
            vec![PromptIn::Text(s.chat.render(&messages, true, &Default::default()).map_err(|e| bad(e.to_string()))?)]
        }
        Api::Completions => prompts(&v["prompt"]).ok_or_else(|| {
            bad("`prompt` must be a string or a list of token ids, or a list of several of those".into())
        })?,
    };
    let echo = v["echo"].as_bool() == Some(true);
    if echo && api == Api::Chat {
        return Err(bad("`echo` is served on the completions API".into()));
    }
    let number = |key: &str| v.get(key).filter(|x| !x.is_null());
    let limit = match number("max_completion_tokens").or(number("max_tokens")).map(Value::as_u64) {
        None => None,
        Some(Some(m)) if m >= 1 || echo => Some(m.min(u64::from(u32::MAX)) as u32),
        Some(_) => return Err(bad("`max_tokens` must be a whole number of at least 1 (0 with `echo`)".into())),
    };
    let several = asked.len() > 1;
    let mut prompts = Vec::with_capacity(asked.len());
    for (i, prompt) in asked.into_iter().enumerate() {
        let at = if several { format!("prompt[{i}]: ") } else { String::new() };
        // a prompt of token ids (as lm-eval-harness sends them) is taken as it is
        let (text, ids) = match prompt {
            PromptIn::Text(text) => {
                let ids = s.tokenizer.encode(&text).map_err(|e| bad(format!("{at}{e}")))?;
                (text, ids)
            }
            PromptIn::Ids(ids) => {
                if let Some(t) = ids.iter().find(|&&t| t as usize >= s.vocab) {
                    return Err(bad(format!("{at}token id {t} is not in the model's vocabulary of {}", s.vocab)));
                }
                (s.tokenizer.decode(&ids, false).map_err(|e| bad(format!("{at}{e}")))?, ids)
            }
        };
        let limit = limit.unwrap_or_else(|| s.max_tokens.min(s.context.saturating_sub(ids.len()) as u32));
        if ids.len() + limit as usize > s.context || (limit == 0 && !echo) {
            return Err(bad(format!(
                "{at}this model's context is {} tokens: {} prompt tokens + {limit} new tokens do not fit",
                s.context,
                ids.len()
            )));
        }
        prompts.push(Prompted { ids, text, limit });
    }
    let n = number("n").map_or(Some(1), Value::as_u64).filter(|&n| (1..=128).contains(&n));
    let Some(n) = n else { return Err(bad("`n` must be a whole number from 1 to 128".into())) };
    let stream = v["stream"].as_bool().unwrap_or(false);
    let best_of = match number("best_of").map(Value::as_u64) {
        None => n,
        Some(Some(b)) if api == Api::Completions && (n..=128).contains(&b) => b,
        Some(_) => return Err(bad("`best_of` (completions API) must be a whole number from `n` to 128".into())),
    };
    if best_of > n && stream {
        return Err(bad("`best_of` above `n` cannot be streamed: the best are known at the end".into()));
    }
    let float = |key: &str, default: f64| number(key).map_or(Some(default), Value::as_f64);
    let (Some(temperature), Some(top_p), Some(min_p)) =
        (float("temperature", 1.0), float("top_p", 1.0), float("min_p", 0.0))
    else {
        return Err(bad("`temperature`, `top_p` and `min_p` must be numbers".into()));
    };
    if !(0.0..=2.0).contains(&temperature)
        || !(0.0..=1.0).contains(&top_p)
        || top_p == 0.0
        || !(0.0..=1.0).contains(&min_p)
    {
        return Err(bad("`temperature` must be in [0, 2], `top_p` in (0, 1], `min_p` in [0, 1]".into()));
    }
    let top_k = number("top_k").and_then(Value::as_i64).filter(|&k| k > 0).map(|k| k as u32);
    let stop = match number("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string).collect()
        }
        Some(_) => return Err(bad("`stop` must be a string or a list of strings".into())),
    };
    let bias = logit_bias(number("logit_bias"), s.vocab).map_err(bad)?;
    let (logprobs, top_logprobs) = match api {
        Api::Chat => {
            let top = number("top_logprobs").map_or(Some(0), Value::as_u64).filter(|&k| k <= 20);
            let Some(top) = top else { return Err(bad("`top_logprobs` must be a whole number from 0 to 20".into())) };
            (v["logprobs"].as_bool().unwrap_or(false), top)
        }
        Api::Completions => match number("logprobs").map(Value::as_u64) {
            None => (false, 0),
            Some(Some(k)) if k <= 20 => (true, k),
            Some(_) => return Err(bad("`logprobs` must be a whole number from 0 to 20".into())),
        },
    };
    let seed = match number("seed") {
        None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        Some(x) => x
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| x.as_u64())
            .ok_or_else(|| bad("`seed` must be an integer".into()))?,
    };
    let cfg = SamplingConfig {
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k,
        min_p: min_p as f32,
        max_new_tokens: prompts.iter().map(|p| p.limit).max().unwrap_or(0),
        seed,
        stop,
        top_logprobs: if logprobs { top_logprobs as u32 } else { 0 },
        ..Default::default()
    };
    Ok(Request {
        api,
        prompts,
        n: n as u32,
        best_of: best_of as u32,
        cfg,
        seed,
        stream,
        usage_in_stream: v["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        logprobs,
        token_ids: v["return_tokens_as_token_ids"].as_bool().unwrap_or(false),
        echo,
        ignore_eos: v["ignore_eos"].as_bool().unwrap_or(false),
        bias,
    })
}

/// OpenAI's `logit_bias`: a map from token ids (as strings) to a bias from -100 to 100.
fn logit_bias(v: Option<&Value>, vocab: usize) -> std::result::Result<Arc<[(u32, f32)]>, String> {
    let Some(v) = v else { return Ok(Arc::new([])) };
    let Value::Object(map) = v else { return Err("`logit_bias` must map token ids to numbers".into()) };
    let mut bias = Vec::with_capacity(map.len());
    for (token, b) in map {
        let t = token.parse::<u32>().ok().filter(|&t| (t as usize) < vocab);
        let Some(t) = t else {
            return Err(format!("`logit_bias`: `{token}` is not a token id of the model's vocabulary of {vocab}"));
        };
        let Some(b) = b.as_f64().filter(|b| (-100.0..=100.0).contains(b)) else {
            return Err(format!("`logit_bias`: the bias of token {t} must be a number from -100 to 100"));
        };
        bias.push((t, b as f32));
    }
    Ok(bias.into())
}

/// A message's text: a string, or the text parts of a list (`[{"type": "text", "text": ...}]`).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => parts.iter().map(|p| p["text"].as_str()).collect::<Option<Vec<_>>>().map(|t| t.concat()),
        _ => None,
    }
}

/// A generated position: the token, its log-probability, the most likely tokens there.
type Position = (u32, f32, Vec<(u32, f32)>);

/// One sample's text so far, turned into what the client sees: text deltas that never cut a character
/// in two or show a stop string (text that could begin one is held back until it cannot).
struct Choice {
    /// Which of the request's prompts it completes.
    prompt: usize,
    tokens: Vec<u32>,
    positions: Vec<Position>,
    /// Text bytes already sent, and positions whose logprobs were sent.
    sent_text: usize,
    sent_positions: usize,
    finish: Option<Finish>,
    stop_reason: Option<String>,
    /// Whether the first streamed chunk (the role) went out.
    started: bool,
}

/// A request's responses being put together.
struct Output {
    shared: Arc<Shared>,
    request: Request,
    id: String,
    choices: Vec<Choice>,
    ended: usize,
    /// Each prompt's scores (`echo` with logprobs).
    scores: Vec<Vec<Scored>>,
}

impl Output {
    fn new(shared: Arc<Shared>, request: Request) -> Output {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = if request.api == Api::Chat { "chatcmpl" } else { "cmpl" };
        let choices = (0..request.prompts.len() * request.best_of as usize)
            .map(|c| Choice {
                prompt: c / request.best_of as usize,
                tokens: Vec::new(),
                positions: Vec::new(),
                sent_text: 0,
                sent_positions: 0,
                finish: None,
                stop_reason: None,
                started: false,
            })
            .collect();
        let id = format!("{prefix}-{:x}-{number}", shared.created);
        let scores = vec![Vec::new(); request.prompts.len()];
        Output { shared, request, id, choices, ended: 0, scores }
    }

    /// The text of choice `c` as it stands: cut before a stop string it ended with.
    fn text(&self, c: usize) -> String {
        let choice = &self.choices[c];
        let text = self.shared.tokenizer.decode(&choice.tokens, false).unwrap_or_default();
        match &choice.stop_reason {
            Some(stop) => text.strip_suffix(stop.as_str()).unwrap_or(&text).to_string(),
            None => text,
        }
    }

    /// Record one step of the decoding thread; when streaming, the events to send.
    fn on(&mut self, step: Step) -> Vec<String> {
        let c = match step {
            Step::Prompt { prompt, scores } => {
                self.scores[prompt as usize] = scores;
                return Vec::new();
            }
            Step::Token { choice, token, logprob, top } => {
                let c = &mut self.choices[choice as usize];
                c.tokens.push(token);
                c.positions.push((token, logprob, top));
                choice as usize
            }
            Step::Eos { choice, token, logprob, top } => {
                self.choices[choice as usize].positions.push((token, logprob, top));
                choice as usize
            }
            Step::End { choice, finish } => {
                self.ended += 1;
                let text =
                    self.shared.tokenizer.decode(&self.choices[choice as usize].tokens, false).unwrap_or_default();
                let c = &mut self.choices[choice as usize];
                c.finish = Some(finish);
                if finish == Finish::Stop {
                    c.stop_reason = self.request.cfg.stop.iter().find(|s| text.ends_with(s.as_str())).cloned();
                }
                choice as usize
            }
        };
        if !self.request.stream {
            return Vec::new();
        }
        let mut events = self.delta(c);
        if self.ended == self.choices.len() {
            events.extend(self.finish());
        }
        events
    }

    /// The streamed chunk of what choice `c` has new, if anything.
    fn delta(&mut self, c: usize) -> Vec<String> {
        let text = self.text(c);
        let choice = &self.choices[c];
        let hold = if choice.finish.is_some() {
            0
        } else {
            // a character still being spelled out over tokens, or the start of a stop string
            let longest = self.request.cfg.stop.iter().map(String::len).max().unwrap_or(0);
            let partial = if text.ends_with('\u{FFFD}') { '\u{FFFD}'.len_utf8() } else { 0 };
            partial.max(longest.saturating_sub(1))
        };
        let mut upto = text.len().saturating_sub(hold).max(choice.sent_text.min(text.len()));
        while !text.is_char_boundary(upto) {
            upto -= 1;
        }
        let new_text = text.get(choice.sent_text..upto).unwrap_or("").to_string();
        // positions go out with the text they make: all of them once the text is sent up to its end
        let positions = if upto == text.len() { choice.positions.len() } else { choice.sent_positions };
        let logprobs = self.logprobs(c, choice.sent_positions..positions);
        let first = !choice.started;
        let role = first && self.request.api == Api::Chat;
        let finish = choice.finish;
        if new_text.is_empty() && positions == choice.sent_positions && !role && finish.is_none() {
            return Vec::new();
        }
        let choice = &mut self.choices[c];
        choice.sent_text = upto.max(choice.sent_text);
        choice.sent_positions = positions;
        choice.started = true;
        let stop_reason = choice.stop_reason.clone();
        let mut entry = match self.request.api {
            Api::Chat => {
                let mut delta = json!({"content": new_text});
                if role {
                    delta["role"] = json!("assistant");
                }
                json!({"index": c, "delta": delta})
            }
            Api::Completions => json!({"index": c, "text": new_text}),
        };
        entry["logprobs"] = logprobs;
        entry["finish_reason"] = finish.map_or(Value::Null, |f| json!(finish_name(f)));
        if finish.is_some() {
            entry["stop_reason"] = json!(stop_reason);
        }
        if first {
            self.echo(c, &mut entry);
        }
        vec![self.chunk(vec![entry]).to_string()]
    }

    /// The last events of a stream: the usage when asked, then `[DONE]`.
    fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if self.request.usage_in_stream {
            let mut chunk = self.chunk(Vec::new());
            chunk["usage"] = self.usage();
            events.push(chunk.to_string());
        }
        events.push("[DONE]".into());
        events
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        let object = if self.request.api == Api::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": now(), "model": self.shared.name,
            "system_fingerprint": fingerprint(), "choices": choices,
        })
    }

    fn usage(&self) -> Value {
        let prompt: usize = self.request.prompts.iter().map(|p| p.ids.len()).sum();
        // as vLLM counts: the end-of-sequence token too
        let completion: usize = self.choices.iter().map(|c| c.positions.len()).sum();
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// The whole response (not streamed): each prompt's choices, or with `best_of` its `n` best.
    fn whole(&self) -> Value {
        let (n, best_of) = (self.request.n as usize, self.request.best_of as usize);
        let kept = (0..self.request.prompts.len()).flat_map(|p| {
            let mut drawn: Vec<usize> = (p * best_of..(p + 1) * best_of).collect();
            if best_of > n {
                drawn.sort_by(|&a, &b| self.mean_logprob(b).total_cmp(&self.mean_logprob(a)));
                drawn.truncate(n);
            }
            drawn
        });
        let choices: Vec<Value> = kept
            .enumerate()
            .map(|(index, c)| {
                let choice = &self.choices[c];
                let text = self.text(c);
                let mut entry = match self.request.api {
                    Api::Chat => json!({"index": index, "message": {"role": "assistant", "content": text}}),
                    Api::Completions => json!({"index": index, "text": text}),
                };
                entry["logprobs"] = self.logprobs(c, 0..choice.positions.len());
                entry["finish_reason"] = json!(finish_name(choice.finish.unwrap_or(Finish::Length)));
                entry["stop_reason"] = json!(choice.stop_reason);
                self.echo(c, &mut entry);
                entry
            })
            .collect();
        let object = if self.request.api == Api::Chat { "chat.completion" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": now(), "model": self.shared.name,
            "system_fingerprint": fingerprint(), "choices": choices, "usage": self.usage(),
        })
    }

    /// A choice's log-probability per sampled token (its end-of-sequence token included): how `best_of`
    /// ranks.
    fn mean_logprob(&self, c: usize) -> f64 {
        let positions = &self.choices[c].positions;
        positions.iter().map(|p| f64::from(p.1)).sum::<f64>() / positions.len().max(1) as f64
    }

    /// With `echo`, choice `c`'s entry (whole, or its first streamed chunk) given its prompt in front: the
    /// text, and (logprobs asked) the prompt's tokens, their log-probabilities (the first token's null, as
    /// OpenAI's legacy API and vLLM give it) and text offsets.
    fn echo(&self, c: usize, entry: &mut Value) {
        if !self.request.echo {
            return;
        }
        let p = self.choices[c].prompt;
        let prompt = &self.request.prompts[p].text;
        entry["text"] = json!(format!("{prompt}{}", entry["text"].as_str().unwrap_or_default()));
        let logprobs = &mut entry["logprobs"];
        if !logprobs.is_object() {
            return;
        }
        let (mut tokens, mut values, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0;
        for (i, &t) in self.request.prompts[p].ids.iter().enumerate() {
            let token = self.name(t);
            offsets.push(json!(offset));
            offset += token.len();
            tokens.push(json!(token));
            match i.checked_sub(1).and_then(|i| self.scores[p].get(i)) {
                Some((lp, top)) => {
                    values.push(json!(lp));
                    tops.push(self.top_map(top));
                }
                None => {
                    values.push(Value::Null);
                    tops.push(Value::Null);
                }
            }
        }
        let prompt_part =
            [("tokens", tokens), ("token_logprobs", values), ("top_logprobs", tops), ("text_offset", offsets)];
        for (key, mut front) in prompt_part {
            front.extend(logprobs[key].as_array().cloned().unwrap_or_default());
            logprobs[key] = Value::Array(front);
        }
    }

    /// A position's most likely tokens as the legacy API gives them: a map from token name to logprob.
    fn top_map(&self, top: &[(u32, f32)]) -> Value {
        Value::Object(top.iter().map(|&(t, lp)| (self.name(t), json!(lp))).collect())
    }

    /// How a token is named in `logprobs`: its text, or `token_id:N` (vLLM's `return_tokens_as_token_ids`).
    fn name(&self, t: u32) -> String {
        if self.request.token_ids {
            format!("token_id:{t}")
        } else {
            self.shared.tokenizer.decode(&[t], false).unwrap_or_default()
        }
    }

    /// The `logprobs` of positions `range` of choice `c` in the request's API's shape (null when not
    /// asked). Each token also carries its `id` (as llama.cpp's server gives it).
    fn logprobs(&self, c: usize, range: std::ops::Range<usize>) -> Value {
        if !self.request.logprobs {
            return Value::Null;
        }
        let name = |t: u32| self.name(t);
        let positions = &self.choices[c].positions[range.clone()];
        match self.request.api {
            Api::Chat => {
                let entry = |t: u32, lp: f32| {
                    let bytes = self.shared.tokenizer.decode(&[t], false).unwrap_or_default().into_bytes();
                    json!({"token": name(t), "logprob": lp, "bytes": bytes, "id": t})
                };
                let content: Vec<Value> = positions
                    .iter()
                    .map(|(t, lp, top)| {
                        let mut e = entry(*t, *lp);
                        e["top_logprobs"] = top.iter().map(|&(t, lp)| entry(t, lp)).collect();
                        e
                    })
                    .collect();
                json!({ "content": content })
            }
            Api::Completions => {
                let tokens: Vec<String> = positions.iter().map(|p| name(p.0)).collect();
                let mut offset = self.text_offset(c, range.start);
                let offsets: Vec<usize> = tokens
                    .iter()
                    .map(|t| {
                        let here = offset;
                        offset += t.len();
                        here
                    })
                    .collect();
                let tops: Vec<Value> = positions.iter().map(|(_, _, top)| self.top_map(top)).collect();
                json!({
                    "tokens": tokens,
                    "token_logprobs": positions.iter().map(|p| p.1).collect::<Vec<_>>(),
                    "top_logprobs": tops,
                    "text_offset": offsets,
                })
            }
        }
    }

    /// Where position `at` of choice `c` starts in the text it is given back in (bytes; after the prompt
    /// with `echo`).
    fn text_offset(&self, c: usize, at: usize) -> usize {
        let front = if self.request.echo { self.request.prompts[self.choices[c].prompt].text.len() } else { 0 };
        if at == 0 {
            return front;
        }
        let tokens = &self.choices[c].tokens;
        front + self.shared.tokenizer.decode(&tokens[..at.min(tokens.len())], false).map_or(0, |t| t.len())
    }
}

fn finish_name(f: Finish) -> &'static str {
    if f == Finish::Length { "length" } else { "stop" }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn fingerprint() -> String {
    format!("forge-{}", env!("CARGO_PKG_VERSION"))
}
