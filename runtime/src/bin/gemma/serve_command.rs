//! `gemma serve`: its arguments, and the call into [`gemma_runtime::serve`].

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::cli::{errln, ModelArgs};
use gemma_runtime::serve::{serve, ServeOptions};

pub const SERVE_EXAMPLES: &str = "\
Examples:
  gemma serve -m gemma-3-270m-onnx
  gemma serve -m gemma-3-270m-onnx --port 8000 --threads 4 --max-batch 8 --ctx 4096 --api-key secret

  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 32}'

Endpoints: GET /health (503 while loading, then 200), GET /v1/models, POST /v1/chat/completions, \
POST /v1/completions (OpenAI schema; \"stream\": true for Server-Sent Events). Requests that arrive \
together are decoded together, one batched step per token (continuous batching); beyond --max-batch \
they queue. temperature 0 gives exactly `gemma generate --chat`'s text. Multimodal exports take \
image_url parts (data: URIs); Gemma 3n exports with an audio tower take input_audio parts (base64 \
WAV). Ctrl-C or SIGTERM stops accepting requests and lets running ones finish (at most 10 s). One log line per request on stderr.";

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests decoded together at most; more wait in a queue
    #[arg(long = "max-batch", value_name = "K", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    max_batch: u16,
    /// Positions (prompt + reply) of one request at most [default: the model's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    ctx: Option<u32>,
    /// Require `Authorization: Bearer KEY` on /v1/*
    #[arg(long = "api-key", value_name = "KEY")]
    api_key: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let options = ServeOptions {
        model: args.model.model.clone(),
        host: args.host,
        port: args.port,
        runtime: args.model.runtime_options(),
        max_batch: args.max_batch.into(),
        ctx: args.ctx.map(|c| c as usize),
        api_key: args.api_key.filter(|k| !k.is_empty()),
        body_limit: 32 << 20,
        grace: Duration::from_secs(10),
    };
    let model = options.model.display().to_string();
    serve(options, |addr| {
        errln!("gemma serve: {model} on http://{addr} (loading the model; /health says when it is ready)");
    })?;
    Ok(())
}
