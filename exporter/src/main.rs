//! `gemma-export`: Hugging Face Gemma checkpoint folder → ONNX export folder.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gemma_exporter::{export, ExportOptions, Precision};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// float32 weights and compute: the reference export, logits within 1e-4 of transformers fp32.
    Fp32,
}

/// Export a Hugging Face Gemma checkpoint to ONNX, without PyTorch.
///
/// SRC_DIR is a checkpoint folder as transformers saves it: config.json, model.safetensors (or shards with
/// model.safetensors.index.json) in bf16, f16 or f32, and the tokenizer files. Supported: Gemma 3 text
/// (Gemma3ForCausalLM, and the language model of Gemma3ForConditionalGeneration).
///
/// OUT_DIR receives model.onnx + model.onnx_data (standard ONNX ops, Optimum/transformers.js tensor names),
/// config.json, generation_config.json, the tokenizer files and gemma-onnx.json. The export is written to a
/// temporary folder beside OUT_DIR and renamed at the end, so an interrupted export never looks complete.
///
/// Example:
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/gemma-3-270m
///   gemma generate -m ~/onnx/gemma-3-270m -p "The capital of France is"
#[derive(Debug, Parser)]
#[command(name = "gemma-export", version, verbatim_doc_comment)]
struct Args {
    /// Hugging Face checkpoint folder (config.json + *.safetensors).
    src_dir: PathBuf,
    /// Output folder; must not exist unless --force.
    #[arg(short, long = "output", value_name = "OUT_DIR")]
    out: PathBuf,
    /// Weight precision.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,
    /// Replace OUT_DIR if it already exists.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        // One readable line per cause; no backtrace noise for input errors.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Ctrl-C: remove the temporary folder so an interrupted export leaves nothing behind.
    let tmp = gemma_exporter::export::temp_dir_path(&args.out);
    let _ = ctrlc::set_handler(move || {
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!("\ninterrupted: nothing was written");
        std::process::exit(130);
    });
    let started = Instant::now();
    let opts = ExportOptions {
        src: args.src_dir.clone(),
        out: args.out.clone(),
        precision: match args.precision {
            PrecisionArg::Fp32 => Precision::Fp32,
        },
        force: args.force,
        progress: !args.quiet,
    };
    let report = export(&opts).with_context(|| format!("exporting {}", args.src_dir.display()))?;
    if !args.quiet {
        eprintln!(
            "exported {} ({} layers, {}) to {} in {:.1}s: {} nodes, {:.1} MiB of weights",
            report.manifest.architecture,
            report.manifest.num_layers,
            report.manifest.precision,
            report.out.display(),
            started.elapsed().as_secs_f64(),
            report.nodes,
            report.weight_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}
