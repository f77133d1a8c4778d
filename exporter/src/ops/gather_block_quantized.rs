//! `GatherBlockQuantized` (domain `com.microsoft`, version 1): rows of a block-quantized table, dequantized.
//!
//! Contract (as the decoder uses it):
//! - inputs: `data` uint8 `[V, blocks · blob]` (the same packed bytes as `MatMulNBits`' `B`, another view);
//!   `indices` int64 `[..]`; `scales` `[V, blocks]`; optional `zero_points` packed like the codes.
//! - output: float `[.., blocks · block_size]` (the padding of a last partial block included: the caller slices it
//!   off).
//! - attributes: `bits`, `block_size`, `gather_axis = 0`, `quantize_axis = 1` (the last axis).
//!
//! The embedding table shares its bytes with the tied lm_head ([`crate::quant::graph`]).

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// Rows `indices` of the packed table `data` as float `[.., blocks · block_size]`.
pub fn gather_block_quantized(
    g: &mut GraphBuilder,
    label: &str,
    [data, indices, scales]: [&Value; 3],
    zero_points: Option<&Value>,
    bits: u8,
    block_size: usize,
) -> Value {
    let mut inputs = vec![data, indices, scales];
    inputs.extend(zero_points);
    let attrs = [
        ("bits", Attr::Int(bits as i64)),
        ("block_size", Attr::Int(block_size as i64)),
        ("gather_axis", Attr::Int(0)),
        ("quantize_axis", Attr::Int(1)),
    ];
    let mut out = g.node(MS_DOMAIN, "GatherBlockQuantized", label, &inputs, &attrs, 1);
    out.pop().expect("one output")
}
