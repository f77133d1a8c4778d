//! `MultiHeadAttention` (domain `com.microsoft`, version 1): softmax(scale · Q·Kᵀ)·V per head in one kernel, as
//! ONNX Runtime 1.31's CPU provider implements it.
//!
//! Contract (inputs by position; only the first three are used here):
//! - 0–2 `query` `[B, S, heads · hd]`, `key` `[B, L, heads · hd]`, `value` `[B, L, heads · v_hd]`, float32;
//!   3 `bias`, 4 `key_padding_mask`, 5 `attention_bias`, 6–7 `past_key`/`past_value` omitted: no mask, no cache.
//! - output: `output` `[B, S, heads · v_hd]` (heads concatenated in order, as `Transpose` + `Reshape` would).
//! - attributes: `num_heads`, `scale` (default `hd^-0.5`, written explicitly), `unidirectional` left at 0: every
//!   query attends to every key (bidirectional, SigLIP's attention).
//!
//! The CUDA provider has it for float32 and float16; TensorRT and CoreML do not run contrib ops.

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// Bidirectional attention without mask: `[B, S, heads · hd]` ×3 → `[B, S, heads · hd]`.
pub fn multi_head_attention(
    g: &mut GraphBuilder,
    label: &str,
    [query, key, value]: [&Value; 3],
    num_heads: usize,
    scale: f32,
) -> Value {
    let attrs = [
        ("num_heads", Attr::Int(num_heads as i64)),
        ("scale", Attr::Float(scale)),
    ];
    let inputs = [query, key, value];
    let mut out = g.node(MS_DOMAIN, "MultiHeadAttention", label, &inputs, &attrs, 1);
    out.pop().expect("one output")
}
