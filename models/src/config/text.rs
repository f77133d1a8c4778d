//! The text-decoder part of a config: sizes, attention flavour, layer pattern, RoPE, soft-caps (spec §2–§4, §10).
//!
//! Class defaults are applied only where transformers applies them, i.e. when a key is **absent**. Defaults are
//! taken from the spec; a field without a documented default (e.g. `hidden_size`) is required.

use super::fields::{describe, Fields};
use super::{rope, Family, LayerType, TextConfig};
use crate::error::ConfigError;

/// Class defaults that differ between generations. `None` means "no default: the field is required".
struct ClassDefaults {
    vocab_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    max_position_embeddings: usize,
}

impl ClassDefaults {
    fn of(family: Family) -> Self {
        match family {
            // We require the core sizes of Gemma 1 and 2: every released config lists them.
            Family::Gemma | Family::Gemma2 => ClassDefaults {
                vocab_size: None,
                num_attention_heads: None,
                num_key_value_heads: None,
                max_position_embeddings: 8192,
            },
            // The gemma-3-4b config.json relies on these (spec §10).
            Family::Gemma3 => ClassDefaults {
                vocab_size: Some(262_208),
                num_attention_heads: Some(8),
                num_key_value_heads: Some(4),
                max_position_embeddings: 131_072,
            },
        }
    }
}

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

/// Defaults shared by all three classes.
const HEAD_DIM: usize = 256;
const RMS_NORM_EPS: f64 = 1e-6;
/// Gemma 2 and 3 class defaults.
const QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
const SLIDING_WINDOW: usize = 4096;
const SLIDING_WINDOW_PATTERN: usize = 6;
/// Gemma 2 class defaults of the soft-caps.
const GEMMA2_ATTN_SOFTCAP: f64 = 50.0;
const GEMMA2_FINAL_SOFTCAP: f64 = 30.0;

/// Parses the text decoder's config.
///
/// * `t`: the object holding the text fields (`text_config` for Gemma3ForConditionalGeneration, else the top level).
/// * `top`: the top-level object (for `tie_word_embeddings`, which multimodal configs keep at the top).
/// * `conditional`: whether the model is Gemma3ForConditionalGeneration, whose forward never soft-caps the logits.
pub(super) fn parse(
    t: &Fields<'_>,
    top: &Fields<'_>,
    family: Family,
    conditional: bool,
) -> Result<TextConfig, ConfigError> {
    let defaults = ClassDefaults::of(family);

    let vocab_size = t.bounded("vocab_size", defaults.vocab_size, limits::VOCAB)?;
    let hidden_size = t.bounded("hidden_size", None, limits::HIDDEN)?;
    let intermediate_size = t.bounded("intermediate_size", None, limits::INTERMEDIATE)?;
    let num_hidden_layers = t.bounded("num_hidden_layers", None, limits::LAYERS)?;
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
    // Never derived as hidden_size / heads: that is wrong for gemma-7b and every Gemma 2/3 size (spec §0).
    let head_dim = t.bounded("head_dim", Some(HEAD_DIM), limits::HEAD_DIM)?;
    let max_position_embeddings = t.bounded(
        "max_position_embeddings",
        Some(defaults.max_position_embeddings),
        limits::POSITIONS,
    )?;
    let rms_norm_eps = t.positive_f64("rms_norm_eps", Some(RMS_NORM_EPS))?;

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

    check_activation(t, family)?;
    check_family_fields(t, family)?;

    let (query_pre_attn_scalar, sliding_window) = match family {
        // Gemma 1 scales scores by head_dim^-0.5 and has no sliding window.
        Family::Gemma => (head_dim as f64, None),
        Family::Gemma2 | Family::Gemma3 => (
            t.positive_f64("query_pre_attn_scalar", Some(QUERY_PRE_ATTN_SCALAR))?,
            Some(t.bounded("sliding_window", Some(SLIDING_WINDOW), limits::POSITIONS)?),
        ),
    };

    let (attn_logit_softcapping, final_logit_softcapping) = match family {
        Family::Gemma => (None, None),
        // Absent → class default; explicit null → off (the model checks `is not None`).
        Family::Gemma2 => (
            t.nullable_positive_f64("attn_logit_softcapping")?
                .unwrap_or(Some(GEMMA2_ATTN_SOFTCAP)),
            t.nullable_positive_f64("final_logit_softcapping")?
                .unwrap_or(Some(GEMMA2_FINAL_SOFTCAP)),
        ),
        // Gemma3Attention never passes a soft-cap; Gemma3ForConditionalGeneration never caps the logits (spec §4.1).
        Family::Gemma3 if conditional => (None, None),
        Family::Gemma3 => (
            None,
            t.nullable_positive_f64("final_logit_softcapping")?
                .flatten(),
        ),
    };

    let layer_types = layer_types(t, family, num_hidden_layers)?;
    let (rope_full, rope_sliding) = rope::resolve(t, family)?;

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
    })
}

/// The attention type of each layer: explicit `layer_types`, else the generation's rule (spec §3.2, §4.2).
fn layer_types(t: &Fields<'_>, family: Family, n: usize) -> Result<Vec<LayerType>, ConfigError> {
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
                Some(LayerType::Sliding) if family == Family::Gemma => {
                    return Err(t.invalid(
                        &key,
                        "\"full_attention\" (Gemma 1 has no sliding-window layers)",
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

    let rule: Box<dyn Fn(usize) -> bool> = match family {
        Family::Gemma => Box::new(|_| false),
        // Gemma2Config: sliding if (i + 1) % 2, i.e. even layers are local.
        Family::Gemma2 => Box::new(|i| i % 2 == 0),
        // Gemma3TextConfig: sliding if (i + 1) % P; 4.x wrote the pattern under either name.
        Family::Gemma3 => {
            let key = if t.has("sliding_window_pattern") {
                "sliding_window_pattern"
            } else {
                "_sliding_window_pattern"
            };
            let pattern = t.positive(key, Some(SLIDING_WINDOW_PATTERN))?;
            Box::new(move |i| (i + 1) % pattern != 0)
        }
    };
    Ok((0..n)
        .map(|i| {
            if rule(i) {
                LayerType::Sliding
            } else {
                LayerType::Full
            }
        })
        .collect())
}

/// Accepts only the tanh-approximated GELU, the activation of every Gemma (spec §1.5).
///
/// Gemma 1 configs say `"hidden_act": "gelu"`, which `GemmaConfig` rewrites to `gelu_pytorch_tanh`, so "gelu" is
/// accepted there. In Gemma 2/3 `hidden_activation` is used as given, and "gelu" would be the exact erf GELU, which
/// no released model uses, so it is refused rather than silently approximated.
fn check_activation(t: &Fields<'_>, family: Family) -> Result<(), ConfigError> {
    const TANH: &str = "gelu_pytorch_tanh";
    let (key, allowed): (&str, &[&str]) = match family {
        Family::Gemma if t.value("hidden_activation").is_none() => ("hidden_act", &["gelu", TANH]),
        _ => ("hidden_activation", &[TANH]),
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

/// Refuses fields that would make our graph differ from what the config asks for (spec §1.4, §2–§4).
///
/// * `use_bidirectional_attention: true` (EmbeddingGemma-style encoders) and `attention_bias: true` change every
///   layer, and no released Gemma decoder sets them.
/// * A field of another generation (a Gemma 2 soft-cap in a `"gemma"` config, Gemma 3's `rope_local_base_freq` in a
///   `"gemma2"` one...) is ignored by transformers' class for this `model_type`, so the model would run without it:
///   almost always a config whose `model_type` / `architectures` name the wrong generation. Absent or `null` is fine.
fn check_family_fields(t: &Fields<'_>, family: Family) -> Result<(), ConfigError> {
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
        if let Some(v) = t.value(key) {
            if v.as_bool() != Some(false) {
                return Err(t.invalid(key, expected, describe(v)));
            }
        }
    }

    const GEMMA2: &str = "Gemma 2";
    const GEMMA2_3: &str = "Gemma 2/3";
    const GEMMA3: &str = "Gemma 3";
    let (model_type, class, foreign): (&str, &str, &[(&str, &str)]) = match family {
        Family::Gemma => (
            "gemma",
            "GemmaForCausalLM",
            &[
                ("attn_logit_softcapping", GEMMA2),
                ("final_logit_softcapping", GEMMA2),
                ("query_pre_attn_scalar", GEMMA2_3),
                ("sliding_window", GEMMA2_3),
                ("rope_local_base_freq", GEMMA3),
                ("sliding_window_pattern", GEMMA3),
                ("_sliding_window_pattern", GEMMA3),
            ],
        ),
        Family::Gemma2 => (
            "gemma2",
            "Gemma2ForCausalLM",
            &[
                ("rope_local_base_freq", GEMMA3),
                ("sliding_window_pattern", GEMMA3),
                ("_sliding_window_pattern", GEMMA3),
            ],
        ),
        Family::Gemma3 => return Ok(()),
    };
    for (key, owner) in foreign {
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
