//! `gemma-vision classify` end to end on the tiny ShieldGemma 2 export (`../tests/fixtures/tiny/shieldgemma2`, with
//! its own tokenizer and processor files): `--json` gives transformers' probabilities
//! (`shield_reference.json`) for the default policies, a selection and a custom policy; the table has one line per
//! policy; every bad input is a one-line error with exit code 1. The library-level comparison, prompt ids included,
//! is `tests/tests/shieldgemma2.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{failure, fixtures, json_of, stdout, success};
use serde_json::Value;

fn export(tmp: &Path, fixture: &str) -> PathBuf {
    let out = tmp.join(fixture);
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        fixtures().join("tiny").join(fixture),
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

fn image(name: &str) -> String {
    fixtures()
        .join("images")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn case(name: &str) -> Value {
    let path = fixtures().join("tiny/shieldgemma2/shield_reference.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

#[test]
fn classify_prints_transformers_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let out = export(tmp.path(), "shieldgemma2");
    let m = out.to_string_lossy().into_owned();
    let custom = "weapons=No Weapons: The image shall not show firearms or explosive devices.";
    for (name, extra) in [
        ("landscape-default", vec![]),
        (
            "landscape-selected",
            vec!["--policy", "violence", "--policy", "dangerous"],
        ),
        (
            "portrait-custom",
            vec![
                "--policy-text",
                custom,
                "--policy",
                "weapons",
                "--policy",
                "sexual",
            ],
        ),
    ] {
        let c = case(name);
        let img = image(c["image"].as_str().unwrap());
        let mut args = vec!["classify", img.as_str(), "-m", m.as_str(), "--json"];
        args.extend(extra.iter().copied());
        let o = vision(&args);
        let v = json_of(success(&o));
        let policies = v["policies"].as_array().unwrap();
        assert_eq!(
            policies.len(),
            c["names"].as_array().unwrap().len(),
            "{name}"
        );
        for (i, p) in policies.iter().enumerate() {
            let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 3, "{p}");
            assert_eq!(p["name"], c["names"][i], "{name}");
            for (key, j) in [("yes", 0), ("no", 1)] {
                let d =
                    (p[key].as_f64().unwrap() - c["probabilities"][i][j].as_f64().unwrap()).abs();
                assert!(d <= 1e-4, "{name} / {}: {key} off by {d}", p["name"]);
            }
        }
        assert!(
            stdout(&o).contains(r#"{"name":"#),
            "field order name, yes, no"
        );
        assert!(
            stdout(&o).contains(r#","yes":"#)
                && stdout(&o).find(r#""yes""#) < stdout(&o).find(r#""no""#)
        );
    }
    // the table: one line per default policy, in the processor's order
    let o = vision(&["classify", &image("tiny-20x30.png"), "-m", &m]);
    let lines: Vec<String> = stdout(success(&o)).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, name) in lines.iter().zip(["dangerous", "sexual", "violence"]) {
        assert!(
            line.starts_with(name) && line.contains("yes 0.") && line.contains("no 0."),
            "{line}"
        );
    }
}

#[test]
fn classify_bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = export(tmp.path(), "shieldgemma2");
    let m = out.to_string_lossy().into_owned();
    let good = image("tiny-20x30.png");
    let missing = tmp
        .path()
        .join("missing.png")
        .to_string_lossy()
        .into_owned();
    let cases: [(&[&str], &str); 3] = [
        (&["--policy", "nudity"], "unknown policy \"nudity\""),
        (&["--policy-text", "weapons"], "NAME=TEXT"),
        (&["--policy-text", "=No weapons."], "NAME=TEXT"),
    ];
    for (extra, words) in cases {
        let mut args = vec!["classify", good.as_str(), "-m", m.as_str()];
        args.extend(extra.iter().copied());
        let err = failure(&vision(&args));
        assert!(err.contains(words) && err.lines().count() == 1, "{err}");
    }
    let err = failure(&vision(&["classify", &missing, "-m", &m]));
    assert!(
        err.contains("missing.png") && err.contains("cannot read"),
        "{err}"
    );
    let zero = image("zero-0x5.png");
    let err = failure(&vision(&["classify", &zero, "-m", &m]));
    assert!(err.contains("zero-sized"), "{err}");
    // a vision export that is not a classifier
    let cg = export(tmp.path(), "cg-mqa-bf16-sharded-hf4");
    let err = failure(&vision(&["classify", &good, "-m", &cg.to_string_lossy()]));
    assert!(err.contains("classifier"), "{err}");
    // the help teaches the command
    let o = vision(&["classify", "--help"]);
    let help = stdout(success(&o));
    assert!(
        help.contains("--policy-text") && help.contains("Examples:"),
        "{help}"
    );
}
