//! The `gemma` CLI: help text, and clear errors (non-zero exit, no panic) for missing or broken ONNX Runtime
//! libraries and for folders that are not exports. Each case runs in its own process because the library is loaded
//! once per process.

use std::path::Path;
use std::process::{Command, Output};

fn gemma(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gemma"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run gemma")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A folder whose manifest is valid, so that opening it gets as far as loading ONNX Runtime.
fn fake_export(dir: &Path) {
    let manifest = serde_json::json!({
        "format": "gemma-onnx", "format_version": 1, "family": "gemma3", "architecture": "Gemma3ForCausalLM",
        "precision": "fp32", "graph": "portable", "decoder": "model.onnx",
        "num_layers": 1, "num_attention_heads": 1, "num_kv_heads": 1, "head_dim": 4, "hidden_size": 4,
        "vocab_size": 300, "layer_types": ["full_attention"], "max_position_embeddings": 64,
        "bos_token_id": 2, "pad_token_id": 0, "eos_token_ids": [1], "kv_dtype": "float32", "logits_dtype": "float32"
    });
    std::fs::write(dir.join("gemma-onnx.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.join("model.onnx"), b"not really a model").unwrap();
}

fn assert_clean_failure(o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic in: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn help_teaches_with_examples() {
    let o = gemma(&["--help"], &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("generate") && out.contains("perplexity") && out.contains("Examples:"),
        "{out}"
    );
    assert!(
        out.contains("ORT_DYLIB_PATH") && out.contains("scripts/setup-ort"),
        "{out}"
    );
    let o = gemma(&["generate", "--help"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
        "--chat",
        "--threads",
        "--json",
    ] {
        assert!(out.contains(flag), "generate --help lacks {flag}: {out}");
    }
    let o = gemma(&["perplexity", "--help"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in ["--text", "--context", "--json"] {
        assert!(out.contains(flag), "perplexity --help lacks {flag}: {out}");
    }
}

#[test]
fn missing_library_lists_the_paths_tried() {
    let dir = tempfile::tempdir().unwrap();
    fake_export(dir.path());
    let m = dir.path().to_str().unwrap();
    let o = gemma(
        &["generate", "-m", m, "-p", "hi"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(
        err.contains(
            "run `scripts/setup-ort` (or set ORT_DYLIB_PATH to libonnxruntime.so 1.31 or 1.32)"
        ),
        "{err}"
    );

    // Without ORT_DYLIB_PATH: the gemma-onnx home, then beside the executable.
    let home = dir.path().join("home");
    let o = gemma(
        &["generate", "-m", m, "-p", "hi"],
        &[
            ("ORT_DYLIB_PATH", ""),
            ("GEMMA_ONNX_HOME", home.to_str().unwrap()),
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains(
            &home
                .join("onnxruntime")
                .join("libonnxruntime.so")
                .display()
                .to_string()
        ),
        "{err}"
    );
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_gemma")).parent().unwrap();
    assert!(
        err.contains(&exe_dir.join("libonnxruntime.so").display().to_string()),
        "{err}"
    );
    assert!(err.contains("scripts/setup-ort"), "{err}");
}

#[test]
fn a_file_that_is_not_the_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fake_export(dir.path());
    let m = dir.path().to_str().unwrap();
    let not_a_lib = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_lib, b"hello, I am not a shared library").unwrap();
    for bad in [
        not_a_lib.to_str().unwrap(),
        "/etc/hostname",
        dir.path().to_str().unwrap(),
    ] {
        let o = gemma(
            &["perplexity", "-m", m, "--text", "/etc/hostname"],
            &[("ORT_DYLIB_PATH", bad)],
        );
        let err = assert_clean_failure(&o);
        assert!(
            err.contains("could not load ONNX Runtime from") && err.contains(bad),
            "{err}"
        );
        assert!(err.contains("scripts/setup-ort"), "{err}");
    }
}

#[test]
fn a_folder_that_is_not_an_export_says_run_gemma_export() {
    let dir = tempfile::tempdir().unwrap();
    let o = gemma(
        &["generate", "-m", dir.path().to_str().unwrap(), "-p", "hi"],
        &[],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("not a gemma-onnx export folder") && err.contains("run gemma-export first"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_rejected_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().to_str().unwrap();
    let o = gemma(
        &["generate", "-m", m, "-p", "hi", "--temperature", "-1"],
        &[],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("temperature"), "{err}");
    let o = gemma(
        &["generate", "-m", m, "-p", "hi", "--ep", "warp-drive"],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("warp-drive"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_provider_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fake_export(dir.path());
    let o = gemma(
        &[
            "generate",
            "-m",
            dir.path().to_str().unwrap(),
            "-p",
            "hi",
            "--ep",
            "cuda",
        ],
        &[],
    );
    let err = assert_clean_failure(&o);
    // Either the library is missing here, or the provider error names the feature.
    assert!(
        err.contains("--features cuda") || err.contains("scripts/setup-ort"),
        "{err}"
    );
}

#[test]
fn a_broken_model_file_is_a_clear_error() {
    // Needs the real library (scripts/setup-ort); without it the error is the missing-library one, checked above.
    let dir = tempfile::tempdir().unwrap();
    fake_export(dir.path());
    let o = gemma(
        &["generate", "-m", dir.path().to_str().unwrap(), "-p", "hi"],
        &[],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("creating an ONNX Runtime session for") || err.contains("scripts/setup-ort"),
        "{err}"
    );
}
