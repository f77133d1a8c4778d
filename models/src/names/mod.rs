//! Safetensors tensor names: the text decoder's here (semantics §2.2, §3.4, §4.5, §5.1), the vision tower's and
//! the projector's in [`vision`] (semantics §5.1).
//!
//! Every text name is `prefix + rest`, where the prefix is [`ModelConfig::text_prefix`](crate::ModelConfig):
//! `"model."` for the *ForCausalLM classes and `"language_model.model."` for Gemma3ForConditionalGeneration (the
//! [`ModelClass::text_prefix`](crate::family::ModelClass::text_prefix) of the family table). Which per-layer
//! tensors a generation has follows from its [`FamilySpec`](crate::family::FamilySpec) ([`layer_suffixes`]).
//!
//! ```
//! use gemma_models::names::{self, suffix};
//! assert_eq!(names::layer("model.", 3, suffix::Q_PROJ), "model.layers.3.self_attn.q_proj.weight");
//! assert_eq!(names::embed_tokens("language_model.model."), "language_model.model.embed_tokens.weight");
//! ```

pub mod gemma3n;
pub mod gemma3n_audio;
pub mod gemma3n_vision;
pub mod vision;

use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, TextConfig};
use crate::error::CheckpointError;
use crate::family::Family;

pub use crate::family::{PREFIX_CAUSAL, PREFIX_CONDITIONAL, PREFIX_MODEL_LANGUAGE};
/// Every text prefix we know of, including transformers 5.x's in-memory naming (`model.language_model.`, also
/// Gemma 3n's saved one), in the order [`detect_text_prefix`] tries them.
pub const TEXT_PREFIXES: [&str; 3] = [PREFIX_CAUSAL, PREFIX_CONDITIONAL, PREFIX_MODEL_LANGUAGE];

/// The token embedding `[vocab_size, hidden_size]`, also the LM head when tied.
pub fn embed_tokens(prefix: &str) -> String {
    format!("{prefix}embed_tokens.weight")
}

/// The final RMSNorm weight `[hidden_size]`.
pub fn final_norm(prefix: &str) -> String {
    format!("{prefix}norm.weight")
}

/// A per-layer tensor, e.g. `layer("model.", 3, suffix::Q_PROJ)`.
pub fn layer(prefix: &str, index: usize, suffix: &str) -> String {
    format!("{prefix}layers.{index}.{suffix}")
}

/// The untied LM head `[vocab_size, hidden_size]` (only when `tie_word_embeddings` is false; Google's checkpoints
/// have none): `lm_head.weight`, or `language_model.lm_head.weight` next to `language_model.model.`.
pub fn lm_head(prefix: &str) -> String {
    match prefix {
        PREFIX_CONDITIONAL => "language_model.lm_head.weight".to_string(),
        _ => "lm_head.weight".to_string(),
    }
}

/// Per-layer name suffixes (everything after `layers.{i}.`).
pub mod suffix {
    pub const Q_PROJ: &str = "self_attn.q_proj.weight";
    pub const K_PROJ: &str = "self_attn.k_proj.weight";
    pub const V_PROJ: &str = "self_attn.v_proj.weight";
    pub const O_PROJ: &str = "self_attn.o_proj.weight";
    /// Gemma 3 QK-norm weights `[head_dim]`, applied per head before RoPE.
    pub const Q_NORM: &str = "self_attn.q_norm.weight";
    pub const K_NORM: &str = "self_attn.k_norm.weight";
    /// Pre-attention norm (all generations).
    pub const INPUT_LAYERNORM: &str = "input_layernorm.weight";
    /// Gemma 1: the **pre-MLP** norm. Gemma 2/3: the norm of the attention **output**.
    pub const POST_ATTENTION_LAYERNORM: &str = "post_attention_layernorm.weight";
    /// Gemma 2/3: the pre-MLP norm.
    pub const PRE_FEEDFORWARD_LAYERNORM: &str = "pre_feedforward_layernorm.weight";
    /// Gemma 2/3: the norm of the MLP output.
    pub const POST_FEEDFORWARD_LAYERNORM: &str = "post_feedforward_layernorm.weight";
    pub const GATE_PROJ: &str = "mlp.gate_proj.weight";
    pub const UP_PROJ: &str = "mlp.up_proj.weight";
    pub const DOWN_PROJ: &str = "mlp.down_proj.weight";
}

/// Every per-layer suffix of Gemma 1–3, in the order [`layer_suffixes`] lists them.
const ALL_LAYER_SUFFIXES: [&str; 13] = {
    use suffix::*;
    [
        INPUT_LAYERNORM,
        Q_PROJ,
        K_PROJ,
        V_PROJ,
        O_PROJ,
        Q_NORM,
        K_NORM,
        POST_ATTENTION_LAYERNORM,
        PRE_FEEDFORWARD_LAYERNORM,
        GATE_PROJ,
        UP_PROJ,
        DOWN_PROJ,
        POST_FEEDFORWARD_LAYERNORM,
    ]
};

/// The per-layer tensor suffixes of a generation, in a fixed order: the QK-norm weights only with
/// [`qk_norm`](crate::family::FamilySpec::qk_norm), the pre/post-feedforward norms only with
/// [`sandwich_norms`](crate::family::FamilySpec::sandwich_norms).
pub fn layer_suffixes(family: Family) -> Vec<&'static str> {
    use suffix::*;
    let spec = family.spec();
    ALL_LAYER_SUFFIXES
        .into_iter()
        .filter(|s| match *s {
            Q_NORM | K_NORM => spec.qk_norm,
            PRE_FEEDFORWARD_LAYERNORM | POST_FEEDFORWARD_LAYERNORM => spec.sandwich_norms,
            _ => true,
        })
        .collect()
}

/// The expected shape of a per-layer tensor (`nn.Linear` weights are `[out, in]`), or `None` for an unknown suffix.
pub fn layer_tensor_shape(cfg: &TextConfig, suffix: &str) -> Option<Vec<usize>> {
    use suffix::*;
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    Some(match suffix {
        Q_PROJ => vec![q, h],
        K_PROJ | V_PROJ => vec![kv, h],
        O_PROJ => vec![h, q],
        Q_NORM | K_NORM => vec![hd],
        INPUT_LAYERNORM
        | POST_ATTENTION_LAYERNORM
        | PRE_FEEDFORWARD_LAYERNORM
        | POST_FEEDFORWARD_LAYERNORM => vec![h],
        GATE_PROJ | UP_PROJ => vec![i, h],
        DOWN_PROJ => vec![h, i],
        _ => return None,
    })
}

/// Every text-decoder tensor the config implies, with its expected shape: embeddings, all layers, final norm, and
/// the LM head when untied (Gemma 3n's: [`gemma3n::text_tensors`]).
pub fn text_tensors(cfg: &TextConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    if cfg.gemma3n.is_some() {
        return gemma3n::text_tensors(cfg, prefix);
    }
    let mut out = vec![(embed_tokens(prefix), vec![cfg.vocab_size, cfg.hidden_size])];
    for index in 0..cfg.num_hidden_layers {
        for suffix in layer_suffixes(cfg.family) {
            let shape =
                layer_tensor_shape(cfg, suffix).expect("layer_suffixes only lists known suffixes");
            out.push((layer(prefix, index, suffix), shape));
        }
    }
    out.push((final_norm(prefix), vec![cfg.hidden_size]));
    if !cfg.tie_word_embeddings {
        out.push((lm_head(prefix), vec![cfg.vocab_size, cfg.hidden_size]));
    }
    out
}

/// The text prefix a checkpoint actually uses: `preferred` (normally the config's `text_prefix`) if its
/// `embed_tokens` is present, else the first of [`TEXT_PREFIXES`] that has it, else `None`.
pub fn detect_text_prefix(checkpoint: &Checkpoint, preferred: &str) -> Option<String> {
    std::iter::once(preferred)
        .chain(TEXT_PREFIXES)
        .find(|prefix| checkpoint.contains(&embed_tokens(prefix)))
        .map(str::to_string)
}

/// Fails when the checkpoint has decoder-layer tensors the config's generation does not use, or layers past
/// `num_hidden_layers`. transformers would load such a checkpoint with an "unexpected keys" warning and run without
/// those weights; we refuse, because it almost always means config.json names the wrong generation (a Gemma 3
/// checkpoint with `"model_type": "gemma2"`, say). Only the known per-layer suffixes of Gemma 1–3 are judged, so
/// unrelated extra tensors (vision tower, buffers) are left alone.
pub fn check_layer_tensors(
    cfg: &ModelConfig,
    checkpoint: &Checkpoint,
) -> Result<(), CheckpointError> {
    let text = &cfg.text;
    let prefix =
        detect_text_prefix(checkpoint, &cfg.text_prefix).unwrap_or_else(|| cfg.text_prefix.clone());
    let layers = format!("{prefix}layers.");
    let own = layer_suffixes(text.family);
    let mut names: Vec<&str> = checkpoint.names();
    names.sort_unstable();
    for name in names {
        let Some((index, suffix)) = name
            .strip_prefix(&layers)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, s)| Some((i.parse::<usize>().ok()?, s)))
        else {
            continue;
        };
        if layer_tensor_shape(text, suffix).is_none() {
            continue;
        }
        let mismatch =
            |why: String, field: &str, value: String| CheckpointError::TensorNotInConfig {
                dir: checkpoint.dir().to_path_buf(),
                tensor: name.to_string(),
                why,
                field: field.to_string(),
                value,
            };
        if !own.contains(&suffix) {
            let why = match suffix {
                suffix::Q_NORM | suffix::K_NORM => "QK-norm weights exist only in Gemma 3",
                _ => "pre/post-feedforward (sandwich) norms exist only in Gemma 2 and 3",
            };
            return Err(mismatch(
                why.to_string(),
                "model_type",
                format!("{:?}", cfg.model_type),
            ));
        }
        if index >= text.num_hidden_layers {
            return Err(mismatch(
                format!("layer {index} is past the last layer"),
                "num_hidden_layers",
                text.num_hidden_layers.to_string(),
            ));
        }
    }
    Ok(())
}
