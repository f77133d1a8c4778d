//! Unit tests of the `rounding` module.

use super::search::importance;
use super::sums::weighted_error;
use super::*;

fn roundtrip(x: &[f32], bits: u8, sym: bool, r: Rounding) -> (Vec<f32>, Block) {
    let mut codes = vec![0u8; x.len()];
    let b = quantize_block(x, bits, sym, r, None, &mut codes);
    (codes.iter().map(|&c| dequantize(c, b)).collect(), b)
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A deterministic pseudo-random block.
fn block(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.45) * 0.2
        })
        .collect()
}

#[test]
fn nearest_error_is_within_half_a_step() {
    for seed in 0..50 {
        let x = block(seed, 32);
        for bits in [4u8, 8] {
            let (y, b) = roundtrip(&x, bits, false, Rounding::Nearest);
            assert!(max_err(&x, &y) <= b.scale * 0.5 + 1e-7);
            // Symmetric: the side opposite the largest magnitude has one code fewer and may clip by a step.
            let (y, b) = roundtrip(&x, bits, true, Rounding::Nearest);
            assert!(max_err(&x, &y) <= b.scale.abs() + 1e-7);
            assert_eq!(b.zero, 1 << (bits - 1));
        }
    }
}

#[test]
fn search_never_loses_to_nearest() {
    for seed in 0..200 {
        let x = block(seed, 32);
        let mut w = vec![0.0; 32];
        importance(&x, None, &mut w);
        for bits in [4u8, 8] {
            for sym in [false, true] {
                let mut c1 = vec![0u8; 32];
                let mut c2 = vec![0u8; 32];
                let b1 = quantize_block(&x, bits, sym, Rounding::Nearest, None, &mut c1);
                let b2 = quantize_block(&x, bits, sym, Rounding::Search, None, &mut c2);
                let e1 = weighted_error(&x, &w, &c1, b1);
                let e2 = weighted_error(&x, &w, &c2, b2);
                assert!(
                    e2 <= e1 * 1.0001,
                    "seed {seed} bits {bits} sym {sym}: {e2} > {e1}"
                );
            }
        }
    }
}

/// Values already on an asymmetric 4-bit grid whose offset is a whole number of steps come back exactly;
/// round-to-nearest from the extremes does not find that grid when the extreme codes are unused.
#[test]
fn search_recovers_a_representable_grid() {
    let (scale, zero) = (0.013f32, 5i32);
    let x: Vec<f32> = (0..32)
        .map(|i| scale * (((i * 7) % 14 + 1) - zero) as f32)
        .collect();
    let (y, _) = roundtrip(&x, 4, false, Rounding::Search);
    assert!(max_err(&x, &y) < 1e-6, "{}", max_err(&x, &y));
    // Symmetric 5-bit grid (like GGUF Q5_0) re-quantized to 8 bits: exact.
    let x: Vec<f32> = (0..32)
        .map(|i| 0.02 * ((i * 11) % 32 - 16) as f32)
        .collect();
    let (y, _) = roundtrip(&x, 8, true, Rounding::Search);
    assert!(max_err(&x, &y) < 1e-6, "{}", max_err(&x, &y));
}

#[test]
fn padding_and_degenerate_blocks() {
    let mut codes = vec![9u8; 32];
    let b = quantize_block(&[0.5, -0.25], 4, false, Rounding::Search, None, &mut codes);
    assert!(codes[2..].iter().all(|&c| c == b.zero));
    assert_eq!(dequantize(codes[5], b), 0.0);
    for sym in [false, true] {
        for r in [Rounding::Nearest, Rounding::Search] {
            let (y, _) = roundtrip(&[0.0; 32], 4, sym, r);
            assert!(y.iter().all(|&v| v == 0.0));
            let (y, _) = roundtrip(&[f32::NAN; 4], 4, sym, r);
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
}
