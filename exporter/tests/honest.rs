//! Honest results at export (issue 15 item 4): non-finite weights and values beyond the target precision are
//! refused at every precision, naming the tensor and the first bad element, with nothing left behind;
//! `--allow-nonfinite` overrides and is recorded in the manifest. Each case edits one element of a copy of the
//! tiny f32 fixture (`tests/fixtures/tiny/mqa-f32-hf5`).

mod common;

use common::{assert_failed, copy_tiny, export, manifest, stderr};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const FIXTURE: &str = "mqa-f32-hf5";

/// A copy of the fixture in `dir/ckpt`.
fn copy_fixture(dir: &Path) -> PathBuf {
    copy_tiny(FIXTURE, &dir.join("ckpt"))
}

/// Overwrites f32 elements of `tensor` in `ckpt/model.safetensors`: `(flat index, value)`.
fn poke(ckpt: &Path, tensor: &str, values: &[(usize, f32)]) {
    let path = ckpt.join("model.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[tensor];
    assert_eq!(t["dtype"], "F32", "{tensor}");
    let begin = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    for &(i, v) in values {
        bytes[begin + 4 * i..begin + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    fs::write(&path, bytes).unwrap();
}

/// Fails unless the export failed with exit 1, a message holding every fragment, and nothing left beside OUT.
fn assert_refused(out: &Path, o: &Output, fragments: &[&str]) {
    for f in fragments {
        assert_failed(o, f);
    }
    assert!(!out.exists(), "{} was created", out.display());
    let debris = common::names_in(out.parent().unwrap(), |n| n.starts_with('.'));
    assert!(debris.is_empty(), "left behind: {debris:?}");
}

const DOWN: &str = "model.layers.1.mlp.down_proj.weight"; // [64, 128]

#[test]
fn nan_and_inf_weights_are_refused_at_every_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    // Element (3, 5) of a [64, 128] matrix is flat index 3 * 128 + 5 = 389; an earlier inf would be reported first.
    poke(&src, DOWN, &[(389, f32::NAN), (1000, f32::INFINITY)]);
    for precision in ["fp32", "fp16", "bf16", "int8", "int4"] {
        let out = tmp.path().join(format!("out-{precision}"));
        let o = export(&src, &out, &["--precision", precision]);
        assert_refused(
            &out,
            &o,
            &[DOWN, "NaN", "element 389", "[3, 5]", "--allow-nonfinite"],
        );
    }
}

#[test]
fn inf_in_a_small_inline_tensor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    poke(&src, "model.norm.weight", &[(63, f32::NEG_INFINITY)]);
    for precision in ["fp32", "bf16", "int4"] {
        let out = tmp.path().join(format!("out-{precision}"));
        let o = export(&src, &out, &["--precision", precision]);
        assert_refused(
            &out,
            &o,
            &["model.norm.weight", "-inf", "element 63", "[63]"],
        );
    }
}

#[test]
fn allow_nonfinite_exports_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    // A NaN norm gain too: with imp=gains it must not turn the quantization importance into NaN.
    poke(&src, DOWN, &[(389, f32::NAN)]);
    poke(
        &src,
        "model.layers.0.input_layernorm.weight",
        &[(7, f32::NAN)],
    );
    for (precision, extra) in [("fp32", None), ("bf16", None), ("int4", Some("imp=gains"))] {
        let out = tmp.path().join(format!("out-{precision}"));
        let mut args = vec!["--precision", precision, "--allow-nonfinite"];
        if let Some(spec) = extra {
            args.extend(["--quant-spec", spec]);
        }
        let o = export(&src, &out, &args);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        let m = manifest(&out);
        assert_eq!(m["allow_nonfinite"], true, "{precision}");
    }
    // Without the flag the field is absent (older runtimes and tools see nothing new).
    let clean = tmp.path().join("clean");
    let o = export(&copy_fixture(&tmp.path().join("c")), &clean, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&clean);
    assert!(m.get("allow_nonfinite").is_none(), "{m}");
}

#[test]
fn values_beyond_the_target_precision_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture(tmp.path());
    // f32::MAX is finite in fp32 and rounds to inf in bf16 (and in fp16).
    poke(&src, DOWN, &[(10, f32::MAX), (11, -f32::MAX)]);
    let out = tmp.path().join("bf16");
    let o = export(&src, &out, &["--precision", "bf16"]);
    assert_refused(
        &out,
        &o,
        &[DOWN, "beyond the range of bf16", "--precision fp32"],
    );
    let out = tmp.path().join("fp16");
    let o = export(&src, &out, &["--precision", "fp16"]);
    assert_refused(&out, &o, &[DOWN, "beyond the range of fp16"]);
    // fp32 holds f32::MAX exactly: exported.
    let out = tmp.path().join("fp32");
    let o = export(&src, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn symlinks_leaving_the_checkpoint_are_refused_everywhere() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        let src = copy_fixture(&tmp.path().join(name));
        let target = outside.join(name);
        match fs::rename(src.join(name), &target) {
            Ok(()) => {}
            Err(_) => fs::write(&target, "{}").unwrap(),
        }
        symlink(&target, src.join(name)).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let o = export(&src, &out, &[]);
        assert_refused(&out, &o, &[name, "outside the checkpoint folder"]);
    }
    // A symlink to another file inside the folder is fine.
    let src = copy_fixture(&tmp.path().join("inside"));
    fs::rename(
        src.join("model.safetensors"),
        src.join("weights.bin.safetensors"),
    )
    .unwrap();
    symlink("weights.bin.safetensors", src.join("model.safetensors")).unwrap();
    let o = export(&src, &tmp.path().join("out-inside"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn hub_cache_snapshots_with_blob_symlinks_still_export() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--org--tiny");
    let (blobs, snap) = (repo.join("blobs"), repo.join("snapshots/0123abc"));
    fs::create_dir_all(&blobs).unwrap();
    fs::create_dir_all(&snap).unwrap();
    for (i, e) in fs::read_dir(common::tiny_fixture(FIXTURE))
        .unwrap()
        .enumerate()
    {
        let e = e.unwrap();
        let blob = blobs.join(format!("blob{i}"));
        fs::copy(e.path(), &blob).unwrap();
        symlink(format!("../../blobs/blob{i}"), snap.join(e.file_name())).unwrap();
    }
    let out = tmp.path().join("out");
    let o = export(&snap, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("config.json").is_file());
}

/// A copy of fixture `name` (under `tests/fixtures/tiny`) in `dir`, with `edit` applied to the JSON file `file`.
fn with_json(
    dir: &Path,
    name: &str,
    file: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let src = copy_tiny(name, &dir.join(name));
    let path = src.join(file);
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&path, v.to_string()).unwrap();
    src
}

#[test]
fn token_ids_outside_the_vocab_and_huge_windows_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(
        &str,
        &str,
        Box<dyn FnOnce(&mut serde_json::Value)>,
        Vec<&str>,
    )> = vec![
        (
            "mqa-f32-hf5",
            "config.json",
            Box::new(|v| v["eos_token_id"] = serde_json::json!([1, 300])),
            vec!["config.json", "`eos_token_id`", "vocab_size (256)", "300"],
        ),
        (
            "mqa-f32-hf5",
            "config.json",
            Box::new(|v| v["bos_token_id"] = 256.into()),
            vec!["`bos_token_id`", "256"],
        ),
        (
            "mqa-f32-hf5",
            "config.json",
            Box::new(|v| v["sliding_window"] = (1u64 << 62).into()),
            // Beyond the sanity limits every config value is checked against first (docs/reliability.md).
            vec!["`sliding_window`", "sanity limit", "4611686018427387904"],
        ),
        (
            "mqa-f32-hf5",
            "config.json",
            Box::new(|v| v["sliding_window"] = 1000.into()),
            vec!["`sliding_window`", "max_position_embeddings (128)", "1000"],
        ),
        (
            "mqa-f32-hf5",
            "generation_config.json",
            Box::new(|v| v["eos_token_id"] = serde_json::json!([1, 4096])),
            vec!["generation_config.json", "`eos_token_id`", "4096"],
        ),
        (
            "cg-mqa-bf16-hubnames",
            "config.json",
            Box::new(|v| v["image_token_index"] = 70000.into()),
            vec!["`image_token_index`", "70000"],
        ),
        (
            "cg-mqa-bf16-hubnames",
            "config.json",
            Box::new(|v| v["boi_token_index"] = 256.into()),
            vec!["`boi_token_index`", "256"],
        ),
    ];
    for (i, (fixture, file, edit, fragments)) in cases.into_iter().enumerate() {
        let src = with_json(&tmp.path().join(i.to_string()), fixture, file, edit);
        let out = tmp.path().join(format!("out-{i}"));
        let o = export(&src, &out, &[]);
        assert_refused(&out, &o, &fragments);
    }
}
