//! Merging a PEFT LoRA adapter into a checkpoint: `W' = W + s·B·A` for every adapted linear layer.
//!
//! The adapter is a folder as peft's `save_pretrained` writes it: `adapter_config.json` and
//! `adapter_model.safetensors`, whose tensors are `base_model.model.<module path>.lora_A.weight` (`[r, in]`) and
//! `.lora_B.weight` (`[out, r]`). [`apply`] checks the whole adapter against the checkpoint, then registers one
//! [`LowRank`] update per module with [`Checkpoint::add_low_rank`], so every later read of that weight (by any
//! export path) returns the merged values. The scale `s` is folded into `B`.
//!
//! The rules are peft 0.21's, so that the result equals transformers +
//! `PeftModel.from_pretrained(...).merge_and_unload()`:
//! * module paths are those of the model in memory under transformers 5 (no `base_model.model.` prefix); for
//!   Gemma3ForConditionalGeneration that is `model.language_model.layers.N…` and `model.vision_tower.encoder…`, while
//!   its checkpoints name the tensors `language_model.model.…` and `vision_tower[.vision_model].…`: both namings are
//!   accepted in adapter tensor names, as peft's load-time conversion does;
//! * `target_modules` as a string is `re.fullmatch`ed against the module path; as a list, an entry matches the whole
//!   path or a dot-bounded suffix (`…​.q_proj`), and only then do `layers_to_transform` / `layers_pattern` restrict
//!   the layer index (peft's `check_target_module_exists`); `exclude_modules` is honoured the same way;
//! * `rank_pattern` / `alpha_pattern` keys match as `(.*\.)?(key)$` from the start of the path, the first key in the
//!   file's order winning (peft's `get_pattern_key`);
//! * `s = alpha / r`, or `alpha / √r` with `use_rslora`, times the caller's extra scale (`--lora-scale`); `r` must
//!   equal the row count of `lora_A` (peft refuses to load otherwise);
//! * `base_model_name_or_path` is ignored: the checkpoint being exported is the base.
//!
//! Python's `re` and the `regex` crate differ: `regex` has no look-around and no backreferences (such patterns are
//! refused with the compiler's message), and its `$` matches only at the very end (Python's also before a final
//! newline, which a module path never has). Everything a module path pattern normally uses (`.`, `*`, `?`, classes,
//! groups, alternation, `\d`, lazy quantifiers, `(?P<name>…)`) behaves the same.
//!
//! Refused, with the feature named: `peft_type` other than LORA, DoRA, `modules_to_save`, embedding / `lm_head`
//! LoRA, `lora_bias`, `bias` other than "none", `target_parameters`, `trainable_token_indices`, `layer_replication`,
//! `fan_in_fan_out`, and the LoRA variants whose forward is not `W x + s·B·A x`. Refused, with the tensor named:
//! any adapter tensor or module that does not fit the checkpoint.

mod config;
mod error;
mod features;
mod matching;
mod merge;
mod modules;

pub use config::AdapterConfig;
pub use error::LoraError;
pub use merge::{apply, LoraSummary};

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Prefix of every adapter tensor name (peft's `PeftModel` → `LoraModel` → the transformers model).
const TENSOR_PREFIX: &str = "base_model.model.";

#[cfg(test)]
mod tests;
