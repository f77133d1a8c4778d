//! Kept source blocks (see the module docs of `pack`): when a GGUF matrix's stored Q8_0 / Q5_0 / Q4_0 blocks are
//! exactly what an 8-bit symmetric scheme in blocks of 32 would store, they are copied instead of re-quantized.

use super::TensorScheme;
use gemma_models::checkpoint::ggml::symmetric_block;
use gemma_models::{DType, TensorView};

/// The ggml formats whose blocks an 8-bit symmetric scheme in blocks of 32 holds exactly: each is 32 values
/// `d·q` with an f16 `d` and integer `q` in −128..=127 (Q8_0), −16..=15 (Q5_0) or −8..=7 (Q4_0).
pub const KEPT_FORMATS: [DType; 3] = [DType::Q8_0, DType::Q5_0, DType::Q4_0];

/// Whether `view`'s stored blocks are exactly what `scheme` in blocks of `block_size` would store, so that
/// [`copy_symmetric_rows`] can copy them: a matrix in one of [`KEPT_FORMATS`] (whole, consistent bytes) read
/// whole, without adjustment, and an 8-bit symmetric scheme with blocks of 32 (either rounding: a copy is exact, so no
/// rounder can do better).
pub fn keeps_source_blocks(view: &TensorView<'_>, scheme: TensorScheme, block_size: usize) -> bool {
    KEPT_FORMATS.contains(&view.dtype)
        && view.adjust.is_identity()
        && view.select.is_none()
        && scheme.bits == 8
        && scheme.symmetric
        && block_size == view.dtype.block_elems()
        && matches!(view.shape.as_slice(), [_, k] if k % view.dtype.block_elems() == 0)
        && view.dtype.byte_len(view.numel()) == Some(view.data.len())
}

/// Copies rows `[r0, r0 + rows)` of a matrix for which [`keeps_source_blocks`] holds into the `MatMulNBits`
/// layout of an 8-bit symmetric scheme with blocks of 32: codes `q + 128` into `out` (`rows · K` bytes), `f32(d)`
/// into `scales` (`rows · K / 32`). Returns `(Σ(x − x̂)², Σx²)` = `(0, Σ(d·q)²)`.
pub fn copy_symmetric_rows(
    view: &TensorView<'_>,
    r0: usize,
    rows: usize,
    out: &mut [u8],
    scales: &mut [f32],
) -> (f64, f64) {
    let (be, bb) = (view.dtype.block_elems(), view.dtype.block_bytes());
    let blocks_per_row = view.shape[1] / be;
    let first = r0 * blocks_per_row;
    let src = &view.data[first * bb..(first + rows * blocks_per_row) * bb];
    let mut sum2 = 0f64;
    for ((block, codes), scale) in src
        .chunks_exact(bb)
        .zip(out.chunks_exact_mut(be))
        .zip(scales.iter_mut())
    {
        let (d, q) = symmetric_block(view.dtype, block)
            .expect("keeps_source_blocks admits symmetric 32-value formats only");
        *scale = d;
        let mut q2 = 0i64;
        for (c, &q) in codes.iter_mut().zip(&q) {
            // int8 q → uint8 q + 128 is flipping the sign bit.
            *c = q as u8 ^ 0x80;
            q2 += i64::from(q).pow(2);
        }
        sum2 += f64::from(d) * f64::from(d) * q2 as f64;
    }
    (0.0, sum2)
}
