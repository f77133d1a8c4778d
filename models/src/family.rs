//! The Gemma generations as a table: one [`FamilySpec`] per [`Family`] says everything that differs between them,
//! so that the config parser ([`crate::config`]), the tensor names ([`crate::names`]) and the graph builders read
//! the table instead of matching on the family.
//!
//! A later generation overrides an earlier one, as transformers' config classes do (`Gemma2Config` is
//! `GemmaConfig` plus sandwich norms, soft-caps and a sliding window; `Gemma3TextConfig` is Gemma 2 plus QK-norm,
//! a 5:1 layer pattern and per-layer-type RoPE, without soft-caps). A new generation made of known pieces is one
//! more entry here plus its `config.json` class names; a new piece is a new field (or variant) here and the code
//! that reads it. A class that wraps another one and puts a classification rule on its logits (ShieldGemma 2) is a
//! class of its family plus a [`ClassifierSpec`].
//!
//! ```
//! use gemma_models::Family;
//! let spec = Family::Gemma3.spec();
//! assert!(spec.qk_norm && spec.sandwich_norms);
//! assert_eq!(spec.classes[0].architecture, "Gemma3ForCausalLM");
//! ```
//!
//! This module depends on nothing else in the crate, so every other module may read it.

use serde::{Deserialize, Serialize};

mod vision;
pub use vision::{Projector, TowerDefaults, VisionSpec, VisionSystem};

/// The Gemma generation; decides the decoder-layer layout and which config fields matter (see [`Family::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Gemma 1 and CodeGemma: pre-norms only, all layers global, no soft-caps.
    Gemma,
    /// Gemma 2: sandwich norms, alternating sliding/global layers, attention and final soft-caps.
    Gemma2,
    /// Gemma 3: Gemma 2's layout plus QK-norm, a 5:1 sliding pattern and per-layer-type RoPE; no soft-caps.
    Gemma3,
    /// Gemma 3n: Gemma 3's attention (unscaled, with a v-norm) inside AltUp, with Laurel, per-layer inputs, KV
    /// sharing and activation sparsity ([`FamilySpec::gemma3n_layers`]).
    Gemma3n,
}

impl Family {
    /// Every family, oldest first (the order of the supported-class list in error messages).
    pub const ALL: [Family; 4] = [
        Family::Gemma,
        Family::Gemma2,
        Family::Gemma3,
        Family::Gemma3n,
    ];

    /// The table entry of this family.
    pub fn spec(self) -> &'static FamilySpec {
        match self {
            Family::Gemma => &GEMMA,
            Family::Gemma2 => &GEMMA2,
            Family::Gemma3 => &GEMMA3,
            Family::Gemma3n => &GEMMA3N,
        }
    }
}

/// Text prefix of the *ForCausalLM classes (see [`crate::names`]).
pub const PREFIX_CAUSAL: &str = "model.";
/// Text prefix of Gemma3ForConditionalGeneration checkpoints as published and as saved by transformers 5.x.
pub const PREFIX_CONDITIONAL: &str = "language_model.model.";
/// Text prefix of Gemma3nForConditionalGeneration checkpoints (transformers' own module path).
pub const PREFIX_MODEL_LANGUAGE: &str = "model.language_model.";

/// One transformers model class (a `model_type` / `architectures[0]` pair of `config.json`).
#[derive(Debug, PartialEq, Eq)]
pub struct ModelClass {
    pub model_type: &'static str,
    pub architecture: &'static str,
    /// Text + vision tower (the text fields then live under `text_config`).
    pub multimodal: bool,
    /// The image system of a multimodal class (`None` for text-only ones).
    pub vision: Option<VisionSystem>,
    /// Tensor-name prefix of the text decoder in this class's checkpoints.
    pub text_prefix: &'static str,
}

impl ModelClass {
    /// Every supported class with its family, in table order.
    pub fn all() -> impl Iterator<Item = (Family, &'static ModelClass)> {
        Family::ALL
            .into_iter()
            .flat_map(|f| f.spec().classes.iter().map(move |c| (f, c)))
    }

    /// The class named by `architectures[0]`, if supported.
    pub fn by_architecture(architecture: &str) -> Option<(Family, &'static ModelClass)> {
        Self::all().find(|(_, c)| c.architecture == architecture)
    }
}

/// Class defaults that are applied when a key is absent. `None`: no default, the field is required.
#[derive(Debug, PartialEq)]
pub struct ClassDefaults {
    pub vocab_size: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    /// Read from the config when present, never derived as hidden_size / heads.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
}

/// How attention scores are scaled (semantics §1.4, §3.2).
#[derive(Debug, PartialEq)]
pub enum QueryScale {
    /// `head_dim^-0.5`; `query_pre_attn_scalar` is not a field of the class.
    HeadDim,
    /// `query_pre_attn_scalar^-0.5`, with this class default.
    PreAttnScalar { default: f64 },
    /// No scaling (Gemma 3n: `scaling = 1.0`, the QK-norm sets the scale); `query_pre_attn_scalar` is not read.
    Unit,
}

/// A soft-cap `c·tanh(x/c)` (semantics §3.2, §3.3, §4.1).
#[derive(Debug, PartialEq)]
pub enum SoftCap {
    /// The class has no such cap: the field is not read.
    Never,
    /// Absent → this default; explicit `null` → off (the model checks `is not None`).
    Default(f64),
    /// Absent or `null` → off.
    Optional,
}

/// Which layers use sliding-window attention when `layer_types` is absent (semantics §3.2, §4.2).
#[derive(Debug, PartialEq)]
pub enum LayerPattern {
    /// Every layer global, no `sliding_window` field; a `"sliding_attention"` in `layer_types` is refused.
    AllGlobal,
    /// Layer `i` slides when `(i + 1) % period != 0` (period 2: even layers slide), over a window of `window`
    /// tokens (the class default of `sliding_window`).
    Periodic {
        window: usize,
        period: usize,
        /// Whether `sliding_window_pattern` (or 4.x's `_sliding_window_pattern`) sets the period.
        period_configurable: bool,
    },
}

/// The rotary embeddings and their class defaults (semantics §1.3, §4.3).
#[derive(Debug, PartialEq)]
pub enum RopeLayout {
    /// One rotary embedding for every layer; `rope_parameters` is flat.
    Single { theta: f64 },
    /// One per layer type: `rope_theta` for global layers, `rope_local_base_freq` for sliding ones;
    /// `rope_parameters` is keyed by layer type and `rope_scaling` applies to global layers only.
    PerLayerType { full_theta: f64, sliding_theta: f64 },
}

/// Everything that differs between Gemma generations.
#[derive(Debug, PartialEq)]
pub struct FamilySpec {
    /// The family's name in `gemma-onnx.json` (the serde name of [`Family`]).
    pub id: &'static str,
    /// The name in messages: "Gemma 1", "Gemma 2", "Gemma 3".
    pub display: &'static str,
    /// The config classes; the first is the text-only one, named in messages and expected as the
    /// `text_config.model_type` of a multimodal class.
    pub classes: &'static [ModelClass],
    pub defaults: ClassDefaults,
    /// Per-head RMSNorm of q and k before RoPE (`self_attn.q_norm` / `k_norm` tensors).
    pub qk_norm: bool,
    /// Norms around the attention output and the MLP (`pre_feedforward_layernorm`, `post_feedforward_layernorm`;
    /// `post_attention_layernorm` then normalises the attention output instead of the MLP input).
    pub sandwich_norms: bool,
    pub query_scale: QueryScale,
    /// `attn_logit_softcapping` on the scaled attention scores.
    pub attn_softcap: SoftCap,
    /// `final_logit_softcapping` on the logits (never applied by a multimodal class's forward).
    pub final_softcap: SoftCap,
    pub layer_pattern: LayerPattern,
    pub rope: RopeLayout,
    /// Whether GemmaConfig's `hidden_act` is read (when `hidden_activation` is absent), where `"gelu"` means the
    /// tanh approximation; otherwise only `hidden_activation` is read, and must be `gelu_pytorch_tanh`.
    pub legacy_hidden_act: bool,
    /// Fields of other generations that this class ignores, with their owner: refused when set, because they
    /// almost always mean config.json names the wrong generation.
    pub foreign_fields: &'static [(&'static str, &'static str)],
    /// ONNX Runtime GenAI's `model.type` for the text decoder.
    pub genai_model_type: &'static str,
    /// Gemma 3n's decoder (semantics §12): AltUp streams, Laurel blocks, per-layer inputs, KV sharing, Gaussian
    /// top-k sparsity, RMSNorm gains `w` instead of `1 + w`, an unscaled v-norm. Its config fields are read into
    /// [`Gemma3nText`](crate::config::Gemma3nText) and its graphs are built by the exporter's `gemma3n` module.
    pub gemma3n_layers: bool,
}

const OWNER_GEMMA2: &str = "Gemma 2";
const OWNER_GEMMA2_3: &str = "Gemma 2/3";
const OWNER_GEMMA3: &str = "Gemma 3";

/// Gemma 1 (`GemmaConfig`). We require the core sizes: every released config lists them.
const GEMMA: FamilySpec = FamilySpec {
    id: "gemma",
    display: "Gemma 1",
    classes: &[
        ModelClass {
            model_type: "gemma",
            architecture: "GemmaForCausalLM",
            multimodal: false,
            vision: None,
            text_prefix: PREFIX_CAUSAL,
        },
        // PaliGemma 1 and 2: the family is text_config.model_type's (VisionSpec::text_families).
        ModelClass {
            model_type: "paligemma",
            architecture: "PaliGemmaForConditionalGeneration",
            multimodal: true,
            vision: Some(VisionSystem::PaliGemma),
            text_prefix: PREFIX_CONDITIONAL,
        },
    ],
    defaults: ClassDefaults {
        vocab_size: None,
        num_attention_heads: None,
        num_key_value_heads: None,
        head_dim: 256,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 8192,
    },
    qk_norm: false,
    sandwich_norms: false,
    query_scale: QueryScale::HeadDim,
    attn_softcap: SoftCap::Never,
    final_softcap: SoftCap::Never,
    layer_pattern: LayerPattern::AllGlobal,
    rope: RopeLayout::Single { theta: 10_000.0 },
    legacy_hidden_act: true,
    foreign_fields: &[
        ("attn_logit_softcapping", OWNER_GEMMA2),
        ("final_logit_softcapping", OWNER_GEMMA2),
        ("query_pre_attn_scalar", OWNER_GEMMA2_3),
        ("sliding_window", OWNER_GEMMA2_3),
        ("rope_local_base_freq", OWNER_GEMMA3),
        ("sliding_window_pattern", OWNER_GEMMA3),
        ("_sliding_window_pattern", OWNER_GEMMA3),
    ],
    genai_model_type: "gemma",
    gemma3n_layers: false,
};

/// Gemma 2 (`Gemma2Config`): Gemma 1 plus sandwich norms, both soft-caps and alternating sliding layers.
const GEMMA2: FamilySpec = FamilySpec {
    id: "gemma2",
    display: "Gemma 2",
    classes: &[ModelClass {
        model_type: "gemma2",
        architecture: "Gemma2ForCausalLM",
        multimodal: false,
        vision: None,
        text_prefix: PREFIX_CAUSAL,
    }],
    sandwich_norms: true,
    query_scale: QueryScale::PreAttnScalar { default: 256.0 },
    attn_softcap: SoftCap::Default(50.0),
    final_softcap: SoftCap::Default(30.0),
    layer_pattern: LayerPattern::Periodic {
        window: 4096,
        period: 2,
        period_configurable: false,
    },
    legacy_hidden_act: false,
    foreign_fields: &[
        ("rope_local_base_freq", OWNER_GEMMA3),
        ("sliding_window_pattern", OWNER_GEMMA3),
        ("_sliding_window_pattern", OWNER_GEMMA3),
    ],
    genai_model_type: "gemma2",
    ..GEMMA
};

/// Gemma 3 (`Gemma3TextConfig`): Gemma 2 plus QK-norm, a configurable 5:1 pattern and per-layer-type RoPE; no
/// attention soft-cap. The gemma-3-4b config.json relies on the size defaults (semantics §10).
const GEMMA3: FamilySpec = FamilySpec {
    id: "gemma3",
    display: "Gemma 3",
    classes: &[
        ModelClass {
            model_type: "gemma3_text",
            architecture: "Gemma3ForCausalLM",
            multimodal: false,
            vision: None,
            text_prefix: PREFIX_CAUSAL,
        },
        ModelClass {
            model_type: "gemma3",
            architecture: "Gemma3ForConditionalGeneration",
            multimodal: true,
            vision: Some(VisionSystem::Gemma3),
            text_prefix: PREFIX_CONDITIONAL,
        },
        // A Gemma3ForConditionalGeneration under `model.` (see [`SHIELDGEMMA2`]); its names once unwrapped.
        ModelClass {
            model_type: "shieldgemma2",
            architecture: "ShieldGemma2ForImageClassification",
            multimodal: true,
            vision: Some(VisionSystem::Gemma3),
            text_prefix: PREFIX_CONDITIONAL,
        },
    ],
    defaults: ClassDefaults {
        vocab_size: Some(262_208),
        num_attention_heads: Some(8),
        num_key_value_heads: Some(4),
        max_position_embeddings: 131_072,
        ..GEMMA.defaults
    },
    qk_norm: true,
    attn_softcap: SoftCap::Never,
    final_softcap: SoftCap::Optional,
    layer_pattern: LayerPattern::Periodic {
        window: 4096,
        period: 6,
        period_configurable: true,
    },
    rope: RopeLayout::PerLayerType {
        full_theta: 1_000_000.0,
        sliding_theta: 10_000.0,
    },
    foreign_fields: &[],
    genai_model_type: "gemma3_text",
    ..GEMMA2
};

/// A class that wraps another multimodal class of the table and classifies with its logits: the probability of a
/// "Yes" answer against a "No" at the prompt's last position (ShieldGemma 2: `ShieldGemma2ForImageClassification`
/// computes `softmax(logits[:, -1, [yes, no]])`).
#[derive(Debug, PartialEq)]
pub struct ClassifierSpec {
    /// `architectures[0]` of the wrapper class (a [`ModelClass`] of the table, named by its unwrapped tensors).
    pub architecture: &'static str,
    /// Tensor-name prefixes of the wrapped model in checkpoints, tried in order: the first that some tensor has is
    /// removed from every tensor that has it.
    pub checkpoint_prefixes: &'static [&'static str],
    /// `yes_token_index` / `no_token_index` when config.json has none (the model's `getattr` defaults).
    pub yes_token_default: u32,
    pub no_token_default: u32,
}

/// ShieldGemma 2: a Gemma 3 4B vision model. transformers 5.x `save_pretrained` writes its tensors under
/// `model.model.` + the 5.x Gemma3ForConditionalGeneration names; the released checkpoint under `model.` + the 4.x
/// names.
pub const SHIELDGEMMA2: ClassifierSpec = ClassifierSpec {
    architecture: "ShieldGemma2ForImageClassification",
    checkpoint_prefixes: &["model.model.", "model."],
    yes_token_default: 10_784,
    no_token_default: 3771,
};

impl ModelClass {
    /// The classifier spec of this class, if it is a classifier.
    pub fn classifier(&self) -> Option<&'static ClassifierSpec> {
        [&SHIELDGEMMA2]
            .into_iter()
            .find(|c| c.architecture == self.architecture)
    }
}

/// Gemma 3n (`Gemma3nTextConfig`): Gemma 3's layer pattern (4:1 by default) and RoPE, with the pieces of
/// [`FamilySpec::gemma3n_layers`]; unscaled attention and a final soft-cap that every class applies.
const GEMMA3N: FamilySpec = FamilySpec {
    id: "gemma3n",
    display: "Gemma 3n",
    classes: &[
        ModelClass {
            model_type: "gemma3n_text",
            architecture: "Gemma3nForCausalLM",
            multimodal: false,
            vision: None,
            text_prefix: PREFIX_CAUSAL,
        },
        ModelClass {
            model_type: "gemma3n",
            architecture: "Gemma3nForConditionalGeneration",
            multimodal: true,
            // MobileNetV5, not SigLIP: not a vision system of this table (its towers are not exported yet).
            vision: None,
            text_prefix: PREFIX_MODEL_LANGUAGE,
        },
    ],
    defaults: ClassDefaults {
        vocab_size: Some(262_400),
        num_attention_heads: Some(8),
        num_key_value_heads: Some(2),
        max_position_embeddings: 32_768,
        ..GEMMA.defaults
    },
    query_scale: QueryScale::Unit,
    final_softcap: SoftCap::Default(30.0),
    layer_pattern: LayerPattern::Periodic {
        window: 512,
        period: 5,
        period_configurable: false,
    },
    // Google's config.json lists `query_pre_attn_scalar` (256), which Gemma3nTextConfig ignores: not refused.
    foreign_fields: &[("attn_logit_softcapping", OWNER_GEMMA2)],
    genai_model_type: "gemma3n",
    gemma3n_layers: true,
    ..GEMMA3
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_serde_names() {
        for family in Family::ALL {
            let json = serde_json::to_value(family).unwrap();
            assert_eq!(json, family.spec().id);
        }
    }

    #[test]
    fn class_names_are_unique_and_first_class_is_text_only() {
        let classes: Vec<_> = ModelClass::all().collect();
        for (i, (_, a)) in classes.iter().enumerate() {
            for (_, b) in &classes[i + 1..] {
                assert!(a.model_type != b.model_type && a.architecture != b.architecture);
            }
        }
        for family in Family::ALL {
            assert!(!family.spec().classes[0].multimodal, "{family:?}");
        }
    }

    #[test]
    fn classifiers_are_multimodal_classes_of_the_table() {
        let (family, class) = ModelClass::by_architecture(SHIELDGEMMA2.architecture).unwrap();
        assert_eq!(family, Family::Gemma3);
        assert!(class.multimodal && class.classifier() == Some(&SHIELDGEMMA2));
        assert!(Family::Gemma3.spec().classes[1].classifier().is_none());
    }

    #[test]
    fn multimodal_classes_have_a_vision_system_whose_families_list_them() {
        for (family, class) in ModelClass::all() {
            // Gemma 3n's towers are not SigLIP and not exported yet: its multimodal class has no vision system.
            let siglip = class.multimodal && family != Family::Gemma3n;
            assert_eq!(siglip, class.vision.is_some(), "{class:?}");
            if let Some(v) = class.vision {
                assert_eq!(v.spec().text_families[0], family, "{class:?}");
            }
        }
    }
}
