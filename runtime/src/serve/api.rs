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
    /// Messages for the chat template; `uploads[i]` are message `i`'s images and clips, in the order of its parts.
    Chat {
        messages: Vec<Message>,
        uploads: Vec<Vec<Upload>>,
    },
    /// `/v1/completions`: the raw text (BOS added, as `gemma generate` without `--chat`).
    Raw(String),
}

/// An attachment of a user message, still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upload {
    /// The bytes of an `image_url` part's `data:` URI.
    Image(Vec<u8>),
    /// The WAV bytes of an `input_audio` part.
    Audio(Vec<u8>),
}

/// What the export takes besides text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Takes {
    pub images: bool,
    /// Gemma 3n exports with an audio tower.
    pub audio: bool,
}

/// Base64 of an `input_audio` part at most: 12 MiB of WAV, room for 30 s of stereo 48 kHz float32 (11 MiB), the
/// longest clip the model takes (30 s, checked again on the decoded samples).
pub const MAX_AUDIO_BASE64: usize = 16 << 20;

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
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    InputAudio { input_audio: InputAudio },
}

#[derive(Deserialize)]
struct InputAudio {
    /// Base64 of the file's bytes.
    data: String,
    /// `"wav"` (the only format taken; absent means WAV).
    format: Option<String>,
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

/// A `/v1/chat/completions` body, for an export that `takes` images and/or audio.
pub fn chat_request(body: &[u8], takes: Takes) -> Result<Request, ApiError> {
    let body: ChatBody = parse(body)?;
    if body.messages.is_empty() {
        return Err(ApiError::invalid("`messages` is empty", Some("messages")));
    }
    let mut messages = Vec::with_capacity(body.messages.len());
    let mut uploads = Vec::with_capacity(body.messages.len());
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
        let mut own = Vec::new();
        match m.content {
            None => {}
            Some(Content::Text(t)) => text = t,
            Some(Content::Parts(parts)) => {
                for part in parts {
                    match part {
                        Part::Text { text: t } => text.push_str(&t),
                        Part::ImageUrl { image_url } => {
                            if !takes.images {
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
                            own.push(Upload::Image(data_uri_bytes(&image_url.url)?));
                        }
                        Part::InputAudio { input_audio } => {
                            own.push(Upload::Audio(audio_bytes(i, role, takes, &input_audio)?));
                        }
                    }
                }
            }
        }
        messages.push(Message::new(role, text));
        uploads.push(own);
    }
    let prompt = Prompt::Chat { messages, uploads };
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

/// The WAV bytes of message `i`'s `input_audio` part, refused (400) on an export without audio, outside a user
/// message, in another format, over [`MAX_AUDIO_BASE64`] or not base64.
fn audio_bytes(i: usize, role: &str, takes: Takes, part: &InputAudio) -> Result<Vec<u8>, ApiError> {
    let bad = |why: String| {
        ApiError::invalid(
            format!("messages[{i}].input_audio: {why}"),
            Some("messages"),
        )
    };
    if !takes.audio {
        return Err(bad(
            "this model takes no audio (only Gemma 3n exports with their audio tower do)".into(),
        ));
    }
    if role != "user" {
        return Err(bad("only user messages may carry audio".into()));
    }
    if let Some(format) = part.format.as_deref().filter(|f| *f != "wav") {
        return Err(bad(format!("format {format:?}: only \"wav\" is taken")));
    }
    if part.data.len() > MAX_AUDIO_BASE64 {
        return Err(bad(format!(
            "{} bytes of base64, more than the {MAX_AUDIO_BASE64} taken",
            part.data.len()
        )));
    }
    base64_decode(&part.data).ok_or_else(|| bad("`data` is not valid base64".into()))
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
            Takes::default(),
        )
        .unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("messages")));
        let e = chat_request(
            br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
            Takes::default(),
        )
        .unwrap_err();
        assert_eq!(e.param, Some("max_tokens"));
        let e = chat_request(br#"{"messages": "hi"}"#, Takes::default()).unwrap_err();
        assert!(e.message.contains("schema"), "{}", e.message);
        let e = chat_request(b"{", Takes::default()).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = chat_request(br#"{"model": "x"}"#, Takes::default()).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
    }

    #[test]
    fn parts_join_and_images_need_vision() {
        let body = br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}]}"#;
        assert!(chat_request(body, Takes::default()).is_err());
        let images = Takes {
            images: true,
            audio: false,
        };
        let r = chat_request(body, images).unwrap();
        let Prompt::Chat { messages, uploads } = r.prompt else {
            panic!()
        };
        assert_eq!(messages[0].content, "a");
        assert_eq!(uploads[0], vec![Upload::Image(b"hi".to_vec())]);
        // Audio parts: in order with the images, only where the export takes audio, WAV only.
        let audio = br#"{"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "wav"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}]}"#;
        let e = chat_request(audio, images).unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("messages")));
        assert!(e.message.contains("takes no audio"), "{}", e.message);
        let all = Takes {
            images: true,
            audio: true,
        };
        let Prompt::Chat { uploads, .. } = chat_request(audio, all).unwrap().prompt else {
            panic!()
        };
        assert_eq!(
            uploads[0],
            vec![Upload::Audio(b"hi".to_vec()), Upload::Image(b"hi".to_vec())]
        );
        let mp3 = br#"{"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "mp3"}}]}]}"#;
        let e = chat_request(mp3, all).unwrap_err();
        assert!(e.message.contains("mp3"), "{}", e.message);
        let big = format!(
            r#"{{"messages": [{{"role": "user", "content": [
            {{"type": "input_audio", "input_audio": {{"data": "{}"}}}}]}}]}}"#,
            "A".repeat(MAX_AUDIO_BASE64 + 4)
        );
        let e = chat_request(big.as_bytes(), all).unwrap_err();
        assert!(e.message.contains("more than"), "{}", e.message);
    }
}
