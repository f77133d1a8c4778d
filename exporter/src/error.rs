//! The exporter's typed errors. Every message names the file, tensor, field or argument and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] gemma_models::ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] gemma_models::CheckpointError),
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
    #[error("tensor {tensor} holds {value}, beyond the range of {precision} (±65504); export with --precision bf16 or fp32")]
    OutOfRange {
        tensor: String,
        value: f32,
        precision: &'static str,
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

impl ExportError {
    pub fn io(path: &Path, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
