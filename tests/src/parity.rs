//! The two parity checks every tiny text fixture goes through (Gemma 1, 2 and 3 alike): export it, run it through
//! ONNX Runtime with the runtime's decoder and KV cache, and compare every real position with transformers fp32
//! eager logits from `reference.safetensors` (max |Δ| ≤ [`FP32_TOLERANCE`]).

use crate::{export_to_temp, max_abs_diff_row, tiny_fixture, Reference, FP32_TOLERANCE};
use gemma_runtime::{Decoder, RuntimeOptions};
use ndarray::{concatenate, s, Array2, Axis};
use std::path::Path;

/// Two intra-op threads: the test machines are small and several test binaries run at once.
pub fn parity_runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

/// Prefill the first `prefill` tokens of `prefill.input_ids`, then decode the rest one token at a time: every
/// position's logits match transformers' full forward pass. Where the model has a sliding window, the prompt must
/// be longer than it (so the window is exercised). Returns the largest |Δlogit| seen.
pub fn prefill_then_decode(fixture: &str, prefill: usize) -> f32 {
    let dir = tiny_fixture(fixture);
    prefill_then_decode_from(&dir, &dir, fixture, prefill)
}

/// [`prefill_then_decode`] for any export source `src` (a checkpoint folder or a GGUF file) against the
/// `reference.safetensors` in `reference_dir`; `fixture` names it in messages.
pub fn prefill_then_decode_from(
    src: &Path,
    reference_dir: &Path,
    fixture: &str,
    prefill: usize,
) -> f32 {
    let reference = Reference::load(reference_dir).unwrap();
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let expected = reference.f32_3d("prefill.logits").unwrap();
    let (_tmp, out) = export_to_temp(src).unwrap();
    let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
    let total = ids.ncols();
    if let Some(window) = decoder.manifest().sliding_window {
        assert!(
            total > window + 2,
            "{fixture}: the prompt ({total}) must be longer than the window ({window})"
        );
    }

    let mut cache = decoder.new_cache(1).unwrap();
    let mut worst = 0f32;
    let mut start = 0;
    while start < total {
        let end = if start == 0 { prefill } else { start + 1 };
        let step_ids = ids.slice(s![.., start..end]).to_owned();
        let mask = Array2::<i64>::ones((1, end));
        let pos = Array2::from_shape_fn((1, end - start), |(_, j)| (start + j) as i64);
        let logits = decoder
            .forward(step_ids.view(), mask.view(), pos.view(), &mut cache)
            .unwrap();
        for j in 0..end - start {
            let d = max_abs_diff_row(logits.view(), (0, j), expected.view(), (0, start + j));
            assert!(
                d <= FP32_TOLERANCE,
                "{fixture}: position {} differs from transformers by {d}",
                start + j
            );
            worst = worst.max(d);
        }
        start = end;
    }
    assert_eq!(cache.len(), total);
    eprintln!(
        "{fixture}: prefill {prefill} + {} decode steps, max |Δlogit| = {worst:e}",
        total - prefill
    );
    worst
}

/// Batch of 2, the second row left-padded: real positions match transformers, and so do the decode steps of
/// `batch.next_ids`. Returns the largest |Δlogit| seen.
pub fn left_padded_batch(fixture: &str) -> f32 {
    let dir = tiny_fixture(fixture);
    let reference = Reference::load(&dir).unwrap();
    let ids = reference.i64_2d("batch.input_ids").unwrap();
    let mask = reference.i64_2d("batch.attention_mask").unwrap();
    let pos = reference.i64_2d("batch.position_ids").unwrap();
    let expected = reference.f32_3d("batch.logits").unwrap();
    let next_ids = reference.i64_2d("batch.next_ids").unwrap();
    let next_expected = reference.f32_3d("batch.next_logits").unwrap();
    assert!(
        mask.iter().any(|&m| m == 0),
        "{fixture}: the batch reference must contain padding"
    );

    let (_tmp, out) = export_to_temp(&dir).unwrap();
    let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
    let mut cache = decoder.new_cache(2).unwrap();
    let logits = decoder
        .forward(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap();
    let mut worst = 0f32;
    let mut compared = 0;
    for b in 0..2 {
        for j in 0..ids.ncols() {
            if mask[[b, j]] == 1 {
                let d = max_abs_diff_row(logits.view(), (b, j), expected.view(), (b, j));
                assert!(
                    d <= FP32_TOLERANCE,
                    "{fixture}: row {b} position {j} differs by {d}"
                );
                worst = worst.max(d);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, mask.iter().filter(|&&m| m == 1).count());

    let mut mask = mask;
    let mut last_pos: Vec<i64> = (0..2).map(|b| pos[[b, pos.ncols() - 1]]).collect();
    for t in 0..next_ids.ncols() {
        mask = concatenate![Axis(1), mask, Array2::<i64>::ones((2, 1))];
        let step = next_ids.slice(s![.., t..t + 1]).to_owned();
        last_pos.iter_mut().for_each(|p| *p += 1);
        let step_pos = Array2::from_shape_fn((2, 1), |(b, _)| last_pos[b]);
        let logits = decoder
            .forward(step.view(), mask.view(), step_pos.view(), &mut cache)
            .unwrap();
        for b in 0..2 {
            let d = max_abs_diff_row(logits.view(), (b, 0), next_expected.view(), (b, t));
            assert!(
                d <= FP32_TOLERANCE,
                "{fixture}: decode step {t} row {b} differs by {d}"
            );
            worst = worst.max(d);
        }
    }
    eprintln!(
        "{fixture}: batch 2 with left padding + {} decode steps, max |Δlogit| = {worst:e}",
        next_ids.ncols()
    );
    worst
}
