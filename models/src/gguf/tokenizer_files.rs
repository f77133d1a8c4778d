//! The Hugging Face tokenizer files of a GGUF source: `tokenizer.json` from [`SpmTokenizer`] and
//! `tokenizer_config.json` (special tokens, `add_bos_token`, the chat template) from the [`GgufVocab`].

use serde_json::{json, Map};

use super::tokenizer::SpmTokenizer;
use super::vocab::{GgufVocab, VocabError};

/// The Hugging Face tokenizer files rebuilt from a GGUF vocabulary.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    pub tokenizer_json: String,
    pub tokenizer_config_json: String,
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
    serde_json::to_string_pretty(&serde_json::Value::Object(config))
        .map_err(|e| VocabError::Invalid(format!("cannot serialize tokenizer_config.json: {e}")))
}
