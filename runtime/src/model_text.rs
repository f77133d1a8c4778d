//! [`ModelText`]: the text side of an export that text generation, image generation and chat all read: the
//! tokenizer, the chat template (if any), the stop tokens, BOS and the number of positions.

use std::path::Path;

use crate::chat_template::ChatTemplate;
use crate::error::Result;
use crate::manifest::{self, Manifest};
use crate::tokenizer::Tokenizer;

/// The token that ends a chat turn in every Gemma tokenizer (id 107 in Gemma 1/2, 106 in Gemma 3).
pub const END_OF_TURN: &str = "<end_of_turn>";

pub struct ModelText {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// The model's stop tokens: gemma-onnx.json's `eos_token_ids` ∪ generation_config.json's `eos_token_id`.
    pub stop_ids: Vec<u32>,
    pub bos_token_id: u32,
    /// `max_position_embeddings`: prompt plus generated tokens must fit.
    pub max_positions: usize,
}

impl ModelText {
    /// `tokenizer` with the chat template and stop tokens of the export in `dir`, described by `manifest`.
    pub fn open(tokenizer: Tokenizer, dir: &Path, manifest: &Manifest) -> Result<ModelText> {
        Ok(ModelText {
            tokenizer,
            chat_template: ChatTemplate::from_dir(dir)?,
            stop_ids: manifest::stop_token_ids(dir, manifest)?,
            bos_token_id: manifest.bos_token_id,
            max_positions: manifest.max_position_embeddings,
        })
    }

    /// The stop tokens of chat mode: [`stop_ids`](Self::stop_ids) plus the tokenizer's `<end_of_turn>`, looked up
    /// by name (107 in Gemma 1/2, 106 in Gemma 3), so that a model whose generation_config.json lists only `<eos>`
    /// (every base model, and Gemma 1 -it) still ends its turn.
    pub fn chat_stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.stop_ids.clone();
        if let Some(id) = self.tokenizer.token_to_id(END_OF_TURN) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}
