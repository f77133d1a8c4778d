//! Quantizing one chunk of rows on all cores ([`Rows`]) and packing the resulting codes into `MatMulNBits`'
//! byte layout, low bits first ([`pack_codes`], [`pack_rows`]).

use super::super::rounding::{dequantize, quantize_block};
use super::TensorScheme;

/// One chunk of rows and where its results go.
pub(super) struct Rows<'a> {
    /// Importance of each input column (`[K]`), if known.
    pub(super) columns: Option<&'a [f32]>,
    pub(super) x: &'a [f32],
    pub(super) out: &'a mut [u8],
    pub(super) scales: &'a mut [f32],
    pub(super) zeros: &'a mut [u8],
}

impl Rows<'_> {
    /// Quantizes every row, splitting the rows over `threads`; returns `(Σ(x − x̂)², Σx²)`.
    pub(super) fn quantize(
        self,
        k: usize,
        block: usize,
        scheme: TensorScheme,
        threads: usize,
    ) -> (f64, f64) {
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
