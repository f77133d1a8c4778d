//! `gemma`: run a gemma-onnx export folder (from `gemma-export`) with ONNX Runtime.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// `gemma generate --image/--audio` (and `gemma chat`'s): prompts with attachments.
#[path = "gemma/attachments.rs"]
mod attachments;
/// `gemma chat`: its arguments, and the choice between the terminal conversation and `--messages`. (A file beside
/// this one would be taken for a binary of its own, hence the subfolder.)
#[path = "gemma/chat_command.rs"]
mod chat_command;
/// `gemma chat` in the terminal, with images on Gemma 3 multimodal exports, images and audio on Gemma 3n.
#[path = "gemma/chat_repl.rs"]
mod chat_repl;
#[path = "shared/cli.rs"]
mod cli;
/// `gemma generate`: its arguments and the run.
#[path = "gemma/generate_command.rs"]
mod generate_command;
/// `gemma serve`: the OpenAI-compatible server.
#[path = "gemma/serve_command.rs"]
mod serve_command;
use cli::ModelArgs;
#[allow(unused_imports)]
use cli::{errln, errout, out, outln};
use gemma_runtime::{perplexity, Tokenizer};

const ABOUT: &str = "Run Gemma models exported by gemma-export with ONNX Runtime";

const LONG_ABOUT: &str = "\
Run Gemma models exported by `gemma-export` (a folder with gemma-onnx.json, model.onnx, tokenizer.json...) \
with ONNX Runtime.

The ONNX Runtime library (libonnxruntime.so 1.31 or 1.32) is looked for at $ORT_DYLIB_PATH if set, else at \
${GEMMA_ONNX_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/gemma-onnx}/onnxruntime/libonnxruntime.so \
(where `scripts/setup-ort` installs it), else beside this executable.";

const EXAMPLES: &str = "\
Examples:
  # Export once, then generate (greedy, streamed to stdout)
  gemma-export <HF_MODEL_DIR> -o gemma-3-270m-onnx
  gemma generate -m gemma-3-270m-onnx -p \"The capital of France is\"

  # Chat-formatted prompt, sampling with a fixed seed
  gemma generate -m gemma-3-270m-onnx --chat -p \"Write a haiku about the sea\" --temperature 1.0 --top-k 64 --top-p 0.95 --seed 7

  # Machine-readable output
  gemma generate -m gemma-3-270m-onnx -p \"Hello\" -n 32 --json

  # A conversation in the terminal (Ctrl-C stops a reply, Ctrl-D quits)
  gemma chat -m gemma-3-270m-onnx --system \"Be brief.\"

  # Perplexity of a text file, 512-token windows
  gemma perplexity -m gemma-3-270m-onnx --text wiki.txt --context 512";

#[derive(Parser)]
#[command(name = "gemma", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout as it is produced
    #[command(after_help = generate_command::GENERATE_EXAMPLES)]
    Generate(generate_command::GenerateArgs),
    /// Perplexity of a text file (teacher-forced, non-overlapping windows)
    #[command(after_help = PERPLEXITY_EXAMPLES)]
    Perplexity(PerplexityArgs),
    /// Measure prefill and decode speed, time to first token, peak memory and KV-cache size
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Talk with a chat model: multi-turn in the terminal, or one reply to a JSON conversation
    #[command(after_help = chat_command::CHAT_EXAMPLES)]
    Chat(chat_command::ChatArgs),
    /// Serve the model over HTTP with the OpenAI API (chat and completions, streaming, batched requests)
    #[command(after_help = serve_command::SERVE_EXAMPLES)]
    Serve(serve_command::ServeArgs),
}

const PERPLEXITY_EXAMPLES: &str = "\
Examples:
  gemma perplexity -m gemma-3-270m-onnx --text wiki.txt
  gemma perplexity -m gemma-3-270m-onnx --text wiki.txt --context 1024 --json

The text is tokenized with a leading <bos> and cut into consecutive windows of --context tokens; each \
window is scored from scratch. perplexity = exp(mean NLL over every predicted token).";

const BENCH_EXAMPLES: &str = "\
Examples:
  gemma bench -m gemma-3-270m-onnx --threads 2
  gemma bench -m gemma-3-270m-onnx --prompt-tokens 128 --gen-tokens 64 --repeat 5 --json
  GEMMA_ORT_PROFILE=/tmp/prof gemma bench -m gemma-3-270m-onnx --prompt-tokens 128 --repeat 1

Each prompt length runs once untimed, then --repeat times; medians are printed. A run prefills a \
deterministic synthetic prompt (logits of the last position only), picks tokens greedily, and decodes \
--gen-tokens tokens in all (the first comes from the prefill). prefill tok/s = prompt / prefill time; \
TTFT = prefill + first pick; decode tok/s = (gen − 1) / decode time. Peak RSS is the process's \
high-water mark (model loading included). With GEMMA_ORT_PROFILE=PREFIX, ONNX Runtime writes a \
per-operator profile PREFIX_<date>.json when the model closes.";

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt lengths to measure, comma-separated
    #[arg(
        long = "prompt-tokens",
        value_name = "N,..",
        value_delimiter = ',',
        default_value = "128,512"
    )]
    prompt_tokens: Vec<usize>,
    /// Tokens to generate per run (including the one from the prefill)
    #[arg(long = "gen-tokens", value_name = "N", default_value_t = 128)]
    gen_tokens: usize,
    /// Timed runs per prompt length; medians are reported
    #[arg(long, value_name = "R", default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// UTF-8 text file to score
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Window size in tokens
    #[arg(long, value_name = "N", default_value_t = 512)]
    context: usize,
    /// Print one JSON object (tokens, predicted, mean_nll, perplexity)
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // The matches too: the order of `generate`'s and `chat`'s --image and --audio values is only there.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Generate(args) => {
            generate_command::run(args, matches.subcommand_matches("generate"))
        }
        Command::Perplexity(args) => run_perplexity(args),
        Command::Bench(args) => run_bench(args),
        Command::Chat(args) => chat_command::run(args, matches.subcommand_matches("chat")),
        Command::Serve(args) => serve_command::run(args),
    };
    cli::exit_status(result)
}

fn run_perplexity(args: PerplexityArgs) -> Result<()> {
    let text = cli::read_file_capped(&args.text)?;
    let dir = &args.model.model;
    let mut decoder = gemma_runtime::Decoder::open(dir, &args.model.runtime_options())
        .with_context(|| format!("opening {}", dir.display()))?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    let tokens = gemma_runtime::generate::with_single_bos(
        tokenizer.encode(&text, true)?,
        decoder.manifest().bos_token_id,
    );
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let result = perplexity::score_tokens(&mut decoder, &tokens, args.context, |done, total| {
        if show_progress && total > 1 {
            errout!("\rwindow {done}/{total}");
            if done == total {
                errln!();
            }
        }
    })?;
    if args.json {
        let obj = serde_json::json!({
            "tokens": result.tokens,
            "predicted": result.predicted,
            "windows": result.windows,
            "context": args.context,
            "mean_nll": result.mean_nll,
            "perplexity": result.perplexity,
        });
        outln!("{obj}");
    } else {
        outln!(
            "perplexity {:.4} (mean NLL {:.6} over {} predicted tokens; {} tokens in {} window(s) of {})",
            result.perplexity, result.mean_nll, result.predicted, result.tokens, result.windows, args.context
        );
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let dir = &args.model.model;
    let options = args.model.runtime_options();
    let started = std::time::Instant::now();
    let mut decoder = gemma_runtime::Decoder::open(dir, &options)
        .with_context(|| format!("opening {}", dir.display()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let bench_options = gemma_runtime::bench::BenchOptions {
        prompt_tokens: args.prompt_tokens.clone(),
        gen_tokens: args.gen_tokens,
        repeat: args.repeat,
    };
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let rows = gemma_runtime::bench::run(&mut decoder, &bench_options, |p, r, n| {
        if show_progress {
            errout!("\rprompt {p}: run {r}/{n}   ");
        }
    })?;
    if show_progress {
        errout!("\r{:40}\r", "");
    }
    let manifest = decoder.manifest();
    let report = gemma_runtime::bench::BenchReport {
        graph: manifest.graph.to_string(),
        precision: manifest.precision.to_string(),
        threads: options.resolved_threads(),
        load_seconds,
        rows,
        peak_rss_bytes: gemma_runtime::bench::peak_rss_bytes(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        out!("{}", report.table());
    }
    Ok(())
}
