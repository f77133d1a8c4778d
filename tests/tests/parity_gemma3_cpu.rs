//! The CPU-optimized decoder graph (`gemma-export --graph cpu`): every tiny fixture is exported with it, run through
//! the runtime (in-place KV buffers bound as past and present, window-sized sliding caches, last-position logits)
//! and compared with transformers fp32 eager logits (max |Δ| ≤ 1e-4): prefill then one-token decode past the
//! window, one long prefill, chunked prefill, a left-padded batch with decode steps, last-position-only logits, and
//! a cache that has to grow. Gemma 1 and Gemma 2 fixtures too. The real Gemma 3 270M exported this way generates
//! the same tokens as transformers.
//!
//! The runtime binds one buffer per layer as both past and present: every decode step here reads back, through that
//! one buffer, what the earlier steps wrote into it.

use gemma_exporter::GraphKind;
use gemma_runtime::manifest::LayerType;
use gemma_runtime::Decoder;
use gemma_tests::*;
use ndarray::{s, Array2};

/// The fixture exported with the cpu graph (checked to be one), opened, and its reference.
fn open_cpu(fixture: &str) -> (tempfile::TempDir, Decoder, Reference) {
    Parity::cpu(fixture).open()
}

/// Feeds the prompt in steps of the given sizes (the first may be long, later ones any size; batch 1) with a
/// cache made for `capacity` positions: every position's logits match transformers' full forward pass, and the
/// sliding layers keep at most their fixed capacity while holding at least the window.
fn steps_match(fixture: &str, steps: &[usize], capacity: usize) -> f32 {
    let (_tmp, mut decoder, reference) = open_cpu(fixture);
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let expected = reference.f32_3d("prefill.logits").unwrap();
    let total = ids.ncols();
    assert_eq!(steps.iter().sum::<usize>(), total, "steps cover the prompt");
    // Gemma 1 has no sliding layers (window = whole sequence for these checks).
    let window = decoder.manifest().sliding_window.unwrap_or(total);
    assert!(
        decoder.manifest().sliding_window.is_none() || total > window + 2,
        "{fixture}: prompt must pass the window"
    );
    let layer_types = decoder.manifest().layer_types.clone();

    let mut cache = decoder.new_cache_with_capacity(1, capacity).unwrap();
    let sliding_bytes = cache.bytes();
    let mut worst = 0f32;
    let mut start = 0;
    for &n in steps {
        let end = start + n;
        let step_ids = ids.slice(s![.., start..end]).to_owned();
        let mask = Array2::<i64>::ones((1, end));
        let pos = Array2::from_shape_fn((1, n), |(_, j)| (start + j) as i64);
        let logits = decoder
            .forward(step_ids.view(), mask.view(), pos.view(), &mut cache)
            .unwrap();
        assert_eq!(logits.dim(), (1, n, 256));
        for j in 0..n {
            let d = max_abs_diff_row(logits.view(), (0, j), expected.view(), (0, start + j));
            assert!(
                d <= FP32_TOLERANCE,
                "{fixture} steps {steps:?}: position {} differs from transformers by {d}",
                start + j
            );
            worst = worst.max(d);
        }
        start = end;
        for (l, ty) in layer_types.iter().enumerate() {
            let rows = cache.resident_len(l);
            match ty {
                LayerType::Sliding => {
                    assert!(
                        rows >= end.min(window) && rows <= end,
                        "layer {l}: {rows} rows"
                    );
                    let (k, _) = cache.layer_to_arrays(l).unwrap();
                    assert_eq!(k.shape()[2], rows);
                }
                LayerType::Full => assert_eq!(rows, end),
            }
        }
    }
    assert_eq!(cache.len(), total);
    if capacity >= total {
        assert_eq!(cache.bytes(), sliding_bytes, "no buffer grew");
    }
    eprintln!("{fixture}: steps {steps:?}, max |Δlogit| = {worst:e}");
    worst
}

/// Prefill 7 tokens, then 13 one-token steps past the window, with a cache made for the 20 positions.
fn prefill_then_decode(fixture: &str) {
    let mut steps = vec![7];
    steps.extend(std::iter::repeat_n(1, 13));
    steps_match(fixture, &steps, 20);
}

parity_table! {
    gqa_bf16_sharded_hf4_prefill_and_decode: prefill_then_decode("gqa-bf16-sharded-hf4");
    mqa_f32_hf5_prefill_and_decode: prefill_then_decode("mqa-f32-hf5");
    gqa_f16_hf5_prefill_and_decode: prefill_then_decode("gqa-f16-hf5");
    conditional_generation_text_prefill_and_decode: prefill_then_decode("cg-mqa-bf16-sharded-hf4");
    /// Gemma 2 (sliding layers first, attention and final logit soft-caps through GroupQueryAttention's `softcap`).
    gemma2_prefill_and_decode: prefill_then_decode("gemma2-gqa-bf16-sharded-hf4");
    gemma2_left_padded_batch: Parity::cpu("gemma2-gqa-bf16-sharded-hf4").left_padded_batch();
    /// Gemma 1 (global layers only, pre-norm residuals fused into SkipSimplifiedLayerNormalization).
    gemma1_prefill_and_decode: {
        prefill_then_decode("gemma1-mha-f16-hf5");
        prefill_then_decode("gemma1-mqa-bf16-hf4")
    };
    gemma1_left_padded_batch: Parity::cpu("gemma1-mqa-bf16-hf4").left_padded_batch();
    // Batch of 2, the second row left-padded (masked through GroupQueryAttention's attention_bias): real positions
    // match transformers, and so do three decode steps asking for the last position only.
    gqa_bf16_sharded_hf4_left_padded_batch: Parity::cpu("gqa-bf16-sharded-hf4").left_padded_batch();
    mqa_f32_hf5_left_padded_batch: Parity::cpu("mqa-f32-hf5").left_padded_batch();
    gqa_f16_hf5_left_padded_batch: Parity::cpu("gqa-f16-hf5").left_padded_batch();
    conditional_generation_text_left_padded_batch:
        Parity::cpu("cg-mqa-bf16-sharded-hf4").left_padded_batch();
}

/// The whole 20-token prompt in one step (5× the window of this fixture).
#[test]
fn single_prefill_longer_than_window() {
    steps_match("gqa-f16-hf5", &[20], 20);
}

/// Multi-token steps on top of a cached context (chunked prefill), past the window and through evictions.
#[test]
fn chunked_prefill_through_evictions() {
    steps_match("mqa-f32-hf5", &[3, 4, 2, 5, 1, 5], 20);
}

/// A cache made for 2 positions grows (copying its rows) as the sequence passes its capacity.
#[test]
fn global_buffers_grow_when_needed() {
    let mut steps = vec![2];
    steps.extend(std::iter::repeat_n(1, 18));
    steps_match("gqa-bf16-sharded-hf4", &steps, 2);
}

/// Asking for the last position only gives exactly that row of the all-positions pass, computed alone.
#[test]
fn last_position_logits_only() {
    let (_tmp, mut decoder, reference) = open_cpu("gqa-f16-hf5");
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let expected = reference.f32_3d("prefill.logits").unwrap();
    let n = ids.ncols();
    let mask = Array2::<i64>::ones((1, n));
    let pos = Array2::from_shape_fn((1, n), |(_, j)| j as i64);
    let mut cache = decoder.new_cache(1).unwrap();
    let last = decoder
        .forward_last(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap();
    assert_eq!(last.dim(), (1, 256));
    let got = last.into_shape_with_order((1, 1, 256)).unwrap();
    let d = max_abs_diff_row(got.view(), (0, 0), expected.view(), (0, n - 1));
    assert!(d <= FP32_TOLERANCE, "last position differs by {d}");

    // The greedy pick through the zero-copy path agrees.
    let mut cache = decoder.new_cache(1).unwrap();
    let tokens: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
    let pick = decoder
        .forward_tokens_with(&tokens, &mut cache, gemma_runtime::bench::argmax)
        .unwrap();
    let row = expected.slice(s![0, n - 1, ..]).to_vec();
    assert_eq!(pick, gemma_runtime::bench::argmax(&row));
}

/// GroupQueryAttention cannot take several new tokens per row on top of a cache with batch > 1: the runtime says
/// so instead of computing something wrong, and the cache stays usable.
#[test]
fn batched_multi_token_step_with_past_is_refused() {
    let (_tmp, mut decoder, _reference) = open_cpu("mqa-f32-hf5");
    let mut cache = decoder.new_cache(2).unwrap();
    let ids = Array2::from_shape_fn((2, 3), |(b, j)| (10 + b * 3 + j) as i64);
    let mask = Array2::<i64>::ones((2, 3));
    let pos = Array2::from_shape_fn((2, 3), |(_, j)| j as i64);
    decoder
        .forward(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap();
    let mask = Array2::<i64>::ones((2, 5));
    let more = ids.slice(s![.., ..2]).to_owned();
    let pos = Array2::from_shape_fn((2, 2), |(_, j)| 3 + j as i64);
    let e = decoder
        .forward(more.view(), mask.view(), pos.view(), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("batch 1") && e.contains("--graph portable"),
        "{e}"
    );
    assert_eq!(cache.len(), 3);
    let one = ids.slice(s![.., ..1]).to_owned();
    let mask = Array2::<i64>::ones((2, 4));
    let pos = Array2::from_elem((2, 1), 3i64);
    decoder
        .forward(one.view(), mask.view(), pos.view(), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 4);
}

/// The sliding layers' memory does not grow with the sequence: after 20 tokens on a window of 4 only the global
/// layers' buffers are larger than at the start.
#[test]
fn sliding_cache_memory_is_bounded() {
    let (_tmp, mut decoder, reference) = open_cpu("gqa-f16-hf5");
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let m = decoder.manifest().clone();
    let row_bytes = m.num_kv_heads * m.head_dim * 4 * 2;
    let sliding = m
        .layer_types
        .iter()
        .filter(|t| **t == LayerType::Sliding)
        .count();
    let global = m.num_layers - sliding;
    let mut cache = decoder.new_cache_with_capacity(1, 1).unwrap();
    let window = m.sliding_window.unwrap();
    let sliding_bytes = sliding * gemma_runtime::kv_cache::sliding_capacity(window) * row_bytes;
    assert_eq!(cache.bytes(), sliding_bytes + global * row_bytes);
    for t in 0..ids.ncols() {
        decoder
            .forward_tokens(&[ids[[0, t]] as u32], &mut cache)
            .unwrap();
    }
    let global_bytes = cache.bytes() - sliding_bytes;
    assert!(
        global_bytes >= global * ids.ncols() * row_bytes
            && global_bytes < 2 * global * ids.ncols() * row_bytes,
        "global layers hold {global_bytes} bytes for {} positions",
        ids.ncols()
    );
}

/// The real Gemma 3 270M through the cpu graph: the same greedy tokens as transformers for every reference prompt
/// (the longest prompt and 32 new tokens stay below the 512 window, so this checks the in-place cache and the
/// last-position logits on the real model; the tiny fixtures cover the window).
#[test]
fn real_gemma3_270m_greedy_matches_transformers() {
    use gemma_runtime::{GenerateOptions, Generator, SamplingConfig};
    let real = real_reference();
    let src = gemma3_270m_dir().expect("the real Gemma 3 270M checkpoint");
    let (_tmp, out) = export_graph_to_temp(&src, GraphKind::Cpu).unwrap();
    let mut generator = Generator::open(&out, &parity_runtime()).unwrap();
    for p in &real.prompts {
        let options = GenerateOptions {
            max_new_tokens: p.generated_ids.len(),
            sampling: SamplingConfig::greedy(),
            ..Default::default()
        };
        let out = generator.generate(&p.text, &options, |_| {}).unwrap();
        assert_eq!(
            out.token_ids, p.generated_ids,
            "greedy continuation of {:?}",
            p.text
        );
    }
}
