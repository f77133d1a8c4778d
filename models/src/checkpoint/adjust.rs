//! Changes applied to a tensor's values as they are read, after the stored elements are decoded to f32.
//!
//! Two sources need them, and both go through this one mechanism so that every consumer of
//! [`TensorView::read_f32`](super::TensorView::read_f32) sees the final weights without knowing where they came from:
//! * a constant **offset**: llama.cpp's GGUF converter stores Gemma's norm gains as `1 + w`, so a GGUF source reads
//!   them with an offset of −1;
//! * a **low-rank update** `W' = W + B·A` (a LoRA adapter merged at read time; the adapter's scale is folded into
//!   `B` when it is built).
//!
//! A consumer that would copy stored bytes as they are (e.g. keeping a GGUF block format) must first check
//! [`ReadAdjust::is_identity`].

/// A dense low-rank update `ΔW = B·A` of a 2-D tensor `[rows, cols]`: `a` is `[rank, cols]`, `b` is `[rows, rank]`,
/// both row-major f32, with any scale already folded into `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub rank: usize,
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

impl LowRank {
    /// Checks that the factor lengths fit `rank`, `rows` and `cols`.
    pub fn new(rank: usize, rows: usize, cols: usize, a: Vec<f32>, b: Vec<f32>) -> Option<LowRank> {
        (a.len() == rank.checked_mul(cols)? && b.len() == rows.checked_mul(rank)?).then_some(
            LowRank {
                rank,
                rows,
                cols,
                a,
                b,
            },
        )
    }

    /// Adds `ΔW[e]` for the flat elements `e ∈ [start, start + out.len())` to `out`.
    pub fn add_to(&self, start: usize, out: &mut [f32]) {
        let mut e = start;
        let end = start + out.len();
        while e < end {
            let (row, col0) = (e / self.cols, e % self.cols);
            let n = (self.cols - col0).min(end - e);
            let dst = &mut out[e - start..e - start + n];
            let b_row = &self.b[row * self.rank..(row + 1) * self.rank];
            for (k, &bk) in b_row.iter().enumerate() {
                if bk == 0.0 {
                    continue;
                }
                let a_row = &self.a[k * self.cols + col0..k * self.cols + col0 + n];
                for (d, &a) in dst.iter_mut().zip(a_row) {
                    *d += bk * a;
                }
            }
            e += n;
        }
    }
}

/// What [`TensorView::read_f32`](super::TensorView::read_f32) applies after decoding. The default changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadAdjust<'a> {
    /// Added to every element.
    pub offset: f32,
    /// Added after the offset.
    pub low_rank: Option<&'a LowRank>,
}

impl ReadAdjust<'_> {
    /// Whether reading returns the stored values unchanged.
    pub fn is_identity(&self) -> bool {
        self.offset == 0.0 && self.low_rank.is_none()
    }

    /// Applies the adjustment to decoded elements `[start, start + out.len())`.
    pub fn apply(&self, start: usize, out: &mut [f32]) {
        if self.offset != 0.0 {
            for v in out.iter_mut() {
                *v += self.offset;
            }
        }
        if let Some(lr) = self.low_rank {
            lr.add_to(start, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_matches_dense_product_over_any_window() {
        // rows 3, cols 4, rank 2
        let a = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
        let b = vec![1.0, 0.0, 0.0, 1.0, 2.0, -1.0];
        let lr = LowRank::new(2, 3, 4, a.clone(), b.clone()).unwrap();
        let mut dense = vec![0.0f32; 12];
        for r in 0..3 {
            for c in 0..4 {
                dense[r * 4 + c] = (0..2).map(|k| b[r * 2 + k] * a[k * 4 + c]).sum();
            }
        }
        for start in 0..12 {
            for len in 0..=(12 - start) {
                let mut out = vec![0.0f32; len];
                lr.add_to(start, &mut out);
                assert_eq!(
                    out,
                    dense[start..start + len],
                    "window [{start}, {})",
                    start + len
                );
            }
        }
        assert!(LowRank::new(2, 3, 4, a, vec![0.0; 5]).is_none());
    }

    #[test]
    fn offset_then_low_rank() {
        let lr = LowRank::new(1, 1, 2, vec![1.0, 2.0], vec![0.5]).unwrap();
        let adj = ReadAdjust {
            offset: -1.0,
            low_rank: Some(&lr),
        };
        assert!(!adj.is_identity());
        assert!(ReadAdjust::default().is_identity());
        let mut v = vec![1.0, 1.0];
        adj.apply(0, &mut v);
        assert_eq!(v, vec![0.5, 1.0]);
    }
}
