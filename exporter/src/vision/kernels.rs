//! How the SigLIP tower is expressed: every kernel choice of `vision_encoder.onnx` in one place.
//!
//! | export | linears (q/k/v/out_proj, fc1/fc2) | attention |
//! |---|---|---|
//! | fp32, fp16, bf16, `--graph cpu` | fp32 `Gemm` | `MultiHeadAttention` |
//! | fp32, fp16, bf16, `--graph portable` | fp32 `Gemm` | `MatMul`/`Softmax`/`MatMul` |
//! | int8, int4, `--graph cpu` | `DynamicQuantizeMatMul`: int8 weights, per-column scales, bias fused | `MultiHeadAttention` |
//! | int8, int4, `--graph portable` | `MatMulNBits` 8-bit (the text decoder's quantizer, [`QuantConfig::int8`]) + `Add` bias | `MatMul`/`Softmax`/`MatMul` |
//!
//! Floating-point exports keep float32 weights; on the cpu graph their attention is ONNX Runtime's fused
//! `MultiHeadAttention` too (the same arithmetic in float32, within the parity tolerance of transformers), on the
//! portable graph the standard-op reference encoder. Quantized exports quantize the
//! tower's linears in 8 bits whatever the text decoder's scheme: int4's 4-bit `gate_proj` has no counterpart in
//! SigLIP, and a custom `--quant-spec` is about the text decoder. At 896 px (4096 patches) the linears are ~60% of
//! the tower's FLOPs and attention's two batched matmuls ~40%, which stay float32 (inside `MultiHeadAttention` on
//! the cpu graph); the patch embedding, the layer norms, the position embedding and the projector stay float32 too
//! (together ~1% of the time). Measured on the 4B's tower: docs/benchmarks.md, "The image path".
//!
//! `--graph cpu` is for ONNX Runtime's CPU provider, so it takes its fused kernels: `DynamicQuantizeMatMul` runs an
//! int8 GEMM over all patches at once (the activation quantized per tensor at run time), and `MultiHeadAttention`
//! replaces the per-layer Q·Kᵀ / softmax / ·V subgraph and its transposes. `--graph portable` must run wherever the
//! portable decoder runs (transformers.js, ONNX Runtime GenAI, other providers): its quantized text decoder already
//! needs `MatMulNBits`, so the tower uses that too, and keeps standard-op attention.

use crate::export::Precision;
use crate::quant::QuantConfig;
use gemma_models::contract::GraphKind;

/// How the tower's linear layers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionLinear {
    /// `Gemm(x, W, b, transB=1)` on the checkpoint's weights as float32.
    Gemm,
    /// com.microsoft `DynamicQuantizeMatMul(x, Wᵀ int8, scales [out], bias)`.
    DynamicQuantize,
    /// com.microsoft `MatMulNBits` with this scheme, then `Add` of the float32 bias.
    NBits(QuantConfig),
}

/// How the tower's self-attention is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAttention {
    /// Heads split by `Reshape`/`Transpose`, `MatMul`, `Mul` by the scale, `Softmax`, `MatMul`.
    Decomposed,
    /// One com.microsoft `MultiHeadAttention` node per layer (no mask, bidirectional).
    MultiHead,
}

/// The kernels of one `vision_encoder.onnx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionKernels {
    pub linear: VisionLinear,
    pub attention: VisionAttention,
}

impl VisionKernels {
    /// Standard ONNX ops only, float32 everywhere: the reference encoder.
    pub const REFERENCE: VisionKernels = VisionKernels {
        linear: VisionLinear::Gemm,
        attention: VisionAttention::Decomposed,
    };

    /// The kernels for an export at `precision` whose text decoder is `graph` (see the module table).
    pub fn choose(precision: &Precision, graph: GraphKind) -> VisionKernels {
        if precision.quant().is_none() {
            return match graph {
                GraphKind::Cpu => VisionKernels {
                    linear: VisionLinear::Gemm,
                    attention: VisionAttention::MultiHead,
                },
                GraphKind::Portable => VisionKernels::REFERENCE,
            };
        }
        match graph {
            GraphKind::Cpu => VisionKernels {
                linear: VisionLinear::DynamicQuantize,
                attention: VisionAttention::MultiHead,
            },
            GraphKind::Portable => VisionKernels {
                linear: VisionLinear::NBits(QuantConfig::int8()),
                attention: VisionAttention::Decomposed,
            },
        }
    }

    /// Whether the linears are quantized.
    pub fn quantized(&self) -> bool {
        self.linear != VisionLinear::Gemm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_quantized_exports_quantize_and_only_the_cpu_graph_fuses_attention() {
        for p in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
            let cpu = VisionKernels::choose(&p, GraphKind::Cpu);
            assert_eq!(cpu.linear, VisionLinear::Gemm);
            assert_eq!(cpu.attention, VisionAttention::MultiHead);
            let portable = VisionKernels::choose(&p, GraphKind::Portable);
            assert_eq!(portable, VisionKernels::REFERENCE);
        }
        for p in [Precision::INT8, Precision::INT4] {
            let cpu = VisionKernels::choose(&p, GraphKind::Cpu);
            assert_eq!(cpu.linear, VisionLinear::DynamicQuantize);
            assert_eq!(cpu.attention, VisionAttention::MultiHead);
            let portable = VisionKernels::choose(&p, GraphKind::Portable);
            assert_eq!(portable.linear, VisionLinear::NBits(QuantConfig::int8()));
            assert_eq!(portable.attention, VisionAttention::Decomposed);
        }
    }
}
