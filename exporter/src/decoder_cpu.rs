//! The CPU-optimized text decoder graph (`gemma-export --graph cpu`, the default). Same maths as
//! [`crate::decoder`] (semantics §1–§4, float32 activations), built for ONNX Runtime's CPU provider:
//!
//! - **KV cache updated in place.** Each layer's `past_key_values.{i}.key|value` is a preallocated buffer
//!   `[batch, kv_heads, capacity, head_dim]` that the runtime binds (I/O binding) as both the input and the matching
//!   `present.{i}.key|value` output. ONNX Runtime's contrib `GroupQueryAttention` sees the same pointer and writes the
//!   new keys/values into it (`past_present_share_buffer`), so no step copies the cache.
//! - **Window-bounded cache on sliding layers.** Sliding layers run `GroupQueryAttention` with
//!   `local_window_size = W` and `sliding_window_cache = 1`: their buffer holds `capacity ≥ W` rows and the op evicts
//!   old positions itself (ORT 1.31 contract: rows `[0, L)` hold the most recent `L` positions, `L` a function of the
//!   absolute length only). Memory then grows only with the global layers. ORT 1.31's window is exactly the spec's
//!   `i − W < j ≤ i` (W keys including the query; checked against a float64 reference, and by the parity tests).
//! - **Logits only where asked.** The one-element int64 input `num_logits_to_keep` (shape `[]` or `[1]`) keeps the
//!   last K positions before the final norm and the lm_head (1 in generation; 0 keeps all, for perplexity and
//!   parity tests).
//! - **Fused ops.** `SimplifiedLayerNormalization` / `SkipSimplifiedLayerNormalization` (residual add + RMSNorm in
//!   one kernel, gain `1 + w` folded in fp32), contrib `RotaryEmbedding`, and ORT's own MatMul prepacking.
//!
//! Inputs: `input_ids` i64 `[B, S]`, `attention_mask` i64 `[B, T]` (T = past + S; 0 marks left padding),
//! `position_ids` i64 `[B, S]`, `num_logits_to_keep` i64 `[]` or `[1]`, and the KV buffers. `seqlens_k` (T − 1 per row) and
//! `total_sequence_length` (T) for `GroupQueryAttention` are derived from the shape of `attention_mask`; the mask
//! itself becomes an additive `attention_bias` (0 or f32::MIN per key), which is how left padding works (every row
//! then has the same T, the padded keys are masked). RoPE is applied outside the attention op from `position_ids`
//! (so left-padded rows get their own positions): cos/sin of exactly this chunk's positions are computed in the
//! graph in fp32 like transformers, and `RotaryEmbedding` indexes them with `0 .. B·S`.
//!
//! `GroupQueryAttention` restriction (ORT 1.31): a step with past context and `S > 1` needs batch 1. The runtime
//! therefore prefills a batch in one step and then decodes one token per step.

use crate::builder::{Attr, Dim, GraphBuilder, Value};
use crate::layers::{inv_freq, Ctx, Kernels, MASK_MIN};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::{names, Checkpoint, LayerType, ModelConfig, TextConfig};

/// ONNX Runtime's contrib operator domain.
pub const MS_DOMAIN: &str = "com.microsoft";
/// The one-element int64 input (`[]` or `[1]`) choosing how many trailing positions get logits (0 = all).
pub use crate::decoder::LOGITS_TO_KEEP;
/// Symbolic capacities of the global layers' KV buffers and of the sliding layers' ones (at least the window).
pub use gemma_models::contract::io::{GLOBAL_CACHE_DIM, SLIDING_CACHE_DIM};

mod blocks;

/// Values shared by every layer: derived lengths, the attention bias and the RoPE tables.
struct Shared {
    batch_seq: Value,
    seqlens_k: Value,
    total_len: Value,
    bias: Value,
    rope_ids: Value,
    global_rope: Option<(Value, Value)>,
    local_rope: Option<(Value, Value)>,
}

/// Builds the CPU decoder graph on `input_ids`, streaming its weights through `w`.
pub fn build(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    kernels: Kernels,
) -> Result<(), ExportError> {
    let t: &TextConfig = &cfg.text;
    let p = cfg.text_prefix.as_str();
    let (h, hd, nkv) = (t.hidden_size, t.head_dim, t.num_key_value_heads);
    if t.layer_types.contains(&LayerType::Sliding) && t.sliding_window.is_none() {
        return Err(ExportError::Unsupported(
            "sliding layers without a sliding_window in config.json".into(),
        ));
    }

    let input_ids = g.input(
        "input_ids",
        DataType::Int64,
        &["batch_size".into(), "sequence_length".into()],
    );
    let attention_mask = g.input(
        "attention_mask",
        DataType::Int64,
        &["batch_size".into(), "total_sequence_length".into()],
    );
    let position_ids = g.input(
        "position_ids",
        DataType::Int64,
        &["batch_size".into(), "sequence_length".into()],
    );
    let keep = g.input_any_rank(LOGITS_TO_KEEP, DataType::Int64);
    let mut past = Vec::new();
    for (l, ty) in t.layer_types.iter().enumerate() {
        let dims = kv_dims(*ty, nkv, hd);
        let k = g.input(&format!("past_key_values.{l}.key"), DataType::Float, &dims);
        let v = g.input(
            &format!("past_key_values.{l}.value"),
            DataType::Float,
            &dims,
        );
        past.push((k, v));
    }

    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels,
    };

    cx.g.set_scope("/model");
    let shared = shared_values(cx.g, t, &input_ids, &attention_mask, &position_ids);

    // Scaled embedding (semantics §1.1) as the [N, H] residual stream.
    cx.g.set_scope("/model/embed_tokens");
    let embed_name = names::embed_tokens(p);
    let emb = cx.scaled_embedding(&input_ids, &embed_name, h)?;
    let x0 = cx.flatten_rows(&emb, h);

    let eps = t.rms_norm_eps;
    // The residual stream is carried as (x, pending): the next norm adds `pending` to `x` itself
    // (SkipSimplifiedLayerNormalization), so no residual Add is a separate kernel.
    let mut x = x0;
    let mut pending: Option<Value> = None;
    let mut presents = Vec::new();
    for (l, (past_k, past_v)) in past.iter().enumerate() {
        cx.g.set_scope(format!("/model/layers.{l}"));
        let n = |s: &str| names::layer(p, l, s);
        let normed = match pending.take() {
            None => cx.rms_norm(&x, &n("input_layernorm.weight"), eps)?,
            Some(skip) => {
                let (normed, sum) =
                    cx.skip_rms_norm(&x, &skip, &n("input_layernorm.weight"), eps)?;
                x = sum;
                normed
            }
        };
        let (attn, pk, pv) = cx.gqa_attention(&normed, t, l, &n, &shared, past_k, past_v)?;
        presents.push((pk, pv));
        let (gate, up, down) = (
            n("mlp.gate_proj.weight"),
            n("mlp.up_proj.weight"),
            n("mlp.down_proj.weight"),
        );
        if t.has_sandwich_norms() {
            // Gemma 2/3 (semantics §3.1): x1 = x + norm(attn); x2 = x1 + norm(mlp(norm(x1))).
            let a = cx.rms_norm(&attn, &n("post_attention_layernorm.weight"), eps)?;
            let (m, x1) = cx.skip_rms_norm(&x, &a, &n("pre_feedforward_layernorm.weight"), eps)?;
            let m = cx.geglu_mlp(&m, &gate, &up, &down)?;
            let m = cx.rms_norm(&m, &n("post_feedforward_layernorm.weight"), eps)?;
            x = x1;
            pending = Some(m);
        } else {
            // Gemma 1 (semantics §2.1): x1 = x + attn; x2 = x1 + mlp(norm(x1)).
            let (m, x1) =
                cx.skip_rms_norm(&x, &attn, &n("post_attention_layernorm.weight"), eps)?;
            let m = cx.geglu_mlp(&m, &gate, &up, &down)?;
            x = x1;
            pending = Some(m);
        }
    }

    // Keep the last `num_logits_to_keep` positions (0: all) of x and the pending residual, then the final norm
    // (fused with the last residual add), the tied lm_head and the optional soft-cap on those rows only.
    cx.g.set_scope("/model/norm");
    let keep_rows = |g: &mut GraphBuilder, v: &Value, label: &str| {
        crate::decoder::keep_last_positions(g, v, &keep, &shared.batch_seq, h, label)
    };
    let x_kept = keep_rows(cx.g, &x, "residual");
    let final_norm = names::final_norm(p);
    let xn = match pending {
        Some(m) => {
            let m_kept = keep_rows(cx.g, &m, "pending");
            cx.skip_rms_norm(&x_kept, &m_kept, &final_norm, eps)?.0
        }
        None => cx.rms_norm(&x_kept, &final_norm, eps)?,
    };
    let logits = cx.lm_head(&xn, t, p)?;

    let g = cx.g;
    g.set_scope("");
    g.output(
        &logits,
        "logits",
        DataType::Float,
        &[
            "batch_size".into(),
            "kept_sequence_length".into(),
            t.vocab_size.into(),
        ],
    );
    for (l, (k, v)) in presents.iter().enumerate() {
        let dims = kv_dims(t.layer_types[l], nkv, hd);
        g.output(k, &format!("present.{l}.key"), DataType::Float, &dims);
        g.output(v, &format!("present.{l}.value"), DataType::Float, &dims);
    }
    Ok(())
}

/// `[batch, kv_heads, capacity, head_dim]` of one layer's KV buffer.
fn kv_dims(ty: LayerType, nkv: usize, hd: usize) -> Vec<Dim> {
    let capacity = match ty {
        LayerType::Full => GLOBAL_CACHE_DIM,
        LayerType::Sliding => SLIDING_CACHE_DIM,
    };
    vec!["batch_size".into(), nkv.into(), capacity.into(), hd.into()]
}

fn cast(g: &mut GraphBuilder, x: &Value, label: &str, to: DataType) -> Value {
    g.op("Cast", label, &[x], &[("to", Attr::Int(to as i64))])
}

/// The per-step values every layer shares (see [`Shared`]).
fn shared_values(
    g: &mut GraphBuilder,
    t: &TextConfig,
    input_ids: &Value,
    attention_mask: &Value,
    position_ids: &Value,
) -> Shared {
    let batch_seq = g.op("Shape", "batch_seq", &[input_ids], &[]);
    let batch = g.op(
        "Shape",
        "batch",
        &[input_ids],
        &[("start", Attr::Int(0)), ("end", Attr::Int(1))],
    );
    let seq = g.op(
        "Shape",
        "seq",
        &[input_ids],
        &[("start", Attr::Int(1)), ("end", Attr::Int(2))],
    );
    let total = g.op(
        "Shape",
        "total",
        &[attention_mask],
        &[("start", Attr::Int(1)), ("end", Attr::Int(2))],
    );
    // GroupQueryAttention: total_sequence_length = T (int32 scalar), seqlens_k = T − 1 for every row.
    let total_i32 = cast(g, &total, "total_i32", DataType::Int32);
    let axes_0 = g.const_i64("axes_0", &[0]);
    let total_len = g.op("Squeeze", "total_len", &[&total_i32, &axes_0], &[]);
    let one_1d = g.const_i64("one_1d", &[1]);
    let last = g.op("Sub", "last_index", &[&total, &one_1d], &[]);
    let last = g.op("Expand", "last_per_row", &[&last, &batch], &[]);
    let seqlens_k = cast(g, &last, "seqlens_k", DataType::Int32);

    // attention_bias [B, 1, S, T]: 0 for real keys, f32::MIN for padding (what eager attention adds).
    let keys = cast(g, attention_mask, "keys_bool", DataType::Bool);
    let zero_f = g.scalar_f32("mask_zero", 0.0);
    let min_f = g.scalar_f32("mask_min", MASK_MIN);
    let bias = g.op("Where", "key_bias", &[&keys, &zero_f, &min_f], &[]);
    let axes_12 = g.const_i64("axes_1_2", &[1, 2]);
    let bias = g.op("Unsqueeze", "key_bias_4d", &[&bias, &axes_12], &[]);
    let bias_shape = g.op(
        "Concat",
        "bias_shape",
        &[&batch, &one_1d, &seq, &total],
        &[("axis", Attr::Int(0))],
    );
    let bias = g.op("Expand", "attention_bias", &[&bias, &bias_shape], &[]);

    // RoPE: one row of cos/sin per token of this chunk, indexed 0 .. B·S by RotaryEmbedding.
    let flat = g.const_i64("flat_1d", &[-1]);
    let pos_flat = g.op("Reshape", "positions_flat", &[position_ids, &flat], &[]);
    let count = g.op("Shape", "token_count", &[&pos_flat], &[]);
    let count = g.op("Squeeze", "token_count_scalar", &[&count, &axes_0], &[]);
    let zero = g.scalar_i64("zero", 0);
    let one = g.scalar_i64("one", 1);
    let ids = g.op("Range", "rope_rows", &[&zero, &count, &one], &[]);
    let rope_ids = g.op("Reshape", "rope_ids", &[&ids, &batch_seq], &[]);
    let pos_f = cast(g, &pos_flat, "positions_f32", DataType::Float);
    let axes_last = g.const_i64("axes_last", &[-1]);
    let pos_f = g.op("Unsqueeze", "positions_col", &[&pos_f, &axes_last], &[]);
    let mut tables = |label: &str, theta: f64, factor: Option<f64>| {
        let inv = inv_freq(theta, factor, t.head_dim);
        let inv = g.const_f32(
            &format!("/rope/{label}/inv_freq"),
            &[inv.len() as i64],
            &inv,
        );
        let ang = g.op("Mul", &format!("rope_{label}/freqs"), &[&pos_f, &inv], &[]);
        let cos = g.op("Cos", &format!("rope_{label}/cos"), &[&ang], &[]);
        let sin = g.op("Sin", &format!("rope_{label}/sin"), &[&ang], &[]);
        (cos, sin)
    };
    let uses = |ty: LayerType| t.layer_types.contains(&ty);
    let global_rope = uses(LayerType::Full)
        .then(|| tables("global", t.rope_full.theta, t.rope_full.linear_factor));
    let local_rope = uses(LayerType::Sliding)
        .then(|| tables("local", t.rope_sliding.theta, t.rope_sliding.linear_factor));
    Shared {
        batch_seq,
        seqlens_k,
        total_len,
        bias,
        rope_ids,
        global_rope,
        local_rope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_dims_name_the_capacity_per_layer_type() {
        let d = kv_dims(LayerType::Sliding, 2, 16);
        assert!(matches!(&d[2], Dim::Named(s) if s == SLIDING_CACHE_DIM));
        let d = kv_dims(LayerType::Full, 2, 16);
        assert!(matches!(&d[2], Dim::Named(s) if s == GLOBAL_CACHE_DIM));
        assert!(matches!(d[3], Dim::Fixed(16)));
    }
}
