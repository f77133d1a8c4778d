//! A rectangular selection of a stored 2-D tensor: some of its rows and some of its columns, each a list of
//! ranges, read as one smaller tensor. Gemma 3n's MatFormer slicing ([`crate::matformer`]) reads an E4B
//! checkpoint as the nested smaller model this way, without copying anything: a truncated MLP keeps the first rows
//! of `gate_proj`/`up_proj` and the first columns of `down_proj`, and the per-layer-input tables keep the blocks
//! of the kept layers.
//!
//! [`TensorView::read_f32`](super::TensorView::read_f32) decodes only the selected elements, in the selection's
//! row-major order; a view with a selection has the selected shape, and its `data` are the whole stored tensor's
//! bytes, so code that copies `data` as it is must check [`TensorView::select`](super::TensorView::select) first.

// A list of ranges is the data here, and often a list of one (not a mistaken vec![a..b] for a vec of a..b).
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

/// Rows and columns of a stored `[rows, cols]` tensor, each an ordered list of disjoint, non-empty ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    rows: Vec<Range<usize>>,
    cols: Vec<Range<usize>>,
    /// The stored tensor's column count (its row stride).
    stored_cols: usize,
}

impl Selection {
    /// A selection of a stored `[stored_rows, stored_cols]` tensor; `None` for all rows (or all columns). Returns
    /// `None` when a range is empty, out of bounds, or not after the one before it.
    pub fn new(
        stored: [usize; 2],
        rows: Option<Vec<Range<usize>>>,
        cols: Option<Vec<Range<usize>>>,
    ) -> Option<Selection> {
        let check = |ranges: Option<Vec<Range<usize>>>, len: usize| -> Option<Vec<Range<usize>>> {
            let ranges = ranges.unwrap_or_else(|| vec![0..len]);
            let mut end = 0;
            for r in &ranges {
                if r.start < end || r.start >= r.end || r.end > len {
                    return None;
                }
                end = r.end;
            }
            Some(ranges)
        };
        Some(Selection {
            rows: check(rows, stored[0])?,
            cols: check(cols, stored[1])?,
            stored_cols: stored[1],
        })
    }

    /// The selected shape `[rows, cols]`.
    pub fn shape(&self) -> Vec<usize> {
        let len = |r: &[Range<usize>]| r.iter().map(|r| r.len()).sum::<usize>();
        vec![len(&self.rows), len(&self.cols)]
    }

    /// The stored row of selected row `r`.
    fn stored_index(ranges: &[Range<usize>], mut i: usize) -> (usize, usize) {
        for r in ranges {
            if i < r.len() {
                // The stored index and how many selected indices follow it contiguously.
                return (r.start + i, r.len() - i);
            }
            i -= r.len();
        }
        unreachable!("index inside the selection")
    }

    /// The stored element ranges holding the whole stored rows behind selected rows `rows` (unselected columns
    /// included), adjacent ones merged: what a reader that has finished those rows may let go of.
    pub fn stored_rows(&self, rows: Range<usize>) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut r = rows.start;
        while r < rows.end {
            let (stored, run) = Self::stored_index(&self.rows, r);
            let n = run.min(rows.end - r);
            let span = stored * self.stored_cols..(stored + n) * self.stored_cols;
            match out.last_mut() {
                Some(last) if last.end == span.start => last.end = span.end,
                _ => out.push(span),
            }
            r += n;
        }
        out
    }

    /// Calls `read(stored_start, out_chunk)` for the runs of contiguous stored elements that make up selected
    /// elements `[start, start + out.len())`, in order.
    pub fn for_each_run(
        &self,
        start: usize,
        out: &mut [f32],
        mut read: impl FnMut(usize, &mut [f32]),
    ) {
        let cols = self.shape()[1];
        let mut done = 0;
        while done < out.len() {
            let e = start + done;
            let (row, col) = (e / cols, e % cols);
            let (srow, _) = Self::stored_index(&self.rows, row);
            let (scol, run) = Self::stored_index(&self.cols, col);
            let n = run.min(out.len() - done);
            read(srow * self.stored_cols + scol, &mut out[done..done + n]);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_selected_elements_in_order() {
        // stored [4, 6] holding 0..24; rows {0, 2..4}, cols {1..3, 5}
        let sel = Selection::new([4, 6], Some(vec![0..1, 2..4]), Some(vec![1..3, 5..6])).unwrap();
        assert_eq!(sel.shape(), vec![3, 3]);
        let stored: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let want = [1.0, 2.0, 5.0, 13.0, 14.0, 17.0, 19.0, 20.0, 23.0];
        for start in 0..9 {
            for len in 0..=(9 - start) {
                let mut out = vec![0.0; len];
                sel.for_each_run(start, &mut out, |s, o| {
                    o.copy_from_slice(&stored[s..s + o.len()])
                });
                assert_eq!(
                    out,
                    want[start..start + len],
                    "window [{start}, {})",
                    start + len
                );
            }
        }
    }

    #[test]
    fn stored_rows_of_selected_rows() {
        let sel = Selection::new([5, 6], Some(vec![0..2, 3..5]), Some(vec![1..3])).unwrap();
        assert_eq!(sel.stored_rows(0..4), vec![0..12, 18..30]);
        assert_eq!(sel.stored_rows(1..3), vec![6..12, 18..24]);
        assert!(sel.stored_rows(2..2).is_empty());
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(Selection::new([4, 6], Some(vec![2..4, 0..1]), None).is_none());
        assert!(Selection::new([4, 6], None, Some(vec![5..7])).is_none());
        assert!(Selection::new([4, 6], Some(vec![1..1]), None).is_none());
        assert_eq!(
            Selection::new([4, 6], None, None).unwrap().shape(),
            vec![4, 6]
        );
    }
}
