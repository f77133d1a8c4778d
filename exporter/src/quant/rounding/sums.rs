//! The inner loop of the searches and its arithmetic: rounding a block onto a candidate grid while summing
//! `(Σwl, Σwl², Σwxl)` (vectorized, bit-identical on every x86-64), the least-squares fits from those sums, and a
//! block's weighted error.

use super::{dequantize, Block};

/// A candidate grid as [`round_sums`] applies it: `code = clamp(round(x·inv + offset), 0, qmax)`.
#[derive(Clone, Copy)]
pub(super) struct Grid {
    pub(super) inv: f32,
    pub(super) offset: f32,
    pub(super) qmax: f32,
}

/// Rounds `x·inv + offset` to codes in `[0, qmax]` into `l` and returns `(Σwl, Σwl², Σwxl)`: nearly all of a
/// quantized export's time. Written as 8 independent lanes so the compiler vectorizes it, and compiled twice: for
/// the baseline x86-64 (SSE2) and for AVX2, chosen at run time. Both do the same IEEE operations in the same order
/// (no FMA), so an export is bit-identical on every machine.
#[inline]
pub(super) fn round_sums(x: &[f32], w: &[f32], grid: Grid, l: &mut [f32]) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { round_sums_avx2(x, w, grid, l) };
    }
    round_sums_lanes(x, w, grid, l)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_sums_avx2(x: &[f32], w: &[f32], grid: Grid, l: &mut [f32]) -> [f64; 3] {
    round_sums_lanes(x, w, grid, l)
}

#[inline(always)]
fn round_sums_lanes(x: &[f32], w: &[f32], grid: Grid, l: &mut [f32]) -> [f64; 3] {
    let Grid { inv, offset, qmax } = grid;
    // Adding and subtracting 1.5·2²³ rounds to nearest (ties to even) for |v| < 2²², which the clamp keeps.
    const MAGIC: f32 = 12_582_912.0;
    let code = |v: f32| {
        let v = v.clamp(-4_194_304.0, 4_194_304.0);
        ((v + MAGIC) - MAGIC).clamp(0.0, qmax)
    };
    let mut acc = [[0f32; 8]; 3];
    let n8 = x.len() / 8 * 8;
    for ((xc, wc), lc) in x[..n8]
        .chunks_exact(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(l[..n8].chunks_exact_mut(8))
    {
        for j in 0..8 {
            let r = code(xc[j] * inv + offset);
            lc[j] = r;
            let wl = wc[j] * r;
            acc[0][j] += wl;
            acc[1][j] += wl * r;
            acc[2][j] += wl * xc[j];
        }
    }
    let mut sums = [0f64; 3];
    for (s, a) in sums.iter_mut().zip(&acc) {
        *s = a.iter().map(|&v| v as f64).sum();
    }
    for i in n8..x.len() {
        let r = code(x[i] * inv + offset);
        l[i] = r;
        let wl = (w[i] * r) as f64;
        sums[0] += wl;
        sums[1] += wl * r as f64;
        sums[2] += wl * x[i] as f64;
    }
    sums
}

/// Weighted sums over one block for least-squares fits of `x ≈ s·(l − z)` or `x ≈ a·l + b` with codes `l`,
/// gathered in the same pass that rounds the codes (in f64: the error is a small difference of large sums).
#[derive(Clone, Copy)]
pub(super) struct Sums {
    w: f64,
    wx: f64,
    wx2: f64,
    wl: f64,
    wl2: f64,
    wxl: f64,
}

impl Sums {
    /// The code-independent part.
    pub(super) fn of_x(x: &[f32], w: &[f32]) -> Sums {
        let mut s = Sums {
            w: 0.0,
            wx: 0.0,
            wx2: 0.0,
            wl: 0.0,
            wl2: 0.0,
            wxl: 0.0,
        };
        for (&xi, &wi) in x.iter().zip(w) {
            let (xi, wi) = (xi as f64, wi as f64);
            s.w += wi;
            s.wx += wi * xi;
            s.wx2 += wi * xi * xi;
        }
        s
    }

    /// These sums completed with the code sums `(Σwl, Σwl², Σwxl)` of [`round_sums`].
    pub(super) fn with_codes(mut self, [wl, wl2, wxl]: [f64; 3]) -> Sums {
        self.wl = wl;
        self.wl2 = wl2;
        self.wxl = wxl;
        self
    }

    /// `(s, Σw(x − s(l − z))²)` for the best scale `s` (any sign) with zero point `z`.
    pub(super) fn fit_scale(&self, z: f64) -> Option<(f64, f64)> {
        let d2 = self.wl2 - 2.0 * z * self.wl + z * z * self.w;
        let xd = self.wxl - z * self.wx;
        if d2 <= 0.0 {
            return None;
        }
        let s = xd / d2;
        Some((s, (self.wx2 - s * xd).max(0.0)))
    }

    /// `(a, b)` of the weighted least squares `x ≈ a·l + b`.
    pub(super) fn fit_affine(&self) -> Option<(f64, f64)> {
        let d = self.w * self.wl2 - self.wl * self.wl;
        if d <= 0.0 {
            return None;
        }
        Some((
            (self.w * self.wxl - self.wx * self.wl) / d,
            (self.wl2 * self.wx - self.wl * self.wxl) / d,
        ))
    }
}

pub(super) fn weighted_error(x: &[f32], w: &[f32], l: &[u8], b: Block) -> f64 {
    (0..x.len())
        .map(|i| {
            let e = (x[i] - dequantize(l[i], b)) as f64;
            w[i] as f64 * e * e
        })
        .sum()
}
