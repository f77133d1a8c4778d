//! The classifier fields of a wrapper class's `config.json` (ShieldGemma 2, [`crate::family::ClassifierSpec`]).

use super::fields::Fields;
use crate::error::ConfigError;
use crate::family::ModelClass;

/// The two answer tokens whose last-position logits a classifier compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// `yes_token_index` ("Yes": the content violates the policy).
    pub yes_token_id: u32,
    /// `no_token_index`.
    pub no_token_id: u32,
}

/// `Some` for a classifier class: its ids from the top level of config.json, else the class defaults (as the model's
/// `getattr(config, "yes_token_index", 10_784)` does).
pub(super) fn parse(
    top: &Fields<'_>,
    class: &ModelClass,
) -> Result<Option<ClassifierConfig>, ConfigError> {
    let Some(spec) = class.classifier() else {
        return Ok(None);
    };
    let id = |key: &str, default: u32| -> Result<u32, ConfigError> {
        match top.token_ids(key)? {
            None => Ok(default),
            Some(v) if v.len() == 1 => Ok(v[0]),
            Some(v) => Err(top.invalid(key, "a single token id", format!("{v:?}"))),
        }
    };
    Ok(Some(ClassifierConfig {
        yes_token_id: id("yes_token_index", spec.yes_token_default)?,
        no_token_id: id("no_token_index", spec.no_token_default)?,
    }))
}

#[cfg(test)]
mod tests {
    use crate::{ConfigError, ModelConfig};
    use serde_json::json;
    use std::path::Path;

    fn shieldgemma2(extra: serde_json::Value) -> Result<ModelConfig, ConfigError> {
        let mut v = json!({
            "architectures": ["ShieldGemma2ForImageClassification"], "model_type": "shieldgemma2",
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                            "num_hidden_layers": 34, "sliding_window": 1024},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                              "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896,
                              "patch_size": 14, "vision_use_head": false},
            "mm_tokens_per_image": 256
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let path = Path::new("/m/config.json");
        let cfg = ModelConfig::from_json_str(&v.to_string(), path)?;
        cfg.check_ids_and_window(path)?;
        Ok(cfg)
    }

    #[test]
    fn answer_tokens_default_like_the_model_and_must_be_in_the_vocabulary() {
        let cfg = shieldgemma2(json!({})).unwrap();
        let c = cfg.classifier.unwrap();
        assert_eq!((c.yes_token_id, c.no_token_id), (10_784, 3771));
        assert!(cfg.is_multimodal() && cfg.vision_config.is_some());
        assert_eq!(cfg.text_prefix, "language_model.model.");
        let c = shieldgemma2(json!({"yes_token_index": 7, "no_token_index": 8}))
            .unwrap()
            .classifier
            .unwrap();
        assert_eq!((c.yes_token_id, c.no_token_id), (7, 8));
        // ShieldGemma2Config: tied unless the text config says otherwise
        let untied_top = shieldgemma2(json!({"tie_word_embeddings": false})).unwrap();
        assert!(untied_top.text.tie_word_embeddings);
        let e = shieldgemma2(json!({"no_token_index": 300_000})).unwrap_err();
        assert!(e.to_string().contains("no_token_index"), "{e}");
        let gemma3 =
            json!({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"});
        assert!(shieldgemma2(gemma3).unwrap().classifier.is_none());
    }
}
