//! Module paths on both sides of the merge: the adapter's LoRA factors grouped by module (refusing every tensor
//! that is not a plain factor) and the checkpoint's adaptable linear layers, both named as transformers 5 names
//! the model in memory, which is what peft's paths refer to.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;

use super::{LoraError, TENSOR_PREFIX};

/// The two factor tensors of one module, by adapter tensor name.
#[derive(Debug, Default)]
pub(super) struct Factors {
    pub(super) a: Option<String>,
    pub(super) b: Option<String>,
}

/// Groups the adapter's tensors by module path (transformers 5 naming), refusing every tensor that is not a plain
/// LoRA factor, with the feature it belongs to.
pub(super) fn adapter_factors(
    adapter: &Checkpoint,
    path: &Path,
    cfg: &ModelConfig,
) -> Result<BTreeMap<String, Factors>, LoraError> {
    let refuse = |feature: &str, tensor: &str| {
        LoraError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.to_string(),
        detail: format!("the adapter holds tensor {tensor:?}; only lora_A/lora_B of linear layers can be merged"),
    }
    };
    let mut out: BTreeMap<String, Factors> = BTreeMap::new();
    for name in adapter.names() {
        if name.contains("lora_magnitude_vector") {
            return Err(refuse("DoRA (use_dora)", name));
        }
        if name.contains("lora_embedding_A") || name.contains("lora_embedding_B") {
            return Err(refuse("embedding LoRA (lora_embedding_A/B)", name));
        }
        if name.contains("modules_to_save") {
            return Err(refuse("modules_to_save", name));
        }
        if name.contains("trainable_tokens") {
            return Err(refuse("trainable_token_indices", name));
        }
        if name.ends_with(".lora_B.bias") {
            return Err(refuse("lora_bias", name));
        }
        let (module, is_a) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, true)
        } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
            (m, false)
        } else {
            return Err(LoraError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                detail: "not a LoRA factor (expected base_model.model.<module>.lora_A.weight or .lora_B.weight)"
                    .into(),
            });
        };
        let Some(module) = module.strip_prefix(TENSOR_PREFIX) else {
            return Err(LoraError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                detail: format!(
                    "does not start with {TENSOR_PREFIX:?}, as peft's save_pretrained writes"
                ),
            });
        };
        let module = memory_path(module, cfg);
        let last = module.rsplit('.').next().unwrap_or_default();
        if last == "lm_head" || last == "embed_tokens" {
            return Err(refuse("LoRA on the embedding / lm_head", name));
        }
        let entry = out.entry(module).or_default();
        let slot = if is_a { &mut entry.a } else { &mut entry.b };
        *slot = Some(name.to_string());
    }
    if out.is_empty() {
        return Err(LoraError::Tensor {
            path: path.to_path_buf(),
            tensor: "(none)".into(),
            detail: "the adapter has no lora_A/lora_B tensors".into(),
        });
    }
    Ok(out)
}

/// The checkpoint's linear layers that LoRA may adapt: module path (transformers 5 naming) → (tensor name, out,
/// in). Embeddings and the LM head are left out (their LoRA is refused).
pub(super) fn checkpoint_modules(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
) -> BTreeMap<String, (String, usize, usize)> {
    let mut out = BTreeMap::new();
    for name in ckpt.names() {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let path = memory_path(module, cfg);
        let last = path.rsplit('.').next().unwrap_or_default();
        if matches!(last, "lm_head" | "embed_tokens" | "position_embedding") {
            continue;
        }
        let Ok(view) = ckpt.tensor(name) else {
            continue;
        };
        if let [o, i] = view.shape[..] {
            out.insert(path, (name.to_string(), o, i));
        }
    }
    out
}

/// A module path as transformers 5 names it in memory. The *ForCausalLM classes keep their checkpoint names;
/// Gemma3ForConditionalGeneration moves the text model to `model.language_model.` (checkpoints:
/// `language_model.model.`), the vision tower to `model.vision_tower.` without `vision_model.`, the projector to
/// `model.multi_modal_projector.` and the LM head to `lm_head`.
fn memory_path(module: &str, cfg: &ModelConfig) -> String {
    if cfg.vision_config.is_none() && !cfg.text_prefix.starts_with("language_model") {
        return module.to_string();
    }
    if let Some(rest) = module
        .strip_prefix("language_model.model.")
        .or_else(|| module.strip_prefix("model.language_model."))
    {
        return format!("model.language_model.{rest}");
    }
    if module == "language_model.lm_head" {
        return "lm_head".into();
    }
    if let Some(rest) = module
        .strip_prefix("model.vision_tower.")
        .or_else(|| module.strip_prefix("vision_tower."))
    {
        let rest = rest.strip_prefix("vision_model.").unwrap_or(rest);
        return format!("model.vision_tower.{rest}");
    }
    if let Some(rest) = module
        .strip_prefix("model.multi_modal_projector.")
        .or_else(|| module.strip_prefix("multi_modal_projector."))
    {
        return format!("model.multi_modal_projector.{rest}");
    }
    module.to_string()
}
