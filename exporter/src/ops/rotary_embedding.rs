//! `RotaryEmbedding` (domain `com.microsoft`, version 1): RoPE applied with caller-supplied cos/sin tables.
//!
//! Contract:
//! - inputs: `input` `[B, S, heads · head_dim]`; `position_ids` int64 `[B, S]`, the rows of the tables to use for
//!   each token; `cos_cache`, `sin_cache` `[rows, rotary_dim / 2]`.
//! - output: the rotated input, same shape.
//! - attributes: `num_heads` (needed with the 3-D input), `rotary_embedding_dim` (the full head dim here),
//!   `interleaved` (0: the `rotate_half` layout of transformers, semantics §1.3).
//!
//! The decoder computes one table row per token of the chunk (from the chunk's own positions, in float32 like
//! transformers) and passes the row indices `0 .. B·S` as `position_ids` ([`crate::decoder::cpu`]).

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// RoPE on `x [B, S, heads · head_dim]` with table rows `rows [B, S]` of `cos`/`sin`.
pub fn rotary_embedding(
    g: &mut GraphBuilder,
    label: &str,
    x: &Value,
    [rows, cos, sin]: [&Value; 3],
    num_heads: usize,
    head_dim: usize,
) -> Value {
    let attrs = [
        ("num_heads", Attr::Int(num_heads as i64)),
        ("rotary_embedding_dim", Attr::Int(head_dim as i64)),
        ("interleaved", Attr::Int(0)),
    ];
    let mut out = g.node(
        MS_DOMAIN,
        "RotaryEmbedding",
        label,
        &[x, rows, cos, sin],
        &attrs,
        1,
    );
    out.pop().expect("one output")
}
