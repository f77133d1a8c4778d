//! ONNX Runtime's contrib operators, one file each with its contract (inputs, outputs, attributes, and what we
//! rely on) in the header, and one typed function that writes the node. The standard ONNX ops have typed helpers on
//! [`crate::builder::GraphBuilder`] itself.
//!
//! - [`skip_simplified_layer_norm`]: residual add + RMSNorm in one kernel (a plain RMSNorm is ONNX's own
//!   `RMSNormalization`, [`crate::builder::GraphBuilder::rms_normalization`]).
//! - [`rotary_embedding`]: RoPE from given cos/sin tables.
//! - [`group_query_attention`]: attention over KV buffers updated in place.
//! - [`matmul_nbits`]: `x · Wᵀ` with a block-quantized `W`.
//! - [`gather_block_quantized`]: embedding rows from a block-quantized table.
//! - [`dynamic_quantize_matmul`]: `x · W + b` with an int8 `W` (per-column scales) and the activation quantized at
//!   run time (the SigLIP tower's linears on the cpu graph).
//! - [`multi_head_attention`]: unmasked, uncached attention in one kernel (the SigLIP tower on the cpu graph).

pub mod dynamic_quantize_matmul;
pub mod gather_block_quantized;
pub mod group_query_attention;
pub mod matmul_nbits;
pub mod multi_head_attention;
pub mod rotary_embedding;
pub mod skip_simplified_layer_norm;

/// ONNX Runtime's contrib operator domain. A model whose graph uses it imports it at version 1.
pub const MS_DOMAIN: &str = "com.microsoft";
