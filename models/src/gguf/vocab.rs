//! The tokenizer a GGUF file carries (`tokenizer.ggml.*`, `tokenizer.chat_template`) and the Hugging Face files
//! rebuilt from it: `tokenizer.json` (loaded by the `tokenizers` crate) and `tokenizer_config.json` (special tokens,
//! `add_bos_token`, the chat template).
//!
//! Only SentencePiece vocabularies (`tokenizer.ggml.model == "llama"`, what llama.cpp writes for Gemma 1, 2 and 3)
//! can be rebuilt; [`super::tokenizer_files`] refuses the others by name. How the SentencePiece vocabulary becomes a BPE
//! `tokenizer.json` is explained in [`super::tokenizer`].

use std::collections::BTreeMap;
use std::path::Path;

use super::container::{Array, Value};
use super::GgufError;

/// The tokenizer as a GGUF file stores it (`tokenizer.ggml.*` and `tokenizer.chat_template`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`, e.g. `"llama"` (SentencePiece) or `"gpt2"` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (empty if absent).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.token_type` (empty if absent): normal 1, unknown 2, control 3, user-defined 4, unused 5,
    /// byte 6.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges` (empty if absent).
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`, or the family's own template when the file has none (see
    /// [`BUILTIN_TEMPLATE_NOTE`] and `chat_template_builtin`).
    pub chat_template: Option<String>,
    /// `chat_template` is the built-in template of the architecture: the file carries a vocabulary but no
    /// `tokenizer.chat_template` (llama.cpp's converter leaves it out when the source folder had none).
    pub chat_template_builtin: bool,
}

/// The chat templates Google ships with the Hugging Face checkpoints: Gemma 3's (system prompts folded into the first
/// user turn, images), and Gemma 1/2's (no system role). A GGUF without `tokenizer.chat_template` gets its
/// architecture's, so `gemma chat` works on it as on the original folder.
pub const GEMMA3_CHAT_TEMPLATE: &str = include_str!("chat_templates/gemma3.jinja");
/// See [`GEMMA3_CHAT_TEMPLATE`]; used for the `gemma` and `gemma2` architectures.
pub const GEMMA_CHAT_TEMPLATE: &str = include_str!("chat_templates/gemma.jinja");
/// What an export says when it used a built-in template.
pub const BUILTIN_TEMPLATE_NOTE: &str =
    "the GGUF has no tokenizer.chat_template: the export carries the family's own Hugging Face chat template";

/// Why a GGUF vocabulary cannot be turned into Hugging Face tokenizer files. Messages name the GGUF key concerned;
/// the caller adds the file name.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// A tokenizer kind or setting this rebuild does not reproduce (it would give other ids than the model's own
    /// tokenizer).
    #[error("{0}")]
    Unsupported(String),
    /// The `tokenizer.ggml.*` arrays contradict each other (lengths, ids out of range, duplicate tokens).
    #[error("inconsistent GGUF tokenizer: {0}")]
    Invalid(String),
}

/// SentencePiece token types as llama.cpp's converter writes them in `tokenizer.ggml.token_type`.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Fills a [`GgufVocab`] from parsed metadata. A file without `tokenizer.ggml.tokens` gives an empty vocabulary
/// (`tokens` empty); keys of the wrong type, or arrays whose lengths disagree with the token list, are errors.
pub(super) fn from_metadata(
    path: &Path,
    metadata: &BTreeMap<String, Value>,
) -> Result<GgufVocab, GgufError> {
    let err = |key: &str, detail: String| GgufError::Metadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        detail,
    };
    let string = |key: &str| -> Result<Option<String>, GgufError> {
        match metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(err(
                key,
                format!("expected a string, found {}", v.type_name()),
            )),
        }
    };
    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| err(key, format!("expected a token id, found {}", v.type_name()))),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>, GgufError> {
        match metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| err(key, format!("expected a bool, found {}", v.type_name()))),
        }
    };
    fn array<'a>(
        metadata: &'a BTreeMap<String, Value>,
        key: &'static str,
    ) -> Option<(&'static str, &'a Value)> {
        metadata.get(key).map(|v| (key, v))
    }

    let tokens = match array(metadata, "tokenizer.ggml.tokens") {
        None => Vec::new(),
        Some((_, Value::Array(Array::String(t)))) => t.clone(),
        Some((k, v)) => {
            return Err(err(
                k,
                format!("expected an array of strings, found {}", v.type_name()),
            ))
        }
    };
    let scores = match array(metadata, "tokenizer.ggml.scores") {
        None => Vec::new(),
        Some((_, Value::Array(Array::F32(s)))) => s.clone(),
        Some((k, v)) => {
            return Err(err(
                k,
                format!("expected an array of f32, found {}", v.type_name()),
            ))
        }
    };
    let token_types = match array(metadata, "tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some((_, Value::Array(Array::I32(t)))) => t.clone(),
        Some((k, v)) => {
            return Err(err(
                k,
                format!("expected an array of i32, found {}", v.type_name()),
            ))
        }
    };
    let merges = match array(metadata, "tokenizer.ggml.merges") {
        None => Vec::new(),
        Some((_, Value::Array(Array::String(m)))) => m.clone(),
        Some((k, v)) => {
            return Err(err(
                k,
                format!("expected an array of strings, found {}", v.type_name()),
            ))
        }
    };
    for (key, len) in [
        ("tokenizer.ggml.scores", scores.len()),
        ("tokenizer.ggml.token_type", token_types.len()),
    ] {
        if len != 0 && len != tokens.len() {
            return Err(err(
                key,
                format!(
                    "{len} entries, but tokenizer.ggml.tokens has {}",
                    tokens.len()
                ),
            ));
        }
    }
    let vocab = GgufVocab {
        model: string("tokenizer.ggml.model")?.unwrap_or_default(),
        pre: string("tokenizer.ggml.pre")?,
        tokens,
        scores,
        token_types,
        merges,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        eot_id: id("tokenizer.ggml.eot_token_id")?,
        add_bos: flag("tokenizer.ggml.add_bos_token")?,
        add_eos: flag("tokenizer.ggml.add_eos_token")?,
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
        chat_template: string("tokenizer.chat_template")?,
        chat_template_builtin: false,
    };
    Ok(with_builtin_template(vocab, metadata))
}

/// Gives a vocabulary without a chat template its architecture's built-in one (nothing for a file without a
/// vocabulary, or of another architecture).
fn with_builtin_template(mut vocab: GgufVocab, metadata: &BTreeMap<String, Value>) -> GgufVocab {
    if vocab.chat_template.is_some() || vocab.tokens.is_empty() {
        return vocab;
    }
    let template = match metadata
        .get("general.architecture")
        .and_then(|v| v.as_str())
    {
        Some("gemma3") => GEMMA3_CHAT_TEMPLATE,
        Some("gemma" | "gemma2") => GEMMA_CHAT_TEMPLATE,
        _ => return vocab,
    };
    vocab.chat_template = Some(template.to_string());
    vocab.chat_template_builtin = true;
    vocab
}
