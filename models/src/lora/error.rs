//! Why an adapter cannot be merged ([`LoraError`]), and the two constructors every reader of the adapter's files
//! uses: a config field that is wrong, and a file that cannot be read.

use std::path::{Path, PathBuf};

use crate::error::CheckpointError;

use super::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

/// Why an adapter cannot be merged. Every message names the file and the field, feature or tensor concerned.
///
/// A file that cannot be read is a [`CheckpointError::Io`] (through [`LoraError::Checkpoint`]), as for the
/// checkpoint's own files.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The folder has no `adapter_model.safetensors`.
    #[error(
        "{dir}: no LoRA adapter weights: expected {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}{hint}"
    )]
    NoWeights { dir: PathBuf, hint: String },

    /// `adapter_config.json` is not JSON, or a field has the wrong type or an impossible value.
    #[error("{path}: invalid adapter config: field `{field}`: {detail}")]
    Config {
        path: PathBuf,
        field: String,
        detail: String,
    },

    /// A peft feature this merge does not implement.
    #[error("{path}: refused: {feature}: {detail}")]
    Unsupported {
        path: PathBuf,
        feature: String,
        detail: String,
    },

    /// A pattern of the config that the `regex` crate cannot compile (look-around, backreferences, …).
    #[error(
        "{path}: field `{field}`: pattern {pattern:?} is not supported (Python `re` syntax that the Rust `regex` crate \
         lacks, such as look-around or backreferences, is refused): {detail}"
    )]
    Pattern {
        path: PathBuf,
        field: String,
        pattern: String,
        detail: String,
    },

    /// An adapter tensor that does not fit the checkpoint or the config.
    #[error("{path}: tensor {tensor:?}: {detail}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

pub(super) fn config_err(path: &Path, field: &str, detail: &str) -> LoraError {
    LoraError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

/// A file of the adapter that cannot be read.
pub(super) fn io_error(path: &Path, source: std::io::Error) -> LoraError {
    LoraError::Checkpoint(CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}
