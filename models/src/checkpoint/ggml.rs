//! Decoding ggml's block-quantized formats (GGUF tensor data) to f32, bit for bit as ggml's reference
//! `dequantize_row_*` functions (ggml/src/ggml-quants.c) and gguf-py's `gguf.quants.dequantize` do.
//!
//! A tensor is a run of fixed-size blocks along its flattened elements; each block holds `block_elems()` values in
//! `block_bytes()` bytes. Every format is decoded by a function from one block's bytes (a fixed-size array) to its
//! values (a fixed-size array), so the compiler can drop bounds checks and vectorise; [`read_blocks`] walks the
//! blocks a window touches and decodes only those, the partial blocks at either end through a small stack buffer.
//!
//! Every byte pattern decodes without panicking: the arithmetic is the reference's (f32 products and sums, in the
//! same order, never fused), so a NaN or infinite f16 scale simply gives NaN or infinite values.
//!
//! Layouts (little-endian; `d`, `m`, `dmin` are f16; `QK_K` = 256):
//!
//! | type | bytes | layout | value |
//! |------|-------|--------|-------|
//! | Q8_0 | 34 | `d`, `qs[32]` (i8) | `qs·d` |
//! | Q4_0 | 18 | `d`, `qs[16]` (low nibbles: 0..16, high: 16..32) | `(q − 8)·d` |
//! | Q4_1 | 20 | `d`, `m`, `qs[16]` | `q·d + m` |
//! | Q5_0 | 22 | `d`, `qh` (u32, bit j = fifth bit of element j), `qs[16]` | `(q − 16)·d` |
//! | Q5_1 | 24 | `d`, `m`, `qh`, `qs[16]` | `q·d + m` |
//! | Q4_K | 144 | `d`, `dmin`, `scales[12]` (8 × 6-bit scale and min), `qs[128]` | `(d·sc)·q − dmin·mn` |
//! | Q5_K | 176 | `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]` | as Q4_K with a fifth bit |
//! | Q6_K | 210 | `ql[128]`, `qh[64]`, `scales[16]` (i8), `d` | `(d·sc)·(q − 32)` |

use super::DType;

/// Decodes elements `[start, start + out.len())` of a tensor stored as `dtype` blocks in `data` (the whole tensor's
/// bytes). The window need not be block-aligned: only the blocks it touches are read.
///
/// # Panics
/// If `dtype` is not a block format, or the window lies outside `data`. Never on the bytes' content.
pub fn read_blocks(dtype: DType, data: &[u8], start: usize, out: &mut [f32]) {
    match dtype {
        DType::Q8_0 => decode_window(data, start, out, q8_0),
        DType::Q4_0 => decode_window(data, start, out, q4_0),
        DType::Q4_1 => decode_window(data, start, out, q4_1),
        DType::Q5_0 => decode_window(data, start, out, q5_0),
        DType::Q5_1 => decode_window(data, start, out, q5_1),
        DType::Q4K => decode_window(data, start, out, q4_k),
        DType::Q5K => decode_window(data, start, out, q5_k),
        DType::Q6K => decode_window(data, start, out, q6_k),
        DType::F32 | DType::F16 | DType::BF16 => {
            panic!("read_blocks: {} is not a ggml block format", dtype.name())
        }
    }
}

/// The scale `d` and the signed integer quants `q` of one block of a *symmetric* format with blocks of 32 (Q8_0,
/// Q4_0, Q5_0: every value is `d·q`, decoded exactly as `f32(q) · d`); `None` for the other types or a `block` of
/// the wrong length. An 8-bit symmetric scheme in blocks of 32 holds such a block exactly (codes `q + 128`, scale
/// `d`), which is how the exporter keeps these blocks without re-quantizing them.
pub fn symmetric_block(dtype: DType, block: &[u8]) -> Option<(f32, [i8; 32])> {
    if block.len() != dtype.block_bytes() {
        return None;
    }
    let d = f16_at(block, 0);
    let mut q = [0i8; 32];
    match dtype {
        DType::Q8_0 => {
            for (q, &b) in q.iter_mut().zip(&block[2..34]) {
                *q = b as i8;
            }
        }
        DType::Q4_0 => {
            for (j, &b) in block[2..18].iter().enumerate() {
                q[j] = (b & 0x0F) as i8 - 8;
                q[j + 16] = (b >> 4) as i8 - 8;
            }
        }
        DType::Q5_0 => {
            let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            for j in 0..16 {
                let (x0, x1) = five_bit(qh, &block[6..22], j);
                q[j] = x0 as i8 - 16;
                q[j + 16] = x1 as i8 - 16;
            }
        }
        _ => return None,
    }
    Some((d, q))
}

/// Decodes the window `[start, start + out.len())` with `decode`, one block of `BB` bytes into `BE` values at a
/// time: whole blocks straight into `out`, the partial first and last blocks through a stack buffer.
#[inline(always)]
fn decode_window<const BE: usize, const BB: usize>(
    data: &[u8],
    start: usize,
    out: &mut [f32],
    decode: fn(&[u8; BB], &mut [f32; BE]),
) {
    if out.is_empty() {
        return;
    }
    let end = start
        .checked_add(out.len())
        .expect("read_blocks: window end overflows usize");
    let (first, last) = (start / BE, end.div_ceil(BE));
    let needed = last.checked_mul(BB).filter(|&n| n <= data.len());
    assert!(
        needed.is_some(),
        "read_blocks: elements [{start}, {end}) need {last} blocks of {BB} bytes, the data has {} bytes",
        data.len()
    );
    let (blocks, _) = data[first * BB..last * BB].as_chunks::<BB>();
    let mut tmp = [0.0f32; BE];
    let mut out = out;
    let mut blocks = blocks;

    // A first block entered part-way (or a window inside one block).
    let head = start - first * BE;
    if head != 0 || out.len() < BE {
        let n = (BE - head).min(out.len());
        decode(&blocks[0], &mut tmp);
        out[..n].copy_from_slice(&tmp[head..head + n]);
        out = &mut out[n..];
        blocks = &blocks[1..];
    }
    // Whole blocks.
    let (whole, tail) = out.as_chunks_mut::<BE>();
    for (o, b) in whole.iter_mut().zip(blocks) {
        decode(b, o);
    }
    // A last block left part-way.
    if !tail.is_empty() {
        decode(&blocks[whole.len()], &mut tmp);
        let n = tail.len();
        tail.copy_from_slice(&tmp[..n]);
    }
}

/// An f16 stored little-endian at `b[i..i + 2]`, widened exactly.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = y.split_at_mut(16);
    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[2..18]) {
        *lo = ((q & 0x0F) as i32 - 8) as f32 * d;
        *hi = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (lo, hi) = y.split_at_mut(16);
    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[4..20]) {
        *lo = f32::from(q & 0x0F) * d + m;
        *hi = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: low nibbles from `qs`, fifth bits from `qh` (bit j for element j).
#[inline(always)]
fn five_bit(qh: u32, qs: &[u8], j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) << 4) as u8 & 0x10;
    let h1 = (qh >> (j + 12)) as u8 & 0x10;
    ((qs[j] & 0x0F) | h0, (qs[j] >> 4) | h1)
}

fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let (x0, x1) = five_bit(qh, qs, j);
        y[j] = (i32::from(x0) - 16) as f32 * d;
        y[j + 16] = (i32::from(x1) - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let (x0, x1) = five_bit(qh, qs, j);
        y[j] = f32::from(x0) * d + m;
        y[j + 16] = f32::from(x1) * d + m;
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, 6 bits each, packed in 12 bytes
/// (ggml's `get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The per-sub-block factors of a Q4_K/Q5_K block: `d·sc` and `dmin·mn` for each of the 8 sub-blocks of 32.
#[inline(always)]
fn k4_factors(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales: &[u8; 12] = b[4..16].try_into().expect("12 scale bytes");
    let (mut ds, mut ms) = ([0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        ds[j] = d * f32::from(sc);
        ms[j] = dmin * f32::from(m);
    }
    (ds, ms)
}

fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let (ds, ms) = k4_factors(b);
    let (qs, _) = b[16..144].as_chunks::<32>();
    let (ys, _) = y.as_chunks_mut::<64>();
    for (c, (q, y)) in qs.iter().zip(ys).enumerate() {
        let (d1, m1, d2, m2) = (ds[2 * c], ms[2 * c], ds[2 * c + 1], ms[2 * c + 1]);
        let (lo, hi) = y.split_at_mut(32);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = d1 * f32::from(q & 0x0F) - m1;
            *hi = d2 * f32::from(q >> 4) - m2;
        }
    }
}

fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let (ds, ms) = k4_factors(b);
    let qh: &[u8; 32] = b[16..48].try_into().expect("32 high-bit bytes");
    let (qs, _) = b[48..176].as_chunks::<32>();
    let (ys, _) = y.as_chunks_mut::<64>();
    for (c, (q, y)) in qs.iter().zip(ys).enumerate() {
        let (d1, m1, d2, m2) = (ds[2 * c], ms[2 * c], ds[2 * c + 1], ms[2 * c + 1]);
        let (s1, s2) = (2 * c, 2 * c + 1);
        let (lo, hi) = y.split_at_mut(32);
        for (((lo, hi), &q), &h) in lo.iter_mut().zip(hi).zip(q).zip(qh) {
            *lo = d1 * f32::from((q & 0x0F) | (((h >> s1) & 1) << 4)) - m1;
            *hi = d2 * f32::from((q >> 4) | (((h >> s2) & 1) << 4)) - m2;
        }
    }
}

fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    for n in 0..2 {
        let (ql, qh, sc) = (
            &ql[64 * n..64 * n + 64],
            &qh[32 * n..32 * n + 32],
            &sc[8 * n..8 * n + 8],
        );
        let y: &mut [f32; 128] = (&mut y[128 * n..128 * n + 128])
            .try_into()
            .expect("128 values");
        // (d·sc) for each group of 16 values, in ggml's order of operations.
        let f: [f32; 8] = std::array::from_fn(|i| d * f32::from(sc[i] as i8));
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = f[is] * q1 as f32;
            y[l + 32] = f[is + 2] * q2 as f32;
            y[l + 64] = f[is + 4] * q3 as f32;
            y[l + 96] = f[is + 6] * q4 as f32;
        }
    }
}

#[cfg(test)]
#[path = "ggml_tests.rs"]
mod tests;
