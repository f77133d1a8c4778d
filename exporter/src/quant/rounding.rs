//! How one block of weights becomes integer codes: `w ≈ scale · (code − zero)` with `code ∈ [0, 2^bits − 1]` and
//! an integer `zero` (ONNX Runtime's `MatMulNBits` and `GatherBlockQuantized` only take integer zero points fast;
//! float zero points fall back to a dequantize-everything path that is ~50× slower on CPU).
//!
//! Four rounders:
//! - symmetric round-to-nearest, as ONNX Runtime's own quantizer and ONNX Runtime GenAI do it: the value of largest
//!   magnitude maps to code 0 (`scale = vmax / −2^(bits−1)`), `zero = 2^(bits−1)`;
//! - asymmetric round-to-nearest: `[min(x, 0), max(x, 0)]` spread over all codes;
//! - symmetric search (llama.cpp's `make_qx_quants`): try 21 scales around `vmax / 2^(bits−1)`, refit each scale to the
//!   codes it produced by least squares, keep the one with the smallest weighted squared error (never worse than
//!   round-to-nearest, which is the starting point);
//! - asymmetric search (llama.cpp's `make_qkx2_quants`, adapted to an integer zero point): try 21 step sizes across
//!   `[min, max]`; for each candidate fit scale and offset to its codes by least squares, round the offset to an
//!   integer zero point and refit the scale for it; keep the best, then round once more on its refitted grid.
//!
//! The searches minimise `Σ wᵢ (xᵢ − x̂ᵢ)²` with importance `wᵢ = rms(x) + |xᵢ|` (llama.cpp's weighting for k-quants
//! without an importance matrix): large weights matter more, but small ones are not ignored.
//!
//! Why the search matters beyond lower error: a checkpoint that was itself quantized (for example the test 270M,
//! dequantized from a GGUF) has blocks whose values already lie on an evenly spaced grid. Round-to-nearest from the
//! block's extremes lands on that grid only by chance; a least-squares refit over candidate scales finds it whenever
//! the grid is representable (same or finer step, offset an integer number of steps), and then the re-quantization
//! is lossless.

/// Which rounder, and whether the zero point is free (asymmetric) or fixed at `2^(bits−1)` (symmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Round-to-nearest from the block's extremes.
    Nearest,
    /// Least-squares search over candidate scales (see the module docs).
    Search,
}

/// The quantized form of one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    pub scale: f32,
    /// Integer zero point, `0 ..= 2^bits − 1`; `2^(bits−1)` for symmetric blocks.
    pub zero: u8,
}

/// Quantizes `x` (one block, `x.len() ≤ codes.len()`) into `codes` (one code per byte, unpacked). Codes past
/// `x.len()` (padding of a last partial block) are set to `zero`, so they dequantize to exactly 0.
pub fn quantize_block(
    x: &[f32],
    bits: u8,
    symmetric: bool,
    rounding: Rounding,
    columns: Option<&[f32]>,
    codes: &mut [u8],
) -> Block {
    debug_assert!((2..=8).contains(&bits) && x.len() <= codes.len());
    debug_assert!(columns.is_none_or(|c| c.len() == x.len()));
    let block = match (symmetric, rounding) {
        (true, Rounding::Nearest) => symmetric_nearest(x, bits, codes),
        (symmetric, Rounding::Search) => search(x, bits, symmetric, columns, codes),
        (false, Rounding::Nearest) => asymmetric_nearest(x, bits, codes),
    };
    codes[x.len()..].fill(block.zero);
    block
}

/// `scale · (code − zero)`, the value ONNX Runtime reconstructs.
#[inline]
pub fn dequantize(code: u8, block: Block) -> f32 {
    (code as f32 - block.zero as f32) * block.scale
}

fn max_code(bits: u8) -> i32 {
    (1i32 << bits) - 1
}

/// `round(v)` (ties to even) clamped to `[lo, hi]`. Adding 1.5·2²³ leaves the rounded integer in the low mantissa
/// bits, which compiles to two plain SSE2 instructions instead of a libm `roundf` call (llama.cpp's `nearest_int`).
/// Exact for |v| < 2²², and every caller clamps to a code range far below that; NaN or huge inputs come out as
/// some in-range code, never as a panic.
#[inline]
fn round_clamp(v: f32, lo: i32, hi: i32) -> i32 {
    let v = v.clamp(-4_194_304.0, 4_194_304.0);
    let r = ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000;
    r.clamp(lo, hi)
}

/// The value of largest magnitude, with its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .copied()
        .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m })
}

fn all_zero(codes: &mut [u8], zero: u8) -> Block {
    codes.fill(zero);
    Block { scale: 0.0, zero }
}

fn symmetric_nearest(x: &[f32], bits: u8, codes: &mut [u8]) -> Block {
    let half = 1i32 << (bits - 1);
    let zero = half as u8;
    let vmax = signed_absmax(x);
    if vmax == 0.0 || !vmax.is_finite() {
        return all_zero(codes, zero);
    }
    let scale = vmax / -(half as f32);
    let inv = 1.0 / scale;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (round_clamp(v * inv, -half, half - 1) + half) as u8;
    }
    Block { scale, zero }
}

fn asymmetric_nearest(x: &[f32], bits: u8, codes: &mut [u8]) -> Block {
    let qmax = max_code(bits);
    let (lo, hi) = min_max(x);
    if hi - lo == 0.0 || !(hi - lo).is_finite() {
        return all_zero(codes, 0);
    }
    let scale = (hi - lo) / qmax as f32;
    let zero = round_clamp(-lo / scale, 0, qmax);
    let inv = 1.0 / scale;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = round_clamp(v * inv + zero as f32, 0, qmax) as u8;
    }
    Block {
        scale,
        zero: zero as u8,
    }
}

/// `(min(x, 0), max(x, 0))`: an integer zero point can only place 0 inside the code range.
fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Importance of each value: `rms(x) + |x|`, times its column's importance when known.
fn importance(x: &[f32], columns: Option<&[f32]>, w: &mut [f32]) {
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt();
    for (wi, &v) in w.iter_mut().zip(x) {
        *wi = rms + v.abs();
    }
    if let Some(c) = columns {
        for (wi, &ci) in w.iter_mut().zip(c) {
            *wi *= ci;
        }
    }
}

/// Candidate scales tried by the searches, as offsets (in code steps) from the round-to-nearest range.
/// 21 candidates 0.1 code steps apart for 4 bits (llama.cpp's spacing); 8-bit grids are 16× finer, so 9
/// candidates 0.25 apart cover the same ±1 step (including GGUF Q8_0's `amax / 127`) at a third of the cost.
fn candidates(bits: u8) -> (i32, f32) {
    if bits > 4 {
        (4, 0.25)
    } else {
        (10, 0.1)
    }
}
/// The largest block: ONNX Runtime's fast quantized kernels take blocks of 16 to 256 values.
pub const MAX_BLOCK: usize = 256;

/// The frame both searches share: a block with nothing to fit gets all-zero codes; otherwise round-to-nearest is the
/// starting point (every candidate must beat it), the candidate grids are ranked by their weighted error, and
/// [`Work::finish`] keeps the winner only if it really beats round-to-nearest.
fn search(
    x: &[f32],
    bits: u8,
    symmetric: bool,
    columns: Option<&[f32]>,
    codes: &mut [u8],
) -> Block {
    let spread = if symmetric {
        signed_absmax(x)
    } else {
        let (lo, hi) = min_max(x);
        hi - lo
    };
    if spread == 0.0 || !spread.is_finite() {
        let zero = if symmetric { 1u8 << (bits - 1) } else { 0 };
        return all_zero(codes, zero);
    }
    WORK.with_borrow_mut(|work| {
        let n = x.len();
        work.start(x, columns);
        let base = Sums::of_x(x, &work.w[..n]);
        let rtn = if symmetric {
            symmetric_nearest(x, bits, codes)
        } else {
            asymmetric_nearest(x, bits, codes)
        };
        let err = weighted_error(x, &work.w[..n], codes, rtn);
        let found = if symmetric {
            work.best_symmetric(x, bits, base, err)
        } else {
            work.best_asymmetric(x, bits, base, err)
        };
        work.finish(x, codes, rtn, found)
    })
}

impl Work {
    /// llama.cpp's `make_qx_quants`: scales around `vmax / 2^(bits−1)`, each refitted to its codes; the best block
    /// whose weighted error is below `err` (its codes in `self.best`).
    fn best_symmetric(&mut self, x: &[f32], bits: u8, base: Sums, err: f64) -> Option<Block> {
        let half = 1i32 << (bits - 1);
        let zero = half as u8;
        let vmax = signed_absmax(x);
        let n = x.len();
        let qmax = max_code(bits) as f32;
        let mut best = (err, None);
        let (steps, step) = candidates(bits);
        for is in -steps..=steps {
            let iscale = -(half as f32 + step * is as f32) / vmax;
            let grid = Grid {
                inv: iscale,
                offset: half as f32,
                qmax,
            };
            let sums = round_sums(x, &self.w[..n], grid, &mut self.l[..n]);
            let Some((scale, err)) = base.with_codes(sums).fit_scale(half as f64) else {
                continue;
            };
            if err < best.0 {
                let block = Block {
                    scale: scale as f32,
                    zero,
                };
                best = (err, Some(block));
                self.best[..n].copy_from_slice(&self.l[..n]);
            }
        }
        best.1
    }

    /// llama.cpp's `make_qkx2_quants` with an integer zero point: step sizes across `[min, max]`, each candidate's
    /// scale and offset fitted to its codes; the best block whose weighted error is below `err` (its codes in
    /// `self.best`).
    fn best_asymmetric(&mut self, x: &[f32], bits: u8, base: Sums, err: f64) -> Option<Block> {
        let qmax = max_code(bits);
        let (lo, hi) = min_max(x);
        let range = hi - lo;
        let n = x.len();
        let Work {
            w,
            l,
            best: best_codes,
        } = self;
        let w = &w[..n];
        let mut best = (err, None);
        // Rounds with (scale, zero), then fits: the scale for that zero point, or (affine) the zero point nearest to
        // the best real offset and the scale for it. Returns the refitted block and its weighted error.
        let round_and_fit = |l: &mut [f32], scale: f32, zero: i32, affine: bool| {
            let grid = Grid {
                inv: 1.0 / scale,
                offset: zero as f32,
                qmax: qmax as f32,
            };
            let sums = base.with_codes(round_sums(x, w, grid, l));
            let zero = if affine {
                let (a, b) = sums.fit_affine()?;
                if a <= 0.0 {
                    return None;
                }
                round_clamp((-b / a) as f32, 0, qmax)
            } else {
                zero
            };
            let (scale, err) = sums.fit_scale(zero as f64)?;
            (scale > 0.0).then_some((scale as f32, zero, err))
        };
        // Each candidate grid rounds the block, then gets its least-squares grid (zero point rounded to an integer):
        // a valid encoding (same codes, refitted scale and zero) whose error ranks the candidates.
        let (n_steps, step) = candidates(bits);
        let l = &mut l[..n];
        for is in -n_steps..=n_steps {
            let steps = qmax as f32 + step * is as f32;
            if steps <= 0.0 {
                continue;
            }
            let s0 = range / steps;
            let z0 = round_clamp(-lo / s0, 0, qmax);
            let Some((s1, z1, err)) = round_and_fit(l, s0, z0, true) else {
                continue;
            };
            if err < best.0 {
                let block = Block {
                    scale: s1,
                    zero: z1 as u8,
                };
                best = (err, Some(block));
                best_codes[..n].copy_from_slice(l);
            }
        }
        // The winner's codes were rounded on its candidate grid; rounding once more on its refitted grid (and
        // refitting the scale) can only help.
        if let (err, Some(b)) = best {
            if let Some((s2, z2, err2)) = round_and_fit(l, b.scale, b.zero as i32, false) {
                if err2 < err {
                    let block = Block {
                        scale: s2,
                        zero: z2 as u8,
                    };
                    best = (err2, Some(block));
                    best_codes[..n].copy_from_slice(l);
                }
            }
        }
        best.1
    }
}

thread_local! {
    /// One search's working memory per thread, reused block after block.
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::new(Work {
        w: vec![0.0; MAX_BLOCK],
        l: vec![0.0; MAX_BLOCK],
        best: vec![0.0; MAX_BLOCK],
    });
}

/// Working memory of a search: importance weights, candidate codes and the best codes so far (as f32); blocks
/// are at most [`MAX_BLOCK`] values.
struct Work {
    w: Vec<f32>,
    l: Vec<f32>,
    best: Vec<f32>,
}

impl Work {
    fn start(&mut self, x: &[f32], columns: Option<&[f32]>) {
        assert!(
            x.len() <= MAX_BLOCK,
            "blocks hold at most {MAX_BLOCK} values"
        );
        importance(x, columns, &mut self.w[..x.len()]);
    }

    /// Writes the winning codes. The search ranked candidates by errors computed from sums; the winner is checked
    /// once more against round-to-nearest (already in `codes`) with the exact per-value error, so a search never
    /// returns a worse block.
    fn finish(&self, x: &[f32], codes: &mut [u8], rtn: Block, found: Option<Block>) -> Block {
        let Some(block) = found else {
            return rtn;
        };
        let n = x.len();
        let mut cand = [0u8; MAX_BLOCK];
        for (c, &l) in cand[..n].iter_mut().zip(&self.best[..n]) {
            *c = l as u8;
        }
        let w = &self.w[..n];
        if weighted_error(x, w, &cand[..n], block) <= weighted_error(x, w, &codes[..n], rtn) {
            codes[..n].copy_from_slice(&cand[..n]);
            block
        } else {
            rtn
        }
    }
}

/// A candidate grid as [`round_sums`] applies it: `code = clamp(round(x·inv + offset), 0, qmax)`.
#[derive(Clone, Copy)]
struct Grid {
    inv: f32,
    offset: f32,
    qmax: f32,
}

/// Rounds `x·inv + offset` to codes in `[0, qmax]` into `l` and returns `(Σwl, Σwl², Σwxl)`: nearly all of a
/// quantized export's time. Written as 8 independent lanes so the compiler vectorizes it, and compiled twice: for
/// the baseline x86-64 (SSE2) and for AVX2, chosen at run time. Both do the same IEEE operations in the same order
/// (no FMA), so an export is bit-identical on every machine.
#[inline]
fn round_sums(x: &[f32], w: &[f32], grid: Grid, l: &mut [f32]) -> [f64; 3] {
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
struct Sums {
    w: f64,
    wx: f64,
    wx2: f64,
    wl: f64,
    wl2: f64,
    wxl: f64,
}

impl Sums {
    /// The code-independent part.
    fn of_x(x: &[f32], w: &[f32]) -> Sums {
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
    fn with_codes(mut self, [wl, wl2, wxl]: [f64; 3]) -> Sums {
        self.wl = wl;
        self.wl2 = wl2;
        self.wxl = wxl;
        self
    }

    /// `(s, Σw(x − s(l − z))²)` for the best scale `s` (any sign) with zero point `z`.
    fn fit_scale(&self, z: f64) -> Option<(f64, f64)> {
        let d2 = self.wl2 - 2.0 * z * self.wl + z * z * self.w;
        let xd = self.wxl - z * self.wx;
        if d2 <= 0.0 {
            return None;
        }
        let s = xd / d2;
        Some((s, (self.wx2 - s * xd).max(0.0)))
    }

    /// `(a, b)` of the weighted least squares `x ≈ a·l + b`.
    fn fit_affine(&self) -> Option<(f64, f64)> {
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

fn weighted_error(x: &[f32], w: &[f32], l: &[u8], b: Block) -> f64 {
    (0..x.len())
        .map(|i| {
            let e = (x[i] - dequantize(l[i], b)) as f64;
            w[i] as f64 * e * e
        })
        .sum()
}

#[cfg(test)]
#[path = "rounding_tests.rs"]
mod tests;
