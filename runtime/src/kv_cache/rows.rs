//! [`KvCache::gather`]: one batch cache made of rows of other caches, each sequence left-padded to the longest. This
//! is how `gemma serve` decodes sequences of different lengths in one step: both graph kinds take a per-row
//! `attention_mask` (0 on padding) and per-row `position_ids`, so a row that holds its positions at the right end
//! of the common length `T`, with zeros before them, computes what it computes alone (the padded keys are masked).
//!
//! Where a layer keeps position `p < T` of the common length:
//! - portable and global cpu layers: at index `p`;
//! - sliding cpu layers: the last [`resident_len`](KvCache::resident_len) positions `[T − L, T)` at indices
//!   `[0, L)` (ONNX Runtime evicts old positions of every row together, as `T` is shared).
//!
//! Positions a source no longer holds (out of its sliding window) are out of the window of the new cache too; they
//! and the padding are zeros, never uninitialised memory, which could hold NaN and spoil the masked sum.

use ort::value::{DynValue, PrimitiveTensorElementType, Tensor};

use super::{sliding_resident_len, KvCache, Store};
use crate::error::{Error, Result};
use crate::manifest::{DType, Manifest};

/// One sequence to gather: row `row` of `cache`, whose real positions are the last `len` of the cache's length.
#[derive(Clone, Copy)]
pub struct RowSource<'a> {
    pub cache: &'a KvCache,
    pub row: usize,
    pub len: usize,
}

/// Where one layer keeps which positions: indices `[0, rows)` hold positions `[start, start + rows)`.
#[derive(Clone, Copy)]
struct Resident {
    start: usize,
    rows: usize,
    /// Allocated positions per (row, head) block.
    capacity: usize,
}

impl KvCache {
    /// A cache of `rows.len()` rows for the model of `manifest` (same graph kind as the sources), length `T` = the
    /// longest row's `len`, each row's positions right-aligned to `T`. Cpu-graph global layers get room for
    /// `positions ≥ T` positions. Use `T − len` as the row's padding in the next steps' `attention_mask`.
    pub fn gather(
        manifest: &Manifest,
        rows: &[RowSource<'_>],
        positions: usize,
    ) -> Result<KvCache> {
        let t = rows.iter().map(|r| r.len).max().unwrap_or(0);
        for r in rows {
            if r.row >= r.cache.batch || r.len > r.cache.len || r.len == 0 || !r.cache.valid {
                return Err(Error::InvalidArgument(format!(
                    "cannot gather row {} of {} positions from a cache of batch {} and length {}",
                    r.row, r.len, r.cache.batch, r.cache.len
                )));
            }
            if r.cache.is_in_place() != (manifest.graph == crate::manifest::GraphKind::Cpu) {
                return Err(Error::InvalidArgument(
                    "cannot gather rows of a cache made for another graph kind".into(),
                ));
            }
        }
        let mut out = KvCache::with_capacity(manifest, rows.len().max(1), positions.max(t))?;
        let (heads, hd) = (out.num_kv_heads, out.head_dim);
        let window = out.window;
        let fill = |dst: &mut [f32], dst_at: Resident, li: usize, key: bool| {
            for (b, r) in rows.iter().enumerate() {
                let Store::InPlace(src_layers) = &r.cache.store else {
                    unreachable!("checked above")
                };
                let src = &src_layers[li];
                let tensor = if key { &src.key } else { &src.value };
                let (_, data) = tensor.extract_tensor();
                let res = r.cache.resident_len(li);
                let src_at = Resident {
                    start: r.cache.len - res,
                    rows: res,
                    capacity: src.capacity,
                };
                copy_row(data, src_at, r, dst, dst_at, b, t, heads, hd);
            }
        };
        match &mut out.store {
            Store::InPlace(layers) => {
                for (li, layer) in layers.iter_mut().enumerate() {
                    let rows_held = if layer.sliding {
                        sliding_resident_len(t, layer.capacity, window)
                    } else {
                        t
                    };
                    let at = Resident {
                        start: t - rows_held,
                        rows: rows_held,
                        capacity: layer.capacity,
                    };
                    for key in [true, false] {
                        let tensor = if key {
                            &mut layer.key
                        } else {
                            &mut layer.value
                        };
                        let (_, dst) = tensor.extract_tensor_mut();
                        dst.fill(0.0);
                        fill(dst, at, li, key);
                    }
                }
            }
            Store::Replaced { keys, values } => {
                let at = Resident {
                    start: 0,
                    rows: t,
                    capacity: t,
                };
                for li in 0..keys.len() {
                    for key in [true, false] {
                        let value = gather_portable(rows, li, key, at, out.dtype, heads, hd)?;
                        if key {
                            keys[li] = value;
                        } else {
                            values[li] = value;
                        }
                    }
                }
            }
        }
        out.len = t;
        Ok(out)
    }
}

/// Layer `li`'s keys (`key`) or values of every row as a new portable `[rows, heads, T, hd]` tensor.
fn gather_portable(
    rows: &[RowSource<'_>],
    li: usize,
    key: bool,
    at: Resident,
    dtype: DType,
    heads: usize,
    hd: usize,
) -> Result<DynValue> {
    let shape = [rows.len(), heads, at.rows, hd];
    match dtype {
        DType::Float32 => build::<f32>(rows, li, key, at, shape),
        DType::Float16 => build::<half::f16>(rows, li, key, at, shape),
    }
}

fn build<E: PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + 'static>(
    rows: &[RowSource<'_>],
    li: usize,
    key: bool,
    at: Resident,
    shape: [usize; 4],
) -> Result<DynValue> {
    let ctx = "gathering KV cache rows";
    let (heads, hd) = (shape[1], shape[3]);
    let mut dst = vec![E::default(); shape.iter().product()];
    for (b, r) in rows.iter().enumerate() {
        let Some((k, v)) = r.cache.past(li) else {
            unreachable!("checked by gather")
        };
        let (_, data) = (if key { k } else { v })
            .try_extract_tensor::<E>()
            .map_err(|e| Error::ort(ctx, e))?;
        let src_at = Resident {
            start: 0,
            rows: r.cache.len,
            capacity: r.cache.len,
        };
        copy_row(data, src_at, r, &mut dst, at, b, at.rows, heads, hd);
    }
    Tensor::<E>::from_array((shape, dst))
        .map(|t| t.into_dyn())
        .map_err(|e| Error::ort(ctx, e))
}

/// Copies row `r`'s real positions from `src` (laid out as `src_at`, its cache's length `r.cache.len`) into row `b`
/// of `dst` (laid out as `dst_at`, common length `t`), for every head.
#[allow(clippy::too_many_arguments)]
fn copy_row<E: Copy>(
    src: &[E],
    src_at: Resident,
    r: &RowSource<'_>,
    dst: &mut [E],
    dst_at: Resident,
    b: usize,
    t: usize,
    heads: usize,
    hd: usize,
) {
    // Sequence position q sits at padded position (t − len + q) in dst and (src_len − len + q) in src.
    let (len, src_len) = (r.len as i64, r.cache.len as i64);
    let dst_first = t as i64 - len - dst_at.start as i64; // dst index of q = 0
    let src_first = src_len - len - src_at.start as i64; // src index of q = 0
    let q_lo = 0.max(-dst_first).max(-src_first);
    let q_hi = len
        .min(dst_at.rows as i64 - dst_first)
        .min(src_at.rows as i64 - src_first);
    if q_hi <= q_lo {
        return;
    }
    let n = (q_hi - q_lo) as usize * hd;
    let (d0, s0) = ((dst_first + q_lo) as usize, (src_first + q_lo) as usize);
    for h in 0..heads {
        let from = ((r.row * heads + h) * src_at.capacity + s0) * hd;
        let to = ((b * heads + h) * dst_at.capacity + d0) * hd;
        dst[to..to + n].copy_from_slice(&src[from..from + n]);
    }
}
