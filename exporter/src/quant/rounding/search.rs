//! The least-squares searches (llama.cpp's `make_qx_quants` and `make_qkx2_quants`, see the module docs): the
//! importance weights, the candidate grids, and the per-thread working memory they reuse block after block.

use super::nearest::{
    all_zero, asymmetric_nearest, max_code, min_max, round_clamp, signed_absmax, symmetric_nearest,
};
use super::sums::{round_sums, weighted_error, Grid, Sums};
use super::{Block, MAX_BLOCK};

/// Importance of each value: `rms(x) + |x|`, times its column's importance when known.
pub(super) fn importance(x: &[f32], columns: Option<&[f32]>, w: &mut [f32]) {
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

/// The frame both searches share: a block with nothing to fit gets all-zero codes; otherwise round-to-nearest is the
/// starting point (every candidate must beat it), the candidate grids are ranked by their weighted error, and
/// [`Work::finish`] keeps the winner only if it really beats round-to-nearest.
pub(super) fn search(
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
