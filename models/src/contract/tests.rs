//! Tests of [`super`]: the JSON names of the typed values, defaults of older exports, the version rule.

use super::*;

fn sample() -> serde_json::Value {
    serde_json::json!({
        "format": "gemma-onnx", "format_version": 1, "family": "gemma3", "architecture": "Gemma3ForCausalLM",
        "precision": "fp32", "graph": "cpu", "decoder": "model.onnx",
        "num_layers": 2, "num_attention_heads": 4, "num_kv_heads": 1, "head_dim": 256, "hidden_size": 640,
        "vocab_size": 262144, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 32768, "bos_token_id": 2, "pad_token_id": 0, "eos_token_ids": [1, 106],
        "kv_dtype": "float32", "logits_dtype": "float32", "exporter_version": "0.1.0",
        "cpu": {
            "logits_to_keep_input": "num_logits_to_keep", "kv_shared_buffer": true,
            "global_cache_dim": "global_cache_length", "sliding_cache_dim": "sliding_cache_length",
            "multi_token_steps_need_batch_1": true
        }
    })
}

#[test]
fn typed_values_keep_their_json_names() {
    let m: Manifest = serde_json::from_value(sample()).unwrap();
    assert_eq!(m.family, Family::Gemma3);
    assert_eq!(m.graph, GraphKind::Cpu);
    assert_eq!(m.precision, Precision::Fp32);
    assert_eq!(m.kv_dtype, DType::Float32);
    assert_eq!(m.layer_types, vec![LayerType::Sliding, LayerType::Full]);
    assert_eq!(m.cpu, Some(CpuSection::current()));
    // Written back, every field is where and what it was.
    assert_eq!(serde_json::to_value(&m).unwrap(), sample());
    for (p, name) in [
        (Precision::Fp32, "fp32"),
        (Precision::Fp16, "fp16"),
        (Precision::Bf16, "bf16"),
        (Precision::Int8, "int8"),
        (Precision::Int4, "int4"),
    ] {
        assert_eq!(serde_json::to_value(p).unwrap(), name);
        assert_eq!(p.name(), name);
    }
    for f in [Family::Gemma, Family::Gemma2, Family::Gemma3] {
        assert_eq!(serde_json::to_value(f).unwrap(), family_name(f));
    }
    for g in [GraphKind::Portable, GraphKind::Cpu] {
        assert_eq!(serde_json::to_value(g).unwrap(), g.name());
    }
}

#[test]
fn older_exports_read_with_defaults() {
    let mut v = sample();
    let obj = v.as_object_mut().unwrap();
    for key in [
        "format_version",
        "exporter_version",
        "pad_token_id",
        "layer_types",
    ] {
        obj.remove(key);
    }
    obj["cpu"]
        .as_object_mut()
        .unwrap()
        .remove("multi_token_steps_need_batch_1");
    let m: Manifest = serde_json::from_value(v).unwrap();
    assert_eq!(m.format_version, 1);
    assert_eq!(m.pad_token_id, None);
    assert!(m.layer_types.is_empty() && m.files.is_empty() && m.vision.is_none());
    assert!(!m.cpu.unwrap().multi_token_steps_need_batch_1);
}

#[test]
fn versions_up_to_the_current_one_are_read() {
    for v in 1..=FORMAT_VERSION {
        check_format_version(v).unwrap();
    }
    let e = check_format_version(FORMAT_VERSION + 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("format_version {}", FORMAT_VERSION + 1))
            && e.contains(&format!("format_version {FORMAT_VERSION}")),
        "{e}"
    );
    assert!(check_format_version(0).is_err());
}

#[test]
fn vision_section_round_trips() {
    let v = serde_json::json!({
        "encoder": "vision_encoder.onnx", "encoder_data": "vision_encoder.onnx_data",
        "embed_tokens": "embed_tokens.onnx", "decoder_with_embeds": "decoder_model_merged.onnx",
        "image_size": 896, "patch_size": 14, "num_channels": 3, "mm_tokens_per_image": 256,
        "boi_token_id": 255999, "eoi_token_id": 256000, "image_token_id": 262144,
        "preprocess": {"file": "preprocess.onnx", "config": PreprocessConfig::gemma3_defaults(896)}
    });
    let s: VisionSection = serde_json::from_value(v.clone()).unwrap();
    assert!(!s.default_pan_and_scan());
    assert_eq!(serde_json::to_value(&s).unwrap(), v);
}
