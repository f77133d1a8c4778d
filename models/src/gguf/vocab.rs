//! The tokenizer a GGUF file carries (`tokenizer.ggml.*`, `tokenizer.chat_template`) and the Hugging Face files
//! rebuilt from it: `tokenizer.json` (loaded by the `tokenizers` crate) and `tokenizer_config.json` (special tokens,
//! `add_bos_token`, the chat template).
//!
//! Only SentencePiece vocabularies (`tokenizer.ggml.model == "llama"`, what llama.cpp writes for Gemma 1, 2 and 3)
//! can be rebuilt; [`tokenizer_files`] refuses the others by name. How the SentencePiece vocabulary becomes a BPE
//! `tokenizer.json` is explained in [`super::tokenizer`].

use serde_json::{json, Map, Value};

use super::tokenizer::SpmTokenizer;

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
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// The Hugging Face tokenizer files rebuilt from a GGUF vocabulary.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    pub tokenizer_json: String,
    pub tokenizer_config_json: String,
}

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

/// Rebuilds `tokenizer.json` and `tokenizer_config.json` from a GGUF vocabulary so that they give the same ids as
/// the model's Hugging Face tokenizer.
///
/// Supported: SentencePiece BPE vocabularies (`tokenizer.ggml.model == "llama"`) with scores and token types, no
/// dummy-prefix space (`add_space_prefix` false or absent), as llama.cpp writes them for Gemma 1, 2 and 3.
/// Everything else is refused with [`VocabError::Unsupported`].
pub fn tokenizer_files(vocab: &GgufVocab) -> Result<TokenizerFiles, VocabError> {
    if vocab.model != "llama" {
        let pre = vocab.pre.as_deref().unwrap_or("none");
        return Err(VocabError::Unsupported(format!(
            "tokenizer.ggml.model {:?} (tokenizer.ggml.pre {pre:?}, {} merges) cannot be rebuilt as a Hugging Face \
             tokenizer; only SentencePiece vocabularies (\"llama\", as Gemma uses) are supported",
            vocab.model,
            vocab.merges.len()
        )));
    }
    let spm = SpmTokenizer::new(vocab)?;
    let tokenizer_json = spm.tokenizer_json()?;
    let tokenizer_config_json = tokenizer_config(vocab, &spm)?;
    Ok(TokenizerFiles {
        tokenizer_json,
        tokenizer_config_json,
    })
}

/// `tokenizer_config.json`: what transformers' `GemmaTokenizer` and this project's runtime read (special tokens,
/// whether `<bos>`/`<eos>` are added, the chat template).
fn tokenizer_config(vocab: &GgufVocab, spm: &SpmTokenizer) -> Result<String, VocabError> {
    let mut config = Map::new();
    config.insert("add_bos_token".into(), json!(spm.add_bos()));
    config.insert("add_eos_token".into(), json!(spm.add_eos()));
    let named = [
        ("bos_token", vocab.bos_id, "tokenizer.ggml.bos_token_id"),
        ("eos_token", vocab.eos_id, "tokenizer.ggml.eos_token_id"),
        ("pad_token", vocab.pad_id, "tokenizer.ggml.padding_token_id"),
        ("unk_token", vocab.unk_id, "tokenizer.ggml.unknown_token_id"),
    ];
    for (field, id, key) in named {
        if let Some(id) = id {
            config.insert(field.into(), json!(spm.piece(id, key)?));
        }
    }
    // Gemma 3's image tokens, as its processor names them: present when the vocabulary has the image delimiters.
    // `<image_soft_token>` is not in the GGUF vocabulary; transformers (and this project's runtime) add it as the
    // next id, as they do for the Hugging Face files.
    if spm.has_piece("<start_of_image>") && spm.has_piece("<end_of_image>") {
        config.insert("boi_token".into(), json!("<start_of_image>"));
        config.insert("eoi_token".into(), json!("<end_of_image>"));
        config.insert("image_token".into(), json!("<image_soft_token>"));
    }
    if let Some(template) = &vocab.chat_template {
        config.insert("chat_template".into(), json!(template));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("padding_side".into(), json!("left"));
    config.insert("spaces_between_special_tokens".into(), json!(false));
    config.insert("tokenizer_class".into(), json!("GemmaTokenizer"));
    serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| VocabError::Invalid(format!("cannot serialize tokenizer_config.json: {e}")))
}
