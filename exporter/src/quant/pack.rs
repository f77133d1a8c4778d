//! Streams one checkpoint matrix `[N, K]` through the block rounder into ONNX Runtime's `MatMulNBits` layout:
//!
//! - `B` uint8 `[N, blocks, blob]`, `blocks = ⌈K / block⌉`, `blob = block · bits / 8`: each block's codes packed
//!   along K, low bits first (4-bit: element 2i in the low nibble of byte i). A last partial block is padded with
//!   its zero point, which dequantizes to 0.
//! - `scales` f32 `[N, blocks]`.
//! - `zero_points` uint8 `[N, ⌈blocks · bits / 8⌉]`, packed the same way (asymmetric schemes only; symmetric ones
//!   use the operator's default `2^(bits−1)`).
//!
//! `GatherBlockQuantized` reads the same bytes as `[N, blocks · blob]` with the same scales and zero points, so the
//! tied embedding and lm_head share one stored copy (see [`crate::quant::graph`]).
//!
//! Rows are read from the memory map a chunk at a time (about a million values), quantized on all cores and
//! appended to the data file; the chunk's source pages are released right away. Only the scales and zero points
//! of the current tensor are held in memory (1/8 and 1/32 of its f32 size at blocks of 32).
//!
//! **Kept source blocks.** A GGUF tensor stored as ggml Q8_0 (blocks of 32 along K: an f16 scale `d` and 32 int8
//! `q`, value `d·q`) is already in the form of an 8-bit symmetric scheme with blocks of 32: `MatMulNBits` with
//! codes `q + 128`, no zero points (the default is `2^(bits−1)` = 128) and scales `f32(d)` holds exactly the same
//! values. So do Q5_0 and Q4_0, whose blocks are `d·q` with smaller integer `q` ([`KEPT_FORMATS`]). When the
//! tensor's scheme is that one and its reads are not adjusted ([`ReadAdjust::is_identity`]), its blocks are copied
//! instead of re-quantized ([`keeps_source_blocks`], [`copy_symmetric_rows`]): no rounding error, and much faster.
//! The tensors kept this way are listed in [`QuantStats::kept`] and the export's manifest.
//!
//! [`ReadAdjust::is_identity`]: gemma_models::ReadAdjust::is_identity

use super::rounding::{dequantize, quantize_block};
use super::{QuantStats, Role, TensorScheme};
use crate::onnx::{DataType, TensorProto};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::checkpoint::ggml::symmetric_block;
use gemma_models::{Checkpoint, DType, TensorView};

/// A quantized matrix as stored initializers.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `[N, blocks, blob]` uint8.
    pub b: TensorProto,
    /// `[N, blocks]` f32.
    pub scales: TensorProto,
    /// `[N, ⌈blocks · bits / 8⌉]` uint8; `None` for symmetric schemes.
    pub zero_points: Option<TensorProto>,
    /// Output features (rows of the checkpoint weight).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
    pub scheme: TensorScheme,
    pub block_size: usize,
}

impl Packed {
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    pub fn blob(&self) -> usize {
        self.block_size * self.scheme.bits as usize / 8
    }
}

/// Initializer names of a quantized weight: `{weight}_Q{bits}`, `{weight}_scales`, `{weight}_zero_points`.
pub fn initializer_names(weight_name: &str, bits: u8) -> [String; 3] {
    [
        format!("{weight_name}_Q{bits}"),
        format!("{weight_name}_scales"),
        format!("{weight_name}_zero_points"),
    ]
}

/// Source values per chunk.
const CHUNK_VALUES: usize = 1 << 20;

/// Quantizes the checkpoint matrices `sources` (same input width K), stacked along N in that order, as the one
/// quantized weight `name` with `scheme`, or returns the initializers an earlier graph of the same export already
/// wrote. One source is the common case; several are e.g. q, k and v as one `qkv_proj`, so that a single
/// `MatMulNBits` computes all three. Blocks never straddle two sources (they run along K), so every row is quantized
/// exactly as on its own. Reconstruction errors go into `stats`, per source tensor class. With `keep_source_blocks`,
/// a source whose stored blocks the scheme can hold exactly is copied instead (see the module docs) and listed in
/// `stats.kept`.
#[allow(clippy::too_many_arguments)]
pub fn quantize_stacked(
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    name: &str,
    sources: &[&str],
    scheme: TensorScheme,
    block_size: usize,
    columns: Option<&[f32]>,
    keep_source_blocks: bool,
    stats: &mut QuantStats,
) -> Result<Packed, ExportError> {
    let mut views = Vec::with_capacity(sources.len());
    for src in sources {
        let view = ckpt.tensor(src)?;
        let &[_, k] = view.shape.as_slice() else {
            return Err(ExportError::Unsupported(format!(
                "{src}: only 2-D weights can be quantized, got shape {:?}",
                view.shape
            )));
        };
        if let Some(first) = views.first() {
            let first: &gemma_models::TensorView<'_> = first;
            if first.shape[1] != k {
                return Err(ExportError::Unsupported(format!(
                    "{src}: input width {k} differs from {}'s {}; they cannot share one quantized weight",
                    sources[0], first.shape[1]
                )));
            }
        }
        views.push(view);
    }
    let k = views[0].shape[1];
    let n: usize = views.iter().map(|v| v.shape[0]).sum();
    let weight_name = name;
    let bits = scheme.bits;
    let blocks = k.div_ceil(block_size);
    let blob = block_size * bits as usize / 8;
    let zp_blob = (blocks * bits as usize).div_ceil(8);
    let [b_name, s_name, z_name] = initializer_names(weight_name, bits);
    let packed = |b, scales, zero_points| Packed {
        b,
        scales,
        zero_points,
        n,
        k,
        scheme,
        block_size,
    };
    if let (Some(b), Some(s)) = (w.written(&b_name), w.written(&s_name)) {
        return Ok(packed(b, s, w.written(&z_name)));
    }

    let row_bytes = blocks * blob;
    let rows_per_chunk = (CHUNK_VALUES / k.max(1)).clamp(1, n.max(1));
    let mut scales = vec![0f32; n * blocks];
    let mut zeros = vec![0u8; n * blocks];
    let mut x = vec![0f32; rows_per_chunk * k];
    let mut out = vec![0u8; rows_per_chunk * row_bytes];
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(16);
    let start = w.begin_tensor()?;
    // First output row of the current source.
    let mut base = 0;
    for (src, view) in sources.iter().zip(&views) {
        let rows_here = view.shape[0];
        let keep = keep_source_blocks && keeps_source_blocks(view, scheme, block_size);
        let (mut err2, mut sum2) = (0f64, 0f64);
        let mut r0 = 0;
        while r0 < rows_here {
            let rows = rows_per_chunk.min(rows_here - r0);
            let (o0, o1) = ((base + r0) * blocks, (base + r0 + rows) * blocks);
            let (e, s) = if keep {
                copy_symmetric_rows(
                    view,
                    r0,
                    rows,
                    &mut out[..rows * row_bytes],
                    &mut scales[o0..o1],
                )
            } else {
                view.read_f32(r0 * k, &mut x[..rows * k]);
                crate::finite::check(view, r0 * k, &x[..rows * k], w.allow_nonfinite)?;
                let job = Rows {
                    columns,
                    x: &x[..rows * k],
                    out: &mut out[..rows * row_bytes],
                    scales: &mut scales[o0..o1],
                    zeros: &mut zeros[o0..o1],
                };
                job.quantize(k, block_size, scheme, threads)
            };
            ckpt.release_elements(view, r0 * k, (r0 + rows) * k);
            // Finite weights can still give an infinite block scale (a block spanning ±3e38), and kept source
            // blocks can carry a non-finite scale: refuse it rather than store a block that dequantizes to NaN.
            if !w.allow_nonfinite {
                if let Some(i) = scales[o0..o1].iter().position(|s| !s.is_finite()) {
                    let (row, block) = (r0 + i / blocks, i % blocks);
                    return Err(ExportError::OutOfRange {
                        tensor: format!("{src} (row {row}, block {block})"),
                        value: if keep {
                            scales[o0 + i]
                        } else {
                            x[(i / blocks) * k + (block * block_size).min(k - 1)]
                        },
                        precision: scheme_name(scheme.bits),
                    });
                }
            }
            err2 += e;
            sum2 += s;
            w.append(&out[..rows * row_bytes])?;
            w.advance((rows * k * 4) as u64);
            r0 += rows;
        }
        ckpt.release(view);
        stats.add(Role::of(src), err2, sum2, (rows_here * k) as u64);
        if keep {
            stats.kept.push(src.to_string());
        }
        base += rows_here;
    }
    let dims = [n as i64, blocks as i64, blob as i64];
    let b = w.end_tensor(&b_name, DataType::Uint8, &dims, start);
    let s = w.raw_values(
        &s_name,
        DataType::Float,
        &[n as i64, blocks as i64],
        bytemuck::cast_slice(&scales),
    )?;
    let z = if scheme.symmetric {
        None
    } else {
        let packed_zeros = pack_rows(&zeros, blocks, bits);
        Some(w.raw_values(
            &z_name,
            DataType::Uint8,
            &[n as i64, zp_blob as i64],
            &packed_zeros,
        )?)
    };
    Ok(packed(b, s, z))
}

/// The ggml formats whose blocks an 8-bit symmetric scheme in blocks of 32 holds exactly: each is 32 values
/// `d·q` with an f16 `d` and integer `q` in −128..=127 (Q8_0), −16..=15 (Q5_0) or −8..=7 (Q4_0).
pub const KEPT_FORMATS: [DType; 3] = [DType::Q8_0, DType::Q5_0, DType::Q4_0];

/// Whether `view`'s stored blocks are exactly what `scheme` in blocks of `block_size` would store, so that
/// [`copy_symmetric_rows`] can copy them: a matrix in one of [`KEPT_FORMATS`] (whole, consistent bytes) read
/// without adjustment, and an 8-bit symmetric scheme with blocks of 32 (either rounding: a copy is exact, so no
/// rounder can do better).
pub fn keeps_source_blocks(view: &TensorView<'_>, scheme: TensorScheme, block_size: usize) -> bool {
    KEPT_FORMATS.contains(&view.dtype)
        && view.adjust.is_identity()
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

/// The precision name of a bit width, for errors.
fn scheme_name(bits: u8) -> &'static str {
    if bits == 4 {
        "int4"
    } else {
        "int8"
    }
}

/// One chunk of rows and where its results go.
struct Rows<'a> {
    /// Importance of each input column (`[K]`), if known.
    columns: Option<&'a [f32]>,
    x: &'a [f32],
    out: &'a mut [u8],
    scales: &'a mut [f32],
    zeros: &'a mut [u8],
}

impl Rows<'_> {
    /// Quantizes every row, splitting the rows over `threads`; returns `(Σ(x − x̂)², Σx²)`.
    fn quantize(self, k: usize, block: usize, scheme: TensorScheme, threads: usize) -> (f64, f64) {
        let blocks = k.div_ceil(block);
        let rows = self.scales.len() / blocks;
        let row_bytes = self.out.len() / rows.max(1);
        let per = rows.div_ceil(threads.max(1)).max(1);
        let columns = self.columns;
        if threads <= 1 || rows <= 1 {
            return quantize_rows(
                self.x,
                columns,
                self.out,
                self.scales,
                self.zeros,
                k,
                block,
                scheme,
            );
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .x
                .chunks(per * k)
                .zip(self.out.chunks_mut(per * row_bytes))
                .zip(self.scales.chunks_mut(per * blocks))
                .zip(self.zeros.chunks_mut(per * blocks))
                .map(|(((x, out), sc), zs)| {
                    s.spawn(move || quantize_rows(x, columns, out, sc, zs, k, block, scheme))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("quantization thread panicked"))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    x: &[f32],
    columns: Option<&[f32]>,
    out: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [u8],
    k: usize,
    block: usize,
    scheme: TensorScheme,
) -> (f64, f64) {
    let blocks = k.div_ceil(block);
    let bits = scheme.bits;
    let blob = block * bits as usize / 8;
    let mut codes = vec![0u8; block];
    let (mut err2, mut sum2) = (0f64, 0f64);
    for (r, row) in x.chunks_exact(k).enumerate() {
        for j in 0..blocks {
            let range = j * block..((j + 1) * block).min(k);
            let cols = columns.map(|c| &c[range.clone()]);
            let xs = &row[range];
            let b = quantize_block(
                xs,
                bits,
                scheme.symmetric,
                scheme.rounding,
                cols,
                &mut codes,
            );
            let i = r * blocks + j;
            scales[i] = b.scale;
            zeros[i] = b.zero;
            pack_codes(&codes, bits, &mut out[i * blob..(i + 1) * blob]);
            for (&v, &c) in xs.iter().zip(&codes) {
                let e = (v - dequantize(c, b)) as f64;
                err2 += e * e;
                sum2 += (v as f64) * (v as f64);
            }
        }
    }
    (err2, sum2)
}

/// Packs `bits`-bit codes (one per byte) into `out`, low bits first.
pub fn pack_codes(codes: &[u8], bits: u8, out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(codes),
        4 => {
            for (o, pair) in out.iter_mut().zip(codes.chunks(2)) {
                *o = (pair[0] & 0x0f) | (pair.get(1).copied().unwrap_or(0) << 4);
            }
        }
        _ => {
            out.fill(0);
            let mask = (1u16 << bits) as u8 - 1;
            for (i, &c) in codes.iter().enumerate() {
                let bit = i * bits as usize;
                out[bit / 8] |= (c & mask) << (bit % 8);
            }
        }
    }
}

/// Packs per-block values row by row: `[rows, blocks]` codes → `[rows, ⌈blocks · bits / 8⌉]` bytes.
pub fn pack_rows(values: &[u8], blocks: usize, bits: u8) -> Vec<u8> {
    let row_bytes = (blocks * bits as usize).div_ceil(8);
    let rows = values.len() / blocks.max(1);
    let mut out = vec![0u8; rows * row_bytes];
    for (row, o) in values.chunks(blocks).zip(out.chunks_mut(row_bytes)) {
        pack_codes(row, bits, o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::rounding::Block;
    use super::super::{QuantConfig, Rounding};
    use super::*;
    use gemma_models::ReadAdjust;
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
}
