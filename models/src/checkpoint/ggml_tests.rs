//! ggml block decoding against gguf-py's `gguf.quants.dequantize` (reference data written by
//! tests/fixtures/ggml/make_ggml_reference.py), over aligned and unaligned windows.

use std::path::Path;

use super::super::*;
use super::{read_blocks, symmetric_block};

macro_rules! fixture {
    ($name:literal) => {
        (
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/ggml/",
                $name,
                ".blocks"
            ))[..],
            &include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/ggml/",
                $name,
                ".f32"
            ))[..],
        )
    };
}

const BLOCK_TYPES: [DType; 8] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

/// The committed blocks of `dtype` and gguf-py's decoding of them.
fn reference(dtype: DType) -> (&'static [u8], Vec<f32>) {
    let (blocks, values) = match dtype {
        DType::Q8_0 => fixture!("Q8_0"),
        DType::Q4_0 => fixture!("Q4_0"),
        DType::Q4_1 => fixture!("Q4_1"),
        DType::Q5_0 => fixture!("Q5_0"),
        DType::Q5_1 => fixture!("Q5_1"),
        DType::Q4K => fixture!("Q4_K"),
        DType::Q5K => fixture!("Q5_K"),
        DType::Q6K => fixture!("Q6_K"),
        _ => unreachable!(),
    };
    let values: Vec<f32> = values
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        blocks.len() / dtype.block_bytes() * dtype.block_elems(),
        values.len(),
        "{dtype:?} fixture sizes"
    );
    (blocks, values)
}

/// Windows `(start, len)` over `n` elements in blocks of `be`: whole tensor, single elements, windows that start
/// and end inside blocks, windows inside one block, exactly one block, and empty ones.
fn windows(n: usize, be: usize) -> Vec<(usize, usize)> {
    let starts = [
        0,
        1,
        7,
        be - 1,
        be,
        be + 3,
        2 * be + 17,
        n - be - 1,
        n - 1,
        n,
    ];
    let lens = [0, 1, 2, 5, be - 1, be, be + 1, 2 * be + 7, n];
    let mut out = Vec::new();
    for &s in &starts {
        for &l in &lens {
            out.push((s, l.min(n - s)));
        }
    }
    out
}

fn assert_bits_eq(dtype: DType, start: usize, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{dtype:?} element {}: got {g}, gguf-py gives {w}",
            start + i
        );
    }
}

#[test]
fn ggml_blocks_match_gguf_py_bit_exactly() {
    for dtype in BLOCK_TYPES {
        let (blocks, want) = reference(dtype);
        let n = want.len();
        for (start, len) in windows(n, dtype.block_elems()) {
            let mut got = vec![f32::NAN; len];
            read_blocks(dtype, blocks, start, &mut got);
            assert_bits_eq(dtype, start, &got, &want[start..start + len]);
        }
        // Element by element, so every position is also decoded as a partial block.
        for i in 0..n {
            let mut one = [f32::NAN];
            read_blocks(dtype, blocks, i, &mut one);
            assert_bits_eq(dtype, i, &one, &want[i..i + 1]);
        }
    }
}

#[test]
fn ggml_blocks_through_tensor_view() {
    for dtype in BLOCK_TYPES {
        let (blocks, want) = reference(dtype);
        let rows = blocks.len() / dtype.block_bytes();
        let view = TensorView {
            name: "t",
            dtype,
            shape: vec![rows, dtype.block_elems()],
            data: blocks,
            file: Path::new("t.gguf"),
            adjust: ReadAdjust::default(),
            select: None,
        };
        assert_bits_eq(dtype, 0, &view.to_f32_vec(), &want);
        let (start, len) = (dtype.block_elems() / 2 + 3, dtype.block_elems() * 2);
        let mut got = vec![0.0; len];
        view.read_f32(start, &mut got);
        assert_bits_eq(dtype, start, &got, &want[start..start + len]);
    }
}

/// A stream of pseudo-random bytes (xorshift), so the test needs no extra crate.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn ggml_any_bytes_decode_without_panicking() {
    for dtype in BLOCK_TYPES {
        let bytes = 16 * dtype.block_bytes();
        for data in [
            vec![0u8; bytes],
            vec![0xFF; bytes],
            noise(dtype.block_bytes() as u64, bytes),
        ] {
            let n = 16 * dtype.block_elems();
            let mut out = vec![0.0; n];
            read_blocks(dtype, &data, 0, &mut out);
            let mut part = vec![0.0; n - 7];
            read_blocks(dtype, &data, 3, &mut part);
            // Unaligned windows give the same bits as the whole decode, NaNs included.
            for (i, (a, b)) in part.iter().zip(&out[3..]).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} element {}", i + 3);
            }
        }
    }
}

#[test]
fn ggml_non_finite_scales_give_non_finite_values() {
    // Q8_0 block: scale, then 32 int8 quants 0, 1, 2, …, 31.
    let block = |d: half::f16| -> Vec<u8> {
        let mut b = d.to_le_bytes().to_vec();
        b.extend(0u8..32);
        b
    };
    let mut out = [0.0f32; 32];
    read_blocks(DType::Q8_0, &block(half::f16::NAN), 0, &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
    read_blocks(DType::Q8_0, &block(half::f16::INFINITY), 0, &mut out);
    assert!(out[0].is_nan(), "0 × inf is NaN");
    assert!(out[1..].iter().all(|&v| v == f32::INFINITY));
    // Q6_K with an infinite d: every value is ±inf or NaN.
    let mut q6 = noise(6, DType::Q6K.block_bytes());
    q6[208..210].copy_from_slice(&half::f16::NEG_INFINITY.to_le_bytes());
    let mut out = [0.0f32; 256];
    read_blocks(DType::Q6K, &q6, 0, &mut out);
    assert!(out.iter().all(|v| !v.is_finite()));
}

#[test]
#[should_panic(expected = "read_blocks")]
fn ggml_window_past_the_data_panics() {
    let (blocks, want) = reference(DType::Q4K);
    let mut out = vec![0.0; 2];
    read_blocks(DType::Q4K, blocks, want.len() - 1, &mut out);
}

#[test]
#[should_panic(expected = "not a ggml block format")]
fn ggml_float_types_are_not_block_formats() {
    read_blocks(DType::F16, &[0, 0], 0, &mut [0.0]);
}

/// `release_elements` on block-quantized views drops whole blocks only, and the released pages read back the
/// same values. The blocks are stored as a BF16 safetensors tensor (any dtype does; only the bytes matter) and
/// the view retyped, as a GGUF reader hands them out.
#[test]
fn ggml_release_elements_keeps_block_views_readable() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in BLOCK_TYPES {
        let (blocks, want) = reference(dtype);
        // Repeat the fixture so the tensor spans many pages.
        let copies = 8192 / blocks.len() + 2;
        let data: Vec<u8> = blocks.repeat(copies);
        let want: Vec<f32> = want.repeat(copies);
        let path = dir.path().join(SINGLE_FILE);
        let st = safetensors::tensor::TensorView::new(
            safetensors::Dtype::BF16,
            vec![data.len() / 2],
            &data,
        )
        .unwrap();
        std::fs::write(&path, safetensors::serialize([("t", st)], None).unwrap()).unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let raw = ckpt.tensor("t").unwrap();
        let view = TensorView {
            dtype,
            shape: vec![want.len()],
            ..raw
        };
        let n = want.len();
        let be = dtype.block_elems();
        for (from, to) in [
            (0, n),
            (be / 2, n - be / 2 - 1),
            (3, 5),
            (n - 1, n + 10),
            (5, 1),
        ] {
            ckpt.release_elements(&view, from, to);
            let mut got = vec![0.0; n];
            view.read_f32(0, &mut got);
            assert_bits_eq(dtype, 0, &got, &want);
        }
        drop(ckpt);
    }
}

/// The symmetric formats' (scale, quants) give back exactly the decoded values: `f32(q) · d`, bit for bit.
#[test]
fn ggml_symmetric_blocks_are_scale_times_quants() {
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q5_0] {
        let (blocks, want) = reference(dtype);
        for (i, block) in blocks.chunks_exact(dtype.block_bytes()).enumerate() {
            let (d, q) = symmetric_block(dtype, block).unwrap();
            let got: Vec<f32> = q.iter().map(|&q| f32::from(q) * d).collect();
            assert_bits_eq(dtype, i * 32, &got, &want[i * 32..(i + 1) * 32]);
        }
        assert!(symmetric_block(dtype, &blocks[1..dtype.block_bytes()]).is_none());
    }
    for dtype in [DType::Q4_1, DType::Q5_1, DType::Q4K, DType::F32] {
        assert!(symmetric_block(dtype, &vec![0; dtype.block_bytes()]).is_none());
    }
}
