//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json` (or `chat_template.jinja` /
//! `chat_template.json`, where newer transformers save it), rendered with minijinja the way transformers renders it:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods through minijinja-contrib's pycompat, and a
//! `raise_exception(msg)` function that becomes [`Error::TemplateException`].
//!
//! The rendered text already starts with `<bos>` for Gemma: tokenize it without adding special tokens.

use std::path::Path;
use std::sync::{Arc, Mutex};

use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One chat message. `content` is a plain string; templates that accept lists of parts get a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// The most template instructions one render may run (minijinja's fuel). Gemma 3's template spends about 60 per
/// message, so this allows conversations of ~300,000 messages; a template that loops forever stops here.
pub const TEMPLATE_FUEL: u64 = 20_000_000;
/// The most text one render may produce; far beyond any context.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;
/// The most memory one render may hold, enforced by the binaries' allocator ([`crate::alloc_budget`]).
pub const TEMPLATE_MEMORY: usize = 256 << 20;

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Message of the last `raise_exception` call, read back when rendering fails.
    raised: Arc<Mutex<Option<String>>>,
}

impl ChatTemplate {
    /// Compiles `source` (a syntax error is reported here, not at render time).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let raised = Arc::new(Mutex::new(None::<String>));
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates come from downloaded files: bound their work (fuel) and their output (`render_value`).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        let sink = raised.clone();
        env.add_function(
            "raise_exception",
            move |msg: String| -> std::result::Result<String, minijinja::Error> {
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            strftime_now(&format)
        });
        env.add_template_owned(TEMPLATE_NAME, source.into())
            .map_err(|e| Error::ChatTemplate(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            raised,
        })
    }

    /// The template of an export folder: `tokenizer_config.json`'s `chat_template` (a string, or a list of named
    /// templates whose `default` is taken), else `chat_template.jinja`, else `chat_template.json`. `Ok(None)` when
    /// the folder has none. bos/eos tokens come from `tokenizer_config.json` (`<bos>`/`<eos>` if absent).
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let token = |field: &str, default: &str| -> String {
            config
                .as_ref()
                .and_then(|c| c.get(field))
                .and_then(|v| {
                    v.as_str()
                        .or_else(|| v.get("content").and_then(|c| c.as_str()))
                })
                .unwrap_or(default)
                .to_string()
        };
        let (bos, eos) = (token("bos_token", "<bos>"), token("eos_token", "<eos>"));

        let mut source = None;
        if let Some(t) = config.as_ref().and_then(|c| c.get("chat_template")) {
            source = Some(template_from_value(t, &config_path)?);
        }
        let jinja = dir.join("chat_template.jinja");
        if source.is_none() && jinja.is_file() {
            source = Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?);
        }
        let json = dir.join("chat_template.json");
        if source.is_none() && json.is_file() {
            let v = read_json(&json)?;
            let t = v
                .get("chat_template")
                .ok_or_else(|| Error::invalid_file(&json, "missing field `chat_template`"))?;
            source = Some(template_from_value(t, &json)?);
        }
        source.map(|s| ChatTemplate::new(s, bos, eos)).transpose()
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the model turn's header.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let messages =
            serde_json::to_value(messages).map_err(|e| Error::ChatTemplate(e.to_string()))?;
        self.render_value(&messages, add_generation_prompt)
    }

    /// Renders messages given as JSON (for message shapes [`Message`] does not cover, like lists of content parts).
    pub fn render_value(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        *self.raised.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::ChatTemplate(describe(&e)))?;
        let ctx = minijinja::context! {
            messages => messages,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            add_generation_prompt => add_generation_prompt,
        };
        let mut out = CappedOutput(Vec::new());
        let rendered =
            crate::alloc_budget::with_budget(TEMPLATE_MEMORY, "the chat template", || {
                template.render_captured_to(ctx, &mut out).map(|_| ())
            });
        if out.0.len() > MAX_RENDERED_BYTES {
            return Err(Error::ChatTemplate(format!(
                "the rendered conversation is larger than {} MiB, the limit (a template that repeats text \
                 without end?)",
                MAX_RENDERED_BYTES >> 20
            )));
        }
        rendered.map_err(|e| {
            match self.raised.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(msg) => Error::TemplateException(msg),
                None if e.kind() == ErrorKind::OutOfFuel => Error::ChatTemplate(format!(
                    "the template ran more than {TEMPLATE_FUEL} steps, the limit (a loop that never ends?)"
                )),
                None => Error::ChatTemplate(describe(&e)),
            }
        })?;
        String::from_utf8(out.0).map_err(|e| Error::ChatTemplate(e.to_string()))
    }
}

/// The render's output, refusing to grow past [`MAX_RENDERED_BYTES`] (the write error stops the render).
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            self.0.resize(MAX_RENDERED_BYTES + 1, 0);
            return Err(std::io::Error::other("rendered text too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_file(path, format!("not valid JSON: {e}")))
}

/// A `chat_template` field: a string, or `[{"name": ..., "template": ...}]` (take `default`, else the first).
fn template_from_value(v: &serde_json::Value, path: &Path) -> Result<String> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    if let Some(list) = v.as_array() {
        let pick = list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str());
        if let Some(s) = pick {
            return Ok(s.to_string());
        }
    }
    Err(Error::invalid_file(
        path,
        "field `chat_template` must be a string or a list of {name, template}",
    ))
}

/// minijinja's error with its cause chain (the detail is often in the source).
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// transformers' `strftime_now(format)` for the few directives templates use (UTC date).
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
#[path = "chat_template_tests.rs"]
mod tests;
