//! `gemma serve`: an OpenAI-compatible HTTP server for one export (docs/serve.md).
//!
//! - [`api`]: the request objects and their validation.
//! - [`reply`]: the response and chunk objects, the error object.
//! - [`http`]: routes, SSE streaming, `--api-key`, per-request logs (axum on a small tokio runtime).
//! - [`scheduler`]: the thread that owns the model; continuous batching.
//! - [`engine`]: what the scheduler needs of a model (text exports here), and how a request's prompt is built.
//! - [`sequence`]: one reply in progress (sampling, stop tokens, stop strings, streaming text).
//! - [`vision`]: multimodal exports (Gemma 3 vision, PaliGemma) as an engine.
//! - [`gemma3n`]: Gemma 3n exports with a vision or an audio part as an engine (`image_url`, `input_audio` parts).
//!
//! The listener is bound before the model loads, so `/health` answers 503 until the model is ready. Ctrl-C or
//! SIGTERM stops accepting connections, gives in-flight requests [`ServeOptions::grace`] to finish, then returns.

pub mod api;
pub mod engine;
pub mod gemma3n;
pub mod http;
pub mod reply;
pub mod scheduler;
pub mod sequence;
pub mod vision;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use crate::attachments::Gemma3nGenerator;
use crate::generate::Generator;
use crate::ort_env::RuntimeOptions;
use crate::vision::VisionGenerator;
use engine::Served;
use scheduler::{Job, Limits};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The export folder.
    pub model: PathBuf,
    pub host: String,
    /// 0 picks a free port (printed).
    pub port: u16,
    pub runtime: RuntimeOptions,
    /// Sequences decoded together at most; more requests queue.
    pub max_batch: usize,
    /// Positions (prompt + reply) of one request at most; `None`: the model's `max_position_embeddings`.
    pub ctx: Option<usize>,
    /// Required as `Authorization: Bearer KEY` on `/v1/*` when set.
    pub api_key: Option<String>,
    /// Largest request body (images come inline as base64).
    pub body_limit: usize,
    /// How long in-flight requests may run on after Ctrl-C / SIGTERM.
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Model(#[from] crate::Error),
}

/// Serves until Ctrl-C or SIGTERM. `on_listening` gets the bound address (e.g. to print it) before the model loads.
pub fn serve(
    options: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let manifest = crate::manifest::load(&options.model)?;
    // Gemma 3n: the image and audio graphs are in the manifest's `gemma3n.vision` and `gemma3n.audio` parts (a
    // text-only Gemma 3n export is served as text).
    let g3n = manifest.gemma3n.as_ref();
    let takes = api::Takes {
        images: manifest.vision.is_some() || g3n.is_some_and(|g| g.vision.is_some()),
        audio: g3n.is_some_and(|g| g.audio.is_some()),
    };
    let gemma3n_media = g3n.is_some_and(|g| g.vision.is_some() || g.audio.is_some());
    let vision = manifest.vision.is_some();
    let ctx = options.ctx.unwrap_or(manifest.max_position_embeddings);
    let limits = Limits {
        max_batch: options.max_batch.max(1),
        ctx,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let addr = format!("{}:{}", options.host, options.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;

    let (jobs, receiver) = std::sync::mpsc::channel();
    let model_id = options
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gemma".into());
    let state = Arc::new(http::AppState::new(
        jobs,
        model_id,
        takes,
        options.api_key.clone(),
    ));
    on_listening(local);

    // The model thread: loads, says so, then schedules until the job senders are gone.
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<crate::Result<()>>();
    let ready = state.clone();
    let (dir, runtime_options) = (options.model.clone(), options.runtime.clone());
    let worker = std::thread::Builder::new()
        .name("gemma-scheduler".into())
        .spawn(move || -> crate::Result<()> {
            type Engine = Box<dyn FnOnce(Receiver<Job>) -> crate::Result<()>>;
            let engine: crate::Result<Engine> = if gemma3n_media {
                Gemma3nGenerator::open(&dir, &runtime_options)
                    .map_err(|e| e.into_runtime())
                    .and_then(Served::new)
                    .map(|g| Box::new(move |jobs| scheduler::run(g, jobs, limits)) as Engine)
            } else if vision {
                VisionGenerator::open(&dir, &runtime_options)
                    .and_then(Served::new)
                    .map(|g| Box::new(move |jobs| scheduler::run(g, jobs, limits)) as Engine)
            } else {
                Generator::open(&dir, &runtime_options)
                    .and_then(Served::new)
                    .map(|g| Box::new(move |jobs| scheduler::run(g, jobs, limits)) as Engine)
            };
            match engine {
                Ok(run) => {
                    ready.ready.store(true, Ordering::Release);
                    let _ = loaded_tx.send(Ok(()));
                    drop(ready);
                    run(receiver)
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    Ok(())
                }
            }
        })
        .map_err(ServeError::Runtime)?;

    let app = http::router(state.clone(), options.body_limit);
    let grace = options.grace;
    let result = runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
        let mut loaded = std::pin::pin!(loaded_rx);
        let mut loaded_done = false;
        loop {
            tokio::select! {
                r = &mut server => return r.map_err(ServeError::Serve),
                r = &mut loaded, if !loaded_done => {
                    loaded_done = true;
                    if let Ok(Err(e)) = r {
                        return Err(ServeError::Model(e));
                    }
                }
                _ = shutdown_signal() => break,
            }
        }
        eprintln!("shutting down: finishing in-flight requests (at most {grace:?})");
        let _ = stop_tx.send(());
        // No new jobs: the scheduler ends once its queue and batch are done.
        state.jobs.lock().map(|mut j| j.take()).ok();
        let _ = tokio::time::timeout(grace, &mut server).await;
        Ok(())
    });
    // The runtime's tasks (streams still open after the grace period) are dropped here, which closes their channels.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if result.is_ok() {
        let _ = worker.join();
    }
    result
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
