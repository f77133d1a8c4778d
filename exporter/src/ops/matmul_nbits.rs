//! `MatMulNBits` (domain `com.microsoft`, version 1): `Y = A · dequant(B)ᵀ` with `B` block-quantized.
//!
//! Contract:
//! - inputs: `A` float `[.., K]`; `B` uint8 `[N, blocks, blob]` (codes packed low bits first, `blob =
//!   block_size · bits / 8`); `scales` float `[N · blocks]` or `[N, blocks]`; optional `zero_points` uint8, packed
//!   like the codes (absent: the symmetric zero point `2^(bits−1)`).
//! - output: `Y` float `[.., N]`.
//! - attributes: `K`, `N`, `bits` (4 or 8), `block_size` (a power of two ≥ 16), `accuracy_level` (4: the
//!   activation is quantized to int8 per block inside the kernel, which is what makes the CPU kernels fast).
//!
//! The packing is [`crate::quant::pack`]'s; the nodes are written by [`crate::quant::graph`].

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// The shape attributes of one `MatMulNBits` node.
pub struct NBits {
    pub k: usize,
    pub n: usize,
    pub bits: u8,
    pub block_size: usize,
    pub accuracy_level: i64,
}

/// `a · dequant(b)ᵀ` from the packed weight, its scales and (asymmetric) zero points.
pub fn matmul_nbits(
    g: &mut GraphBuilder,
    label: &str,
    a: &Value,
    [b, scales]: [&Value; 2],
    zero_points: Option<&Value>,
    s: &NBits,
) -> Value {
    let mut inputs = vec![a, b, scales];
    inputs.extend(zero_points);
    let attrs = [
        ("K", Attr::Int(s.k as i64)),
        ("N", Attr::Int(s.n as i64)),
        ("bits", Attr::Int(s.bits as i64)),
        ("block_size", Attr::Int(s.block_size as i64)),
        ("accuracy_level", Attr::Int(s.accuracy_level)),
    ];
    let mut out = g.node(MS_DOMAIN, "MatMulNBits", label, &inputs, &attrs, 1);
    out.pop().expect("one output")
}
