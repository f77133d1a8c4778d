//! What the `gemma` and `gemma-vision` binaries share: the model/runtime and sampling arguments, reading a prompt
//! from stdin, streaming text to stdout, Ctrl-C handling, the exit status and the memory-budget allocator. Included by both with `#[path]` (binary-only code: it uses
//! anyhow and clap, which the library does not).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use gemma_runtime::{ExecutionProvider, RuntimeOptions, SamplingConfig, StopReason};

/// Chat templates run under a memory budget ([`gemma_runtime::alloc_budget`]).
#[global_allocator]
static ALLOCATOR: gemma_runtime::alloc_budget::BudgetAllocator =
    gemma_runtime::alloc_budget::BudgetAllocator;

#[derive(Args)]
pub struct ModelArgs {
    /// Export folder written by gemma-export (has gemma-onnx.json)
    #[arg(short = 'm', long = "model", value_name = "DIR")]
    pub model: std::path::PathBuf,
    /// Intra-op threads for ONNX Runtime, 1 to 256 [default: all logical cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Execution provider: cpu, cuda, tensorrt, coreml (non-CPU ones need the matching cargo feature)
    #[arg(long = "ep", value_name = "EP", default_value = "cpu", value_parser = parse_ep)]
    pub execution_provider: ExecutionProvider,
    /// With a non-CPU --ep: let ONNX Runtime run on the CPU the nodes that provider cannot (slower, and the
    /// result is partly CPU). Without it such an export is refused, naming the nodes and the export to make instead
    #[arg(long = "allow-fallback")]
    pub allow_fallback: bool,
}

impl ModelArgs {
    pub fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions::default()
            .with_threads(self.threads.map(usize::from))
            .with_execution_provider(self.execution_provider)
            .with_allow_fallback(self.allow_fallback)
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

/// The most text read from stdin or a text file (`--text`, `--messages`, a prompt): far beyond any context, and
/// enforced while reading, so `/dev/zero` or an endless pipe fails instead of filling memory.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Reads at most [`MAX_TEXT_BYTES`] of UTF-8 text from `input` (`what` names it in errors). The size is counted
/// while reading ([`Read::take`]), not trusted from metadata (devices and pipes report 0).
pub fn read_text_capped(input: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        anyhow::bail!(
            "{what} is larger than {} MiB, the limit for text input",
            MAX_TEXT_BYTES >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{what} is not UTF-8 text: {e}"))
}

/// [`read_text_capped`] on a file.
#[allow(dead_code)] // gemma only
pub fn read_file_capped(path: &std::path::Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_text_capped(file, &path.display().to_string())
}

/// The prompt argument, or standard input when it is `-`.
pub fn read_prompt(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    read_text_capped(std::io::stdin(), "the prompt from stdin")
}

/// Output could not be written. A closed pipe (`gemma ... | head`) ends the program quietly with status 141
/// (128 + SIGPIPE, as if the signal had killed it); anything else (a full disk) is reported with status 1. Never a
/// panic, unlike `println!`.
pub fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    let _ = writeln!(std::io::stderr(), "error: writing the output: {e}");
    std::process::exit(1);
}

/// Ends the program through [`output_failed`] if writing failed.
pub fn check_output(result: std::io::Result<()>) {
    if let Err(e) = result {
        output_failed(e);
    }
}

/// Generated text streamed to stdout as it comes (nothing with `--json`). A write error stops the stream and is
/// reported by [`finish`](Self::finish).
pub struct TextOut {
    json: bool,
    error: Option<std::io::Error>,
}

impl TextOut {
    pub fn new(json: bool) -> TextOut {
        TextOut { json, error: None }
    }

    pub fn write(&mut self, delta: &str) {
        if self.json || self.error.is_some() {
            return;
        }
        let mut lock = std::io::stdout().lock();
        if let Err(e) = lock.write_all(delta.as_bytes()).and_then(|_| lock.flush()) {
            self.error = Some(e);
        }
    }

    /// `Ok(false)` when stdout was closed (`| head`): the command then ends quietly, printing nothing more.
    pub fn finish(self) -> Result<bool> {
        match self.error {
            None => Ok(true),
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Some(e) => Err(e).context("writing to stdout"),
        }
    }
}

/// Why generation stopped, in words; `eos` names what a stop token means here ("end of turn", "end of sequence").
pub fn stop_words(reason: StopReason, eos: &'static str) -> &'static str {
    match reason {
        StopReason::Eos => eos,
        StopReason::MaxNewTokens => "max new tokens",
        StopReason::Interrupted => "interrupted",
    }
}

/// `print!` that never panics: see [`output_failed`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    check_output(std::io::stdout().lock().write_fmt(args));
}

/// `eprint!` that never panics: a closed stderr exits 141, a full one exits 1 (there is nowhere left to say why).
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stderr().lock().write_fmt(args) {
        std::process::exit(if e.kind() == std::io::ErrorKind::BrokenPipe {
            141
        } else {
            1
        });
    }
}

/// `println!` through [`write_stdout`].
#[allow(unused_macros)]
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
/// `print!` through [`write_stdout`].
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}
/// `eprintln!` through [`write_stderr`].
#[allow(unused_macros)]
macro_rules! errln {
    () => { $crate::cli::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
/// `eprint!` through [`write_stderr`].
#[allow(unused_macros)]
macro_rules! errout {
    ($($arg:tt)*) => { $crate::cli::write_stderr(format_args!($($arg)*)) };
}
#[allow(unused_imports)]
pub(crate) use {errln, errout, out, outln};

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
        Ok(()) => {
            // Buffered output that cannot be written (a full disk) is an error, not a silent success.
            check_output(std::io::stdout().flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::io::stdout().flush();
            write_stderr(format_args!("error: {e:#}\n"));
            ExitCode::FAILURE
        }
    }
}
