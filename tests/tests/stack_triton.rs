//! `gemma-export … --triton REPO` writes a Triton model repository that Triton's own ONNX Runtime (1.27.0) runs
//! and whose decode loop generates what `gemma generate` does.
//!
//! No Triton server runs here. What is checked:
//! - the layout: both models, the decoder's weights a hard link to the export's (`model.onnx_data`, which at fp32
//!   is byte for byte the one an export without `--triton` writes; `onnx/model.onnx_data` in a portable export); `--force` replaces only our own model folders;
//! - `tests/stacks/triton_check.py`: both `config.pbtxt` parse against Triton's `model_config.proto`
//!   (`tritonclient`'s `model_config_pb2`), and names, data types, dims, input count and the state pairs with
//!   their initial state agree with the graph as ONNX Runtime 1.27.0 loads it, by the rules of Triton's
//!   onnxruntime backend and sequence batcher;
//! - `tests/stacks/triton_generate.py`: the generate model's `model.py`, unchanged, under a stand-in for Triton's
//!   Python backend whose decoder requests play Triton's implicit state on ONNX Runtime 1.27.0; its greedy ids
//!   must equal ours and each step's logits agree.
//!
//! The harnesses run in the venv of `scripts/setup-stacks` (`GEMMA_STACKS_PYTHON`, as in `stack_genai.rs`), which
//! keeps ONNX Runtime 1.27.0 and `tritonclient` in its folder `triton-stack`.

use anyhow::{bail, Context, Result};
use gemma_exporter::{export, ExportOptions, GraphKind, Precision, TritonOptions};
use gemma_runtime::{Decoder, RuntimeOptions};
use gemma_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 14 tokens: nearly three 5-token windows, so the sliding layers evict during prefill and decode.
const LONG: &[u32] = &[2, 200, 13, 77, 5, 91, 250, 33, 64, 128, 7, 19, 222, 45];
/// Shorter than the window.
const SHORT: &[u32] = &[2, 31, 180];
const NAME: &str = "gemma";

/// An export of `fixture` into `tmp/onnx` with its Triton repository in `tmp/repo`.
fn export_with_triton(
    fixture: &str,
    precision: Precision,
    graph: GraphKind,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (out, repo) = (tmp.path().join("onnx"), tmp.path().join("repo"));
    let mut triton = TritonOptions::new(&repo, &out);
    triton.name = NAME.into();
    let opts = ExportOptions::new(tiny_fixture(fixture), &out)
        .precision(precision)
        .graph(graph)
        .triton(Some(triton));
    export(&opts).unwrap();
    (tmp, out, repo)
}

/// Runs `tests/stacks/SCRIPT REPO NAME ARGS…` and parses what it prints.
fn harness(script: &str, repo: &Path, args: &[String]) -> Result<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stacks")
        .join(script);
    let python = stacks_python();
    let out = Command::new(&python)
        .arg(&path)
        .arg(repo)
        .arg(NAME)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", python.display(), path.display()))?;
    if !out.status.success() {
        bail!(
            "{script} on {} failed ({}):\n{}",
            repo.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Greedy generation with this project's runtime, as `gemma generate --temperature 0` does it.
fn our_generate(dir: &Path, prompt: &[u32], max_new: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut decoder = Decoder::open(dir, &RuntimeOptions::cpu().with_threads(Some(2))).unwrap();
    let stops = gemma_runtime::manifest::stop_token_ids(dir, decoder.manifest()).unwrap();
    let mut cache = decoder
        .new_cache_with_capacity(1, prompt.len() + max_new)
        .unwrap();
    let (mut ids, mut all) = (Vec::new(), Vec::new());
    let mut feed = prompt.to_vec();
    while ids.len() < max_new {
        let logits = decoder.forward_tokens(&feed, &mut cache).unwrap();
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        all.push(logits);
        ids.push(next);
        if stops.contains(&next) {
            break;
        }
        feed = vec![next];
    }
    (ids, all)
}

/// The repository's decode loop against `gemma generate` on the same export, for each prompt; `tol` gives the
/// largest logit difference allowed from the largest |logit| of the step.
fn triton_matches(
    fixture: &str,
    precision: Precision,
    prompts: &[&[u32]],
    max_new: usize,
    tol: impl Fn(f32) -> f32,
) {
    let (_tmp, out, repo) = export_with_triton(fixture, precision, GraphKind::Cpu);
    let check = harness("triton_check.py", &repo, &[]).unwrap();
    assert_eq!(check["ok"], true);
    assert_eq!(check["onnxruntime"], "1.27.0");
    for prompt in prompts {
        let args = [
            "--ids".into(),
            serde_json::to_string(prompt).unwrap(),
            "-n".into(),
            max_new.to_string(),
        ];
        let t = harness("triton_generate.py", &repo, &args).unwrap();
        let ids: Vec<u32> = serde_json::from_value(t["token_ids"].clone()).unwrap();
        let logits: Vec<Vec<f32>> = serde_json::from_value(t["logits"].clone()).unwrap();
        let (ours, our_logits) = our_generate(&out, prompt, max_new);
        let what = format!("{fixture} {} prompt {prompt:?}", precision.name());
        assert_eq!(
            ids, ours,
            "{what}: the Triton decode loop's ids differ from ours"
        );
        assert_eq!(t["open_sequences"], 0, "{what}: a sequence was not ended");
        for (step, (a, b)) in logits.iter().zip(&our_logits).enumerate() {
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let bound = tol(b.iter().fold(0f32, |m, x| m.max(x.abs())));
            assert!(
                d <= bound,
                "{what}: step {step} logits differ by {d} (> {bound})"
            );
        }
    }
}

#[test]
fn triton_gemma3_fp32_short_and_past_the_window() {
    triton_matches(
        "gqa-bf16-sharded-hf4",
        Precision::Fp32,
        &[LONG, SHORT],
        20,
        |_| 1e-4,
    );
}

/// int4: the portable graph's own q/k/v and gate/up MatMulNBits against the cpu graph's stacked ones, whose int8
/// activations (accuracy_level 4) round differently: the bound of `precision_quant.rs` for cpu vs portable graph.
#[test]
fn triton_gemma3_int4() {
    triton_matches(
        "gqa-bf16-sharded-hf4",
        Precision::INT4,
        &[LONG],
        16,
        |top| 0.02 * top,
    );
}

#[test]
fn triton_gemma2_and_gemma1_and_vision_text_decoder() {
    for fixture in [
        "gemma2-gqa-bf16-sharded-hf4",
        "gemma1-mqa-bf16-hf4",
        "cg-mqa-bf16-sharded-hf4",
    ] {
        triton_matches(fixture, Precision::Fp32, &[LONG], 12, |_| 1e-4);
    }
}

/// The files: hard links, no copy; the export's own files as without `--triton` at fp32; a portable export's
/// decoder linked as it is.
#[test]
fn triton_repository_links_the_export_files() {
    let fixture = "gqa-bf16-sharded-hf4";
    let (_tmp, out, repo) = export_with_triton(fixture, Precision::Fp32, GraphKind::Cpu);
    let (_plain_tmp, plain) =
        export_precision_to_temp(&tiny_fixture(fixture), Precision::Fp32, GraphKind::Cpu).unwrap();
    let data = "model.onnx_data";
    let linked = repo.join(NAME).join("1").join(data);
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        std::fs::metadata(out.join(data)).unwrap().ino()
    );
    for file in [data, "model.onnx"] {
        let (a, b) = (
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(plain.join(file)).unwrap(),
        );
        assert!(a == b, "{file} differs from an export without --triton");
    }
    for file in ["config.pbtxt", "1/model.onnx"] {
        assert!(repo.join(NAME).join(file).is_file(), "{file}");
    }
    let generate = repo.join(format!("{NAME}_generate"));
    assert!(generate.join("config.pbtxt").is_file() && generate.join("1/model.py").is_file());
    let gen_config = generate.join("1/generation_config.json");
    assert_eq!(
        std::fs::metadata(&gen_config).unwrap().ino(),
        std::fs::metadata(out.join("generation_config.json"))
            .unwrap()
            .ino()
    );

    // A portable export keeps its weights in onnx/ (the transformers.js layout): the version folder links them as
    // model.onnx_data, and its model.onnx is the export's, reading them there.
    let (_tmp, out, repo) = export_with_triton(fixture, Precision::Fp32, GraphKind::Portable);
    let version = repo.join(NAME).join("1");
    assert_eq!(
        std::fs::metadata(version.join(data)).unwrap().ino(),
        std::fs::metadata(out.join("onnx").join(data))
            .unwrap()
            .ino(),
    );
    let top = gemma_tests::vision::external_data(&out.join("model.onnx")).unwrap();
    let triton = gemma_tests::vision::external_data(&version.join("model.onnx")).unwrap();
    assert_eq!(top.len(), triton.len());
    for (name, (location, offset, length)) in &top {
        assert_eq!(location, "onnx/model.onnx_data", "{name}");
        let moved = (data.to_string(), offset.clone(), length.clone());
        assert_eq!(triton[name], moved, "{name}");
    }
}

/// An existing model folder is refused, replaced with `--force` only when gemma-export wrote it, and a foreign one
/// never; all before anything is written.
#[test]
fn triton_existing_models_need_force_and_must_be_ours() {
    let fixture = tiny_fixture("mqa-f32-hf5");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let mut triton = TritonOptions::new(&repo, Path::new("x"));
    triton.name = NAME.into();
    let opts = |out: &str, force: bool| {
        ExportOptions::new(&fixture, tmp.path().join(out))
            .force(force)
            .triton(Some(triton.clone()))
    };
    export(&opts("a", false)).unwrap();
    let err = export(&opts("b", false)).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    assert!(
        !tmp.path().join("b").exists(),
        "nothing written when refused"
    );
    export(&opts("b", true)).unwrap();
    std::fs::write(repo.join(NAME).join("config.pbtxt"), "name: \"theirs\"\n").unwrap();
    let err = export(&opts("c", true)).unwrap_err().to_string();
    assert!(err.contains("not written by gemma-export"), "{err}");
    assert!(!tmp.path().join("c").exists());
}

#[test]
fn triton_model_names_are_sanitized() {
    use gemma_exporter::triton::sanitize;
    assert_eq!(sanitize("gemma-3-270m"), "gemma-3-270m");
    assert_eq!(sanitize("my model/ü"), "my_model__");
    assert_eq!(sanitize(".."), "gemma");
}
