//! Shared helpers for the integration tests: fixture paths, reference tensors, exporting into temp folders and
//! comparing logits.

use anyhow::{bail, Context, Result};
use gemma_exporter::{export, ExportOptions, GraphKind, Precision};
use ndarray::ArrayView3;
use std::path::{Path, PathBuf};

/// Driving the Gemma 3 image graphs (`vision_encoder.onnx`, `embed_tokens.onnx`, `decoder_model_merged.onnx`).
pub mod vision;

/// The one reader of the reference tensors (`reference.safetensors`, `vision_reference.safetensors`, …).
pub mod reference;
pub use reference::Reference;

/// The parity driver of the text fixtures: one [`Parity`] row per (source, graph, precision, tolerance).
pub mod parity;
pub use parity::{parity_runtime, prefill_then_decode_from, prompt_logits, Parity};

/// The checkpoint writers shared with the unit tests of gemma-models (its `testing` feature).
pub use gemma_models::testing::{f32_tensor, read_safetensors, write_safetensors, GgufWriter};

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The tiny random checkpoints made by `fixtures/make_fixtures.py`.
pub const TINY_FIXTURES: &[&str] = &[
    "gqa-bf16-sharded-hf4",
    "mqa-f32-hf5",
    "gqa-f16-hf5",
    "cg-mqa-bf16-sharded-hf4",
];

/// The tiny random Gemma 1 and Gemma 2 checkpoints made by `fixtures/make_fixtures.py families`.
pub const FAMILY_FIXTURES: &[&str] = &[
    "gemma1-mqa-bf16-hf4",
    "gemma1-mha-f16-hf5",
    "gemma2-gqa-bf16-sharded-hf4",
];

pub fn tiny_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("tiny").join(name)
}

/// Exports `src` (fp32, portable) into a fresh temporary folder.
pub fn export_to_temp(src: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    export_graph_to_temp(src, GraphKind::Portable)
}

/// Exports `src` with the options `configure` sets on the defaults into a fresh temporary folder `<tmp>/onnx`.
pub fn export_with_to_temp(
    src: &Path,
    configure: impl FnOnce(ExportOptions) -> ExportOptions,
) -> Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("onnx");
    let opts = configure(ExportOptions::new(src, &out));
    export(&opts)
        .with_context(|| format!("exporting {} at {}", src.display(), opts.precision.name()))?;
    Ok((tmp, out))
}

/// Exports `src` (fp32) with the given decoder graph into a fresh temporary folder.
pub fn export_graph_to_temp(src: &Path, graph: GraphKind) -> Result<(tempfile::TempDir, PathBuf)> {
    export_with_to_temp(src, |o| o.graph(graph))
}

/// Exports `src` at `precision` with the given decoder graph into a fresh temporary folder.
pub fn export_precision_to_temp(
    src: &Path,
    precision: Precision,
    graph: GraphKind,
) -> Result<(tempfile::TempDir, PathBuf)> {
    export_with_to_temp(src, |o| o.precision(precision).graph(graph))
}

/// One prompt of `tests/fixtures/real/gemma3-270m.json`: transformers' greedy continuation of the real Gemma 3 270M.
#[derive(serde::Deserialize)]
pub struct RealPrompt {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
}

/// transformers' perplexity of the real Gemma 3 270M on `text_file` (in `tests/fixtures/real/`).
#[derive(serde::Deserialize)]
pub struct RealPerplexity {
    pub text_file: String,
    pub context: usize,
    pub tokens: usize,
    pub predicted: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
}

/// `tests/fixtures/real/gemma3-270m.json`: transformers fp32 eager on the real Gemma 3 270M.
#[derive(serde::Deserialize)]
pub struct RealReference {
    pub prompts: Vec<RealPrompt>,
    pub perplexity: RealPerplexity,
}

/// Reads `tests/fixtures/real/gemma3-270m.json`.
pub fn real_reference() -> RealReference {
    let path = fixtures_dir().join("real/gemma3-270m.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest |a − b| over one row (`[vocab]`) of two logits tensors.
pub fn max_abs_diff_row(
    a: ArrayView3<f32>,
    ai: (usize, usize),
    b: ArrayView3<f32>,
    bi: (usize, usize),
) -> f32 {
    let ra = a.slice(ndarray::s![ai.0, ai.1, ..]);
    let rb = b.slice(ndarray::s![bi.0, bi.1, ..]);
    assert_eq!(ra.len(), rb.len(), "vocab sizes differ");
    ra.iter()
        .zip(rb.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The tolerance of every fp32 parity test against transformers (max |Δlogit|).
pub const FP32_TOLERANCE: f32 = 1e-4;

/// The real Gemma 3 270M checkpoint folder: `$GEMMA3_270M_DIR`, which `scripts/test` sets after building the folder
/// from the project's default GGUF (`scripts/get-model`, then `gguf-to-hf`).
pub fn gemma3_270m_dir() -> Result<PathBuf> {
    match std::env::var_os("GEMMA3_270M_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!(
            "GEMMA3_270M_DIR is not set: run the tests through scripts/test, which fetches the real Gemma 3 270M \
             and sets it, or set it to a Hugging Face folder of that model"
        ),
    }
}

/// The real Gemma 3 270M as the Q4_K_M GGUF: `$GEMMA3_270M_GGUF`, which `scripts/test` sets (`scripts/get-model`).
pub fn gemma3_270m_gguf() -> Result<PathBuf> {
    match std::env::var_os("GEMMA3_270M_GGUF") {
        Some(path) => Ok(PathBuf::from(path)),
        None => bail!(
            "GEMMA3_270M_GGUF is not set: run the tests through scripts/test, which fetches the real Gemma 3 270M \
             GGUF (scripts/get-model) and sets it"
        ),
    }
}

/// The python of the venv with the pinned third-party stacks (`$GEMMA_STACKS_PYTHON`, which `scripts/test` sets
/// from `scripts/setup-stacks`). Tests that need it fail and say so when it is missing; they are never skipped.
pub fn stacks_python() -> PathBuf {
    match std::env::var_os("GEMMA_STACKS_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "GEMMA_STACKS_PYTHON is not set: run the tests through scripts/test, which creates the stacks venv \
             (scripts/setup-stacks) and sets it, or set it to the python that scripts/setup-stacks prints"
        ),
    }
}
