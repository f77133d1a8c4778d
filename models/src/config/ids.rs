//! Values that parse but cannot describe a working model, refused at export instead of by the runtime later
//! (issue 15 item 4): token ids outside the vocabulary and a sliding window beyond the model's positions. These are
//! separate from the general size limits on config values (layers, sizes, vocab), which guard memory.

use std::path::Path;

use super::ModelConfig;
use crate::error::ConfigError;

impl ModelConfig {
    /// Checks that `bos_token_id`, `pad_token_id`, every `eos_token_id`, and the vision tower's `boi_token_id`,
    /// `eoi_token_id` and `image_token_id` are ids of the vocabulary, and that `sliding_window` is at most
    /// `max_position_embeddings` (a wider window changes nothing, and the runtime sizes sliding caches by it).
    /// `path` names the file in errors.
    pub fn check_ids_and_window(&self, path: &Path) -> Result<(), ConfigError> {
        let vocab = self.text.vocab_size as u64;
        let invalid = |field: &str, expected: String, found: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            expected,
            found,
        };
        let mut ids: Vec<(&str, u32)> = vec![
            ("bos_token_id", self.bos_token_id),
            ("pad_token_id", self.pad_token_id),
        ];
        ids.extend(self.eos_token_ids.iter().map(|&id| ("eos_token_id", id)));
        if let Some(v) = &self.vision_config {
            ids.extend([
                ("boi_token_index", v.boi_token_id),
                ("eoi_token_index", v.eoi_token_id),
                ("image_token_index", v.image_token_id),
            ]);
        }
        if let Some(c) = &self.classifier {
            ids.extend([
                ("yes_token_index", c.yes_token_id),
                ("no_token_index", c.no_token_id),
            ]);
        }
        for (field, id) in ids {
            if u64::from(id) >= vocab {
                return Err(invalid(
                    field,
                    format!("a token id below vocab_size ({vocab})"),
                    id.to_string(),
                ));
            }
        }
        let max = self.text.max_position_embeddings;
        if let Some(w) = self.text.sliding_window {
            if w > max {
                return Err(invalid(
                    "sliding_window",
                    format!("at most max_position_embeddings ({max})"),
                    w.to_string(),
                ));
            }
        }
        Ok(())
    }
}
