//! Unit tests of `manifest.rs`.

use super::*;

fn sample() -> serde_json::Value {
    serde_json::json!({
        "format": "gemma-onnx", "format_version": 1, "family": "gemma3", "architecture": "Gemma3ForCausalLM",
        "precision": "fp32", "graph": "portable", "decoder": "model.onnx",
        "num_layers": 2, "num_attention_heads": 4, "num_kv_heads": 1, "head_dim": 256, "hidden_size": 640,
        "vocab_size": 262144, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 32768, "bos_token_id": 2, "pad_token_id": 0, "eos_token_ids": [1, 106],
        "kv_dtype": "float32", "logits_dtype": "float32", "some_future_field": true
    })
}

fn parse(v: &serde_json::Value) -> Result<Manifest> {
    super::parse(&v.to_string(), Path::new("/m/gemma-onnx.json"))
}

#[test]
fn parses_the_documented_manifest() {
    let m = parse(&sample()).unwrap();
    assert_eq!(m.num_layers, 2);
    assert_eq!(m.layer_types, vec![LayerType::Sliding, LayerType::Full]);
    assert_eq!(m.eos_token_ids, vec![1, 106]);
    assert_eq!(m.kv_dtype, DType::Float32);
}

#[test]
fn errors_name_the_file_and_field() {
    let mut v = sample();
    v["layer_types"] = serde_json::json!(["full_attention"]);
    let e = parse(&v).unwrap_err().to_string();
    assert!(
        e.contains("/m/gemma-onnx.json") && e.contains("layer_types"),
        "{e}"
    );

    let mut v = sample();
    v.as_object_mut().unwrap().remove("head_dim");
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("head_dim"), "{e}");

    let mut v = sample();
    v["format_version"] = serde_json::json!(7);
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("format_version") && e.contains('7'), "{e}");

    let mut v = sample();
    v["format"] = serde_json::json!("other");
    assert!(parse(&v).unwrap_err().to_string().contains("`format`"));

    let mut v = sample();
    v["kv_dtype"] = serde_json::json!("int8");
    assert!(parse(&v).unwrap_err().to_string().contains("int8"));

    let mut v = sample();
    v["eos_token_ids"] = serde_json::json!([]);
    assert!(parse(&v).unwrap_err().to_string().contains("eos_token_ids"));
}

#[test]
fn export_without_format_version_loads_as_version_1() {
    let mut v = sample();
    v.as_object_mut().unwrap().remove("format_version");
    assert_eq!(parse(&v).unwrap().format_version, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), v.to_string()).unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
    assert_eq!(load(dir.path()).unwrap().format_version, 1);
}

#[test]
fn newer_format_version_is_refused_naming_both_versions_and_the_file() {
    let newer = contract::FORMAT_VERSION + 1;
    let mut v = sample();
    v["format_version"] = serde_json::json!(newer);
    // A newer export may also hold values this runtime does not know: the version is what it hears about.
    v["graph"] = serde_json::json!("gpu");
    let e = parse(&v).unwrap_err().to_string();
    assert!(
        e.contains("/m/gemma-onnx.json")
            && e.contains(&format!("format_version {newer}"))
            && e.contains(&format!("format_version {}", contract::FORMAT_VERSION)),
        "{e}"
    );
    v["format_version"] = serde_json::json!("two");
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("format_version") && e.contains("two"), "{e}");
}

#[test]
fn cpu_graph_needs_its_section() {
    let mut v = sample();
    v["graph"] = serde_json::json!("cpu");
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("`cpu`"), "{e}");
    v["cpu"] = serde_json::json!({
        "logits_to_keep_input": "num_logits_to_keep", "kv_shared_buffer": true,
        "global_cache_dim": "global_cache_length", "sliding_cache_dim": "sliding_cache_length",
        "multi_token_steps_need_batch_1": true
    });
    let m = parse(&v).unwrap();
    assert_eq!(m.graph, GraphKind::Cpu);
    assert_eq!(m.cpu.unwrap().logits_to_keep_input, "num_logits_to_keep");
    let mut v = sample();
    v["graph"] = serde_json::json!("tpu");
    let e = parse(&v).unwrap_err().to_string();
    assert!(e.contains("tpu") && e.contains("graph"), "{e}");
    assert_eq!(parse(&sample()).unwrap().graph, GraphKind::Portable);
}

#[test]
fn folder_without_manifest_says_run_gemma_export() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, Error::NotAnExport { .. }));
    assert!(
        e.to_string().contains("not a gemma-onnx export folder")
            && e.to_string().contains("gemma-export")
    );
    let e = load(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn missing_decoder_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), sample().to_string()).unwrap();
    let e = load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("decoder") && e.contains("model.onnx"), "{e}");
    std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
    load(dir.path()).unwrap();
}

#[test]
fn stop_tokens_union_generation_config() {
    let dir = tempfile::tempdir().unwrap();
    let m = parse(&sample()).unwrap();
    assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106]);
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [106, 1, 50]}"#,
    )
    .unwrap();
    assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106, 50]);
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": 7}"#,
    )
    .unwrap();
    assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106, 7]);
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"do_sample": true}"#,
    )
    .unwrap();
    assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106]);
}
