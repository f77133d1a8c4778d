//! The text decoder's entry points on `input_ids`: each builds a [`Step`] of [`TokenInput::Ids`] and goes through
//! [`Decoder::run`]; and the helpers that make a step's mask and positions.

use ndarray::{s, Array2, Array3, ArrayView2};

use super::{Decoder, LogitsMode, Step, TokenInput};
use crate::error::Result;
use crate::kv_cache::KvCache;

fn ids_step<'a>(
    input_ids: ArrayView2<'a, i64>,
    attention_mask: ArrayView2<'a, i64>,
    position_ids: ArrayView2<'a, i64>,
    logits: LogitsMode,
) -> Step<'a> {
    Step {
        tokens: TokenInput::Ids(input_ids),
        attention_mask,
        position_ids,
        logits,
    }
}

impl Decoder {
    /// One forward pass; returns every position's logits `[b, s, vocab]` and appends the step to `cache`.
    pub fn forward(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
    ) -> Result<Array3<f32>> {
        self.step(
            input_ids,
            attention_mask,
            position_ids,
            cache,
            LogitsMode::All,
        )
    }

    /// One forward pass; returns only the last position's logits `[b, vocab]` (the only ones the cpu graph
    /// computes, and the only part copied out).
    pub fn forward_last(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        let step = ids_step(input_ids, attention_mask, position_ids, LogitsMode::Last);
        self.run(&step, cache, |l| l.slice(s![.., 0, ..]).to_owned())
    }

    /// One forward pass, as [`forward`](Self::forward) or [`forward_last`](Self::forward_last) per `mode`;
    /// the result is `[b, 1, vocab]` for [`LogitsMode::Last`].
    pub fn step(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
        mode: LogitsMode,
    ) -> Result<Array3<f32>> {
        let step = ids_step(input_ids, attention_mask, position_ids, mode);
        self.run(&step, cache, |l| l.to_owned())
    }

    /// Single unpadded sequence (batch-1 cache with no padding): feeds `tokens` after the cache's positions with an
    /// all-ones mask and returns the last position's logits.
    pub fn forward_tokens(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.forward_tokens_with(tokens, cache, |row| row.to_vec())
    }

    /// [`forward_tokens`](Self::forward_tokens) handing the last position's logits (a view of ONNX Runtime's
    /// output when possible) to `f`, e.g. a sampler; returns what `f` returns.
    pub fn forward_tokens_with<R>(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Result<R> {
        let ids = ids_row(tokens);
        self.run_after_cache(
            TokenInput::Ids(ids.view()),
            cache,
            LogitsMode::Last,
            |l| match l.slice(s![0, 0, ..]).to_slice() {
                Some(row) => f(row),
                None => f(&l.slice(s![0, 0, ..]).to_vec()),
            },
        )
    }
}

/// `tokens` as one row of `input_ids` `[1, n]`.
pub fn ids_row(tokens: &[u32]) -> Array2<i64> {
    Array2::from_shape_fn((1, tokens.len()), |(_, j)| tokens[j] as i64)
}

/// An all-ones `attention_mask [1, past + n]` and `position_ids past..past + n` for `n` new tokens of one unpadded
/// sequence.
pub fn mask_and_positions(n: usize, past: usize) -> (Array2<i64>, Array2<i64>) {
    let mask = Array2::ones((1, past + n));
    let pos = Array2::from_shape_fn((1, n), |(_, j)| (past + j) as i64);
    (mask, pos)
}

/// `input_ids [1, n]`, an all-ones `attention_mask [1, past + n]` and `position_ids past..past + n` for one
/// unpadded sequence.
pub fn single_sequence_inputs(
    tokens: &[u32],
    past: usize,
) -> (Array2<i64>, Array2<i64>, Array2<i64>) {
    let (mask, pos) = mask_and_positions(tokens.len(), past);
    (ids_row(tokens), mask, pos)
}

/// Position ids for a (possibly left-padded) prompt as transformers' `generate` makes them:
/// `cumsum(mask) - 1`, with padded positions set to 1.
pub fn position_ids_from_mask(mask: ArrayView2<i64>) -> Array2<i64> {
    let mut pos = Array2::zeros(mask.dim());
    for (mut out_row, mask_row) in pos.rows_mut().into_iter().zip(mask.rows()) {
        let mut sum = 0i64;
        for (o, &m) in out_row.iter_mut().zip(mask_row.iter()) {
            sum += m;
            *o = if m == 0 { 1 } else { sum - 1 };
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn positions_from_left_padded_mask() {
        let mask = array![[0i64, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
        assert_eq!(
            position_ids_from_mask(mask.view()),
            array![[1i64, 1, 0, 1, 2], [0, 1, 2, 3, 4]]
        );
    }

    #[test]
    fn single_sequence_continues_the_cache() {
        let (ids, mask, pos) = single_sequence_inputs(&[5, 6], 3);
        assert_eq!(ids, array![[5i64, 6]]);
        assert_eq!(mask, Array2::<i64>::ones((1, 5)));
        assert_eq!(pos, array![[3i64, 4]]);
    }
}
