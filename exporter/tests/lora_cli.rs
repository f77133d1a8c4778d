//! `gemma-export --lora` as users run it: every adapter of `tests/fixtures/lora/refuse/` (made by
//! `tests/fixtures/make_lora_fixtures.py`, listed with the expected message fragment in `cases.json`) is refused with
//! exit 1, a message that names the feature or tensor, and no output or temporary folder left behind; `--lora-scale`
//! needs `--lora`; a good adapter is recorded in gemma-onnx.json. The merged logits are tested in
//! `tests/tests/lora.rs`.

mod common;

use common::{assert_failed, export, fixtures, manifest, stderr};
use std::fs;
use std::path::Path;
use std::process::Output;

/// Exit 1 (not a panic), `needle` in stderr, and nothing left in `out`'s folder.
fn assert_refused(out: &Output, dest: &Path, needle: &str) {
    assert_failed(out, needle);
    assert!(!dest.exists(), "{} exists after a refusal", dest.display());
    let left = common::names_in(dest.parent().unwrap(), |_| true);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[derive(serde::Deserialize)]
struct Cases {
    base: String,
    cases: Vec<RefusalCase>,
}

#[derive(serde::Deserialize)]
struct RefusalCase {
    name: String,
    fragment: String,
}

#[test]
fn every_refusal_names_its_cause() {
    let root = fixtures().join("lora/refuse");
    let cases: Cases =
        serde_json::from_str(&fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let src = fixtures().join("tiny").join(&cases.base);
    assert!(cases.cases.len() >= 20, "cases.json lists every refusal");
    for case in &cases.cases {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let adapter = root.join(&case.name);
        let out = export(&src, &dest, &["--lora", adapter.to_str().unwrap()]);
        let stderr = stderr(&out);
        eprintln!("{}: {}", case.name, stderr.trim());
        assert_refused(&out, &dest, &case.fragment);
        // Every message names the adapter file it is about.
        assert!(
            stderr.contains(&case.name),
            "{}: the message names the adapter: {stderr}",
            case.name
        );
    }
}

#[test]
fn lora_scale_needs_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let src = fixtures().join("tiny/mqa-f32-hf5");
    let out = export(&src, &dest, &["--lora-scale", "0.5"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("--lora"));
    assert!(!dest.exists());
}

#[test]
fn missing_adapter_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let src = fixtures().join("tiny/mqa-f32-hf5");
    let nowhere = tmp.path().join("no-such-adapter");
    let out = export(&src, &dest, &["--lora", nowhere.to_str().unwrap()]);
    assert_refused(&out, &dest, "no-such-adapter/adapter_config.json");
}

#[test]
fn merged_adapter_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let src = fixtures().join("tiny/mqa-f32-hf5");
    let adapter = fixtures().join("lora/layers-to-transform");
    let out = export(
        &src,
        &dest,
        &[
            "--lora",
            adapter.to_str().unwrap(),
            "--lora-scale",
            "0.25",
            "--graph",
            "portable",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = manifest(&dest);
    let lora = &manifest["lora"];
    assert_eq!(lora["merged_modules"], 4);
    assert_eq!(lora["scale"], 0.25);
    assert_eq!(lora["r"], 4);
    assert_eq!(lora["lora_alpha"], 8.0);
    assert_eq!(lora["use_rslora"], false);
    // The recorded hash is that of the adapter's weights file.
    use sha2::Digest;
    let bytes = fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(lora["sha256"], hex);
}
