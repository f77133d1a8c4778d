//! `gemma-export` as users run it: a good export, and every kind of bad input giving a clear error, exit ≠ 0,
//! and nothing left behind that looks like an export.

mod common;

use common::{assert_failed, export, stderr, TINY};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const H: usize = TINY.hidden;
const I: usize = TINY.inter;
const LAYERS: usize = TINY.layers;

fn config() -> serde_json::Value {
    common::config(TINY)
}

fn tensors() -> Vec<(String, Vec<usize>)> {
    common::tensors(TINY)
}

/// Writes a tiny Gemma 3 checkpoint; `edit` may change tensor shapes or drop tensors before writing.
fn checkpoint(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>)>)) -> PathBuf {
    common::checkpoint(dir, "ckpt", TINY, edit)
}

/// Asserts failure with `needle` in stderr, no panic, and no output or temporary folder left behind.
fn assert_refused(out: &Output, dest: &Path, needle: &str) {
    assert_failed(out, needle);
    assert!(
        !dest.exists(),
        "{} must not exist after a failed export",
        dest.display()
    );
    let leftovers = common::names_in(dest.parent().unwrap(), |n| n.contains("partial"));
    assert!(
        leftovers.is_empty(),
        "temporary folders left behind: {leftovers:?}"
    );
}

#[test]
fn exports_a_complete_folder() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    let dest = dir.path().join("onnx");
    let out = export(&src, &dest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "model.onnx",
        "model.onnx_data",
        "config.json",
        "generation_config.json",
        "gemma-onnx.json",
    ] {
        assert!(dest.join(f).is_file(), "missing {f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dest.join("gemma-onnx.json")).unwrap()).unwrap();
    assert_eq!(manifest["num_layers"], LAYERS);
    assert_eq!(
        manifest["layer_types"],
        serde_json::json!(["sliding_attention", "full_attention"])
    );
    // The external data holds the weights once (the tied lm_head reuses the embedding).
    let data_len = fs::metadata(dest.join("model.onnx_data")).unwrap().len();
    let weights: u64 = tensors()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
        .sum();
    assert!(
        data_len <= weights + 64 * 1024 * tensors().len() as u64,
        "data file {data_len} B for {weights} B of weights"
    );

    // An existing output folder is refused without --force and replaced with it.
    let again = export(&src, &dest, &[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"));
    assert!(
        dest.join("model.onnx").is_file(),
        "a refused export must not touch the existing folder"
    );
    let forced = export(&src, &dest, &["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(dest.join("model.onnx").is_file());
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |v| {
        v.retain(|(n, _)| n != "model.layers.1.self_attn.k_norm.weight")
    });
    let dest = dir.path().join("onnx");
    assert_refused(
        &export(&src, &dest, &[]),
        &dest,
        "model.layers.1.self_attn.k_norm.weight",
    );
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |v| {
        for (n, s) in v.iter_mut() {
            if n == "model.layers.0.mlp.up_proj.weight" {
                *s = vec![I + 1, H];
            }
        }
    });
    let dest = dir.path().join("onnx");
    let out = export(&src, &dest, &[]);
    assert_refused(&out, &dest, "model.layers.0.mlp.up_proj.weight");
    assert!(stderr(&out).contains(&format!("{:?}", [I, H])));
}

#[test]
fn truncated_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    let file = src.join("model.safetensors");
    let len = fs::metadata(&file).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 100).unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(&export(&src, &dest, &[]), &dest, "truncated");
}

#[test]
fn header_lying_about_offsets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    let file = src.join("model.safetensors");
    let mut bytes = fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    // Point the norm weight past the end of the data section, keeping the header length unchanged.
    let json: serde_json::Value = serde_json::from_str(&header).unwrap();
    let offs = json["model.norm.weight"]["data_offsets"].clone();
    let (b, e) = (offs[0].as_u64().unwrap(), offs[1].as_u64().unwrap());
    let old = format!("[{b},{e}]");
    let new = format!("[{},{}]", b + 900000, e + 900000);
    assert!(header.contains(&old));
    let mut patched = header.replacen(&old, &new, 1);
    while patched.len() < n {
        patched.push(' ');
    }
    patched.truncate(n.max(patched.trim_end().len()));
    let mut new_bytes = (patched.len() as u64).to_le_bytes().to_vec();
    new_bytes.extend(patched.as_bytes());
    new_bytes.extend(&bytes[8 + n..]);
    bytes = new_bytes;
    fs::write(&file, bytes).unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(&export(&src, &dest, &[]), &dest, "model.safetensors");
}

#[test]
fn pickle_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    fs::remove_file(src.join("model.safetensors")).unwrap();
    fs::write(src.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(&export(&src, &dest, &[]), &dest, "pytorch_model.bin");
}

#[test]
fn unknown_model_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    let mut cfg = config();
    cfg["model_type"] = "llama".into();
    cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    fs::write(src.join("config.json"), cfg.to_string()).unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(&export(&src, &dest, &[]), &dest, "llama");
}

#[test]
fn shard_index_escaping_the_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), |_| {});
    fs::rename(
        src.join("model.safetensors"),
        dir.path().join("outside.safetensors"),
    )
    .unwrap();
    let map: serde_json::Map<String, serde_json::Value> = tensors()
        .into_iter()
        .map(|(n, _)| (n, "../outside.safetensors".into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    fs::write(src.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(&export(&src, &dest, &[]), &dest, "outside");
}

#[test]
fn missing_source_folder_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("onnx");
    assert_refused(
        &export(&dir.path().join("nope"), &dest, &[]),
        &dest,
        "config.json",
    );
}

#[test]
fn every_precision_exports_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let src = checkpoint(tmp.path(), |_| {});
    for (precision, extra, spec) in [
        ("fp16", &[][..], None),
        ("bf16", &[][..], None),
        ("int8", &[][..], Some("emb=8s64,")),
        ("int4", &[][..], Some("gate=4a,")),
        (
            "int4",
            &["--block-size", "16", "--quant-spec", "all=4a,down=8s-rtn"][..],
            Some("down=8s-rtn,emb=4a,block=16"),
        ),
    ] {
        let out = tmp.path().join(format!("out-{precision}-{}", extra.len()));
        let mut args = vec!["--precision", precision];
        args.extend_from_slice(extra);
        let run = export(&src, &out, &args);
        assert!(
            run.status.success(),
            "{precision} {extra:?}: {}",
            stderr(&run)
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["precision"], precision);
        match spec {
            Some(s) => assert!(
                manifest["quantization"].as_str().unwrap().contains(s),
                "{precision}: {}",
                manifest["quantization"]
            ),
            None => assert!(manifest.get("quantization").is_none()),
        }
    }
}

#[test]
fn bad_quantization_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = checkpoint(tmp.path(), |_| {});
    let dest = tmp.path().join("out");
    for (args, needle) in [
        (
            &["--precision", "int4", "--block-size", "48"][..],
            "block size 48",
        ),
        (
            &["--precision", "int8", "--block-size", "512"][..],
            "block size 512",
        ),
        (&["--block-size", "32"][..], "int8 and int4 only"),
        (
            &["--precision", "bf16", "--quant-spec", "all=4a"][..],
            "int8 and int4 only",
        ),
        (
            &["--precision", "int4", "--quant-spec", "emb=5a"][..],
            "`5a`",
        ),
        (
            &["--precision", "int4", "--quant-spec", "lm=4a"][..],
            "unknown key",
        ),
    ] {
        let out = export(&src, &dest, args);
        assert_refused(&out, &dest, needle);
    }
}

/// A weight beyond fp16's range: the fp16 export names it and suggests bf16, which succeeds.
#[test]
fn fp16_overflow_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = checkpoint(tmp.path(), |_| {});
    let path = src.join("model.safetensors");
    let target = "model.layers.1.mlp.up_proj.weight";
    let mut tensors = gemma_models::testing::read_safetensors(&path);
    for (name, _, _, bytes) in &mut tensors {
        if name == target {
            bytes[4..8].copy_from_slice(&1.0e5f32.to_le_bytes());
        }
    }
    gemma_models::testing::write_safetensors(&path, &tensors);
    let dest = tmp.path().join("out");
    let out = export(&src, &dest, &["--precision", "fp16"]);
    assert_refused(&out, &dest, target);
    assert!(stderr(&out).contains("bf16"));
    let ok = export(&src, &dest, &["--precision", "bf16"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// The tiny GGUF fixture without tokenizer metadata (tests/fixtures/gguf, made by make_gguf_fixtures.py).
fn gguf_fixture(name: &str) -> PathBuf {
    common::fixtures().join(format!("gguf/{name}/model.gguf"))
}

#[test]
fn gguf_file_exports_with_one_warning_line_for_the_missing_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let out = export(&gguf_fixture("gemma1"), &dest, &[]);
    let stderr = stderr(&out);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("no tokenizer metadata"), "{stderr}");
    for file in [
        "model.onnx",
        "config.json",
        "generation_config.json",
        "gemma-onnx.json",
    ] {
        assert!(dest.join(file).is_file(), "{file} missing");
    }
}

#[test]
fn damaged_gguf_file_is_refused_by_the_gguf_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = fs::read(gguf_fixture("gemma1")).unwrap();
    let src = tmp.path().join("cut.gguf");
    fs::write(&src, &bytes[..1000]).unwrap();
    let dest = tmp.path().join("out");
    assert_refused(&export(&src, &dest, &[]), &dest, "truncated GGUF file");
    fs::write(&src, b"not a gguf").unwrap();
    assert_refused(&export(&src, &dest, &[]), &dest, "not a GGUF file");
}
