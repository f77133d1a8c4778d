//! transformers.js (`@huggingface/transformers`, Node) loads portable exports with a plain
//! `AutoModelForCausalLM.from_pretrained(OUT)` and generates what we do.
//!
//! Each case exports a tiny fixture with `--graph portable` (Gemma 3 with prompts shorter and longer than its
//! 5-token window, Gemma 2, Gemma 1; fp32, int4, and Gemma 3 at int8 and fp16), runs greedy generation with the
//! pinned transformers.js through `tests/stacks/transformers_js_generate.cjs` (local files only; `dtype` from the
//! export's config.json, or given as transformers.js users name it), and with this project's runtime, then checks
//! that the generated ids are equal and every step's logits agree. The tiny fixtures have no tokenizer, so both
//! sides take token ids.
//!
//! The Gemma 3 vision export is tested in `stack_transformers_js_vision.rs`.
//!
//! The harness runs with the node_modules of `scripts/setup-stacks` (`GEMMA_STACKS_NODE_MODULES`, which
//! `scripts/test` sets). Without it these tests fail and say so (they are never skipped).

mod stack_common;

use gemma_exporter::onnx::ModelProto;
use gemma_exporter::transformers_js;
use gemma_exporter::{GraphKind, Precision};
use gemma_tests::*;
use prost::Message;
use stack_common::*;
use std::path::Path;
use std::process::Command;

/// What the harness prints.
#[derive(serde::Deserialize)]
struct TjsOutput {
    token_ids: Vec<u32>,
    prompt_tokens: usize,
    dtype: Option<String>,
    logits: Vec<Vec<f32>>,
    transformers_js: String,
}

fn tjs_generate(dir: &Path, prompt: &[u32], max_new: usize, dtype: Option<&str>) -> TjsOutput {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", stacks_node_modules())
        .arg(harness("transformers_js_generate.cjs"))
        .arg(dir)
        .arg("--ids")
        .arg(serde_json::to_string(prompt).unwrap())
        .arg("-n")
        .arg(max_new.to_string())
        .arg("--logits");
    if let Some(d) = dtype {
        cmd.arg("--dtype").arg(d);
    }
    let out: TjsOutput = run_json(cmd, "transformers_js_generate.cjs").unwrap();
    assert_eq!(out.prompt_tokens, prompt.len());
    out
}

/// The layout transformers.js reads: `onnx/model{suffix}.onnx` and its data `onnx/model{suffix}.onnx_data`, which is
/// also the data of the top-level `model.onnx` (one copy of the weights, no link, nothing else at the top), and
/// `transformers.js_config` in config.json. Returns the config's dtype.
fn check_layout(out: &Path, precision: Precision) -> String {
    let file = transformers_js::decoder_file(precision.kind()).unwrap();
    let name = file.rsplit('/').next().unwrap();
    assert_unlinked_data(out, &file, &format!("{name}_data"));
    assert_unlinked_data(out, "model.onnx", &format!("{file}_data"));
    assert!(!out.join("model.onnx_data").exists());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let tjs = &config[transformers_js::CONFIG_KEY];
    assert_eq!(tjs["use_external_data_format"][name], 1);
    // Gemma 3 (`gemma3_text`): transformers.js feeds positions from 1, the copy takes them back to 0 first.
    let graph = ModelProto::decode(&*std::fs::read(out.join(&file)).unwrap())
        .unwrap()
        .graph
        .unwrap();
    let shifts = graph.node.first().and_then(|n| n.name.as_deref())
        == Some("transformers_js_positions_from_one");
    let one_based =
        transformers_js::ONE_BASED_POSITION_TYPES.contains(&config["model_type"].as_str().unwrap());
    assert_eq!(shifts, one_based, "{file}: position shift");
    tjs["dtype"].as_str().unwrap().to_string()
}

/// Exports `fixture` (portable graph) at `precision`, and compares transformers.js's greedy ids and logits with
/// ours for each prompt, with `dtype` given or (None) taken from config.json.
fn tjs_matches(
    fixture: &str,
    precision: Precision,
    prompts: &[&[u32]],
    max_new: usize,
    dtype: Option<&str>,
) {
    let (_tmp, out) =
        export_precision_to_temp(&tiny_fixture(fixture), precision, GraphKind::Portable).unwrap();
    let config_dtype = check_layout(&out, precision);
    // The same graph (onnxruntime-node 1.30 there, 1.31 here): the logits were bit-identical on every case when
    // this was written; 1e-4 leaves room for other kernel builds.
    let tol = 1e-4;
    for prompt in prompts {
        let theirs = tjs_generate(&out, prompt, max_new, dtype);
        assert_eq!(
            theirs.dtype.as_deref(),
            Some(dtype.unwrap_or(&config_dtype))
        );
        let (ours, our_logits) = our_generate(&out, prompt, max_new).unwrap();
        let what = format!("{fixture} {} (dtype {config_dtype})", precision.name());
        assert_eq!(
            theirs.token_ids, ours,
            "{what}: transformers.js {} greedy ids differ from ours for prompt {prompt:?}",
            theirs.transformers_js
        );
        let d = max_logit_diff(&what, &theirs.logits, &our_logits);
        assert!(
            d <= tol,
            "{what}: logits differ by {d} (> {tol}) for prompt {prompt:?}"
        );
        eprintln!("{what}: transformers.js ids equal ours, max |Δlogit| {d:e}");
    }
}

#[test]
fn tjs_gemma3_fp32_short_and_past_the_window() {
    tjs_matches(
        "gqa-bf16-sharded-hf4",
        Precision::Fp32,
        &[LONG, SHORT],
        16,
        None,
    );
}

/// int4 is transformers.js's `q4` (`onnx/model_q4.onnx`): by the config's default and by name.
#[test]
fn tjs_gemma3_int4() {
    tjs_matches("gqa-bf16-sharded-hf4", Precision::INT4, &[LONG], 16, None);
    tjs_matches(
        "gqa-bf16-sharded-hf4",
        Precision::INT4,
        &[SHORT],
        8,
        Some("q4"),
    );
}

/// int8 is `q8` (`model_quantized.onnx`), fp16 is `fp16` (`model_fp16.onnx`).
#[test]
fn tjs_gemma3_int8_and_fp16() {
    tjs_matches(
        "gqa-bf16-sharded-hf4",
        Precision::INT8,
        &[LONG],
        8,
        Some("q8"),
    );
    tjs_matches("gqa-bf16-sharded-hf4", Precision::Fp16, &[LONG], 8, None);
}

#[test]
fn tjs_gemma2_fp32_and_int4() {
    for p in [Precision::Fp32, Precision::INT4] {
        tjs_matches("gemma2-gqa-bf16-sharded-hf4", p, &[LONG], 16, None);
    }
}

#[test]
fn tjs_gemma1_fp32_and_int4() {
    for p in [Precision::Fp32, Precision::INT4] {
        tjs_matches("gemma1-mqa-bf16-hf4", p, &[LONG], 16, None);
    }
}

/// Only portable exports at a precision transformers.js names get the layout; the others (a vision export with the
/// cpu graph too) keep their data at the top and are otherwise unchanged.
#[test]
fn no_layout_for_cpu_graph_or_bf16_exports() {
    let cases = [
        ("gqa-bf16-sharded-hf4", Precision::Fp32, GraphKind::Cpu),
        ("gqa-bf16-sharded-hf4", Precision::Bf16, GraphKind::Portable),
        ("cg-mqa-bf16-sharded-hf4", Precision::Fp32, GraphKind::Cpu),
    ];
    for (fixture, precision, graph) in cases {
        let (_tmp, out) =
            export_precision_to_temp(&tiny_fixture(fixture), precision, graph).unwrap();
        assert!(!out.join("onnx").exists(), "{fixture} {}", precision.name());
        let text = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(!text.contains(transformers_js::CONFIG_KEY));
        assert_unlinked_data(&out, "model.onnx", "model.onnx_data");
    }
}
