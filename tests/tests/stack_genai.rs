//! ONNX Runtime GenAI loads `--graph cpu` exports unchanged (their `genai_config.json`) and generates what we do.
//!
//! Each case exports a tiny fixture (Gemma 3 with a prompt shorter and longer than its 5-token sliding window,
//! Gemma 2, Gemma 1, the text decoder of a Gemma 3 vision export; fp32 and int4, and Gemma 3 at fp16, bf16, int8),
//! runs greedy generation with the pinned `onnxruntime-genai` wheel through `tests/stacks/genai_generate.py`, and with this project's runtime (the decoder `gemma generate` drives, argmax,
//! the same stop tokens), then checks that the generated ids are equal and that every step's logits agree. The
//! tiny fixtures have no tokenizer, so both sides take token ids.
//!
//! The harness runs in the venv that `scripts/setup-stacks` creates; `scripts/test` exports its python as
//! `GEMMA_STACKS_PYTHON`. Without it these tests fail and say so (they are never skipped).
//!
//! `num_logits_to_keep_accepts_scalar_and_1d` needs no Python: both graphs take the input as `[]` (our runtime) and
//! as `[1]` (what GenAI feeds).

mod stack_common;

use anyhow::{bail, ensure, Context, Result};
use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::ort_env::create_session;
use gemma_runtime::{Decoder, RuntimeOptions};
use gemma_tests::*;
use ndarray::{Array0, Array1, Array2, Array4};
use ort::value::TensorRef;
use stack_common::{our_generate, LONG, SHORT};
use std::path::Path;
use std::process::Command;

fn runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

/// What the harness prints.
#[derive(serde::Deserialize)]
struct GenaiOutput {
    token_ids: Vec<u32>,
    prompt_tokens: usize,
    logits: Vec<Vec<f32>>,
    onnxruntime_genai: String,
}

/// Greedy generation under ONNX Runtime GenAI on the export folder `dir`.
fn genai_generate(dir: &Path, prompt: &[u32], max_new: usize) -> Result<GenaiOutput> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/genai_generate.py");
    let python = stacks_python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .arg("--ids")
        .arg(serde_json::to_string(prompt)?)
        .arg("-n")
        .arg(max_new.to_string())
        .arg("--logits")
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "genai_generate.py on {} failed ({}):\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parsed: GenaiOutput = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "genai_generate.py printed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    ensure!(
        parsed.prompt_tokens == prompt.len(),
        "GenAI saw another prompt"
    );
    Ok(parsed)
}

/// Exports `fixture` (cpu graph) at `precision`, checks `genai_config.json`, and compares GenAI's greedy ids and
/// logits with ours for each prompt. Returns the largest logit difference.
fn genai_matches(fixture: &str, precision: Precision, prompts: &[&[u32]], max_new: usize) -> f32 {
    let (_tmp, out) =
        export_precision_to_temp(&tiny_fixture(fixture), precision, GraphKind::Cpu).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("genai_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["search"]["past_present_share_buffer"], true);
    // Same graph and same sliding-buffer capacity, ONNX Runtime 1.31 here and GenAI's pinned 1.32 there: the
    // logits were bit-identical on every case when this was written; 1e-4 leaves room for other kernel builds.
    let tol = 1e-4;
    let mut worst = 0f32;
    for prompt in prompts {
        let genai = genai_generate(&out, prompt, max_new).unwrap();
        let (ours, our_logits) = our_generate(&out, prompt, max_new).unwrap();
        assert_eq!(
            genai.token_ids,
            ours,
            "{fixture} {}: GenAI {} greedy ids differ from ours for prompt {prompt:?}",
            precision.name(),
            genai.onnxruntime_genai
        );
        assert_eq!(genai.logits.len(), our_logits.len());
        for (step, (a, b)) in genai.logits.iter().zip(&our_logits).enumerate() {
            assert_eq!(a.len(), b.len(), "vocab size at step {step}");
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                d <= tol,
                "{fixture} {}: step {step} logits differ by {d} (> {tol}) for prompt {prompt:?}",
                precision.name()
            );
            worst = worst.max(d);
        }
    }
    eprintln!(
        "{fixture} {}: GenAI ids equal ours, max |Δlogit| {worst:e}",
        precision.name()
    );
    worst
}

#[test]
fn genai_gemma3_fp32_short_and_past_the_window() {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_fixture("gqa-bf16-sharded-hf4").join("config.json")).unwrap(),
    )
    .unwrap();
    let window = cfg["sliding_window"].as_u64().unwrap() as usize;
    assert!(LONG.len() > 2 * window && SHORT.len() < window);
    genai_matches("gqa-bf16-sharded-hf4", Precision::Fp32, &[LONG, SHORT], 24);
    // A run shorter than the window: GenAI's max_length must still be at least the window (the harness keeps it
    // there and stops after the 2 tokens itself).
    genai_matches("gqa-bf16-sharded-hf4", Precision::Fp32, &[SHORT], 2);
}

/// The text decoder (`model.onnx`, cpu graph) of a Gemma3ForConditionalGeneration export, text only.
#[test]
fn genai_gemma3_vision_export_text_decoder() {
    genai_matches("cg-mqa-bf16-sharded-hf4", Precision::Fp32, &[LONG], 16);
}

#[test]
fn genai_gemma3_int4() {
    genai_matches("gqa-bf16-sharded-hf4", Precision::INT4, &[LONG, SHORT], 24);
}

/// fp16, bf16 and int8 exports carry the same config and load too.
#[test]
fn genai_gemma3_other_precisions() {
    for p in [Precision::Fp16, Precision::Bf16, Precision::INT8] {
        genai_matches("gqa-bf16-sharded-hf4", p, &[LONG], 12);
    }
}

#[test]
fn genai_gemma2_fp32_and_int4() {
    for p in [Precision::Fp32, Precision::INT4] {
        genai_matches("gemma2-gqa-bf16-sharded-hf4", p, &[LONG], 24);
    }
}

#[test]
fn genai_gemma1_fp32_and_int4() {
    for p in [Precision::Fp32, Precision::INT4] {
        genai_matches("gemma1-mqa-bf16-hf4", p, &[LONG], 24);
    }
}

/// The config GenAI reads: family type, sliding layers, EOS ids and a `max_length` within `context_length`.
#[test]
fn genai_config_describes_the_export() {
    for (fixture, ty, sliding) in [
        ("gqa-bf16-sharded-hf4", "gemma3_text", true),
        ("gemma2-gqa-bf16-sharded-hf4", "gemma2", true),
        ("gemma1-mqa-bf16-hf4", "gemma", false),
    ] {
        let (_tmp, out) = export_graph_to_temp(&tiny_fixture(fixture), GraphKind::Cpu).unwrap();
        let manifest = gemma_runtime::manifest::load(&out).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("genai_config.json")).unwrap())
                .unwrap();
        let m = &c["model"];
        assert_eq!(m["type"], ty, "{fixture}");
        assert_eq!(m["context_length"], manifest.max_position_embeddings);
        let max_length = c["search"]["max_length"].as_u64().unwrap() as usize;
        assert!(max_length > 0 && max_length <= manifest.max_position_embeddings);
        let eos: Vec<u32> = serde_json::from_value(m["eos_token_id"].clone()).unwrap();
        assert_eq!(eos, manifest.eos_token_ids);
        assert_eq!(m["decoder"]["num_hidden_layers"], manifest.num_layers);
        let window = &m["decoder"]["sliding_window"];
        if sliding {
            let layers: Vec<usize> = serde_json::from_value(window["layers"].clone()).unwrap();
            let expected: Vec<usize> = manifest
                .layer_types
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == gemma_runtime::manifest::LayerType::Sliding)
                .map(|(i, _)| i)
                .collect();
            assert!(!layers.is_empty() && layers.len() < manifest.num_layers);
            assert_eq!(layers, expected, "{fixture}");
            assert_eq!(window["window_size"], manifest.sliding_window.unwrap());
            assert_eq!(window["slide_inputs"], false);
            assert_eq!(window["slide_key_value_cache"], false);
            // GenAI's sliding buffers get the same capacity as ours, so the same rows are resident.
            let w = manifest.sliding_window.unwrap();
            let slack = window["cache_slack"].as_u64().unwrap() as usize;
            assert!(slack >= 1, "0 would mean GenAI's default");
            assert_eq!(w + slack, gemma_runtime::kv_cache::sliding_capacity(w));
            for w in [1, 5, 512, 1024, 4096] {
                assert_eq!(
                    w + gemma_exporter::genai::sliding_slack(w),
                    gemma_runtime::kv_cache::sliding_capacity(w)
                );
            }
        } else {
            assert!(window.is_null(), "{fixture}: no sliding layers");
        }
    }
    // Portable exports get none (GenAI needs the cpu graph's shared buffers).
    let (_tmp, out) =
        export_graph_to_temp(&tiny_fixture("gqa-bf16-sharded-hf4"), GraphKind::Portable).unwrap();
    assert!(!out.join("genai_config.json").exists());
}

/// Runs the portable graph on `prompt` with no past, feeding `num_logits_to_keep` = 1 as `keep`; returns the logits.
fn portable_logits(dir: &Path, prompt: &[i64], keep: ort::value::DynValue) -> Result<Vec<f32>> {
    let manifest = gemma_runtime::manifest::load(dir)?;
    let mut session = create_session(&dir.join("model.onnx"), &runtime())?;
    let n = prompt.len();
    let ids = Array2::from_shape_vec((1, n), prompt.to_vec())?;
    let mask = Array2::<i64>::ones((1, n));
    let pos = Array2::from_shape_fn((1, n), |(_, j)| j as i64);
    let empty = Array4::<f32>::zeros((1, manifest.num_kv_heads, 0, manifest.head_dim));
    let mut inputs: Vec<(String, ort::session::SessionInputValue)> = vec![
        ("input_ids".into(), TensorRef::from_array_view(&ids)?.into()),
        (
            "attention_mask".into(),
            TensorRef::from_array_view(&mask)?.into(),
        ),
        (
            "position_ids".into(),
            TensorRef::from_array_view(&pos)?.into(),
        ),
        ("num_logits_to_keep".into(), keep.into()),
    ];
    for l in 0..manifest.num_layers {
        for kind in ["key", "value"] {
            inputs.push((
                format!("past_key_values.{l}.{kind}"),
                TensorRef::from_array_view(&empty)?.into(),
            ));
        }
    }
    let out = session.run(inputs)?;
    let logits = out["logits"].try_extract_array::<f32>()?;
    ensure!(
        logits.shape()[..2] == [1, 1],
        "logits shape {:?}",
        logits.shape()
    );
    Ok(logits.iter().copied().collect())
}

#[test]
fn num_logits_to_keep_accepts_scalar_and_1d() {
    let fixture = tiny_fixture("gqa-bf16-sharded-hf4");
    let prompt: Vec<i64> = LONG.iter().map(|&i| i as i64).collect();
    // Portable graph, run directly: scalar and [1] keep the same last position.
    let (_tmp, out) = export_graph_to_temp(&fixture, GraphKind::Portable).unwrap();
    let scalar = ort::value::Tensor::from_array(Array0::from_elem((), 1i64)).unwrap();
    let one_d = ort::value::Tensor::from_array(Array1::from_elem(1, 1i64)).unwrap();
    let a = portable_logits(&out, &prompt, scalar.into_dyn()).unwrap();
    let b = portable_logits(&out, &prompt, one_d.into_dyn()).unwrap();
    assert_eq!(a, b);
    // cpu graph: our runtime feeds a scalar (GenAI's [1] is covered by the genai_* tests above); its last-position
    // logits equal the portable graph's.
    let (_tmp2, cpu) = export_graph_to_temp(&fixture, GraphKind::Cpu).unwrap();
    let mut decoder = Decoder::open(&cpu, &runtime()).unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let ours = decoder.forward_tokens(LONG, &mut cache).unwrap();
    let d = ours
        .iter()
        .zip(&a)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d <= 1e-4, "cpu vs portable last logits differ by {d}");
}
