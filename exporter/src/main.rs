//! `gemma-export`: Hugging Face Gemma checkpoint folder or GGUF file → ONNX export folder.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gemma_exporter::{
    export, ExportOptions, GraphKind, LoraOptions, Precision, QuantConfig, TritonOptions,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// float32 weights and compute: the reference export, logits within 1e-4 of transformers fp32.
    Fp32,
    /// fp16 weights (half the file), cast to fp32 in the graph, which ONNX Runtime folds at load: compute,
    /// memory and speed of fp32. Fails on a weight beyond ±65504.
    Fp16,
    /// bf16 weights (half the file), cast to fp32 in the graph: ONNX Runtime's CPU provider has no bf16
    /// kernels, so this is bf16 storage with fp32 compute, memory and speed.
    Bf16,
    /// Every projection and the tied embedding/lm_head 8-bit (MatMulNBits / GatherBlockQuantized; symmetric;
    /// the layers in blocks of 32 like GGUF's Q8_0, the table in blocks of 64): close to fp32's quality at
    /// about a quarter of its size, and much faster. Measurements: docs/benchmarks.md.
    Int8,
    /// int8 with the MLP's gate_proj 4-bit (asymmetric, blocks of 32): the smallest mix within 1% of fp32's
    /// quality on the real Gemma 3 270M (`--quant-spec all=8s,emb=4a`, the 4-bit table, is smaller and faster at
    /// +1.8%); all-4-bit is `--quant-spec all=4a`. Measurements: docs/benchmarks.md.
    Int4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphArg {
    /// ONNX Runtime CPU-optimized: KV cache updated in place, window-sized cache on sliding layers,
    /// last-position logits, fused contrib ops (GroupQueryAttention, SkipSimplifiedLayerNormalization,
    /// RotaryEmbedding). Runs with the `gemma` runtime (ONNX Runtime ≥ 1.31).
    Cpu,
    /// Optimum/transformers.js I/O, standard ONNX ops (opset 21) at fp32/fp16/bf16: loads in any ONNX runtime.
    /// int8/int4 add ONNX Runtime's contrib MatMulNBits and GatherBlockQuantized (domain com.microsoft).
    Portable,
}

/// Export a Hugging Face Gemma checkpoint to ONNX, without PyTorch.
///
/// SRC is a GGUF file (llama.cpp: architectures gemma, gemma2, gemma3; see
/// docs/gguf.md), or a checkpoint folder as transformers saves it: config.json,
/// model.safetensors (or shards with model.safetensors.index.json) in bf16,
/// f16 or f32, and the tokenizer files. Supported: Gemma 1 and CodeGemma
/// (GemmaForCausalLM), Gemma 2 (Gemma2ForCausalLM), Gemma 3 (Gemma3ForCausalLM)
/// and Gemma3ForConditionalGeneration (4B/12B/27B, MedGemma, ShieldGemma 2).
///
/// OUT_DIR receives model.onnx + model.onnx_data (Optimum/transformers.js
/// tensor names), config.json, generation_config.json, the tokenizer files and
/// gemma-onnx.json. The decoder graph is `--graph cpu` (default: ONNX Runtime
/// contrib ops, KV cache updated in place, last-position logits) or
/// `--graph portable` (standard ONNX ops at fp32/fp16/bf16, for any runtime;
/// int8/int4 add ONNX Runtime's contrib quantized ops); both give the same
/// logits. A portable export is also a transformers.js model folder: its
/// weights are onnx/model{,_fp16,_quantized,_q4}.onnx_data, which model.onnx
/// references there (bf16: model.onnx_data; see docs/stacks.md). The export is written to a temporary folder beside OUT_DIR and
/// renamed at the end, so an interrupted export never looks complete.
///
/// Gemma3ForConditionalGeneration checkpoints (vision tower named
/// vision_tower.vision_model.* or vision_tower.*) also get the image graphs:
/// preprocess.onnx (image processor with Pan & Scan), vision_encoder.onnx
/// (SigLIP + projector; int8/int4 quantize SigLIP's matmuls in 8 bits, with
/// DynamicQuantizeMatMul and MultiHeadAttention under --graph cpu),
/// embed_tokens.onnx and decoder_model_merged.onnx (the
/// decoder on inputs_embeds, with token_type_ids for the bidirectional image
/// blocks). See `vision` in gemma-onnx.json.
///
/// --precision chooses how weights are stored; activations, norms, the
/// residual stream and the KV cache are float32 in every precision (Gemma's
/// activations overflow fp16). int8/int4 use ONNX Runtime's contrib
/// MatMulNBits and GatherBlockQuantized; the tied embedding and lm_head are
/// stored once.
///
/// Examples:
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/gemma-3-270m
///   gemma generate -m ~/onnx/gemma-3-270m -p "The capital of France is"
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/g270-portable --graph portable
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/g270-int4 --precision int4
///   gemma-export ~/models/gemma-3-270m-q4_k_m.gguf -o ~/onnx/g270-from-gguf
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/g270-q4 --precision int4 \
///       --quant-spec all=4a
///   gemma perplexity -m ~/onnx/g270-int4 --text wiki.txt
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/g270-tuned --lora ~/adapters/my-lora
///   gemma-export ~/models/gemma-3-270m -o ~/onnx/g270 --triton ~/triton-repo
#[derive(Debug, Parser)]
#[command(name = "gemma-export", version, verbatim_doc_comment)]
struct Args {
    /// Hugging Face checkpoint folder (config.json + *.safetensors), a GGUF file (llama.cpp; architectures gemma,
    /// gemma2, gemma3: config, tokenizer and weights are read from it), or a Hugging Face Hub id (org/name, e.g.
    /// google/gemma-3-270m) downloaded into the Hugging Face cache first (see docs/hub.md).
    #[arg(value_name = "SRC")]
    src_dir: PathBuf,
    /// Hub ids: the branch, tag or commit to download (default main).
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Hub ids: the GGUF file to take from a repository of GGUF files.
    #[arg(long, value_name = "NAME")]
    gguf_file: Option<String>,
    /// Output folder; must not exist unless --force.
    #[arg(short, long = "output", value_name = "OUT_DIR")]
    out: PathBuf,
    /// Weight precision.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,
    /// Decoder graph: `cpu` (fast, ONNX Runtime) or `portable` (standard ops at fp32/fp16/bf16, any runtime).
    #[arg(long, value_enum, default_value = "cpu")]
    graph: GraphArg,
    /// int8/int4: values per quantization block along the input dimension: 16, 32, 64, 128 or 256.
    #[arg(long, value_name = "N")]
    block_size: Option<usize>,
    /// int8/int4, advanced: change the scheme per tensor class, applied left to right over the
    /// --precision default, e.g. "all=4a,emb=8s". Classes: q, k, v, o, gate, up, down, emb (the embedding,
    /// also the tied lm_head) and the groups attn, mlp, all. Schemes: bits (4 or 8), a(symmetric) or
    /// s(ymmetric), an optional block size, and -rtn for plain round-to-nearest instead of the least-squares
    /// scale search: 4a, 4a16, 8s, 4s-rtn. Also block=N (default block size), acc=N (MatMulNBits
    /// accuracy_level: 4 = int8 activations, the fast path; 0 = fp32) and imp=gains|none (weigh columns by
    /// activation sizes estimated from the norm gains; experimental). The scheme is recorded in gemma-onnx.json.
    #[arg(long, value_name = "SPEC")]
    quant_spec: Option<String>,
    /// Merge a PEFT LoRA adapter (folder with adapter_config.json and adapter_model.safetensors) into the
    /// weights: W' = W + s·B·A with peft's scale s (lora_alpha/r, or lora_alpha/√r with rsLoRA). See docs/lora.md.
    #[arg(long, value_name = "ADAPTER_DIR")]
    lora: Option<PathBuf>,
    /// Multiply the adapter's scale by S (needs --lora; default 1).
    #[arg(
        long,
        value_name = "S",
        requires = "lora",
        allow_negative_numbers = true
    )]
    lora_scale: Option<f64>,
    /// Gemma 3n only: export a MatFormer slice of the checkpoint, a smaller model nested in it: a preset of
    /// Google's MatFormer Lab for Gemma 3n E4B (E2B: the official E2B, 30 layers of MLP width 8192; E1.96B;
    /// E2.54B), or `skip=LAYERS,ffn=WIDTHS`: LAYERS are the checkpoint's layers to drop (numbers and ranges,
    /// e.g. 20-24 or 3,7-9), WIDTHS the MLP width of the kept layers (one for all, or one per kept layer in
    /// order; W*N repeats W N times), each keeping the first units of the layer's MLP; either part may be left
    /// out. E.g. `--matformer skip=20-24,ffn=8192` (= E2B), `--matformer ffn=8192*4,16384,8192*30`. The export's
    /// config.json is the sliced model's. See docs/gemma3n.md, "MatFormer".
    #[arg(long, value_name = "SPEC")]
    matformer: Option<String>,
    /// Also write a Triton Inference Server model repository into REPO (created if missing): the model NAME (the
    /// portable decoder under the onnxruntime backend, its KV cache as implicit state; built beside the cpu graph
    /// when --graph cpu, sharing model.onnx_data) and NAME_generate (Python backend: tokenizer and greedy decode
    /// loop). Large files are hard links to the export's. See docs/deploy.md.
    #[arg(long, value_name = "REPO")]
    triton: Option<PathBuf>,
    /// Accepted and ignored: every --graph portable export is a transformers.js model folder now (docs/stacks.md).
    #[arg(long = "transformers-js", hide = true)]
    _transformers_js: bool,
    /// The Triton model name (default: OUT_DIR's folder name).
    #[arg(long, value_name = "NAME", requires = "triton")]
    triton_name: Option<String>,
    /// Replace OUT_DIR if it already exists (and, with --triton, the two models this export writes there).
    #[arg(long)]
    force: bool,
    /// Export weights that are NaN or ±inf instead of refusing them (the export will likely produce garbage;
    /// recorded as `allow_nonfinite` in gemma-onnx.json).
    #[arg(long)]
    allow_nonfinite: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// `eprintln!` that never panics: stderr closed (EPIPE) ends the program quietly with 141, stderr on a full device
/// with 1 (there is nowhere left to say why).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stderr(), $($arg)*) {
            std::process::exit(if e.kind() == std::io::ErrorKind::BrokenPipe { 141 } else { 1 });
        }
    }};
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        // One readable line per cause; no backtrace noise for input errors.
        say!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // SIGINT, SIGTERM, SIGHUP: remove the temporary folder so an interrupted export leaves nothing behind.
    gemma_exporter::output::remove_partial_on_signals().context("installing the signal handler")?;
    let started = Instant::now();
    let precision = precision(&args)?;
    // A Hub id becomes its snapshot folder in the Hugging Face cache (downloaded once).
    let hub = gemma_exporter::hub::HubRequest {
        revision: args.revision.clone(),
        gguf_file: args.gguf_file.clone(),
        progress: !args.quiet,
    };
    let src = gemma_exporter::source::resolve(&args.src_dir, &hub)?;
    let graph = match args.graph {
        GraphArg::Cpu => GraphKind::Cpu,
        GraphArg::Portable => GraphKind::Portable,
    };
    let lora = args.lora.clone().map(|dir| LoraOptions {
        dir,
        scale: args.lora_scale.unwrap_or(1.0),
    });
    let triton = args.triton.clone().map(|repo| {
        let mut t = TritonOptions::new(repo, &args.out);
        if let Some(name) = &args.triton_name {
            t.name = name.clone();
        }
        t
    });
    let matformer = match &args.matformer {
        Some(spec) => Some(
            gemma_models::matformer::Spec::parse(spec)
                .map_err(|e| anyhow::anyhow!("--matformer {spec:?}: {e}"))?,
        ),
        None => None,
    };
    let opts = ExportOptions::new(src, args.out.clone())
        .matformer(matformer)
        .precision(precision)
        .graph(graph)
        .force(args.force)
        .progress(!args.quiet)
        .lora(lora)
        .triton(triton)
        .allow_nonfinite(args.allow_nonfinite);
    let report = export(&opts).with_context(|| format!("exporting {}", args.src_dir.display()))?;
    for warning in &report.warnings {
        say!("warning: {warning}");
    }
    for note in &report.notes {
        say!("note: {note}");
    }
    if !args.quiet {
        say!(
            "exported {} ({} layers, {}) to {} in {:.1}s: {} nodes, {:.1} MiB of weights",
            report.manifest.architecture,
            report.manifest.num_layers,
            report.manifest.precision,
            report.out.display(),
            started.elapsed().as_secs_f64(),
            report.nodes,
            report.weight_bytes as f64 / (1024.0 * 1024.0)
        );
        if let Some(q) = precision.quant() {
            say!("  scheme {}", q.spec());
        }
        if let Some(t) = &opts.triton {
            say!(
                "  Triton models {} and {} in {}",
                t.name,
                t.generate_name(),
                t.repo.display()
            );
        }
        if let Some(m) = &report.manifest.matformer {
            say!(
                "  MatFormer slice {}: {} of the checkpoint's {} layers",
                m.spec,
                m.kept_layers.len(),
                m.source_layers
            );
        }
        if let Some(l) = &report.manifest.lora {
            say!(
                "  merged LoRA {} (r {}, scale {}) into {} weights",
                l.path,
                l.r,
                l.scale,
                l.merged_modules
            );
        }
        for line in &report.quantization {
            say!("  {line}");
        }
    }
    Ok(())
}

/// The precision with its scheme: --precision, then --block-size, then --quant-spec.
fn precision(args: &Args) -> anyhow::Result<Precision> {
    let quant_default = match args.precision {
        PrecisionArg::Fp32 | PrecisionArg::Fp16 | PrecisionArg::Bf16 => {
            if args.block_size.is_some() || args.quant_spec.is_some() {
                anyhow::bail!(
                    "--block-size and --quant-spec apply to --precision int8 and int4 only"
                );
            }
            return Ok(match args.precision {
                PrecisionArg::Fp16 => Precision::Fp16,
                PrecisionArg::Bf16 => Precision::Bf16,
                _ => Precision::Fp32,
            });
        }
        PrecisionArg::Int8 => QuantConfig::int8(),
        PrecisionArg::Int4 => QuantConfig::int4(),
    };
    let mut q = quant_default;
    if let Some(b) = args.block_size {
        q.block_size = b;
    }
    if let Some(spec) = &args.quant_spec {
        q = q
            .parse_spec(spec)
            .map_err(|e| anyhow::anyhow!("--quant-spec: {e}"))?;
    }
    q.validate()
        .map_err(|e| anyhow::anyhow!("--block-size: {e}"))?;
    Ok(match args.precision {
        PrecisionArg::Int8 => Precision::Int8(q),
        _ => Precision::Int4(q),
    })
}
