//! Gemma 3 text parity: every tiny fixture is exported, run through ONNX Runtime with the runtime's decoder and
//! KV cache, and compared with transformers fp32 eager logits (max |Δ| ≤ 1e-4):
//! prefill of a prompt longer than the sliding window followed by one-token decode steps, and a batch of 2 with
//! left padding followed by decode steps. One row of the parity driver (`gemma_tests::parity`) per test.

use gemma_tests::*;

parity_table! {
    gqa_bf16_sharded_hf4_prefill_and_decode: Parity::portable("gqa-bf16-sharded-hf4").prefill_then_decode(7);
    gqa_bf16_sharded_hf4_left_padded_batch: Parity::portable("gqa-bf16-sharded-hf4").left_padded_batch();
    mqa_f32_hf5_prefill_and_decode: Parity::portable("mqa-f32-hf5").prefill_then_decode(7);
    mqa_f32_hf5_left_padded_batch: Parity::portable("mqa-f32-hf5").left_padded_batch();
    gqa_f16_hf5_prefill_and_decode: Parity::portable("gqa-f16-hf5").prefill_then_decode(7);
    gqa_f16_hf5_left_padded_batch: Parity::portable("gqa-f16-hf5").left_padded_batch();
    conditional_generation_text_prefill_and_decode:
        Parity::portable("cg-mqa-bf16-sharded-hf4").prefill_then_decode(7);
    conditional_generation_text_left_padded_batch:
        Parity::portable("cg-mqa-bf16-sharded-hf4").left_padded_batch();
    /// The whole prompt in one prefill (longer than the window) matches as well.
    single_prefill_longer_than_window: Parity::portable("gqa-f16-hf5").prefill_then_decode(20);
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
