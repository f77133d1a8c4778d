//! Gemma 3n's text-decoder tensor names (semantics §12) beyond the Gemma 1–3 ones of [`super`]: the per-layer
//! embedding and projection, the AltUp (un)embedding projections, and each layer's AltUp, Laurel and per-layer
//! input tensors. Layers that reuse another layer's keys and values have no `k_proj`, `v_proj` or `k_norm`.
//!
//! ```
//! use gemma_models::names::gemma3n;
//! assert_eq!(gemma3n::altup_projection("model.", 0), "model.altup_projections.0.weight");
//! ```

use super::{embed_tokens, final_norm, layer, lm_head, suffix};
use crate::config::TextConfig;

/// The per-layer embedding `[vocab_size_per_layer_input, num_hidden_layers · P]`.
pub fn embed_tokens_per_layer(prefix: &str) -> String {
    format!("{prefix}embed_tokens_per_layer.weight")
}

/// The projection of the token embedding to the per-layer inputs `[num_hidden_layers · P, H]`.
pub fn per_layer_model_projection(prefix: &str) -> String {
    format!("{prefix}per_layer_model_projection.weight")
}

/// The RMSNorm `[P]` of that projection.
pub fn per_layer_projection_norm(prefix: &str) -> String {
    format!("{prefix}per_layer_projection_norm.weight")
}

/// The projection `[H, H]` that makes AltUp stream `i + 1` from the embedding.
pub fn altup_projection(prefix: &str, i: usize) -> String {
    format!("{prefix}altup_projections.{i}.weight")
}

/// The projection `[H, H]` that brings AltUp stream `i + 1` back after the last layer.
pub fn altup_unembed_projection(prefix: &str, i: usize) -> String {
    format!("{prefix}altup_unembed_projections.{i}.weight")
}

/// Gemma 3n's own per-layer suffixes (everything after `layers.{i}.`).
pub mod layer_suffix {
    /// `[H]`, multiplies the corrected active stream (`altup_correct_scale`).
    pub const CORRECT_OUTPUT_SCALE: &str = "altup.correct_output_scale";
    /// `[K, K]`.
    pub const CORRECTION_COEFS: &str = "altup.correction_coefs.weight";
    /// `[K·K, K]`.
    pub const PREDICTION_COEFS: &str = "altup.prediction_coefs.weight";
    /// `[K, H]`.
    pub const MODALITY_ROUTER: &str = "altup.modality_router.weight";
    /// `[H]`.
    pub const ROUTER_NORM: &str = "altup.router_norm.weight";
    /// `[laurel_rank, H]`.
    pub const LAUREL_LEFT: &str = "laurel.linear_left.weight";
    /// `[H, laurel_rank]`.
    pub const LAUREL_RIGHT: &str = "laurel.linear_right.weight";
    /// `[H]`.
    pub const LAUREL_NORM: &str = "laurel.post_laurel_norm.weight";
    /// `[P, H]`.
    pub const PER_LAYER_INPUT_GATE: &str = "per_layer_input_gate.weight";
    /// `[H, P]`.
    pub const PER_LAYER_PROJECTION: &str = "per_layer_projection.weight";
    /// `[H]`.
    pub const POST_PER_LAYER_INPUT_NORM: &str = "post_per_layer_input_norm.weight";
}

/// Every Gemma 3n text tensor the config implies, with its expected shape.
///
/// # Panics
/// When `cfg` is not a Gemma 3n config (`cfg.gemma3n` is `None`).
pub fn text_tensors(cfg: &TextConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    use layer_suffix::*;
    use suffix::*;
    let n3 = cfg.gemma3n.as_ref().expect("a Gemma 3n config");
    let (h, hd, n) = (cfg.hidden_size, cfg.head_dim, cfg.num_hidden_layers);
    let (p, k, r) = (
        n3.hidden_size_per_layer_input,
        n3.altup_num_inputs,
        n3.laurel_rank,
    );
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let mut out = vec![
        (embed_tokens(prefix), vec![cfg.vocab_size, h]),
        (
            embed_tokens_per_layer(prefix),
            vec![n3.vocab_size_per_layer_input, n * p],
        ),
        (per_layer_model_projection(prefix), vec![n * p, h]),
        (per_layer_projection_norm(prefix), vec![p]),
    ];
    for i in 0..k - 1 {
        out.push((altup_projection(prefix, i), vec![h, h]));
        out.push((altup_unembed_projection(prefix, i), vec![h, h]));
    }
    for l in 0..n {
        let i = n3.intermediate_sizes[l];
        let mut shapes: Vec<(&str, Vec<usize>)> = vec![
            (INPUT_LAYERNORM, vec![h]),
            (Q_PROJ, vec![q, h]),
            (Q_NORM, vec![hd]),
            (O_PROJ, vec![h, q]),
            (POST_ATTENTION_LAYERNORM, vec![h]),
            (PRE_FEEDFORWARD_LAYERNORM, vec![h]),
            (GATE_PROJ, vec![i, h]),
            (UP_PROJ, vec![i, h]),
            (DOWN_PROJ, vec![h, i]),
            (POST_FEEDFORWARD_LAYERNORM, vec![h]),
            (CORRECT_OUTPUT_SCALE, vec![h]),
            (CORRECTION_COEFS, vec![k, k]),
            (PREDICTION_COEFS, vec![k * k, k]),
            (MODALITY_ROUTER, vec![k, h]),
            (ROUTER_NORM, vec![h]),
            (LAUREL_LEFT, vec![r, h]),
            (LAUREL_RIGHT, vec![h, r]),
            (LAUREL_NORM, vec![h]),
            (PER_LAYER_INPUT_GATE, vec![p, h]),
            (PER_LAYER_PROJECTION, vec![h, p]),
            (POST_PER_LAYER_INPUT_NORM, vec![h]),
        ];
        if n3.kv_source(&cfg.layer_types, l) == l {
            shapes.extend([
                (K_PROJ, vec![kv, h]),
                (V_PROJ, vec![kv, h]),
                (K_NORM, vec![hd]),
            ]);
        }
        out.extend(
            shapes
                .into_iter()
                .map(|(s, shape)| (layer(prefix, l, s), shape)),
        );
    }
    out.push((final_norm(prefix), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push((lm_head(prefix), vec![cfg.vocab_size, h]));
    }
    out
}
