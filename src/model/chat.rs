//! Chat templates: the checkpoint's own Jinja template (`chat_template` in `tokenizer_config.json`, or
//! `chat_template.jinja` where newer transformers versions save it), rendered with minijinja the way
//! transformers renders it: `trim_blocks` and `lstrip_blocks`, loop controls, Python string methods, the
//! special tokens as variables, `raise_exception`, and a `tojson` that does not HTML-escape (minijinja's
//! does, transformers' does not).

use std::path::Path;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Location, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl Message {
    /// A message from its role and text.
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// A checkpoint's chat template with its special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, `pad_token`, `unk_token` as the template sees them.
    pub tokens: serde_json::Map<String, serde_json::Value>,
}

/// A special token in `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// The template of the checkpoint (or tokenizer) directory `dir`.
    pub fn from_dir(dir: &Path) -> Result<ChatTemplate> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            let text = fs_err::read_to_string(&config_path)?;
            serde_json::from_str(&text)
                .map_err(|e| Error::data(Location::line(&config_path, e.line() as u64), format!("not JSON: {e}")))?
        } else {
            serde_json::Value::Null
        };
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            fs_err::read_to_string(&jinja)?
        } else {
            match &config["chat_template"] {
                serde_json::Value::String(s) => s.clone(),
                // a list of named templates: the default one
                serde_json::Value::Array(list) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::data(Location::file(&config_path).column("chat_template"), "no `default` template")
                    })?,
                _ => {
                    return Err(Error::data(Location::file(dir), "the checkpoint has no chat template").with_hint(
                        "add `chat_template.jinja`, or pass `--prompt-template` to send plain text without chat roles",
                    ));
                }
            }
        };
        let mut tokens = serde_json::Map::new();
        for name in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(text) = token_text(&config[name]) {
                tokens.insert(name.into(), text.into());
            }
        }
        ChatTemplate::new(&source, tokens)
            .map_err(|e| Error::data(Location::file(if jinja.exists() { jinja } else { config_path }), e.to_string()))
    }

    /// A template from its source and special tokens.
    pub fn new(source: &str, tokens: serde_json::Map<String, serde_json::Value>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| -> String { strftime_now(&format) });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::usage(format!("the chat template does not parse: {e}")))?;
        Ok(ChatTemplate { env, tokens })
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's reply begins.
    /// `extra` adds template variables (`enable_thinking`, `date_string`, ...).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let mut ctx = self.tokens.clone();
        ctx.insert("messages".into(), serde_json::to_value(messages).expect("serialisable"));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        let template = self.env.get_template("chat").expect("added in new");
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| Error::usage(format!("the chat template failed: {e}")))
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent, separators=...,
/// sort_keys=False)`, no HTML escaping.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json: serde_json::Value = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = match indent {
        None => python_dumps(&json),
        Some(n) => {
            let pad = " ".repeat(n);
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&json, &mut ser).expect("serialisable");
            String::from_utf8(out).expect("utf-8")
        }
    };
    Ok(Value::from_safe_string(text))
}

/// `json.dumps` with Python's default separators (`", "`, `": "`).
fn python_dumps(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(python_dumps).collect::<Vec<_>>().join(", "))
        }
        serde_json::Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", serde_json::Value::String(k.clone()), python_dumps(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Today's date for the templates that print it (Llama 3), in the few `strftime` forms they use.
fn strftime_now(format: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (y, m, d) = (&now[0..4], &now[5..7], &now[8..10]);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS[m.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format.replace("%d", d).replace("%b", month).replace("%Y", y).replace("%m", m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_with_generation_prompt_and_special_tokens() {
        let source = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ eos_token }}";
        let mut tokens = serde_json::Map::new();
        tokens.insert("eos_token".into(), "<E>".into());
        let t = ChatTemplate::new(source, tokens).unwrap();
        let out = t.render(&[Message::new("user", " Hi ")], true, &Default::default()).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<E>");
    }

    #[test]
    fn tojson_does_not_escape_html_and_python_methods_work() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0].content.startswith('a<') }}|{{ messages[0].content.split('<')[1] }}",
            Default::default(),
        )
        .unwrap();
        let out = t.render(&[Message::new("user", "a<b>&'c")], false, &Default::default()).unwrap();
        assert_eq!(out, r#"{"role": "user", "content": "a<b>&'c"}|True|b>&'c"#, "as jinja2 prints it");
        let fails = ChatTemplate::new("{{ raise_exception('no system role') }}", Default::default()).unwrap();
        let err = fails.render(&[], false, &Default::default()).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
    }
}
