//! The one error type of the runtime. Every failure a user can cause (missing library, wrong folder, bad template,
//! prompt too long...) is a typed variant with a message that says what to do; nothing here panics. This module
//! imports nothing from the crate (the image error kinds live here too), so every module may depend on it.

use std::path::{Path, PathBuf};

/// What `ORT_*` errors tell the user to do.
pub const ORT_HINT: &str =
    "run `scripts/setup-ort` (or set ORT_DYLIB_PATH to libonnxruntime.so 1.31 or 1.32)";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime shared library at any of the places looked at.
    #[error("ONNX Runtime library not found; tried: {}. {ORT_HINT}", join_paths(.tried))]
    OrtNotFound { tried: Vec<PathBuf> },

    /// A library was found but could not be loaded (not a shared library, wrong version, missing symbols...).
    #[error("could not load ONNX Runtime from {}: {reason}. {ORT_HINT}", .path.display())]
    OrtLoad { path: PathBuf, reason: String },

    /// An execution provider was asked for that this build or this ONNX Runtime library cannot give.
    #[error("execution provider {provider}: {reason}")]
    ExecutionProvider { provider: String, reason: String },

    /// The export has nodes the chosen execution provider cannot run ([`crate::ep_support`]).
    #[error(transparent)]
    EpSupport(#[from] crate::ep_support::EpSupportError),

    /// The folder has no `gemma-onnx.json`.
    #[error("not a gemma-onnx export folder: {} has no gemma-onnx.json; run gemma-export first", .dir.display())]
    NotAnExport { dir: PathBuf },

    /// A file of the export folder (manifest, config, tokenizer config) is malformed.
    #[error("{}: {message}", .path.display())]
    InvalidFile { path: PathBuf, message: String },

    /// Reading a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// ONNX Runtime reported an error while creating a session or running it.
    #[error("{context}: {message}")]
    Ort { context: String, message: String },

    /// The tokenizer failed (loading tokenizer.json, encoding, decoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// The chat template called `raise_exception(message)`.
    #[error("the chat template rejected the conversation: {0}")]
    TemplateException(String),

    /// The prompt plus the tokens to generate do not fit in the model's positions.
    #[error(
        "prompt too long: {prompt_tokens} prompt tokens + {max_new_tokens} new tokens = {} > {max_positions} \
         (max_position_embeddings); shorten the prompt or lower --max-new-tokens",
        // Saturating: the sum of a huge --max-new-tokens must not wrap (or panic) in the message either.
        .prompt_tokens.saturating_add(*.max_new_tokens)
    )]
    PromptTooLong {
        prompt_tokens: usize,
        max_new_tokens: usize,
        max_positions: usize,
    },

    /// A caller passed arguments that cannot work (shapes, ranges, empty inputs...).
    #[error("{0}")]
    InvalidArgument(String),

    /// An image could not be used: unreadable, truncated, unsupported format, zero-sized, or larger than the
    /// decoding limits (refused from its header, before any pixel memory is allocated).
    #[error("{}: {message}", .path.display())]
    Image {
        path: PathBuf,
        kind: ImageErrorKind,
        message: String,
    },

    /// Images were given to an export without the image graphs.
    #[error(
        "{} is a text-only export (gemma-onnx.json has no `vision` section), so it cannot see images; export a \
         Gemma3ForConditionalGeneration checkpoint (Gemma 3 4B/12B/27B, MedGemma 4B...) to use images",
        .dir.display()
    )]
    NoVision { dir: PathBuf },

    /// The prompt holds a different number of image placeholders than images were given.
    #[error(
        "the prompt has {placeholders} image placeholder(s) `{placeholder}` but {images} image(s) were given; \
         each image needs exactly one placeholder"
    )]
    ImagePlaceholders {
        placeholders: usize,
        images: usize,
        placeholder: String,
    },
}

/// Why an image was refused (the message says it in words; this is for callers that branch on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageErrorKind {
    /// The file could not be read (missing, a folder, no permission).
    Unreadable,
    /// Not a format gemma-vision decodes (JPEG, PNG, WebP, GIF, BMP).
    Unsupported,
    /// An empty file, or an image with zero width or height.
    ZeroSized,
    /// Over the decoding limits (by its header, before decoding).
    TooLarge,
    /// The format was recognised but the data is truncated or corrupt.
    Corrupt,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid_file(path: &Path, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn ort(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Ort {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no candidate path: set ORT_DYLIB_PATH)".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
