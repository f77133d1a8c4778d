//! The text-decoder part of a config: sizes, attention flavour, layer pattern, RoPE, soft-caps
//! (semantics §2–§4, §10).
//!
//! Class defaults are applied only where transformers applies them, i.e. when a key is **absent**. Defaults and
//! the fields each generation has come from its [`FamilySpec`]; a field without a class default (e.g.
//! `hidden_size`) is required.

use super::fields::{describe, Fields};
use super::{gemma3n, rope, Family, LayerType, TextConfig};
use crate::error::ConfigError;
use crate::family::{FamilySpec, LayerPattern, QueryScale, SoftCap, VisionSpec};

/// Sanity limits on the sizes, checked before anything is allocated from them. Each is far above every released
/// Gemma (the largest: 62 layers, hidden 5376, intermediate 21504, 32 heads, head_dim 256, vocab 262208, 131072
/// positions) and low enough that tables sized from them (the layer list, RoPE caches) stay small.
pub mod limits {
    pub const LAYERS: usize = 1024;
    pub const HIDDEN: usize = 65_536;
    pub const INTERMEDIATE: usize = 1 << 20;
    pub const HEADS: usize = 1024;
    pub const HEAD_DIM: usize = 4096;
    pub const VOCAB: usize = 1 << 22;
    /// `max_position_embeddings` and `sliding_window`.
    pub const POSITIONS: usize = 1 << 22;
}

/// Parses the text decoder's config.
///
/// * `t`: the object holding the text fields (`text_config` for Gemma3ForConditionalGeneration, else the top level).
/// * `top`: the top-level object (for `tie_word_embeddings`, which multimodal configs keep at the top).
/// * `system`: the image system of a multimodal class (`None` for text-only ones): whether its forward applies the
///   final soft-cap, and whether its config may set `use_bidirectional_attention` (PaliGemma's prefix-LM).
pub(super) fn parse(
    t: &Fields<'_>,
    top: &Fields<'_>,
    family: Family,
    system: Option<&VisionSpec>,
) -> Result<TextConfig, ConfigError> {
    let spec = family.spec();
    let defaults = &spec.defaults;

    let vocab_size = t.bounded("vocab_size", defaults.vocab_size, limits::VOCAB)?;
    let hidden_size = t.bounded("hidden_size", None, limits::HIDDEN)?;
    let num_hidden_layers = t.bounded("num_hidden_layers", None, limits::LAYERS)?;
    // Gemma 3n: one width per layer (or one for all); the others: one number.
    let (intermediate_size, per_layer_intermediate) = if spec.gemma3n_layers {
        gemma3n::intermediate_sizes(t, num_hidden_layers)?
    } else {
        let i = t.bounded("intermediate_size", None, limits::INTERMEDIATE)?;
        (i, Vec::new())
    };
    let num_attention_heads = t.bounded(
        "num_attention_heads",
        defaults.num_attention_heads,
        limits::HEADS,
    )?;
    let num_key_value_heads = t.bounded(
        "num_key_value_heads",
        defaults.num_key_value_heads,
        limits::HEADS,
    )?;
    // Never derived as hidden_size / heads: that is wrong for gemma-7b and every Gemma 2/3 size (semantics §0).
    let head_dim = t.bounded("head_dim", Some(defaults.head_dim), limits::HEAD_DIM)?;
    let max_position_embeddings = t.bounded(
        "max_position_embeddings",
        Some(defaults.max_position_embeddings),
        limits::POSITIONS,
    )?;
    let rms_norm_eps = t.positive_f64("rms_norm_eps", Some(defaults.rms_norm_eps))?;

    if num_attention_heads % num_key_value_heads != 0 {
        return Err(t.invalid(
            "num_key_value_heads",
            format!("a divisor of num_attention_heads ({num_attention_heads})"),
            num_key_value_heads.to_string(),
        ));
    }
    if head_dim % 2 != 0 {
        return Err(t.invalid(
            "head_dim",
            "an even number (RoPE rotates pairs of dimensions)",
            head_dim.to_string(),
        ));
    }

    check_activation(t, spec)?;
    check_family_fields(t, spec, system.is_some_and(|v| v.prefix_lm))?;

    let query_pre_attn_scalar = match spec.query_scale {
        QueryScale::HeadDim => head_dim as f64,
        QueryScale::Unit => 1.0,
        QueryScale::PreAttnScalar { default } => {
            t.positive_f64("query_pre_attn_scalar", Some(default))?
        }
    };
    let sliding_window = match spec.layer_pattern {
        LayerPattern::AllGlobal => None,
        LayerPattern::Periodic { window, .. } => {
            Some(t.bounded("sliding_window", Some(window), limits::POSITIONS)?)
        }
    };

    let attn_logit_softcapping = soft_cap(t, "attn_logit_softcapping", &spec.attn_softcap)?;
    // Gemma3ForConditionalGeneration's forward never caps the logits, whatever the config says (semantics §4.1);
    // PaliGemma's and Gemma3nForConditionalGeneration's do.
    let final_logit_softcapping = if system.is_some_and(|v| !v.final_softcap) {
        None
    } else {
        soft_cap(t, "final_logit_softcapping", &spec.final_softcap)?
    };

    let layer_types = layer_types(t, spec, num_hidden_layers)?;
    let (rope_full, rope_sliding) = rope::resolve(t, &spec.rope)?;
    let gemma3n = match spec.gemma3n_layers {
        true => Some(gemma3n::parse(t, &layer_types, per_layer_intermediate)?),
        false => None,
    };

    // Multimodal configs keep tie_word_embeddings at the top level; fall back to the text object, then the default.
    let tie_word_embeddings = match top.bool("tie_word_embeddings")? {
        Some(b) => b,
        None => t.bool("tie_word_embeddings")?.unwrap_or(true),
    };

    Ok(TextConfig {
        family,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        query_pre_attn_scalar,
        rms_norm_eps,
        sliding_window,
        layer_types,
        rope_full,
        rope_sliding,
        attn_logit_softcapping,
        final_logit_softcapping,
        max_position_embeddings,
        tie_word_embeddings,
        gemma3n,
    })
}

/// A soft-cap field as the class reads it (`None`: off).
fn soft_cap(t: &Fields<'_>, key: &str, cap: &SoftCap) -> Result<Option<f64>, ConfigError> {
    Ok(match cap {
        SoftCap::Never => None,
        SoftCap::Default(c) => t.nullable_positive_f64(key)?.unwrap_or(Some(*c)),
        SoftCap::Optional => t.nullable_positive_f64(key)?.flatten(),
    })
}

/// The attention type of each layer: explicit `layer_types`, else the generation's [`LayerPattern`]
/// (semantics §3.2, §4.2).
fn layer_types(t: &Fields<'_>, spec: &FamilySpec, n: usize) -> Result<Vec<LayerType>, ConfigError> {
    const KEY: &str = "layer_types";
    if let Some(v) = t.value(KEY) {
        let Some(items) = v.as_array() else {
            return Err(t.invalid(
                KEY,
                "a list of \"sliding_attention\" / \"full_attention\"",
                describe(v),
            ));
        };
        if items.len() != n {
            return Err(t.invalid(
                KEY,
                format!("{n} entries (one per layer, num_hidden_layers = {n})"),
                format!("{} entries", items.len()),
            ));
        }
        let mut types = Vec::with_capacity(n);
        for (i, item) in items.iter().enumerate() {
            let key = format!("{KEY}[{i}]");
            let parsed = item.as_str().and_then(LayerType::from_name);
            match parsed {
                Some(LayerType::Sliding) if spec.layer_pattern == LayerPattern::AllGlobal => {
                    return Err(t.invalid(
                        &key,
                        format!(
                            "\"full_attention\" ({} has no sliding-window layers)",
                            spec.display
                        ),
                        describe(item),
                    ));
                }
                Some(lt) => types.push(lt),
                None => {
                    return Err(t.invalid(
                        &key,
                        "\"sliding_attention\" or \"full_attention\"",
                        describe(item),
                    ))
                }
            }
        }
        return Ok(types);
    }

    // Layer i slides when (i + 1) % period != 0; Gemma3TextConfig reads the period from either 4.x name.
    let period = match spec.layer_pattern {
        LayerPattern::AllGlobal => None,
        LayerPattern::Periodic {
            period,
            period_configurable: false,
            ..
        } => Some(period),
        LayerPattern::Periodic { period, .. } => {
            let key = if t.has("sliding_window_pattern") {
                "sliding_window_pattern"
            } else {
                "_sliding_window_pattern"
            };
            Some(t.positive(key, Some(period))?)
        }
    };
    Ok((0..n)
        .map(|i| match period {
            Some(p) if (i + 1) % p != 0 => LayerType::Sliding,
            _ => LayerType::Full,
        })
        .collect())
}

/// Accepts only the tanh-approximated GELU, the activation of every Gemma (semantics §1.5).
///
/// Gemma 1 configs say `"hidden_act": "gelu"`, which `GemmaConfig` rewrites to `gelu_pytorch_tanh`, so "gelu" is
/// accepted there. In Gemma 2/3 `hidden_activation` is used as given, and "gelu" would be the exact erf GELU, which
/// no released model uses, so it is refused rather than silently approximated.
fn check_activation(t: &Fields<'_>, spec: &FamilySpec) -> Result<(), ConfigError> {
    const TANH: &str = "gelu_pytorch_tanh";
    let (key, allowed): (&str, &[&str]) =
        if spec.legacy_hidden_act && t.value("hidden_activation").is_none() {
            ("hidden_act", &["gelu", TANH])
        } else {
            ("hidden_activation", &[TANH])
        };
    match t.value(key) {
        None => Ok(()),
        Some(v) => match v.as_str() {
            Some(name) if allowed.contains(&name) => Ok(()),
            _ => Err(ConfigError::UnsupportedActivation {
                path: t.origin().to_path_buf(),
                field: t.path_of(key),
                found: v.as_str().map_or_else(|| describe(v), str::to_string),
                supported: allowed.join(", "),
            }),
        },
    }
}

/// Refuses fields that would make our graph differ from what the config asks for (semantics §1.4, §2–§4).
///
/// * `use_bidirectional_attention: true` (EmbeddingGemma-style encoders) and `attention_bias: true` change every
///   layer, and no released Gemma decoder sets them.
/// * A field of another generation (a Gemma 2 soft-cap in a `"gemma"` config, Gemma 3's `rope_local_base_freq` in a
///   `"gemma2"` one...) is ignored by transformers' class for this `model_type`, so the model would run without it:
///   almost always a config whose `model_type` / `architectures` name the wrong generation. Absent or `null` is fine.
///
/// `prefix_lm`: PaliGemmaConfig sets `use_bidirectional_attention: true` on its text config; the class's own mask
/// (semantics §8.3) decides the attention there, so the field is accepted.
fn check_family_fields(
    t: &Fields<'_>,
    spec: &FamilySpec,
    prefix_lm: bool,
) -> Result<(), ConfigError> {
    for (key, expected) in [
        (
            "use_bidirectional_attention",
            "false or null (bidirectional attention, as in EmbeddingGemma, is not supported)",
        ),
        (
            "attention_bias",
            "false or null (Gemma's attention projections have no bias)",
        ),
    ] {
        if prefix_lm && key == "use_bidirectional_attention" {
            continue;
        }
        if let Some(v) = t.value(key) {
            if v.as_bool() != Some(false) {
                return Err(t.invalid(key, expected, describe(v)));
            }
        }
    }

    // Named after the family's text-only class, the one whose fields the table lists.
    let (model_type, class) = (spec.classes[0].model_type, spec.classes[0].architecture);
    for (key, owner) in spec.foreign_fields {
        if let Some(v) = t.value(key) {
            return Err(t.invalid(
                key,
                format!(
                    "no such field for model_type {model_type:?}: it is a {owner} field that {class} ignores, so \
                     config.json probably names the wrong Gemma generation (fix `model_type` / `architectures`, or \
                     remove the field)"
                ),
                describe(v),
            ));
        }
    }
    Ok(())
}
