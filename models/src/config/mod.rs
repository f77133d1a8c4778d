//! Typed Gemma configs, read from a Hugging Face `config.json` in either the transformers 4.x or 5.x key form.
//!
//! Supported model classes (`model_type` / `architectures[0]`; the [`classes`](crate::family::FamilySpec::classes)
//! of the [family table](crate::family)):
//!
//! | model_type    | architecture                     | family  | text tensors under       |
//! |---------------|----------------------------------|---------|--------------------------|
//! | `gemma`       | `GemmaForCausalLM`               | Gemma   | `model.`                 |
//! | `gemma2`      | `Gemma2ForCausalLM`              | Gemma2  | `model.`                 |
//! | `gemma3_text` | `Gemma3ForCausalLM`              | Gemma3  | `model.`                 |
//! | `gemma3`      | `Gemma3ForConditionalGeneration` | Gemma3  | `language_model.model.`  |
//! | `shieldgemma2` | `ShieldGemma2ForImageClassification` | Gemma3 | `language_model.model.` once unwrapped |
//! | `paligemma`   | `PaliGemmaForConditionalGeneration` | Gemma or Gemma2 (`text_config.model_type`) | `language_model.model.` |
//! | `gemma3n_text`| `Gemma3nForCausalLM`             | Gemma3n | `model.`                 |
//! | `gemma3n`     | `Gemma3nForConditionalGeneration`| Gemma3n | `model.language_model.`  |
//!
//! For Gemma3ForConditionalGeneration the text fields live under `text_config`, and most of them are usually
//! absent (the gemma-3-4b config lists only six); the `Gemma3TextConfig` class defaults fill them in (semantics §10).
//!
//! ```no_run
//! # use gemma_models::ModelConfig;
//! let cfg = ModelConfig::from_file("gemma-3-270m/config.json".as_ref())?;
//! assert_eq!(cfg.text.layer_types.len(), cfg.text.num_hidden_layers);
//! # Ok::<(), gemma_models::ConfigError>(())
//! ```

mod classifier;
mod fields;
mod gemma3n;
pub mod gemma3n_audio;
#[cfg(test)]
mod gemma3n_tests;
pub mod gemma3n_vision;
mod ids;
mod rope;
#[cfg(test)]
mod tests;
mod text;
mod vision;

pub use classifier::ClassifierConfig;
pub use gemma3n::Gemma3nText;
pub use vision::VisionConfig;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ConfigError;
pub use crate::family::Family;
use crate::family::ModelClass;
use fields::{describe, Fields};

/// The attention type of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LayerType {
    /// Local attention: query `i` sees keys `i-W < j <= i` (W = `sliding_window`).
    #[serde(rename = "sliding_attention")]
    Sliding,
    /// Global causal attention: query `i` sees keys `j <= i`.
    #[serde(rename = "full_attention")]
    Full,
}

impl LayerType {
    /// The name transformers uses in `layer_types` and `rope_parameters`.
    pub fn name(&self) -> &'static str {
        match self {
            LayerType::Sliding => "sliding_attention",
            LayerType::Full => "full_attention",
        }
    }

    /// Parses a transformers layer-type name.
    pub fn from_name(name: &str) -> Option<LayerType> {
        match name {
            "sliding_attention" => Some(LayerType::Sliding),
            "full_attention" => Some(LayerType::Full),
            _ => None,
        }
    }
}

/// Rotary-embedding parameters of one layer type (semantics §1.3, §4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParams {
    /// The base: `inv_freq[k] = 1 / theta^(2k / head_dim)`.
    pub theta: f64,
    /// `Some(f)` for rope_type "linear": `inv_freq` is divided by `f` (positions scaled by `1/f`).
    /// `None` for rope_type "default".
    pub linear_factor: Option<f64>,
}

/// Everything the text decoder's maths depends on, with class defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Read from the config (default 256), never derived as hidden_size / heads.
    pub head_dim: usize,
    /// Attention scores are scaled by `query_pre_attn_scalar^-0.5`. For Gemma 1 this is `head_dim`.
    pub query_pre_attn_scalar: f64,
    pub rms_norm_eps: f64,
    /// Window W of sliding layers; `None` for Gemma 1.
    pub sliding_window: Option<usize>,
    /// One entry per layer; all [`LayerType::Full`] for Gemma 1.
    pub layer_types: Vec<LayerType>,
    /// RoPE of global (full-attention) layers.
    pub rope_full: RopeParams,
    /// RoPE of sliding layers (equal to `rope_full` for Gemma 1 and 2).
    pub rope_sliding: RopeParams,
    /// Gemma 2 only: `s = c·tanh(s/c)` on the scaled attention scores. Always `None` for Gemma 3.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2, and Gemma3ForCausalLM when the config sets it: `logits = c·tanh(logits/c)`.
    pub final_logit_softcapping: Option<f64>,
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses `embed_tokens` (true for every Google checkpoint, which then has no lm_head).
    pub tie_word_embeddings: bool,
    /// Gemma 3n's own fields (semantics §12); `None` for the other families. With it, `intermediate_size` is the
    /// largest of the per-layer widths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemma3n: Option<Gemma3nText>,
}

impl TextConfig {
    /// Query heads per key/value head (`num_attention_heads / num_key_value_heads`).
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The factor applied to `q·kᵀ`: `query_pre_attn_scalar^-0.5`.
    pub fn attention_scale(&self) -> f64 {
        self.query_pre_attn_scalar.powf(-0.5)
    }

    /// The RoPE parameters of a layer type.
    pub fn rope(&self, layer_type: LayerType) -> &RopeParams {
        match layer_type {
            LayerType::Full => &self.rope_full,
            LayerType::Sliding => &self.rope_sliding,
        }
    }

    /// Whether attention normalises q and k per head before RoPE (Gemma 3; [`FamilySpec::qk_norm`]).
    ///
    /// [`FamilySpec::qk_norm`]: crate::family::FamilySpec::qk_norm
    pub fn has_qk_norm(&self) -> bool {
        self.family.spec().qk_norm
    }

    /// Whether layers have the Gemma 2/3 "sandwich" norms (post-attention and pre/post-feedforward;
    /// [`FamilySpec::sandwich_norms`]).
    ///
    /// [`FamilySpec::sandwich_norms`]: crate::family::FamilySpec::sandwich_norms
    pub fn has_sandwich_norms(&self) -> bool {
        self.family.spec().sandwich_norms
    }
}

/// A whole `config.json`: the text decoder plus what surrounds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Top-level `model_type`: "gemma", "gemma2", "gemma3_text", "gemma3" or "paligemma" (inferred from the
    /// architecture when absent).
    pub model_type: String,
    /// `architectures[0]`, inferred from `model_type` when absent.
    pub architecture: String,
    pub text: TextConfig,
    /// Tensor-name prefix of the text decoder: "model." or "language_model.model." (see [`crate::names`]).
    pub text_prefix: String,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    /// `eos_token_id`, which may be one id or a list (e.g. `[1, 106]` for Gemma 3 -it).
    pub eos_token_ids: Vec<u32>,
    /// `torch_dtype` (transformers 4.x) or `dtype` (5.x), e.g. "bfloat16".
    pub torch_dtype: Option<String>,
    /// The raw `vision_config` of Gemma3ForConditionalGeneration.
    pub vision: Option<Value>,
    /// The typed vision tower and image-token fields of Gemma3ForConditionalGeneration (class defaults applied);
    /// `None` for text-only models.
    pub vision_config: Option<VisionConfig>,
    /// The answer tokens of a classifier class (ShieldGemma 2); `None` for the others.
    pub classifier: Option<ClassifierConfig>,
    /// The whole config.json.
    pub raw: Value,
}

fn supported_list() -> String {
    ModelClass::all()
        .map(|(_, c)| format!("{}/{}", c.model_type, c.architecture))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ModelConfig {
    /// Reads and parses a `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig, ConfigError> {
        let text = crate::files::read_regular_to_string(path, crate::files::MAX_JSON_BYTES)
            .map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON; `origin` is only used in error messages.
    pub fn from_json_str(s: &str, origin: &Path) -> Result<ModelConfig, ConfigError> {
        let raw: Value = serde_json::from_str(s).map_err(|e| ConfigError::Json {
            path: origin.to_path_buf(),
            detail: e.to_string(),
        })?;
        let Some(map) = raw.as_object() else {
            return Err(ConfigError::Json {
                path: origin.to_path_buf(),
                detail: format!("the top level must be an object, found {}", describe(&raw)),
            });
        };
        let top = Fields::new(map, origin, "");
        let (mut family, class) = resolve_class(&top)?;
        let conditional = class.multimodal;
        let system = class.vision.map(|v| v.spec());

        // Multimodal configs nest the text fields; an absent text_config means "all class defaults".
        let empty = Map::new();
        let text_fields = if conditional {
            let t = top
                .object("text_config")?
                .unwrap_or_else(|| Fields::new(&empty, origin, "text_config."));
            // The text part is the text-only class of one of the system's families (the first when absent); a
            // multimodal class without a vision system of the table (Gemma 3n) has its own family's.
            let own = [family];
            let families = system.map_or(&own[..], |v| v.text_families);
            if let Some(mt) = t.str("model_type")? {
                match families
                    .iter()
                    .find(|f| f.spec().classes[0].model_type == mt)
                {
                    Some(f) => family = *f,
                    None => {
                        let expected: Vec<String> = families
                            .iter()
                            .map(|f| format!("{:?}", f.spec().classes[0].model_type))
                            .collect();
                        return Err(t.invalid(
                            "model_type",
                            expected.join(" or "),
                            format!("{mt:?}"),
                        ));
                    }
                }
            }
            t
        } else {
            top.clone()
        };
        let mut text = text::parse(&text_fields, &top, family, system)?;
        if class.classifier().is_some() && !text.tie_word_embeddings {
            // ShieldGemma2Config ties when its text config does, whatever its own (default False) flag says.
            text.tie_word_embeddings = text_fields.bool("tie_word_embeddings")?.unwrap_or(true);
        }

        // Token ids: top level first, then text_config, then the class defaults (bos 2, eos 1, pad 0).
        let ids = |key: &str| -> Result<Option<Vec<u32>>, ConfigError> {
            Ok(match top.token_ids(key)? {
                Some(ids) => Some(ids),
                None => text_fields.token_ids(key)?,
            })
        };
        let single = |key: &str, default: u32| -> Result<u32, ConfigError> {
            match ids(key)? {
                None => Ok(default),
                Some(v) if v.len() == 1 => Ok(v[0]),
                Some(v) => Err(top.invalid(key, "a single token id", format!("{v:?}"))),
            }
        };
        let bos_token_id = single("bos_token_id", 2)?;
        let pad_token_id = single("pad_token_id", 0)?;
        let eos_token_ids = ids("eos_token_id")?.unwrap_or_else(|| vec![1]);

        let mut torch_dtype = None;
        'search: for fields in [&top, &text_fields] {
            for key in ["torch_dtype", "dtype"] {
                if fields.value(key).is_some() {
                    torch_dtype = fields.str(key)?.map(str::to_string);
                    break 'search;
                }
            }
        }

        let vision = if conditional {
            top.value("vision_config").cloned()
        } else {
            None
        };
        // Gemma 3n's towers (MobileNetV5, the audio Conformer) are not SigLIP: their sections stay raw here.
        let vision_config = if conditional && !family.spec().gemma3n_layers {
            Some(vision::parse(&top, class.vision.unwrap_or_default())?)
        } else {
            None
        };
        Ok(ModelConfig {
            model_type: class.model_type.to_string(),
            architecture: class.architecture.to_string(),
            text,
            text_prefix: class.text_prefix.to_string(),
            bos_token_id,
            pad_token_id,
            eos_token_ids,
            torch_dtype,
            vision,
            vision_config,
            classifier: classifier::parse(&top, class)?,
            raw,
        })
    }

    /// Whether this is a text + vision class (Gemma3ForConditionalGeneration).
    pub fn is_multimodal(&self) -> bool {
        ModelClass::by_architecture(&self.architecture).is_some_and(|(_, c)| c.multimodal)
    }
}

/// Finds the model class from `model_type` and `architectures[0]`, which must agree when both are present.
fn resolve_class(top: &Fields<'_>) -> Result<(Family, &'static ModelClass), ConfigError> {
    let model_type = top.str("model_type")?;
    let architecture = match top.value("architectures") {
        None => None,
        Some(Value::Array(items)) if items.is_empty() => None,
        Some(Value::Array(items)) => match items[0].as_str() {
            Some(a) => Some(a),
            None => {
                return Err(top.invalid("architectures[0]", "a class name", describe(&items[0])))
            }
        },
        Some(v) => return Err(top.invalid("architectures", "a list of class names", describe(v))),
    };

    let unsupported = || ConfigError::UnsupportedModel {
        path: top.origin().to_path_buf(),
        model_type: model_type.unwrap_or("<absent>").to_string(),
        architecture: architecture.unwrap_or("<absent>").to_string(),
        supported: supported_list(),
    };
    let by_type = match model_type {
        Some(mt) => Some(
            ModelClass::all()
                .find(|(_, c)| c.model_type == mt)
                .ok_or_else(unsupported)?,
        ),
        None => None,
    };
    let by_arch = match architecture {
        Some(a) => Some(ModelClass::by_architecture(a).ok_or_else(unsupported)?),
        None => None,
    };
    let row = match (by_type, by_arch) {
        (Some((_, t)), Some((_, a))) if t != a => {
            return Err(ConfigError::ModelTypeMismatch {
                path: top.origin().to_path_buf(),
                model_type: t.model_type.to_string(),
                architecture: a.architecture.to_string(),
                expected: t.architecture.to_string(),
            })
        }
        (Some(row), _) | (None, Some(row)) => row,
        (None, None) => {
            return Err(top.missing(
                "model_type",
                "a Gemma model type; also absent: architectures",
            ))
        }
    };
    Ok(row)
}
