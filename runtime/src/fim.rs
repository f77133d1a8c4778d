//! CodeGemma fill-in-the-middle (FIM) prompts (semantics §2.3; ai.google.dev "CodeGemma formatting"):
//!
//! ```text
//! <bos><|fim_prefix|>{code before the cursor}<|fim_suffix|>{code after the cursor}<|fim_middle|>
//! ```
//!
//! The model then writes the missing middle and ends it with `<|file_separator|>` (or `<eos>`). The four control
//! tokens are looked up by name in tokenizer.json: their ids are not fixed across tokenizers, and a tokenizer without
//! them (Gemma 1/2/3 proper) means a model that was not trained for FIM.
//!
//! The prefix and suffix are encoded separately (no special tokens added) and joined with the control token ids,
//! which gives the ids `tokenizer(prompt)` gives in the Hugging Face examples, BOS first.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

pub const FIM_PREFIX: &str = "<|fim_prefix|>";
pub const FIM_SUFFIX: &str = "<|fim_suffix|>";
pub const FIM_MIDDLE: &str = "<|fim_middle|>";
pub const FILE_SEPARATOR: &str = "<|file_separator|>";

/// The ids of the four FIM control tokens of one tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FimTokens {
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
    pub file_separator: u32,
}

impl FimTokens {
    /// Looks the four tokens up by name. `Err` carries the missing names, e.g. `` `<|fim_prefix|>`, `<|fim_middle|>` ``.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> std::result::Result<FimTokens, String> {
        let mut missing = Vec::new();
        let mut id = |name: &str| {
            tokenizer.token_to_id(name).unwrap_or_else(|| {
                missing.push(format!("`{name}`"));
                0
            })
        };
        let tokens = FimTokens {
            prefix: id(FIM_PREFIX),
            suffix: id(FIM_SUFFIX),
            middle: id(FIM_MIDDLE),
            file_separator: id(FILE_SEPARATOR),
        };
        if missing.is_empty() {
            Ok(tokens)
        } else {
            Err(missing.join(", "))
        }
    }

    /// `[bos, <|fim_prefix|>] + prefix + [<|fim_suffix|>] + suffix + [<|fim_middle|>]`, with `prefix` and `suffix`
    /// encoded without special tokens. Either may be empty (cursor at the start or the end of the file).
    pub fn prompt_ids(
        &self,
        tokenizer: &Tokenizer,
        bos: u32,
        prefix: &str,
        suffix: &str,
    ) -> Result<Vec<u32>> {
        let mut ids = vec![bos, self.prefix];
        ids.extend(tokenizer.encode(prefix, false)?);
        ids.push(self.suffix);
        ids.extend(tokenizer.encode(suffix, false)?);
        ids.push(self.middle);
        Ok(ids)
    }

    /// Tokens that end the middle part: all four control tokens (the model emits `<|file_separator|>`; the others
    /// would start a new FIM request).
    pub fn stop_ids(&self) -> [u32; 4] {
        [self.prefix, self.suffix, self.middle, self.file_separator]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json with Gemma-like special tokens and, if `with_fim`, CodeGemma's FIM tokens at
    /// their CodeGemma ids (67–70).
    fn tokenizer(with_fim: bool) -> Tokenizer {
        let mut added = vec![(0, "<pad>"), (1, "<eos>"), (2, "<bos>"), (3, "<unk>")];
        if with_fim {
            added.extend([
                (67, FIM_PREFIX),
                (68, FIM_SUFFIX),
                (69, FIM_MIDDLE),
                (70, FILE_SEPARATOR),
            ]);
        }
        let mut vocab: serde_json::Map<String, serde_json::Value> = added
            .iter()
            .map(|(i, t)| (t.to_string(), (*i).into()))
            .collect();
        for (i, word) in ["def", "f(x):", "return", "x", "+", "1"].iter().enumerate() {
            vocab.insert(word.to_string(), (10 + i).into());
        }
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": added.iter().map(|(id, content)| serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true
            })).collect::<Vec<_>>(),
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        Tokenizer::from_file(&path).unwrap()
    }

    #[test]
    fn prompt_layout_and_stop_tokens() {
        let t = tokenizer(true);
        let fim = FimTokens::from_tokenizer(&t).unwrap();
        assert_eq!(
            fim,
            FimTokens {
                prefix: 67,
                suffix: 68,
                middle: 69,
                file_separator: 70
            }
        );
        let ids = fim.prompt_ids(&t, 2, "def f(x):", "x + 1").unwrap();
        assert_eq!(ids, vec![2, 67, 10, 11, 68, 13, 14, 15, 69]);
        // Empty prefix or suffix: the control tokens stay.
        assert_eq!(fim.prompt_ids(&t, 2, "", "").unwrap(), vec![2, 67, 68, 69]);
        assert_eq!(fim.stop_ids(), [67, 68, 69, 70]);
    }

    #[test]
    fn missing_tokens_are_named() {
        let missing = FimTokens::from_tokenizer(&tokenizer(false)).unwrap_err();
        assert_eq!(
            missing,
            "`<|fim_prefix|>`, `<|fim_suffix|>`, `<|fim_middle|>`, `<|file_separator|>`"
        );
    }
}
