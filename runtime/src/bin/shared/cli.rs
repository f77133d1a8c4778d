//! What the `gemma` and `gemma-vision` binaries share: the model/runtime and sampling arguments, reading a prompt
//! from stdin, Ctrl-C handling and the exit status. Included by both with `#[path]` (binary-only code: it uses
//! anyhow and clap, which the library does not).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gemma_runtime::{ExecutionProvider, RuntimeOptions, SamplingConfig};

#[derive(Args)]
pub struct ModelArgs {
    /// Export folder written by gemma-export (has gemma-onnx.json)
    #[arg(short = 'm', long = "model", value_name = "DIR")]
    pub model: std::path::PathBuf,
    /// Intra-op threads for ONNX Runtime [default: all logical cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Execution provider: cpu, cuda, tensorrt, coreml (non-CPU ones need the matching cargo feature)
    #[arg(long = "ep", value_name = "EP", default_value = "cpu", value_parser = parse_ep)]
    pub execution_provider: ExecutionProvider,
}

impl ModelArgs {
    pub fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions::default()
            .with_threads(self.threads.map(usize::from))
            .with_execution_provider(self.execution_provider)
    }
}

pub fn parse_ep(s: &str) -> std::result::Result<ExecutionProvider, String> {
    s.parse().map_err(|e: gemma_runtime::Error| e.to_string())
}

/// Sampling options shared by `generate` and `chat`.
#[derive(Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy (always the most likely token)
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.0,
        allow_hyphen_values = true
    )]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (needs --temperature > 0)
    #[arg(long = "top-k", value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P (needs --temperature > 0)
    #[arg(long = "top-p", value_name = "P")]
    pub top_p: Option<f32>,
    /// RNG seed for reproducible sampling [default: random]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The validated config (with a note on stderr when top-k/top-p cannot apply).
    pub fn config(&self) -> Result<SamplingConfig> {
        if self.temperature == 0.0 && (self.top_k.is_some() || self.top_p.is_some()) {
            eprintln!(
                "note: --top-k/--top-p have no effect with greedy decoding (--temperature 0)"
            );
        }
        let sampling = SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        };
        sampling.validate()?;
        Ok(sampling)
    }
}

/// The prompt argument, or standard input when it is `-`.
pub fn read_prompt(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the prompt from stdin")?;
    Ok(s)
}

/// A flag that the first Ctrl-C raises (generation stops after the current token); a second Ctrl-C while
/// stopping exits at once with status 130.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    stop
}

/// The process exit status of a command's result; an error goes to stderr with its causes.
pub fn exit_status(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
