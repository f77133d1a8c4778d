//! The runtime's contract with any gemma-onnx export: incremental decoding with the KV cache matches a full forward
//! pass, left padding in a batch matches the unpadded sequence, generation and perplexity agree with the decoder.
//!
//! Runs on an export of the real Gemma 3 270M (made once per test binary).

use std::path::PathBuf;

use gemma_runtime::{
    perplexity, position_ids_from_mask, sampling::argmax, single_sequence_inputs, Decoder, Error,
    GenerateOptions, Generator, LogitsMode, RuntimeOptions, StopReason,
};
use ndarray::{s, Array2, Array3, ArrayView1};

/// The real Gemma 3 270M, exported once for this test binary.
fn model_dir() -> PathBuf {
    static EXPORT: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    EXPORT
        .get_or_init(|| {
            let src = gemma_tests::gemma3_270m_dir().expect("the real Gemma 3 270M checkpoint");
            gemma_tests::export_to_temp(&src).expect("export of the real Gemma 3 270M")
        })
        .1
        .clone()
}

fn options() -> RuntimeOptions {
    RuntimeOptions::default().with_threads(Some(2))
}

fn max_abs_diff(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: ArrayView1<f32>, b: ArrayView1<f32>, what: &str) {
    let scale = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let d = max_abs_diff(a, b);
    assert!(
        d <= 2e-3 * scale,
        "{what}: max abs diff {d} (scale {scale})"
    );
    assert_eq!(
        argmax(a.as_slice().unwrap()),
        argmax(b.as_slice().unwrap()),
        "{what}: argmax differs"
    );
}

/// Some ordinary token ids (a real text through the export's tokenizer).
fn sample_tokens(dir: &std::path::Path, n: usize) -> Vec<u32> {
    let tok = gemma_runtime::Tokenizer::from_dir(dir).unwrap();
    let ids = tok.encode("The quick brown fox jumps over the lazy dog. Then it runs away into the forest, far away.", true).unwrap();
    assert!(ids.len() >= n);
    ids[..n].to_vec()
}

fn full_forward(dec: &mut Decoder, tokens: &[u32]) -> Array3<f32> {
    let mut cache = dec.new_cache(1).unwrap();
    let (ids, mask, pos) = single_sequence_inputs(tokens, 0);
    dec.forward(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap()
}

#[test]
fn incremental_decoding_matches_full_forward() {
    let dir = model_dir();
    let mut dec = Decoder::open(&dir, &options()).unwrap();
    let tokens = sample_tokens(&dir, 9);
    let full = full_forward(&mut dec, &tokens);
    assert_eq!(full.dim(), (1, 9, dec.vocab_size()));

    let mut cache = dec.new_cache(1).unwrap();
    assert_eq!(cache.len(), 0);
    let prefill = 5;
    let (ids, mask, pos) = single_sequence_inputs(&tokens[..prefill], 0);
    let last = dec
        .step(
            ids.view(),
            mask.view(),
            pos.view(),
            &mut cache,
            LogitsMode::Last,
        )
        .unwrap();
    assert_eq!(last.dim(), (1, 1, dec.vocab_size()));
    assert_eq!(cache.len(), prefill);
    assert_close(
        last.slice(s![0, 0, ..]),
        full.slice(s![0, prefill - 1, ..]),
        "prefill last",
    );
    for t in prefill..tokens.len() {
        let logits = dec.forward_tokens(&tokens[t..t + 1], &mut cache).unwrap();
        assert_eq!(cache.len(), t + 1);
        assert_close(
            ArrayView1::from(&logits[..]),
            full.slice(s![0, t, ..]),
            &format!("decode step {t}"),
        );
    }
    let (k, v) = cache.layer_to_arrays(0).unwrap();
    let m = dec.manifest();
    assert_eq!(k.shape(), &[1, m.num_kv_heads, tokens.len(), m.head_dim]);
    assert_eq!(v.shape(), k.shape());

    cache.reset().unwrap();
    assert_eq!(cache.len(), 0);
    let again = dec.forward_tokens(&tokens, &mut cache).unwrap();
    assert_close(
        ArrayView1::from(&again[..]),
        full.slice(s![0, tokens.len() - 1, ..]),
        "after reset",
    );
}

#[test]
fn left_padded_batch_matches_single_sequences() {
    let dir = model_dir();
    let mut dec = Decoder::open(&dir, &options()).unwrap();
    let tokens = sample_tokens(&dir, 8);
    let (short, long) = (&tokens[..5], &tokens[..8]);
    let pad = dec.manifest().pad_token_id.unwrap_or(0) as i64;

    // Row 0: 3 pads + short; row 1: long.
    let width = long.len();
    let mut ids = Array2::<i64>::from_elem((2, width), pad);
    let mut mask = Array2::<i64>::zeros((2, width));
    for (j, &t) in short.iter().enumerate() {
        ids[[0, width - short.len() + j]] = t as i64;
        mask[[0, width - short.len() + j]] = 1;
    }
    for (j, &t) in long.iter().enumerate() {
        ids[[1, j]] = t as i64;
        mask[[1, j]] = 1;
    }
    let pos = position_ids_from_mask(mask.view());
    let mut cache = dec.new_cache(2).unwrap();
    let logits = dec
        .forward(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap();

    let short_full = full_forward(&mut dec, short);
    let long_full = full_forward(&mut dec, long);
    for j in 0..short.len() {
        assert_close(
            logits.slice(s![0, width - short.len() + j, ..]),
            short_full.slice(s![0, j, ..]),
            "padded row",
        );
    }
    for j in 0..long.len() {
        assert_close(
            logits.slice(s![1, j, ..]),
            long_full.slice(s![0, j, ..]),
            "unpadded row",
        );
    }

    // One decode step for both rows: each continues with its own greedy token.
    let next: Vec<u32> = (0..2)
        .map(|b| argmax(logits.slice(s![b, width - 1, ..]).as_slice().unwrap()))
        .collect();
    let step_ids =
        Array2::from_shape_vec((2, 1), next.iter().map(|&t| t as i64).collect()).unwrap();
    let mut step_mask = Array2::<i64>::ones((2, width + 1));
    step_mask.slice_mut(s![.., ..width]).assign(&mask);
    let step_pos =
        Array2::from_shape_vec((2, 1), vec![short.len() as i64, long.len() as i64]).unwrap();
    let step = dec
        .forward_last(
            step_ids.view(),
            step_mask.view(),
            step_pos.view(),
            &mut cache,
        )
        .unwrap();
    assert_eq!(cache.len(), width + 1);

    let mut short_next = short.to_vec();
    short_next.push(next[0]);
    let mut long_next = long.to_vec();
    long_next.push(next[1]);
    let short_ref = full_forward(&mut dec, &short_next);
    let long_ref = full_forward(&mut dec, &long_next);
    assert_close(
        step.slice(s![0, ..]),
        short_ref.slice(s![0, short.len(), ..]),
        "padded row decode",
    );
    assert_close(
        step.slice(s![1, ..]),
        long_ref.slice(s![0, long.len(), ..]),
        "unpadded row decode",
    );
}

#[test]
fn bad_shapes_are_errors_and_leave_the_cache_alone() {
    let dir = model_dir();
    let mut dec = Decoder::open(&dir, &options()).unwrap();
    let mut cache = dec.new_cache(1).unwrap();
    dec.forward_tokens(&[2, 100, 200], &mut cache).unwrap();
    let (ids, _, pos) = single_sequence_inputs(&[300], 3);
    let wrong_mask = Array2::<i64>::ones((1, 3));
    let e = dec
        .forward(ids.view(), wrong_mask.view(), pos.view(), &mut cache)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("attention_mask"), "{e}");
    assert_eq!(cache.len(), 3);
    let mut batch2 = dec.new_cache(2).unwrap();
    assert!(dec.forward_tokens(&[2], &mut batch2).is_err());
}

#[test]
fn greedy_generation_matches_the_decoder() {
    let dir = model_dir();
    let mut gen = Generator::open(&dir, &options()).unwrap();
    let prompt = gen.encode_prompt("Hello there").unwrap();
    assert_eq!(prompt[0], gen.bos_token_id());
    assert_ne!(prompt[1], gen.bos_token_id());
    assert_eq!(
        gen.encode_prompt("<bos>Hello there").unwrap(),
        prompt,
        "exactly one BOS"
    );

    let opts = GenerateOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = gen
        .generate_from_ids(&prompt, &opts, |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.prompt_tokens, prompt.len());
    assert_eq!(streamed, out.text);
    assert!(!out.token_ids.is_empty() && out.token_ids.len() <= 12);
    match out.stop_reason {
        StopReason::Eos => assert!(gen.stop_token_ids().contains(out.token_ids.last().unwrap())),
        StopReason::MaxNewTokens => assert_eq!(out.token_ids.len(), 12),
        StopReason::Interrupted => panic!("not interrupted"),
    }
    assert!(out.prefill_tokens_per_s > 0.0);

    // The same tokens by hand: greedy on the full forward pass of everything so far.
    let stop = gen.stop_token_ids().to_vec();
    let dec = gen.decoder();
    let mut seq = prompt.clone();
    let mut manual = Vec::new();
    for _ in 0..12 {
        let logits = full_forward(dec, &seq);
        let t = argmax(logits.slice(s![0, seq.len() - 1, ..]).as_slice().unwrap());
        manual.push(t);
        seq.push(t);
        if stop.contains(&t) {
            break;
        }
    }
    assert_eq!(out.token_ids, manual);

    // Seeded sampling is reproducible.
    let sampled = GenerateOptions {
        max_new_tokens: 8,
        sampling: gemma_runtime::SamplingConfig {
            temperature: 1.0,
            top_k: Some(50),
            top_p: Some(0.95),
            seed: Some(5),
        },
        stop: None,
    };
    let a = gen.generate_from_ids(&prompt, &sampled, |_| {}).unwrap();
    let b = gen.generate_from_ids(&prompt, &sampled, |_| {}).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
}

#[test]
fn prompts_that_cannot_fit_are_refused() {
    let dir = model_dir();
    let mut gen = Generator::open(&dir, &options()).unwrap();
    let max = gen.decoder().manifest().max_position_embeddings;
    let prompt = vec![2u32; 10];
    let opts = GenerateOptions {
        max_new_tokens: max - 9,
        ..Default::default()
    };
    let e = gen.generate_from_ids(&prompt, &opts, |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::PromptTooLong {
                prompt_tokens: 10,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("10")
            && msg.contains(&max.to_string())
            && msg.contains(&(max - 9).to_string()),
        "{msg}"
    );
}

#[test]
fn perplexity_matches_manual_log_softmax() {
    let dir = model_dir();
    let mut dec = Decoder::open(&dir, &options()).unwrap();
    let tokens = sample_tokens(&dir, 11);
    let context = 4; // windows of 4, 4, 3 tokens
    let r = perplexity::score_tokens(&mut dec, &tokens, context, |_, _| {}).unwrap();
    assert_eq!(r.tokens, 11);
    assert_eq!(r.windows, 3);
    assert_eq!(r.predicted, 3 + 3 + 2);

    let mut total = 0.0f64;
    for w in tokens.chunks(context) {
        let logits = full_forward(&mut dec, w);
        for t in 1..w.len() {
            let row = logits.slice(s![0, t - 1, ..]);
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[w[t] as usize] as f64;
        }
    }
    let mean = total / 8.0;
    assert!((r.mean_nll - mean).abs() < 1e-9, "{} vs {mean}", r.mean_nll);
    assert!((r.perplexity - mean.exp()).abs() < 1e-6 * mean.exp());

    let e = perplexity::score_tokens(&mut dec, &tokens[..1], 4, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
    assert!(perplexity::score_tokens(&mut dec, &tokens, 1, |_, _| {}).is_err());
}
