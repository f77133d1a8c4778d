//! ShieldGemma 2 (`ShieldGemma2ForImageClassification`) through `gemma-export` and
//! [`Classifier`](gemma_runtime::vision::Classifier), against transformers on the tiny random fixture
//! (`fixtures/make_shieldgemma2_fixtures.py`, `tiny/shieldgemma2/shield_reference.json`):
//! - the prompt ids of every policy equal `ShieldGemma2Processor`'s (two `<bos>`, the image block, the policy text);
//! - P(Yes) and P(No) within 1e-4 on three images, with all default policies, a selection in a given order, a custom
//!   policy selected among defaults, and the defaults followed by a custom one;
//! - the refusals: unknown policy, malformed `--policy-text`, unreadable images, a vision export that is not a
//!   classifier, and checkpoints without their processor files.

use gemma_runtime::vision::{parse_policy_text, Classifier, ImageErrorKind, Policy};
use gemma_runtime::{Error, RuntimeOptions};
use gemma_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "shieldgemma2";

fn options() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

fn reference() -> Value {
    let path = tiny_fixture(FIXTURE).join("shield_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn probabilities_match_transformers() {
    let (_tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
            .unwrap();
    let doc = reference();
    assert_eq!(manifest["classifier"]["yes_token_id"], doc["yes_token_id"]);
    assert_eq!(manifest["classifier"]["no_token_id"], doc["no_token_id"]);
    let mut classifier = Classifier::open(&out, &options()).unwrap();
    let defaults: Vec<&str> = classifier
        .default_policies()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(defaults, ["dangerous", "sexual", "violence"]);

    let mut worst = 0f64;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let custom: Vec<Policy> = case["custom_policies"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Policy::new(k, v.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let policies = classifier
            .policies(&strings(&case["policies"]), &custom)
            .unwrap();
        let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, strings(&case["names"]), "{name}");

        // the prompts, id for id (the reference rows are left-padded: mask 0)
        for (b, policy) in policies.iter().enumerate() {
            let ids = classifier.prompt_ids(policy).unwrap();
            let row = case["input_ids"][b].as_array().unwrap();
            let mask = case["attention_mask"][b].as_array().unwrap();
            let expected: Vec<u32> = row
                .iter()
                .zip(mask)
                .filter(|(_, m)| m.as_i64() == Some(1))
                .map(|(t, _)| t.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, expected, "{name}: prompt of {}", policy.name);
            assert_eq!(&ids[..2], [2, 2], "{name}: the processor's two <bos>");
        }

        let image = fixtures_dir()
            .join("images")
            .join(case["image"].as_str().unwrap());
        let image = classifier.load_image(&image).unwrap();
        let scores = classifier.classify(&image, &policies).unwrap();
        for (b, s) in scores.iter().enumerate() {
            let p = &case["probabilities"][b];
            let (yes, no) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            let d = (s.yes - yes).abs().max((s.no - no).abs());
            worst = worst.max(d);
            assert_eq!(s.name, names[b]);
            assert!(
                d <= 1e-4,
                "{name} / {}: {s:?} vs yes {yes}, no {no}",
                s.name
            );
        }
    }
    eprintln!("ShieldGemma 2 probabilities: max |Δ| = {worst:e}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    let mut classifier = Classifier::open(&out, &options()).unwrap();

    let e = classifier.policies(&["nudity".into()], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"nudity\"") && msg.contains("dangerous, sexual, violence"),
        "{msg}"
    );
    for bad in ["weapons", "=No weapons.", "weapons="] {
        let msg = parse_policy_text(bad).unwrap_err().to_string();
        assert!(msg.contains("NAME=TEXT"), "{msg}");
    }
    let e = classifier
        .classify(&image::RgbImage::new(8, 8), &[])
        .unwrap_err();
    assert!(e.to_string().contains("no policy"), "{e}");

    let zero = fixtures_dir().join("images/zero-0x5.png");
    let missing = tmp.path().join("missing.png");
    for (path, kind) in [
        (&zero, ImageErrorKind::ZeroSized),
        (&missing, ImageErrorKind::Unreadable),
    ] {
        match classifier.load_image(path).unwrap_err() {
            Error::Image {
                kind: k, path: p, ..
            } => assert_eq!((k, &p), (kind, path)),
            other => panic!("{}: expected an image error, got {other}", path.display()),
        }
    }

    // a Gemma 3 vision export that is not a classifier
    let (_t, cg) = export_to_temp(&tiny_fixture("cg-mqa-bf16-sharded-hf4")).unwrap();
    let msg = Classifier::open(&cg, &options()).err().unwrap().to_string();
    assert!(
        msg.contains("classifier") && msg.contains("describe"),
        "{msg}"
    );

    // checkpoints without the processor's policies or prompt template
    for (remove, words) in [
        ("processor_config.json", "processor_config.json: not found"),
        ("chat_template.jinja", "no prompt template"),
    ] {
        let src = copy_fixture_without(tmp.path(), remove);
        let e = gemma_exporter::export::export(&gemma_exporter::export::ExportOptions::new(
            &src,
            tmp.path().join(format!("out-{remove}")),
        ))
        .unwrap_err();
        assert!(e.to_string().contains(words), "{e}");
    }
    let src = copy_fixture_without(tmp.path(), "");
    let config = src.join("processor_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("policy_definitions");
    std::fs::write(&config, v.to_string()).unwrap();
    let e = gemma_exporter::export::export(&gemma_exporter::export::ExportOptions::new(
        &src,
        tmp.path().join("out-no-policies"),
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("processor_config.json") && msg.contains("policy_definitions"),
        "{msg}"
    );
}

/// A copy of the fixture folder in `dir` without the file `remove` (none when empty).
fn copy_fixture_without(dir: &Path, remove: &str) -> PathBuf {
    let dst = dir.join(format!("src-without-{remove}"));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(tiny_fixture(FIXTURE)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != remove {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
    dst
}
