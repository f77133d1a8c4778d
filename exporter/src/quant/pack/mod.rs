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

mod kept;
mod rows;

pub use kept::{copy_symmetric_rows, keeps_source_blocks, KEPT_FORMATS};
pub use rows::{pack_codes, pack_rows};

use rows::Rows;

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

/// The precision name of a bit width, for errors.
fn scheme_name(bits: u8) -> &'static str {
    if bits == 4 {
        "int4"
    } else {
        "int8"
    }
}

#[cfg(test)]
mod tests;
