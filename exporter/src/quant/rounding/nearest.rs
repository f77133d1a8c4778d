//! Round-to-nearest from the block's extremes (symmetric and asymmetric), and the small integer helpers every
//! rounder shares: the code range, a fast round-and-clamp, and a block's extremes.

use super::Block;

pub(super) fn max_code(bits: u8) -> i32 {
    (1i32 << bits) - 1
}

/// `round(v)` (ties to even) clamped to `[lo, hi]`. Adding 1.5·2²³ leaves the rounded integer in the low mantissa
/// bits, which compiles to two plain SSE2 instructions instead of a libm `roundf` call (llama.cpp's `nearest_int`).
/// Exact for |v| < 2²², and every caller clamps to a code range far below that; NaN or huge inputs come out as
/// some in-range code, never as a panic.
#[inline]
pub(super) fn round_clamp(v: f32, lo: i32, hi: i32) -> i32 {
    let v = v.clamp(-4_194_304.0, 4_194_304.0);
    let r = ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000;
    r.clamp(lo, hi)
}

/// The value of largest magnitude, with its sign.
pub(super) fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .copied()
        .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m })
}

pub(super) fn all_zero(codes: &mut [u8], zero: u8) -> Block {
    codes.fill(zero);
    Block { scale: 0.0, zero }
}

pub(super) fn symmetric_nearest(x: &[f32], bits: u8, codes: &mut [u8]) -> Block {
    let half = 1i32 << (bits - 1);
    let zero = half as u8;
    let vmax = signed_absmax(x);
    if vmax == 0.0 || !vmax.is_finite() {
        return all_zero(codes, zero);
    }
    let scale = vmax / -(half as f32);
    let inv = 1.0 / scale;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (round_clamp(v * inv, -half, half - 1) + half) as u8;
    }
    Block { scale, zero }
}

pub(super) fn asymmetric_nearest(x: &[f32], bits: u8, codes: &mut [u8]) -> Block {
    let qmax = max_code(bits);
    let (lo, hi) = min_max(x);
    if hi - lo == 0.0 || !(hi - lo).is_finite() {
        return all_zero(codes, 0);
    }
    let scale = (hi - lo) / qmax as f32;
    let zero = round_clamp(-lo / scale, 0, qmax);
    let inv = 1.0 / scale;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = round_clamp(v * inv + zero as f32, 0, qmax) as u8;
    }
    Block {
        scale,
        zero: zero as u8,
    }
}

/// `(min(x, 0), max(x, 0))`: an integer zero point can only place 0 inside the code range.
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}
