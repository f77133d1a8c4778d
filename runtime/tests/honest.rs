//! Honest results at run time (issue 15 item 4): an export folder that is not what its manifest says is refused
//! with exit 1 and a message naming the file or key, instead of printing garbage. Each case edits a fresh export of
//! the tiny Gemma 2 fixture.

mod common;

use common::{failure, gemma, out_dir, success, write_tokenizer};
use std::fs;
use std::path::Path;

fn fresh() -> tempfile::TempDir {
    let tmp = common::export();
    write_tokenizer(&out_dir(&tmp), &[]);
    tmp
}

fn generate(dir: &Path) -> std::process::Output {
    gemma(
        &[
            "generate",
            "-m",
            dir.to_str().unwrap(),
            "-p",
            "w5 w6",
            "-n",
            "2",
        ],
        None,
    )
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("gemma-onnx.json")).unwrap()).unwrap()
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut m = manifest(dir);
    edit(&mut m);
    fs::write(dir.join("gemma-onnx.json"), m.to_string()).unwrap();
}

/// Fails unless generation fails with exit 1 and every fragment in its message.
fn refused(dir: &Path, fragments: &[&str]) {
    let err = failure(&generate(dir));
    for f in fragments {
        assert!(err.contains(f), "expected {f:?} in: {err}");
    }
}

/// The weights of the portable export (the transformers.js layout keeps them in `onnx/`).
const DATA: &str = "onnx/model.onnx_data";

#[test]
fn a_fresh_export_is_fingerprinted_and_runs() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    let files = manifest(&dir)["files"].clone();
    for name in ["model.onnx", DATA] {
        let (size, crc) = gemma_runtime::fingerprint::fingerprint(&dir.join(name)).unwrap();
        assert_eq!(files[name]["size"], size, "{name}");
        assert_eq!(files[name]["sampled_crc32"], crc.as_str(), "{name}");
    }
    success(&generate(&dir));
}

#[test]
fn data_file_of_random_bytes_is_refused() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    let path = dir.join(DATA);
    let len = fs::metadata(&path).unwrap().len() as usize;
    // Deterministic "random" bytes of the same size.
    let mut x = 0x9e3779b97f4a7c15u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&path, bytes).unwrap();
    refused(&dir, &["model.onnx_data", "fingerprint", "re-export"]);
    // One changed byte in the middle of a sampled block is enough.
    let tmp = fresh();
    let dir = out_dir(&tmp);
    let path = dir.join(DATA);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 1;
    fs::write(&path, bytes).unwrap();
    refused(&dir, &["model.onnx_data", "sampled CRC-32"]);
    // Truncated.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len as u64 / 2).unwrap();
    refused(&dir, &["model.onnx_data", "bytes where the export wrote"]);
}

#[test]
fn files_from_another_export_are_refused() {
    let a = fresh();
    let b = tempfile::tempdir().unwrap();
    gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(
            common::fixtures().join("tiny").join(common::FIXTURE),
            b.path().join("onnx"),
        )
        .precision(gemma_exporter::Precision::Fp16)
        .graph(gemma_exporter::GraphKind::Portable),
    )
    .unwrap();
    let (a, b) = (out_dir(&a), b.path().join("onnx"));
    // The other export's graph, with the data it reads (its precision's name in onnx/).
    let other_data = "onnx/model_fp16.onnx_data";
    fs::copy(b.join("model.onnx"), a.join("model.onnx")).unwrap();
    fs::copy(b.join(other_data), a.join(other_data)).unwrap();
    refused(&a, &["model.onnx:", "fingerprint"]);
    // Without fingerprints (an older export), the graph's own precision stamp still catches it.
    let before = manifest(&a);
    edit_manifest(&a, |m| {
        m.as_object_mut().unwrap().remove("files");
    });
    refused(
        &a,
        &[
            "field `precision` is \"fp32\"",
            "\"fp16\"",
            "another export",
        ],
    );
    fs::write(a.join("gemma-onnx.json"), before.to_string()).unwrap();
    fs::copy(b.join(other_data), a.join(DATA)).unwrap();
    refused(&a, &["fingerprint"]);
}

#[test]
fn exports_without_fingerprints_still_load() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("files");
    });
    success(&generate(&dir));
}

#[test]
fn a_graph_not_in_the_fingerprints_is_refused() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    fs::copy(dir.join("model.onnx"), dir.join("other.onnx")).unwrap();
    edit_manifest(&dir, |m| m["decoder"] = "other.onnx".into());
    refused(
        &dir,
        &["field `decoder`", "other.onnx", "no entry in `files`"],
    );
}

#[test]
fn manifest_sizes_are_checked_against_config_and_graph() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    edit_manifest(&dir, |m| m["hidden_size"] = 1.into());
    refused(
        &dir,
        &["gemma-onnx.json", "field `hidden_size` is 1", "config.json"],
    );
    // Without config.json, the graph's own shapes catch what they hold.
    let tmp = fresh();
    let dir = out_dir(&tmp);
    fs::remove_file(dir.join("config.json")).unwrap();
    success(&generate(&dir));
    for (key, value, fragment) in [
        // The fixture is Gemma 2, whose portable graph leaves the KV inputs' head axes open (for Optimum); the
        // `present.*` outputs fix them.
        ("num_kv_heads", 3, "`present.0.key`"),
        ("head_dim", 5, "`present.0.key`"),
        ("vocab_size", 250, "logits"),
    ] {
        let before = manifest(&dir);
        edit_manifest(&dir, |m| m[key] = value.into());
        refused(&dir, &[&format!("field `{key}` is {value}"), fragment]);
        fs::write(dir.join("gemma-onnx.json"), before.to_string()).unwrap();
    }
}

#[test]
fn file_names_must_stay_inside_the_folder() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    // A copy of the whole export beside it: a decoder path leading there is refused, relative or absolute.
    let outside = tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    fs::create_dir(outside.join("onnx")).unwrap();
    for f in ["model.onnx", DATA] {
        fs::copy(dir.join(f), outside.join(f)).unwrap();
    }
    edit_manifest(&dir, |m| m["decoder"] = "../elsewhere/model.onnx".into());
    refused(&dir, &["field `decoder`", "leaves the folder"]);
    let abs = outside.join("model.onnx").to_string_lossy().into_owned();
    edit_manifest(&dir, |m| m["decoder"] = abs.clone().into());
    refused(&dir, &["field `decoder`", "absolute path"]);
    // A symlink inside the folder that points out of it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.join("model.onnx"), dir.join("link.onnx")).unwrap();
        edit_manifest(&dir, |m| m["decoder"] = "link.onnx".into());
        refused(&dir, &["field `decoder`", "symlink", "outside the folder"]);
    }
    // A `files` key that leaves the folder.
    edit_manifest(&dir, |m| {
        m["decoder"] = "model.onnx".into();
        m["files"]["../elsewhere/model.onnx"] =
            serde_json::json!({"size": 1, "sampled_crc32": "0"});
    });
    refused(
        &dir,
        &["field `files.../elsewhere/model.onnx`", "leaves the folder"],
    );
}

#[test]
fn temperature_edge_values() {
    let tmp = fresh();
    let dir = out_dir(&tmp);
    let m = dir.to_str().unwrap();
    // `-inf` is read as a value (not as the flag `-i`) and refused by name.
    for t in ["-inf", "inf", "NaN", "-0.5"] {
        let err = failure(&gemma(
            &["generate", "-m", m, "-p", "w5", "--temperature", t],
            None,
        ));
        assert!(
            err.contains("temperature must be a finite number >= 0"),
            "{t}: {err}"
        );
    }
    // A tiny temperature must not overflow logit / T into NaN (which made the sampler pick the last id): it
    // behaves as greedy.
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "-m", m, "-p", "w5 w6", "-n", "8", "--json"];
        args.extend_from_slice(extra);
        common::token_ids(&common::json_of(success(&gemma(&args, None))))
    };
    let greedy = run(&[]);
    assert_eq!(greedy.len(), 8, "{greedy:?}");
    for t in ["1e-39", "1e-45", "1e-30"] {
        assert_eq!(
            run(&["--temperature", t, "--seed", "3"]),
            greedy,
            "--temperature {t}"
        );
    }
}
