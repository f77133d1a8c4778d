//! Gemma 3 text parity: every tiny fixture is exported, run through ONNX Runtime with the runtime's decoder and
//! KV cache, and compared with transformers fp32 eager logits (max |Δ| ≤ 1e-4):
//! prefill of a prompt longer than the sliding window followed by one-token decode steps, and a batch of 2 with
//! left padding followed by decode steps.

use gemma_runtime::{Decoder, RuntimeOptions};
use gemma_tests::*;
use ndarray::{concatenate, s, Array2, Axis};

fn runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

/// Prefill the first `prefill` tokens, then decode the rest one token at a time: every position's logits match
/// transformers' full forward pass.
fn prefill_then_decode(fixture: &str, prefill: usize) {
    let dir = tiny_fixture(fixture);
    let reference = Reference::load(&dir).unwrap();
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let expected = reference.f32_3d("prefill.logits").unwrap();
    let (_tmp, out) = export_to_temp(&dir).unwrap();
    let mut decoder = Decoder::open(&out, &runtime()).unwrap();
    let window = decoder.manifest().sliding_window.unwrap();
    let total = ids.ncols();
    assert!(
        total > window + 2,
        "{fixture}: the prompt ({total}) must be longer than the window ({window})"
    );

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
}

/// Batch of 2, the second row left-padded: real positions match transformers, and so do three decode steps.
fn left_padded_batch(fixture: &str) {
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
    let mut decoder = Decoder::open(&out, &runtime()).unwrap();
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
}

#[test]
fn gqa_bf16_sharded_hf4_prefill_and_decode() {
    prefill_then_decode("gqa-bf16-sharded-hf4", 7);
}

#[test]
fn gqa_bf16_sharded_hf4_left_padded_batch() {
    left_padded_batch("gqa-bf16-sharded-hf4");
}

#[test]
fn mqa_f32_hf5_prefill_and_decode() {
    prefill_then_decode("mqa-f32-hf5", 7);
}

#[test]
fn mqa_f32_hf5_left_padded_batch() {
    left_padded_batch("mqa-f32-hf5");
}

#[test]
fn gqa_f16_hf5_prefill_and_decode() {
    prefill_then_decode("gqa-f16-hf5", 7);
}

#[test]
fn gqa_f16_hf5_left_padded_batch() {
    left_padded_batch("gqa-f16-hf5");
}

#[test]
fn conditional_generation_text_prefill_and_decode() {
    prefill_then_decode("cg-mqa-bf16-sharded-hf4", 7);
}

#[test]
fn conditional_generation_text_left_padded_batch() {
    left_padded_batch("cg-mqa-bf16-sharded-hf4");
}

/// The whole prompt in one prefill (longer than the window) matches as well.
#[test]
fn single_prefill_longer_than_window() {
    prefill_then_decode("gqa-f16-hf5", 20);
}

/// Both config forms of the same family resolve to what transformers used: the 4.x fixture's layer types come from
/// `sliding_window_pattern`, the conditional-generation one's from the class default (6).
#[test]
fn layer_types_resolved_like_transformers() {
    let lt = |f: &str| {
        let cfg =
            gemma_models::ModelConfig::from_file(&tiny_fixture(f).join("config.json")).unwrap();
        cfg.text
            .layer_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == gemma_models::LayerType::Full)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    assert_eq!(lt("gqa-bf16-sharded-hf4"), vec![2, 5]);
    assert_eq!(lt("mqa-f32-hf5"), vec![2, 5]);
    assert_eq!(lt("gqa-f16-hf5"), vec![1, 3, 5]);
    assert_eq!(lt("cg-mqa-bf16-sharded-hf4"), vec![5]);
}
