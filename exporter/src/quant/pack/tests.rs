//! Unit tests of the `pack` module.

use super::super::rounding::{dequantize, Block};
use super::super::{QuantConfig, Rounding};
use super::*;
use gemma_models::{DType, ReadAdjust, TensorView};
use std::path::Path;

/// 16 blocks of each kept format (random quants and scales, then gguf-py-quantized weights) from the models'
/// ggml fixtures.
fn blocks(dtype: DType) -> &'static [u8] {
    match dtype {
        DType::Q8_0 => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/ggml/Q8_0.blocks"
        )),
        DType::Q5_0 => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/ggml/Q5_0.blocks"
        )),
        DType::Q4_0 => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/ggml/Q4_0.blocks"
        )),
        _ => unreachable!(),
    }
}

/// The blocks as a `[4, 128]` weight, as a GGUF checkpoint hands it out, read with `offset` added.
fn view(dtype: DType, offset: f32) -> TensorView<'static> {
    TensorView {
        name: "model.layers.0.self_attn.q_proj.weight",
        dtype,
        shape: vec![4, 128],
        data: blocks(dtype),
        file: Path::new("model.gguf"),
        adjust: ReadAdjust {
            offset,
            low_rank: None,
        },
        select: None,
    }
}

#[test]
fn symmetric_blocks_are_kept_only_under_8_bit_symmetric_blocks_of_32() {
    let int8 = QuantConfig::int8();
    let layer = int8.scheme_of(Role::QProj);
    let emb = int8.scheme_of(Role::Embedding);
    let rtn = TensorScheme::new(8, true, Rounding::Nearest);
    for dtype in KEPT_FORMATS {
        let v = view(dtype, 0.0);
        assert!(keeps_source_blocks(&v, layer, 32), "{dtype:?}");
        assert!(keeps_source_blocks(&v, rtn, 32));
        // The int8 embedding's blocks of 64, other widths, asymmetric and 4-bit schemes re-quantize.
        assert!(!keeps_source_blocks(&v, emb, emb.block_size(32)));
        assert!(!keeps_source_blocks(&v, layer, 16));
        let a8 = TensorScheme::new(8, false, Rounding::Search);
        assert!(!keeps_source_blocks(&v, a8, 32));
        let s4 = TensorScheme::new(4, true, Rounding::Search);
        assert!(!keeps_source_blocks(&v, s4, 32));
        // Adjusted reads (GGUF norms' −1, a merged LoRA) are not the stored bytes.
        assert!(!keeps_source_blocks(&view(dtype, -1.0), layer, 32));
        // Bytes that do not match the shape.
        let short = TensorView {
            data: &blocks(dtype)[..blocks(dtype).len() - dtype.block_bytes()],
            ..view(dtype, 0.0)
        };
        assert!(!keeps_source_blocks(&short, layer, 32));
    }
    // Formats with minimums, and floats, are re-quantized.
    for dtype in [DType::Q4_1, DType::Q5_1, DType::F32] {
        let v = TensorView {
            dtype,
            data: &[],
            ..view(DType::Q8_0, 0.0)
        };
        assert!(!keeps_source_blocks(&v, layer, 32), "{dtype:?}");
    }
}

#[test]
fn kept_blocks_are_the_source_quants_and_values() {
    for dtype in KEPT_FORMATS {
        let v = view(dtype, 0.0);
        let bb = dtype.block_bytes();
        let (k, per_row) = (128, 4);
        let (r0, rows) = (1, 3);
        let mut out = vec![0u8; rows * k];
        let mut scales = vec![0f32; rows * per_row];
        let (err2, sum2) = copy_symmetric_rows(&v, r0, rows, &mut out, &mut scales);

        // Q8_0 bytes are copied: each block's int8 quants + 128, and its f16 scale widened.
        if dtype == DType::Q8_0 {
            let src = &blocks(dtype)[r0 * per_row * bb..];
            for i in 0..rows * per_row {
                let block = &src[i * bb..(i + 1) * bb];
                let d = ::half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                assert_eq!(scales[i].to_bits(), d.to_bits(), "scale of block {i}");
                for j in 0..32 {
                    let q = block[2 + j] as i8;
                    assert_eq!(i32::from(out[i * 32 + j]), i32::from(q) + 128);
                }
            }
        }

        // Values: MatMulNBits' dequantization (code − 128) · scale gives exactly what the checkpoint reads.
        let mut want = vec![0f32; rows * k];
        v.read_f32(r0 * k, &mut want);
        let mut want2 = 0f64;
        for (i, (&code, &x)) in out.iter().zip(&want).enumerate() {
            let block = Block {
                scale: scales[i / 32],
                zero: 128,
            };
            let got = dequantize(code, block);
            assert_eq!(got.to_bits(), x.to_bits(), "{dtype:?} element {i}");
            want2 += f64::from(x) * f64::from(x);
        }
        assert_eq!(err2, 0.0);
        assert!((sum2 - want2).abs() <= 1e-9 * want2, "{sum2} vs {want2}");
        assert!(want.iter().any(|&x| x != 0.0));
    }
}

#[test]
fn packing_is_low_bits_first() {
    let mut out = [0u8; 2];
    pack_codes(&[1, 2, 3, 15], 4, &mut out);
    assert_eq!(out, [0x21, 0xf3]);
    let mut out = [0u8; 1];
    pack_codes(&[1, 2, 3, 0], 2, &mut out);
    assert_eq!(out, [0b00_11_10_01]);
    // An odd number of 4-bit zero points per row: the last byte's high nibble is 0.
    assert_eq!(
        pack_rows(&[1, 2, 3, 4, 5, 6], 3, 4),
        vec![0x21, 0x03, 0x54, 0x06]
    );
    assert_eq!(pack_rows(&[7, 8], 2, 8), vec![7, 8]);
}
