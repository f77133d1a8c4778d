//! The exporter's typed errors. Every message names the file, tensor, field or argument and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] gemma_models::ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] gemma_models::CheckpointError),
    #[error("--matformer")]
    Matformer(#[from] gemma_models::matformer::MatformerError),
    #[error(transparent)]
    Lora(#[from] gemma_models::LoraError),
    #[error(transparent)]
    Gguf(#[from] gemma_models::gguf::GgufError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("output folder {} already exists; pass --force to replace it", .0.display())]
    OutputExists(PathBuf),
    #[error("output {}: {reason}", out.display())]
    Output { out: PathBuf, reason: String },
    #[error("source folder {} has no config.json: expected a Hugging Face checkpoint folder (config.json + *.safetensors)", .0.display())]
    NotACheckpoint(PathBuf),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "tensor {tensor} holds {value}, beyond the range of {precision} ({}); {}",
        range_of(precision),
        advice_for(precision)
    )]
    OutOfRange {
        tensor: String,
        value: f32,
        precision: &'static str,
    },
    #[error("tensor {tensor} holds {value} at element {index} (coordinates {coords:?}): the checkpoint has non-finite weights (a diverged run or a corrupt file?); pass --allow-nonfinite to export it anyway")]
    NonFinite {
        tensor: String,
        value: f32,
        index: usize,
        coords: Vec<usize>,
    },
    #[error("{}: Gemma3ForConditionalGeneration checkpoint without a vision tower: none of {} is in it", dir.display(), tried.join(", "))]
    VisionTowerMissing { dir: PathBuf, tried: Vec<String> },
    #[error("{}: {reason}", path.display())]
    ProcessorConfig { path: PathBuf, reason: String },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The finite range of an export precision, for [`ExportError::OutOfRange`].
fn range_of(precision: &str) -> &'static str {
    match precision {
        "fp16" => "±65504",
        "bf16" => "±3.39e38",
        _ => "a finite float32 block scale",
    }
}

/// What to do about a value out of range.
fn advice_for(precision: &str) -> &'static str {
    match precision {
        "fp16" => "export with --precision bf16 or fp32",
        "bf16" => "export with --precision fp32",
        _ => "the weights are too large to quantize; export with --precision fp32",
    }
}

impl ExportError {
    pub fn io(path: &Path, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
