//! Hugging Face Optimum (`optimum-onnx`) loads portable exports with a plain
//! `ORTModelForCausalLM.from_pretrained(OUT)` and generates what we do, the transformers.js layout beside
//! notwithstanding.
//!
//! Each case exports a tiny fixture with `--graph portable` (Gemma 3, 2 and 1 at fp32 and int4), runs greedy
//! generation with the pinned Optimum through `tests/stacks/optimum_generate.py`, and with this project's runtime,
//! then checks that the generated ids are equal and every step's logits agree, and that a left-padded batch of two
//! prompts gives each prompt's ids. The tiny fixtures have no tokenizer, so both sides take token ids.
//!
//! Gemma 2 runs because its portable graph leaves the KV inputs' head axes open: optimum-onnx 0.1.0 sizes the
//! empty KV cache of model types it does not list, `gemma2` among them, from `num_attention_heads` and
//! `hidden_size / num_attention_heads` (docs/stacks.md).
//!
//! The harness runs in the venv that `scripts/setup-stacks` creates (`GEMMA_STACKS_PYTHON`, which `scripts/test`
//! sets). Without it these tests fail and say so (they are never skipped).

mod stack_common;

use gemma_exporter::{GraphKind, Precision};
use gemma_tests::*;
use stack_common::*;
use std::path::Path;
use std::process::Command;

/// What the harness prints.
#[derive(serde::Deserialize)]
struct OptimumOutput {
    token_ids: Vec<Vec<u32>>,
    prompt_tokens: Vec<usize>,
    onnx_file: String,
    #[serde(default)]
    logits: Vec<Vec<f32>>,
    optimum_onnx: String,
}

fn optimum_generate(dir: &Path, prompts: &[&[u32]], max_new: usize, logits: bool) -> OptimumOutput {
    let mut cmd = Command::new(stacks_python());
    cmd.arg(harness("optimum_generate.py"))
        .arg(dir)
        .arg("--ids")
        .arg(serde_json::to_string(prompts).unwrap())
        .arg("-n")
        .arg(max_new.to_string());
    if logits {
        cmd.arg("--logits");
    }
    let out: OptimumOutput = run_json(cmd, "optimum_generate.py").unwrap();
    let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
    assert_eq!(out.prompt_tokens, lens);
    out
}

/// Exports `fixture` (portable graph, with the transformers.js layout beside it) at `precision`; Optimum's greedy
/// ids (and, for the first prompt, logits) equal ours, for the prompts one at a time and as one left-padded batch.
fn optimum_matches(fixture: &str, precision: Precision, prompts: &[&[u32]], max_new: usize) {
    let (_tmp, out) =
        export_precision_to_temp(&tiny_fixture(fixture), precision, GraphKind::Portable).unwrap();
    let what = format!("{fixture} {}", precision.name());
    let ours: Vec<_> = prompts
        .iter()
        .map(|p| our_generate(&out, p, max_new).unwrap())
        .collect();
    let single = optimum_generate(&out, &prompts[..1], max_new, true);
    // Optimum takes the top-level model.onnx (the graph `gemma` runs), not the transformers.js copy in onnx/ (for
    // fp32 also named model.onnx: its directory walk meets the top-level one first).
    assert_eq!(single.onnx_file, "model.onnx", "{what}");
    assert_eq!(
        single.token_ids[0], ours[0].0,
        "{what}: Optimum {} greedy ids differ from ours for prompt {:?}",
        single.optimum_onnx, prompts[0]
    );
    // Same graph; ONNX Runtime 1.32 there and 1.31 here.
    let d = max_logit_diff(&what, &single.logits, &ours[0].1);
    assert!(d <= 1e-4, "{what}: logits differ by {d}");
    if prompts.len() > 1 {
        let batch = optimum_generate(&out, prompts, max_new, false);
        for (i, (theirs, (ids, _))) in batch.token_ids.iter().zip(&ours).enumerate() {
            assert_eq!(
                theirs, ids,
                "{what}: batch row {i} (left-padded) differs from ours"
            );
        }
    }
    eprintln!("{what}: Optimum ids equal ours, max |Δlogit| {d:e}");
}

#[test]
fn optimum_gemma3_fp32_and_int4_with_a_padded_batch() {
    for p in [Precision::Fp32, Precision::INT4] {
        optimum_matches("gqa-bf16-sharded-hf4", p, &[LONG, SHORT], 16);
    }
}

#[test]
fn optimum_gemma2_fp32_and_int4_past_the_window() {
    for p in [Precision::Fp32, Precision::INT4] {
        optimum_matches("gemma2-gqa-bf16-sharded-hf4", p, &[LONG, SHORT], 16);
    }
}

#[test]
fn optimum_gemma1_fp32_and_int4() {
    for p in [Precision::Fp32, Precision::INT4] {
        optimum_matches("gemma1-mqa-bf16-hf4", p, &[LONG], 16);
    }
}
