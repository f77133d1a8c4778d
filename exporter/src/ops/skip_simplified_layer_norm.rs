//! `SkipSimplifiedLayerNormalization` (domain `com.microsoft`, version 1): a residual add fused with RMSNorm.
//!
//! Contract:
//! - inputs: `input` `[N, D]` (or `[B, S, D]`), `skip` (same shape), `gamma` `[D]`, optional `bias` (not used).
//! - outputs: 0 `output = RMSNorm(input + skip) · gamma`; 1 `mean` and 2 `inv_std_var` (optional, unused);
//!   3 `input_skip_bias_sum = input + skip`, the new residual stream.
//! - attribute: `epsilon`. The statistics are float32 for float32 inputs.
//!
//! The decoder asks for all four outputs and uses 0 and 3 ([`crate::decoder::cpu`]).

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// `(RMSNorm(x + skip) · gain, x + skip)`.
pub fn skip_simplified_layer_norm(
    g: &mut GraphBuilder,
    label: &str,
    x: &Value,
    skip: &Value,
    gain: &Value,
    epsilon: f32,
) -> (Value, Value) {
    let mut out = g.node(
        MS_DOMAIN,
        "SkipSimplifiedLayerNormalization",
        label,
        &[x, skip, gain],
        &[("epsilon", Attr::Float(epsilon))],
        4,
    );
    let sum = out.pop().expect("four outputs");
    (out.swap_remove(0), sum)
}
