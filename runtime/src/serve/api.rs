//! The requests of the OpenAI API subset `gemma serve` speaks: the bodies of `/v1/chat/completions` and
//! `/v1/completions`, validated into a [`Request`] for the scheduler (what it answers is in [`super::reply`]).

use serde::Deserialize;

pub use super::reply::ApiError;

use crate::chat_template::Message;
use crate::sampling::SamplingConfig;

/// What the scheduler needs to know about one request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Prompt,
    /// `None`: up to the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingConfig,
    /// Text that ends the reply (not included in it).
    pub stop: Vec<String>,
    pub stream: bool,
    /// Stream: a last chunk with `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
}

#[derive(Clone, Debug)]
pub enum Prompt {
    /// Messages for the chat template; `images[i]` are the encoded bytes of message `i`'s images, in order.
    Chat {
        messages: Vec<Message>,
        images: Vec<Vec<Vec<u8>>>,
    },
    /// `/v1/completions`: the raw text (BOS added, as `gemma generate` without `--chat`).
    Raw(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields both endpoints share (unknown fields are ignored, as OpenAI-compatible servers do).
#[derive(Deserialize)]
struct Common {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<StopField>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<i64>,
}

#[derive(Deserialize)]
struct ChatBody {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct CompletionBody {
    prompt: PromptField,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Refused with a 400 that says so (parsed only to name it).
    InputAudio {
        #[allow(dead_code)]
        input_audio: serde::de::IgnoredAny,
    },
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

/// Parses a JSON body into `T`, with serde's message (field, expected type, line and column) as a 400.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the body does not match the request schema"
        };
        ApiError::invalid(format!("{what}: {e}"), None)
    })
}

/// A `/v1/chat/completions` body. `vision`: whether the export takes images.
pub fn chat_request(body: &[u8], vision: bool) -> Result<Request, ApiError> {
    let body: ChatBody = parse(body)?;
    if body.messages.is_empty() {
        return Err(ApiError::invalid("`messages` is empty", Some("messages")));
    }
    let mut messages = Vec::with_capacity(body.messages.len());
    let mut images = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid(
                    format!(
                    "messages[{i}].role is {other:?}: this server takes \"system\", \"user\" and \
                         \"assistant\""
                ),
                    Some("messages"),
                ))
            }
        };
        let mut text = String::new();
        let mut own_images = Vec::new();
        match m.content {
            None => {}
            Some(Content::Text(t)) => text = t,
            Some(Content::Parts(parts)) => {
                for part in parts {
                    match part {
                        Part::Text { text: t } => text.push_str(&t),
                        Part::ImageUrl { image_url } => {
                            if !vision {
                                return Err(ApiError::invalid(
                                    "this model takes no images (export a Gemma 3 multimodal checkpoint, or a Gemma 3n \
                                     one with its vision tower)",
                                    Some("messages"),
                                ));
                            }
                            if role != "user" {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}]: only user messages may carry images"),
                                    Some("messages"),
                                ));
                            }
                            own_images.push(data_uri_bytes(&image_url.url)?);
                        }
                        Part::InputAudio { .. } => {
                            return Err(ApiError::invalid(
                                format!(
                                    "messages[{i}]: input_audio parts are not supported by gemma serve; give \
                                     audio to a Gemma 3n export with `gemma generate --audio` or `gemma chat --audio`"
                                ),
                                Some("messages"),
                            ))
                        }
                    }
                }
            }
        }
        messages.push(Message::new(role, text));
        images.push(own_images);
    }
    let prompt = Prompt::Chat { messages, images };
    request(prompt, body.common)
}

/// A `/v1/completions` body.
pub fn completion_request(body: &[u8]) -> Result<Request, ApiError> {
    let body: CompletionBody = parse(body)?;
    let prompt = match body.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(_) => {
            return Err(ApiError::invalid(
                "`prompt` must be one string (batches of prompts are not supported)",
                Some("prompt"),
            ))
        }
    };
    request(Prompt::Raw(prompt), body.common)
}

fn request(prompt: Prompt, c: Common) -> Result<Request, ApiError> {
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
    }
    let (max, param) = match (c.max_completion_tokens, c.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_tokens = match max {
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                format!("{param} must be at least 1, got {m}"),
                Some(param),
            ))
        }
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        None => None,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            format!("temperature must be between 0 and 2, got {temperature}"),
            Some("temperature"),
        ));
    }
    if let Some(p) = c.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(ApiError::invalid(
            format!("top_p must be in (0, 1], got {p}"),
            Some("top_p"),
        ));
    }
    let stop = match c.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            "stop must be up to 4 non-empty strings",
            Some("stop"),
        ));
    }
    Ok(Request {
        prompt,
        max_tokens,
        sampling: SamplingConfig {
            temperature,
            top_k: None,
            top_p: c.top_p,
            // Any i64 is a seed: its bits.
            seed: c.seed.map(|s| s as u64),
        },
        stop,
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// The bytes of a `data:[<type>][;base64],<data>` URI (remote URLs are not fetched).
fn data_uri_bytes(url: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::invalid(format!("image_url: {why}"), Some("messages"));
    let rest = url
        .strip_prefix("data:")
        .ok_or_else(|| bad("only data: URIs are supported (the server fetches no URL)"))?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("a data: URI needs a comma before its data"))?;
    if !meta.ends_with(";base64") {
        return Err(bad(
            "the data: URI must be base64 (data:image/png;base64,...)",
        ));
    }
    base64_decode(data).ok_or_else(|| bad("the data: URI's base64 is invalid"))
}

/// Standard base64 (padding optional, whitespace ignored).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn bad_requests_are_400_with_a_param() {
        let e = chat_request(
            br#"{"messages": [{"role": "robot", "content": "x"}]}"#,
            false,
        )
        .unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("messages")));
        let e = chat_request(
            br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(e.param, Some("max_tokens"));
        let e = chat_request(br#"{"messages": "hi"}"#, false).unwrap_err();
        assert!(e.message.contains("schema"), "{}", e.message);
        let e = chat_request(b"{", false).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = chat_request(br#"{"model": "x"}"#, false).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
    }

    #[test]
    fn parts_join_and_images_need_vision() {
        let body = br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}]}"#;
        assert!(chat_request(body, false).is_err());
        let r = chat_request(body, true).unwrap();
        let Prompt::Chat { messages, images } = r.prompt else {
            panic!()
        };
        assert_eq!(messages[0].content, "a");
        assert_eq!(images[0], vec![b"hi".to_vec()]);
        let audio = br#"{"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "wav"}}]}]}"#;
        let e = chat_request(audio, true).unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("messages")));
        assert!(e.message.contains("input_audio"), "{}", e.message);
    }
}
