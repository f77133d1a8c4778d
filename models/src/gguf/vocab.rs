//! The tokenizer a GGUF file carries (`tokenizer.ggml.*`, `tokenizer.chat_template`), and the Hugging Face
//! tokenizer files rebuilt from it.

use std::collections::BTreeMap;
use std::path::Path;

use super::container::{Array, Value};
use super::GgufError;

/// The tokenizer as a GGUF file stores it (`tokenizer.ggml.*` and `tokenizer.chat_template`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    pub model: String,         // tokenizer.ggml.model, e.g. "llama"
    pub pre: Option<String>,   // tokenizer.ggml.pre
    pub tokens: Vec<String>,   // tokenizer.ggml.tokens
    pub scores: Vec<f32>,      // tokenizer.ggml.scores (empty if absent)
    pub token_types: Vec<i32>, // tokenizer.ggml.token_type (empty if absent)
    pub merges: Vec<String>,   // tokenizer.ggml.merges (empty if absent)
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub eot_id: Option<u32>, // tokenizer.ggml.eot_token_id
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

/// The Hugging Face tokenizer files rebuilt from a GGUF vocabulary.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    pub tokenizer_json: String,
    pub tokenizer_config_json: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("{0}")]
    Unsupported(String),
}

pub fn tokenizer_files(vocab: &GgufVocab) -> Result<TokenizerFiles, VocabError> {
    Err(VocabError::Unsupported(format!(
        "rebuilding a {:?} tokenizer is not written yet",
        vocab.model
    )))
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
    };
    Ok(vocab)
}
