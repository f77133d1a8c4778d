//! `SimplifiedLayerNormalization` (ONNX Runtime, registered in the **default ONNX domain**, since version 1).
//!
//! Contract:
//! - inputs: `X` (float) `[.., D]`; `scale` `[D]`.
//! - output: `Y = X / sqrt(mean(X², axis) + epsilon) · scale`, the shape of `X` (optional outputs `inv_std_var` are
//!   not requested).
//! - attributes: `axis` (−1: the last axis), `epsilon`, `stash_type` (1: statistics in float32).
//!
//! Gemma's RMSNorm multiplies by `(1 + w)`: the caller passes that folded gain as `scale` (semantics §1.2).

use crate::builder::{Attr, GraphBuilder, Value};

/// `RMSNorm(x) · gain` over the last axis, statistics in float32.
pub fn simplified_layer_norm(
    g: &mut GraphBuilder,
    label: &str,
    x: &Value,
    gain: &Value,
    epsilon: f32,
) -> Value {
    g.op(
        "SimplifiedLayerNormalization",
        label,
        &[x, gain],
        &[
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(epsilon)),
            ("stash_type", Attr::Int(1)),
        ],
    )
}
