//! What `gemma serve` answers: the response and streamed chunk objects of the OpenAI API, and the error object
//! `{"error": {"message", "type", "param", "code"}}` every failure answers with.

use serde_json::{json, Value};

/// An error answered to the client: HTTP status and the OpenAI error object.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 `invalid_request_error`, about `param` when given.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub fn with_status(mut self, status: u16, code: &'static str) -> ApiError {
        self.status = status;
        self.code = Some(code);
        self
    }

    /// 500 `server_error` (a failure of the model run, not of the request).
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// Why a reply ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or a stop string.
    Stop,
    /// `max_tokens` (or the context) reached.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The fields every response object starts with.
pub struct Meta<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    /// `/v1/chat/completions` (else `/v1/completions`).
    pub chat: bool,
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The whole (non-streamed) response.
pub fn response(m: &Meta<'_>, text: &str, finish: Finish, usage: Value) -> Value {
    let choice = if m.chat {
        json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
               "finish_reason": finish.as_str()})
    } else {
        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()})
    };
    let object = if m.chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    json!({"id": m.id, "object": object, "created": m.created, "model": m.model, "choices": [choice],
           "usage": usage})
}

/// One streamed chunk: `text` as `delta.content` (chat; the first chunk also carries the role) or `text`, with
/// `finish` on the last one.
pub fn chunk(m: &Meta<'_>, text: Option<&str>, first: bool, finish: Option<Finish>) -> Value {
    let finish = finish.map(Finish::as_str);
    let choice = if m.chat {
        let mut delta = json!({});
        if first {
            delta["role"] = json!("assistant");
        }
        if let Some(t) = text {
            delta["content"] = json!(t);
        }
        json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
    } else {
        json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
    };
    let object = if m.chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    json!({"id": m.id, "object": object, "created": m.created, "model": m.model, "choices": [choice]})
}

/// The usage chunk of `stream_options.include_usage`: no choices.
pub fn usage_chunk(m: &Meta<'_>, usage: Value) -> Value {
    let mut c = chunk(m, None, false, None);
    c["choices"] = json!([]);
    c["usage"] = usage;
    c
}
