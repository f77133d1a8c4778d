//! The HTTP side of `gemma serve` (axum on tokio): the routes, the bearer-token check, one log line per request on
//! stderr, streaming replies as Server-Sent Events, and every failure as an OpenAI error object.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api::{self, Request};
use super::reply::{self, ApiError, Meta};
use super::scheduler::Job;
use super::sequence::Event;

/// What every handler reads.
pub struct AppState {
    /// Set once the model is loaded (`/health` answers 503 before).
    pub ready: AtomicBool,
    /// To the scheduler; taken away at shutdown so that the scheduler ends.
    pub jobs: Mutex<Option<Sender<Job>>>,
    /// The name `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Whether the export takes images, audio.
    pub takes: api::Takes,
    pub api_key: Option<String>,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(
        jobs: Sender<Job>,
        model_id: String,
        takes: api::Takes,
        api_key: Option<String>,
    ) -> AppState {
        AppState {
            ready: AtomicBool::new(false),
            jobs: Mutex::new(Some(jobs)),
            model_id,
            takes,
            api_key,
            next_id: AtomicU64::new(1),
        }
    }
}

type Shared = Arc<AppState>;

/// The router: `/health`, `/v1/models`, `/v1/chat/completions`, `/v1/completions`; bodies up to `body_limit` bytes.
pub fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(log))
        .with_state(state)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body())).into_response()
}

/// One line per request on stderr: method, path, status, milliseconds to the response head.
async fn log(req: HttpRequest, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    eprintln!(
        "{method} {path} {} {:.0} ms",
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// `--api-key`: `/v1/*` needs `Authorization: Bearer KEY` (`/health` stays open for probes).
async fn auth(State(s): State<Shared>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if req.uri().path().starts_with("/v1/") && given != Some(key.as_str()) {
            let mut e =
                ApiError::invalid("missing or wrong API key (Authorization: Bearer KEY)", None)
                    .with_status(401, "invalid_api_key");
            e.kind = "authentication_error";
            return error_response(&e);
        }
    }
    next.run(req).await
}

async fn health(State(s): State<Shared>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

async fn models(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": s.model_id, "object": "model", "created": 0, "owned_by": "gemma-onnx"}]}))
}

async fn not_found() -> Response {
    error_response(
        &ApiError::invalid(
            "no such route (see /v1/models, /v1/chat/completions, /v1/completions)",
            None,
        )
        .with_status(404, "not_found"),
    )
}

async fn chat(State(s): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let takes = s.takes;
    handle(s, body, true, |b| api::chat_request(b, takes)).await
}

async fn completions(State(s): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(s, body, false, api::completion_request).await
}

async fn handle(
    s: Shared,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
    parse: impl FnOnce(&[u8]) -> Result<Request, ApiError>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status().as_u16();
            let code = if status == 413 {
                "body_too_large"
            } else {
                "bad_body"
            };
            return error_response(
                &ApiError::invalid(rejection.body_text(), None).with_status(status, code),
            );
        }
    };
    if !s.ready.load(Ordering::Acquire) {
        return error_response(
            &ApiError::server("the model is still loading").with_status(503, "loading"),
        );
    }
    let request = match parse(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let (tx, mut rx) = unbounded_channel();
    let stream = request.stream;
    let include_usage = request.include_usage;
    let sent = s.jobs.lock().ok().and_then(|j| {
        j.as_ref().map(|j| {
            j.send(Job {
                request,
                events: tx,
            })
            .is_ok()
        })
    });
    if sent != Some(true) {
        return error_response(
            &ApiError::server("the server is shutting down").with_status(503, "shutting_down"),
        );
    }
    // The first event says whether the request was taken (errors of the prompt come before it).
    match rx.recv().await {
        Some(Event::Failed(e)) => return error_response(&e),
        None => return error_response(&ApiError::server("the model thread stopped")),
        Some(_) => {}
    }
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", if chat { "chatcmpl" } else { "cmpl" });
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reply = Reply {
        id,
        created,
        model: s.model_id.clone(),
        chat,
    };
    if stream {
        sse(reply, rx, include_usage)
    } else {
        whole(reply, rx).await
    }
}

/// The fields every object of one reply shares.
struct Reply {
    id: String,
    created: u64,
    model: String,
    chat: bool,
}

impl Reply {
    fn meta(&self) -> Meta<'_> {
        Meta {
            id: &self.id,
            created: self.created,
            model: &self.model,
            chat: self.chat,
        }
    }
}

async fn whole(reply: Reply, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let usage = reply::usage(prompt_tokens, completion_tokens);
                return Json(reply::response(&reply.meta(), &text, finish, usage)).into_response();
            }
            Event::Failed(e) => return error_response(&e),
        }
    }
    error_response(&ApiError::server("the model thread stopped"))
}

/// Streams the reply: a first chunk (the role), a chunk per piece of text, the chunk with `finish_reason`, the usage
/// chunk if asked, then `data: [DONE]`. A client that hangs up drops this stream and with it the receiver: the
/// scheduler sees the closed channel and frees the sequence's slot before its next step.
fn sse(reply: Reply, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let first = reply::chunk(&reply.meta(), Some(""), true, None).to_string();
    let state = (rx, reply, VecDeque::from([first]), false);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut rx, reply, mut pending, done)| async move {
            loop {
                if let Some(data) = pending.pop_front() {
                    let event = SseEvent::default().data(data);
                    return Some((Ok::<_, Infallible>(event), (rx, reply, pending, done)));
                }
                if done {
                    return None;
                }
                let mut finished = false;
                match rx.recv().await? {
                    Event::Started { .. } => {}
                    Event::Text(t) => pending
                        .push_back(reply::chunk(&reply.meta(), Some(&t), false, None).to_string()),
                    Event::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        pending.push_back(
                            reply::chunk(&reply.meta(), None, false, Some(finish)).to_string(),
                        );
                        if include_usage {
                            let usage = reply::usage(prompt_tokens, completion_tokens);
                            pending.push_back(reply::usage_chunk(&reply.meta(), usage).to_string());
                        }
                        finished = true;
                    }
                    Event::Failed(e) => {
                        pending.push_back(e.body().to_string());
                        finished = true;
                    }
                }
                if finished {
                    pending.push_back("[DONE]".into());
                    return next_pending(rx, reply, pending);
                }
            }
        },
    );
    Sse::new(stream).into_response()
}

type SseState = (UnboundedReceiver<Event>, Reply, VecDeque<String>, bool);

/// The first of `pending`, with the stream marked done (nothing is read after the last chunks).
fn next_pending(
    rx: UnboundedReceiver<Event>,
    reply: Reply,
    mut pending: VecDeque<String>,
) -> Option<(Result<SseEvent, Infallible>, SseState)> {
    let data = pending.pop_front()?;
    Some((
        Ok(SseEvent::default().data(data)),
        (rx, reply, pending, true),
    ))
}
