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

use super::rounding::{dequantize, quantize_block};
use super::{QuantStats, Role, TensorScheme};
use crate::onnx::{DataType, TensorProto};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::Checkpoint;

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
/// exactly as on its own. Reconstruction errors go into `stats`, per source tensor class.
#[allow(clippy::too_many_arguments)]
pub fn quantize_stacked(
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    name: &str,
    sources: &[&str],
    scheme: TensorScheme,
    block_size: usize,
    columns: Option<&[f32]>,
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
        let (mut err2, mut sum2) = (0f64, 0f64);
        let mut r0 = 0;
        while r0 < rows_here {
            let rows = rows_per_chunk.min(rows_here - r0);
            view.read_f32(r0 * k, &mut x[..rows * k]);
            ckpt.release_elements(view, r0 * k, (r0 + rows) * k);
            crate::finite::check(view, r0 * k, &x[..rows * k], w.allow_nonfinite)?;
            let (o0, o1) = ((base + r0) * blocks, (base + r0 + rows) * blocks);
            let job = Rows {
                columns,
                x: &x[..rows * k],
                out: &mut out[..rows * row_bytes],
                scales: &mut scales[o0..o1],
                zeros: &mut zeros[o0..o1],
            };
            let (e, s) = job.quantize(k, block_size, scheme, threads);
            // Finite weights can still give an infinite block scale (a block spanning ±3e38): refuse it rather
            // than store a block that dequantizes to NaN.
            if !w.allow_nonfinite {
                if let Some(i) = scales[o0..o1].iter().position(|s| !s.is_finite()) {
                    let (row, block) = (r0 + i / blocks, i % blocks);
                    return Err(ExportError::OutOfRange {
                        tensor: format!("{src} (row {row}, block {block})"),
                        value: x[(i / blocks) * k + (block * block_size).min(k - 1)],
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
    use super::*;

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
