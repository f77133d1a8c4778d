//! `gemma-vision describe` end to end on PaliGemma 1 and 2 exports (`../tests/fixtures/paligemma`, made by
//! `make_paligemma_fixtures.py` with their processors and tokenizer): the prompt ids are `PaliGemmaProcessor`'s and
//! the greedy ids `generate`'s (`describe.json`); a `detect` prompt adds `detections`; bad input is a one-line error
//! with exit code 1. The logits are checked against transformers in `tests/tests/parity_paligemma.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gemma_runtime::{RuntimeOptions, VisionGenerator};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/paligemma")
        .join(name)
}

fn image(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/images")
        .join(file)
}

fn export(tmp: &Path, name: &str) -> PathBuf {
    let out = tmp.join(name);
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        fixture(name),
        out.clone(),
    ))
    .unwrap();
    out
}

fn vision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-vision"))
        .args(args)
        .output()
        .unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn describe_gives_the_processor_ids_and_greedy_ids() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["pg1-s32", "pg2-s48"] {
        let dir = export(tmp.path(), name);
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("describe.json")).unwrap(),
        )
        .unwrap();
        let prompt = reference["prompt"].as_str().unwrap();
        let steps = reference["steps"].to_string();
        let gen = VisionGenerator::open(&dir, &RuntimeOptions::cpu()).unwrap();
        for (k, file) in reference["images"].as_array().unwrap().iter().enumerate() {
            let (text, chat) = gen.describe_text(prompt, 1, false).unwrap();
            let prompt_ids: Vec<u64> = gen
                .prompt_ids(&text, &[0], chat)
                .unwrap()
                .into_iter()
                .map(u64::from)
                .collect();
            assert_eq!(
                prompt_ids,
                ids(&reference["input_ids"][k]),
                "{name} prompt ids"
            );

            let path = image(file.as_str().unwrap());
            let args = [
                "describe",
                path.to_str().unwrap(),
                "-m",
                dir.to_str().unwrap(),
                "-p",
                prompt,
            ];
            let o = vision(&[&args[..], &["-n", &steps, "--json"]].concat());
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{name}: {err}");
            let out: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                ids(&out["token_ids"]),
                ids(&reference["greedy_ids"][k]),
                "{name} image {k}"
            );
            assert!(out.get("detections").is_none());
        }
    }
}

#[test]
fn detect_prompts_carry_detections_and_default_is_caption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export(tmp.path(), "pg1-s32");
    let m = dir.to_str().unwrap();
    let img = image("landscape-480x640.png");
    let img = img.to_str().unwrap();
    let o = vision(&[
        "describe",
        img,
        "-m",
        m,
        "-p",
        "detect cat ; dog",
        "-n",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The random model's answer holds no well-formed object: every part is noted, none kept.
    assert!(out["detections"].is_array(), "{out}");
    assert!(out["detection_notes"].is_array(), "{out}");

    // Without -p: "caption en", the fixture's prompt, so the same ids as describe.json's first image.
    let o = vision(&["describe", img, "-m", m, "-n", "4", "--json"]);
    assert!(o.status.success());
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("pg1-s32").join("describe.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ids(&out["token_ids"]), ids(&reference["greedy_ids"][0]));
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export(tmp.path(), "pg2-s32");
    let m = dir.to_str().unwrap();
    let not_image = tmp.path().join("notes.png");
    std::fs::write(&not_image, b"not a picture").unwrap();
    let missing = tmp.path().join("missing.jpg");
    for (path, what) in [(&not_image, "notes.png"), (&missing, "missing.jpg")] {
        let o = vision(&["describe", path.to_str().unwrap(), "-m", m, "--json"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(what), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Two <image> placeholders for one image.
    let img = image("tiny-20x30.png");
    let o = vision(&[
        "describe",
        img.to_str().unwrap(),
        "-m",
        m,
        "-p",
        "<image><image> ocr",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("<image>"), "{err}");
}
