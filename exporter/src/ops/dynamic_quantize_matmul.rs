//! `DynamicQuantizeMatMul` (domain `com.microsoft`, version 1): `Y = dequant(quant(A)) · dequant(B) + bias`, the
//! activation quantized to uint8 per tensor at run time, the weight int8 ahead of time.
//!
//! Contract:
//! - inputs: `A` float `[.., K]`; `B` int8 `[K, N]` (a constant: ONNX Runtime's CPU kernel prepacks it);
//!   `b_scale` float, a scalar or `[N]` (per column); optional `b_zero_point` int8 like `b_scale` (absent: 0);
//!   optional `bias` float `[N]`.
//! - output: `Y` float `[.., N]`.
//! - no attributes.
//!
//! ONNX Runtime's CPU kernel runs it as one MLAS u8·s8 GEMM with the per-column scales and the bias applied to its
//! int32 output: the fast path for prefill-sized `M` (every patch of an image at once). The u8·s8 product is exact
//! on CPUs with VNNI (AVX512-VNNI, AVX-VNNI); plain AVX2 sums pairs of products in int16 and can saturate on large
//! weights, which ONNX Runtime's own quantizer avoids with `reduce_range`. The CUDA provider has no kernel for it.
//! Written by [`crate::vision`]'s SigLIP tower ([`crate::vision::kernels`]).

use super::MS_DOMAIN;
use crate::builder::{GraphBuilder, Value};

/// `a · dequant(b) + bias` with per-column scales and the symmetric (absent) zero point.
pub fn dynamic_quantize_matmul(
    g: &mut GraphBuilder,
    label: &str,
    a: &Value,
    [b, scales]: [&Value; 2],
    bias: Option<&Value>,
) -> Value {
    let mut inputs = vec![a, b, scales];
    let none = Value(String::new());
    if let Some(bias) = bias {
        inputs.push(&none); // b_zero_point: 0
        inputs.push(bias);
    }
    let mut out = g.node(MS_DOMAIN, "DynamicQuantizeMatMul", label, &inputs, &[], 1);
    out.pop().expect("one output")
}
