//! How one block of weights becomes integer codes: `w ≈ scale · (code − zero)` with `code ∈ [0, 2^bits − 1]` and
//! an integer `zero` (ONNX Runtime's `MatMulNBits` and `GatherBlockQuantized` only take integer zero points fast;
//! float zero points fall back to a dequantize-everything path that is ~50× slower on CPU).
//!
//! Four rounders:
//! - symmetric round-to-nearest, as ONNX Runtime's own quantizer and ONNX Runtime GenAI do it: the value of largest
//!   magnitude maps to code 0 (`scale = vmax / −2^(bits−1)`), `zero = 2^(bits−1)`;
//! - asymmetric round-to-nearest: `[min(x, 0), max(x, 0)]` spread over all codes;
//! - symmetric search (llama.cpp's `make_qx_quants`): try 21 scales around `vmax / 2^(bits−1)`, refit each scale to the
//!   codes it produced by least squares, keep the one with the smallest weighted squared error (never worse than
//!   round-to-nearest, which is the starting point);
//! - asymmetric search (llama.cpp's `make_qkx2_quants`, adapted to an integer zero point): try 21 step sizes across
//!   `[min, max]`; for each candidate fit scale and offset to its codes by least squares, round the offset to an
//!   integer zero point and refit the scale for it; keep the best, then round once more on its refitted grid.
//!
//! The searches minimise `Σ wᵢ (xᵢ − x̂ᵢ)²` with importance `wᵢ = rms(x) + |xᵢ|` (llama.cpp's weighting for k-quants
//! without an importance matrix): large weights matter more, but small ones are not ignored.
//!
//! Why the search matters beyond lower error: a checkpoint that was itself quantized (for example the test 270M,
//! dequantized from a GGUF) has blocks whose values already lie on an evenly spaced grid. Round-to-nearest from the
//! block's extremes lands on that grid only by chance; a least-squares refit over candidate scales finds it whenever
//! the grid is representable (same or finer step, offset an integer number of steps), and then the re-quantization
//! is lossless.

mod nearest;
mod search;
mod sums;

use nearest::{asymmetric_nearest, symmetric_nearest};
use search::search;

/// Which rounder, and whether the zero point is free (asymmetric) or fixed at `2^(bits−1)` (symmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Round-to-nearest from the block's extremes.
    Nearest,
    /// Least-squares search over candidate scales (see the module docs).
    Search,
}

/// The quantized form of one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    pub scale: f32,
    /// Integer zero point, `0 ..= 2^bits − 1`; `2^(bits−1)` for symmetric blocks.
    pub zero: u8,
}

/// Quantizes `x` (one block, `x.len() ≤ codes.len()`) into `codes` (one code per byte, unpacked). Codes past
/// `x.len()` (padding of a last partial block) are set to `zero`, so they dequantize to exactly 0.
pub fn quantize_block(
    x: &[f32],
    bits: u8,
    symmetric: bool,
    rounding: Rounding,
    columns: Option<&[f32]>,
    codes: &mut [u8],
) -> Block {
    debug_assert!((2..=8).contains(&bits) && x.len() <= codes.len());
    debug_assert!(columns.is_none_or(|c| c.len() == x.len()));
    let block = match (symmetric, rounding) {
        (true, Rounding::Nearest) => symmetric_nearest(x, bits, codes),
        (symmetric, Rounding::Search) => search(x, bits, symmetric, columns, codes),
        (false, Rounding::Nearest) => asymmetric_nearest(x, bits, codes),
    };
    codes[x.len()..].fill(block.zero);
    block
}

/// `scale · (code − zero)`, the value ONNX Runtime reconstructs.
#[inline]
pub fn dequantize(code: u8, block: Block) -> f32 {
    (code as f32 - block.zero as f32) * block.scale
}

/// The largest block: ONNX Runtime's fast quantized kernels take blocks of 16 to 256 values.
pub const MAX_BLOCK: usize = 256;

#[cfg(test)]
mod tests;
