//! Error types of this crate.
//!
//! Every message names the file it is about (full path), the field or tensor, and what was expected versus what
//! was found, so that a user can fix a broken download or config without reading our code.

use std::path::PathBuf;

/// Something is wrong with a `config.json`: unreadable, not JSON, an unsupported model, or a field that is missing
/// or out of range.
///
/// `field` values are JSON paths as written in the file, e.g. `text_config.num_attention_heads` or
/// `rope_parameters.full_attention.rope_type`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid JSON, or its top level is not an object.
    #[error("{path}: not a valid config.json: {detail}")]
    Json { path: PathBuf, detail: String },

    /// `model_type` / `architectures[0]` name a model this crate does not handle.
    #[error(
        "{path}: unsupported model (model_type {model_type:?}, architectures[0] {architecture:?}); supported: {supported}"
    )]
    UnsupportedModel {
        path: PathBuf,
        model_type: String,
        architecture: String,
        /// Human-readable list of the supported `model_type` / architecture pairs.
        supported: String,
    },

    /// `model_type` and `architectures[0]` belong to different Gemma generations or classes.
    #[error(
        "{path}: `model_type` is {model_type:?} but `architectures[0]` is {architecture:?}; they must describe the same \
         model class (expected architecture {expected:?} for this model_type)"
    )]
    ModelTypeMismatch {
        path: PathBuf,
        model_type: String,
        architecture: String,
        expected: String,
    },

    /// A field that has no class default is absent (or `null`).
    #[error("{path}: missing field `{field}` ({expected})")]
    Missing {
        path: PathBuf,
        field: String,
        /// What the field should hold, e.g. "a positive integer".
        expected: String,
    },

    /// A field is present but has the wrong type or an out-of-range value.
    #[error("{path}: field `{field}`: expected {expected}, found {found}")]
    Invalid {
        path: PathBuf,
        field: String,
        expected: String,
        found: String,
    },

    /// A RoPE variant other than "default" and "linear".
    #[error("{path}: field `{field}`: unsupported rope_type {rope_type:?} (supported: \"default\", \"linear\")")]
    UnsupportedRope {
        path: PathBuf,
        field: String,
        rope_type: String,
    },

    /// An MLP activation other than the tanh-approximated GELU.
    #[error("{path}: field `{field}`: unsupported activation {found:?} (supported: {supported})")]
    UnsupportedActivation {
        path: PathBuf,
        field: String,
        found: String,
        supported: String,
    },
}

/// Something is wrong with a checkpoint folder or one of its safetensors files.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The folder has neither `model.safetensors` nor `model.safetensors.index.json` (nor pickle files).
    #[error(
        "{dir}: no weights found: expected model.safetensors or model.safetensors.index.json{hint}"
    )]
    NoWeights {
        dir: PathBuf,
        /// Extra context, e.g. the other weight-like files that were seen (may be empty).
        hint: String,
    },

    /// The folder holds only pickle-based PyTorch weights.
    #[error(
        "{path}: pickle checkpoints are refused (they can run arbitrary code); convert to safetensors \
         (e.g. transformers `save_pretrained(..., safe_serialization=True)`)"
    )]
    PickleRefused { path: PathBuf },

    /// `model.safetensors.index.json` is not valid JSON or lacks a usable `weight_map`.
    #[error("{path}: invalid safetensors index: {detail}")]
    Index { path: PathBuf, detail: String },

    /// A `weight_map` entry points outside the checkpoint folder (absolute path, `..`, or a symlink leaving it).
    #[error("{index}: weight_map entry for tensor {tensor:?} points outside the checkpoint folder: {entry:?} ({why})")]
    IndexEntryEscapes {
        index: PathBuf,
        tensor: String,
        entry: String,
        why: String,
    },

    /// A safetensors file changed (size or modification time) while the checkpoint was open.
    #[error("{path}: the file changed while it was being read (it was {was} bytes, now {now}); let the download or copy finish, then export again")]
    ChangedWhileReading { path: PathBuf, was: u64, now: u64 },
    /// A checkpoint file (the weights, config.json, a tokenizer or template file) is a symlink leading out of the
    /// checkpoint folder.
    #[error("{}: a symlink to {}, outside the checkpoint folder; copy the file into the folder instead", path.display(), target.display())]
    SymlinkEscapes { path: PathBuf, target: PathBuf },

    /// The safetensors header (the 8-byte length or the JSON after it) is malformed.
    #[error("{path}: invalid safetensors header: {detail}")]
    Header { path: PathBuf, detail: String },

    /// The data section is shorter than the header says.
    #[error("{path}: truncated: header says {expected} bytes of data, file has {actual}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    /// A tensor's header entry is inconsistent (offsets outside the data, reversed, overlapping, or a byte length
    /// that does not match its shape and dtype).
    #[error("{path}: tensor {tensor:?}: {detail}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    /// A tensor is stored in a dtype we do not convert (we handle F32, F16, BF16).
    #[error("{path}: tensor {tensor:?} has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    /// The index maps a tensor to a shard whose header does not contain it.
    #[error("{index}: tensor {tensor:?} is mapped to {shard}, but that file does not contain it")]
    NotInShard {
        index: PathBuf,
        tensor: String,
        shard: PathBuf,
    },

    /// A tensor was asked for that the checkpoint does not have.
    #[error("tensor {name:?} not found in checkpoint (looked in: {})", display_paths(.files))]
    TensorMissing { name: String, files: Vec<PathBuf> },

    /// The checkpoint holds decoder-layer tensors that config.json's model class does not have (Gemma 3's QK-norm in
    /// a `"gemma2"` checkpoint, Gemma 2's sandwich norms in a `"gemma"` one) or more layers than it says: config and
    /// weights describe different models, and exporting would silently drop weights.
    #[error(
        "{}: tensor {tensor:?} does not fit config.json: {why}; config.json field `{field}` is {value}, so the \
         weights and the config describe different models (fix the field, or use the matching checkpoint)",
        .dir.display()
    )]
    TensorNotInConfig {
        dir: PathBuf,
        tensor: String,
        /// Why the tensor does not belong, e.g. "QK-norm weights exist only in Gemma 3".
        why: String,
        /// The config field that disagrees (`model_type` or `num_hidden_layers`) and its value.
        field: String,
        value: String,
    },

    /// A tensor has a different shape than the config implies.
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

fn display_paths(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
