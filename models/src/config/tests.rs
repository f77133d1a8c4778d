//! Config parsing tests: real-world configs in both key forms, class defaults, and one test per error class.

use std::path::Path;

use serde_json::{json, Value};

use super::*;

const ORIGIN: &str = "/models/some-gemma/config.json";

fn parse(v: &Value) -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_json_str(&v.to_string(), Path::new(ORIGIN))
}

fn ok(v: &Value) -> ModelConfig {
    parse(v).unwrap_or_else(|e| panic!("config should parse: {e}"))
}

/// Parses, expects an error, checks that its message names the file, and returns the message.
fn err(v: &Value) -> (ConfigError, String) {
    let e = parse(v).expect_err("config should be refused");
    let msg = e.to_string();
    assert!(
        msg.contains(ORIGIN),
        "message does not name the file: {msg}"
    );
    (e, msg)
}

/// `v` with `key` set (or removed when `value` is None) in the object at `path` ("" = top level).
fn with(mut v: Value, path: &str, key: &str, value: Option<Value>) -> Value {
    let mut obj = &mut v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        obj = &mut obj[part];
    }
    let map = obj.as_object_mut().unwrap();
    match value {
        Some(x) => map.insert(key.to_string(), x),
        None => map.remove(key),
    };
    v
}

fn layer_types(n: usize, global: impl Fn(usize) -> bool) -> Vec<LayerType> {
    (0..n)
        .map(|i| {
            if global(i) {
                LayerType::Full
            } else {
                LayerType::Sliding
            }
        })
        .collect()
}

/// google/gemma-3-270m config.json as published (transformers 4.x keys).
fn gemma3_270m_v4() -> Value {
    let types: Vec<&str> = (0..18)
        .map(|i| {
            if (i + 1) % 6 == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    json!({
        "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2, "eos_token_id": 1,
        "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 640, "initializer_range": 0.02, "intermediate_size": 2048, "layer_types": types,
        "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
        "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0,
        "sliding_window": 512, "torch_dtype": "bfloat16", "use_bidirectional_attention": false, "use_cache": true,
        "vocab_size": 262144
    })
}

/// The same model as transformers 5.x saves it: nested `rope_parameters`, `dtype`, no legacy rope keys.
fn gemma3_270m_v5() -> Value {
    let mut v = gemma3_270m_v4();
    for key in [
        "_sliding_window_pattern",
        "rope_local_base_freq",
        "rope_scaling",
        "rope_theta",
        "torch_dtype",
    ] {
        v = with(v, "", key, None);
    }
    v = with(v, "", "dtype", Some(json!("bfloat16")));
    with(
        v,
        "",
        "rope_parameters",
        Some(json!({
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}
        })),
    )
}

/// google/gemma-3-4b-it: only a few text fields; the rest are Gemma3TextConfig class defaults (semantics §10).
fn gemma3_4b() -> Value {
    json!({
        "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
        "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02,
        "mm_tokens_per_image": 256, "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024
        },
        "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
        "vision_config": {
            "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
            "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false
        }
    })
}

/// google/gemma-2b (Gemma 1).
fn gemma_2b() -> Value {
    json!({
        "architectures": ["GemmaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 2,
        "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 16384, "max_position_embeddings": 8192, "model_type": "gemma",
        "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
        "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
        "vocab_size": 256000
    })
}

/// google/gemma-2-2b-it (transformers 4.x keys).
fn gemma2_2b() -> Value {
    json!({
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107],
        "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
        "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
        "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
        "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "torch_dtype": "float32", "vocab_size": 256000
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Accepted configs

#[test]
fn gemma3_270m_v4_form() {
    let cfg = ok(&gemma3_270m_v4());
    assert_eq!(cfg.model_type, "gemma3_text");
    assert_eq!(cfg.architecture, "Gemma3ForCausalLM");
    assert_eq!(cfg.text_prefix, "model.");
    assert!(!cfg.is_multimodal());
    assert_eq!(
        (
            cfg.bos_token_id,
            cfg.pad_token_id,
            cfg.eos_token_ids.clone()
        ),
        (2, 0, vec![1])
    );
    assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
    assert!(cfg.vision.is_none());
    let t = &cfg.text;
    assert_eq!(t.family, Family::Gemma3);
    assert_eq!(
        (t.vocab_size, t.hidden_size, t.intermediate_size),
        (262144, 640, 2048)
    );
    assert_eq!(
        (
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim
        ),
        (18, 4, 1, 256)
    );
    assert_eq!(t.num_kv_groups(), 4);
    assert_eq!(t.query_pre_attn_scalar, 256.0);
    assert_eq!(t.attention_scale(), 1.0 / 16.0);
    assert_eq!(t.sliding_window, Some(512));
    assert_eq!(t.layer_types, layer_types(18, |i| (i + 1) % 6 == 0));
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e6,
            linear_factor: None
        }
    );
    assert_eq!(
        t.rope_sliding,
        RopeParams {
            theta: 1e4,
            linear_factor: None
        }
    );
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (None, None)
    );
    assert_eq!(t.max_position_embeddings, 32768);
    assert_eq!(t.rms_norm_eps, 1e-6);
    assert!(t.tie_word_embeddings && t.has_qk_norm() && t.has_sandwich_norms());
}

#[test]
fn gemma3_v4_and_v5_forms_agree() {
    let v4 = ok(&gemma3_270m_v4());
    let v5 = ok(&gemma3_270m_v5());
    assert_eq!(v4.text, v5.text);
    assert_eq!(v5.torch_dtype.as_deref(), Some("bfloat16"));

    // With linear scaling on the global layers, and the pattern instead of explicit layer_types.
    let scaling = json!({"rope_type": "linear", "factor": 8.0});
    let v4 = with(
        with(gemma3_270m_v4(), "", "rope_scaling", Some(scaling)),
        "",
        "layer_types",
        None,
    );
    let v5 = with(
        with(gemma3_270m_v5(), "", "rope_parameters", None),
        "",
        "rope_parameters",
        Some(json!({
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}
        })),
    );
    let (v4, v5) = (ok(&v4), ok(&v5));
    assert_eq!(v4.text, v5.text);
    assert_eq!(
        v4.text.rope_full,
        RopeParams {
            theta: 1e6,
            linear_factor: Some(8.0)
        }
    );
    assert_eq!(
        v4.text.rope_sliding,
        RopeParams {
            theta: 1e4,
            linear_factor: None
        }
    );
    assert_eq!(v4.text.rope(LayerType::Full).linear_factor, Some(8.0));

    // Legacy "type" instead of "rope_type".
    let legacy = with(
        gemma3_270m_v4(),
        "",
        "rope_scaling",
        Some(json!({"type": "linear", "factor": 8.0})),
    );
    assert_eq!(ok(&legacy).text.rope_full.linear_factor, Some(8.0));
}

#[test]
fn gemma3_layer_pattern_without_layer_types() {
    let base = with(gemma3_270m_v4(), "", "layer_types", None);
    let base = with(base, "", "num_hidden_layers", Some(json!(26)));
    assert_eq!(
        ok(&base).text.layer_types,
        layer_types(26, |i| (i + 1) % 6 == 0)
    );

    // Both spellings of the pattern; the default is 6.
    let p4 = with(
        with(base.clone(), "", "_sliding_window_pattern", None),
        "",
        "sliding_window_pattern",
        Some(json!(4)),
    );
    assert_eq!(
        ok(&p4).text.layer_types,
        layer_types(26, |i| (i + 1) % 4 == 0)
    );
    let p2 = with(base.clone(), "", "_sliding_window_pattern", Some(json!(2)));
    assert_eq!(ok(&p2).text.layer_types, layer_types(26, |i| i % 2 == 1));
    let default = with(base, "", "_sliding_window_pattern", None);
    assert_eq!(
        ok(&default).text.layer_types,
        layer_types(26, |i| (i + 1) % 6 == 0)
    );
}

#[test]
fn gemma3_conditional_generation_uses_class_defaults() {
    let cfg = ok(&gemma3_4b());
    assert_eq!(cfg.model_type, "gemma3");
    assert_eq!(cfg.architecture, "Gemma3ForConditionalGeneration");
    assert!(cfg.is_multimodal());
    assert_eq!(cfg.text_prefix, "language_model.model.");
    assert_eq!(cfg.eos_token_ids, vec![1, 106]);
    assert_eq!((cfg.bos_token_id, cfg.pad_token_id), (2, 0));
    assert_eq!(cfg.vision.as_ref().unwrap()["hidden_size"], 1152);
    let t = &cfg.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers
        ),
        (262208, 2560, 10240, 34)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (8, 4, 256)
    );
    assert_eq!(t.query_pre_attn_scalar, 256.0);
    assert_eq!(t.sliding_window, Some(1024));
    assert_eq!(t.max_position_embeddings, 131072);
    assert_eq!(t.rms_norm_eps, 1e-6);
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e6,
            linear_factor: Some(8.0)
        }
    );
    assert_eq!(
        t.rope_sliding,
        RopeParams {
            theta: 1e4,
            linear_factor: None
        }
    );
    assert_eq!(t.layer_types, layer_types(34, |i| (i + 1) % 6 == 0));
    assert_eq!(t.layer_types[29], LayerType::Full);
    assert!(t.tie_word_embeddings);

    // The multimodal forward never soft-caps, whatever text_config says; an absent text_config is all defaults
    // except the sizes without a documented default.
    let capped = with(
        gemma3_4b(),
        "text_config",
        "final_logit_softcapping",
        Some(json!(30.0)),
    );
    assert_eq!(ok(&capped).text.final_logit_softcapping, None);
    let (_, msg) = err(&with(gemma3_4b(), "", "text_config", None));
    assert!(msg.contains("text_config.hidden_size"), "{msg}");
}

#[test]
fn gemma3_causal_softcaps() {
    let v = with(
        gemma3_270m_v4(),
        "",
        "final_logit_softcapping",
        Some(json!(30.0)),
    );
    let v = with(v, "", "attn_logit_softcapping", Some(json!(50.0)));
    let t = ok(&v).text;
    // Gemma3ForCausalLM applies a final soft-cap if set; Gemma3Attention ignores the attention soft-cap.
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (None, Some(30.0))
    );
}

#[test]
fn gemma1_config() {
    let cfg = ok(&gemma_2b());
    assert_eq!(
        (cfg.model_type.as_str(), cfg.text_prefix.as_str()),
        ("gemma", "model.")
    );
    let t = &cfg.text;
    assert_eq!(t.family, Family::Gemma);
    assert_eq!(
        (
            t.num_attention_heads,
            t.num_key_value_heads,
            t.num_kv_groups()
        ),
        (8, 1, 8)
    );
    assert_eq!(
        t.query_pre_attn_scalar, 256.0,
        "Gemma 1 scales by head_dim^-0.5"
    );
    assert_eq!(t.sliding_window, None);
    assert_eq!(t.layer_types, vec![LayerType::Full; 18]);
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e4,
            linear_factor: None
        }
    );
    assert_eq!(t.rope_sliding, t.rope_full);
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (None, None)
    );
    assert_eq!(t.max_position_embeddings, 8192);
    assert!(!t.has_qk_norm() && !t.has_sandwich_norms());

    // gemma-7b: head_dim (256) is not hidden_size / heads (192).
    let v = with(
        with(gemma_2b(), "", "hidden_size", Some(json!(3072))),
        "",
        "num_attention_heads",
        Some(json!(16)),
    );
    let v = with(v, "", "num_key_value_heads", Some(json!(16)));
    assert_eq!(ok(&v).text.head_dim, 256);
    // Without head_dim the class default (256) applies, not hidden_size / heads.
    assert_eq!(ok(&with(v, "", "head_dim", None)).text.head_dim, 256);
}

#[test]
fn gemma2_config() {
    let cfg = ok(&gemma2_2b());
    assert_eq!(cfg.eos_token_ids, vec![1, 107]);
    assert_eq!(cfg.torch_dtype.as_deref(), Some("float32"));
    let t = &cfg.text;
    assert_eq!(t.family, Family::Gemma2);
    assert_eq!(
        t.layer_types,
        layer_types(26, |i| i % 2 == 1),
        "even layers are sliding"
    );
    assert_eq!(t.sliding_window, Some(4096));
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (Some(50.0), Some(30.0))
    );
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e4,
            linear_factor: None
        }
    );
    assert_eq!(t.rope_sliding, t.rope_full);
    assert!(!t.has_qk_norm() && t.has_sandwich_norms());

    // 27b: query_pre_attn_scalar differs from head_dim.
    let v = with(
        with(gemma2_2b(), "", "query_pre_attn_scalar", Some(json!(144))),
        "",
        "head_dim",
        Some(json!(128)),
    );
    assert_eq!(ok(&v).text.query_pre_attn_scalar, 144.0);
}

#[test]
fn gemma2_class_defaults_apply_only_to_absent_keys() {
    let mut v = gemma2_2b();
    for key in [
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "query_pre_attn_scalar",
        "sliding_window",
    ] {
        v = with(v, "", key, None);
    }
    let t = ok(&v).text;
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (Some(50.0), Some(30.0))
    );
    assert_eq!(
        (t.query_pre_attn_scalar, t.sliding_window),
        (256.0, Some(4096))
    );

    // An explicit null turns a soft-cap off, as in transformers (`if softcap is not None`).
    let v = with(gemma2_2b(), "", "attn_logit_softcapping", Some(Value::Null));
    let v = with(v, "", "final_logit_softcapping", Some(Value::Null));
    let t = ok(&v).text;
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (None, None)
    );
}

#[test]
fn gemma2_v4_and_v5_forms_agree() {
    let types: Vec<&str> = (0..26)
        .map(|i| {
            if i % 2 == 0 {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    let v5 = with(gemma2_2b(), "", "rope_theta", None);
    let v5 = with(
        v5,
        "",
        "rope_parameters",
        Some(json!({"rope_type": "default", "rope_theta": 10000.0})),
    );
    let v5 = with(v5, "", "layer_types", Some(json!(types)));
    let v5 = with(
        with(v5, "", "torch_dtype", None),
        "",
        "dtype",
        Some(json!("bfloat16")),
    );
    let (a, b) = (ok(&gemma2_2b()), ok(&v5));
    assert_eq!(a.text, b.text);
    assert_eq!(b.torch_dtype.as_deref(), Some("bfloat16"));

    // A flat linear rope applies to both layer types.
    let linear = with(
        v5,
        "",
        "rope_parameters",
        Some(json!({"rope_type": "linear", "factor": 2.0})),
    );
    let t = ok(&linear).text;
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e4,
            linear_factor: Some(2.0)
        }
    );
    assert_eq!(t.rope_sliding, t.rope_full);
}

#[test]
fn model_type_and_architecture_infer_each_other() {
    let cfg = ok(&with(gemma2_2b(), "", "architectures", None));
    assert_eq!(cfg.architecture, "Gemma2ForCausalLM");
    let cfg = ok(&with(gemma_2b(), "", "model_type", None));
    assert_eq!(cfg.model_type, "gemma");
}

#[test]
fn activation_rules() {
    // Gemma 1's "hidden_act": "gelu" means the tanh GELU; both spellings are fine there.
    ok(&with(
        gemma_2b(),
        "",
        "hidden_act",
        Some(json!("gelu_pytorch_tanh")),
    ));
    ok(&with(gemma_2b(), "", "hidden_act", None));
    // In Gemma 2/3, hidden_activation "gelu" would be the exact GELU: refused rather than approximated.
    let (e, msg) = err(&with(
        gemma2_2b(),
        "",
        "hidden_activation",
        Some(json!("gelu")),
    ));
    assert!(
        matches!(e, ConfigError::UnsupportedActivation { ref field, .. } if field == "hidden_activation"),
        "{msg}"
    );
    let (_, msg) = err(&with(gemma_2b(), "", "hidden_act", Some(json!("relu"))));
    assert!(msg.contains("hidden_act") && msg.contains("relu"), "{msg}");
    let (_, msg) = err(&with(
        gemma3_4b(),
        "text_config",
        "hidden_activation",
        Some(json!("silu")),
    ));
    assert!(
        msg.contains("text_config.hidden_activation") && msg.contains("silu"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Refused configs

#[test]
fn unreadable_and_malformed_files() {
    let missing = Path::new("/nonexistent/dir/config.json");
    let e = ModelConfig::from_file(missing).unwrap_err();
    assert!(
        matches!(e, ConfigError::Io { .. })
            && e.to_string().contains("/nonexistent/dir/config.json"),
        "{e}"
    );

    let e = ModelConfig::from_json_str("{ not json", Path::new(ORIGIN)).unwrap_err();
    assert!(
        matches!(e, ConfigError::Json { .. }) && e.to_string().contains(ORIGIN),
        "{e}"
    );
    let e = ModelConfig::from_json_str("[1, 2]", Path::new(ORIGIN)).unwrap_err();
    assert!(matches!(e, ConfigError::Json { .. }), "{e}");
}

#[test]
fn unsupported_model_lists_supported_ones() {
    let v = with(
        with(gemma_2b(), "", "model_type", Some(json!("llama"))),
        "",
        "architectures",
        None,
    );
    let (e, msg) = err(&v);
    assert!(matches!(e, ConfigError::UnsupportedModel { .. }));
    assert!(
        msg.contains("llama") && msg.contains("gemma3/Gemma3ForConditionalGeneration"),
        "{msg}"
    );
    let (_, msg) = err(&with(
        gemma_2b(),
        "",
        "architectures",
        Some(json!(["PaliGemmaForConditionalGeneration"])),
    ));
    assert!(msg.contains("PaliGemmaForConditionalGeneration"), "{msg}");
    let (e, _) = err(&with(
        with(gemma_2b(), "", "model_type", None),
        "",
        "architectures",
        None,
    ));
    assert!(matches!(e, ConfigError::Missing { ref field, .. } if field == "model_type"));
}

#[test]
fn model_type_architecture_mismatch() {
    let (e, msg) = err(&with(
        gemma2_2b(),
        "",
        "architectures",
        Some(json!(["Gemma3ForCausalLM"])),
    ));
    assert!(matches!(e, ConfigError::ModelTypeMismatch { .. }));
    assert!(
        msg.contains("model_type") && msg.contains("gemma2") && msg.contains("Gemma3ForCausalLM"),
        "{msg}"
    );
    let (e, _) = err(&with(
        gemma3_270m_v4(),
        "",
        "architectures",
        Some(json!(["Gemma3ForConditionalGeneration"])),
    ));
    assert!(matches!(e, ConfigError::ModelTypeMismatch { .. }));
    let (_, msg) = err(&with(
        gemma3_4b(),
        "text_config",
        "model_type",
        Some(json!("gemma2")),
    ));
    assert!(msg.contains("text_config.model_type"), "{msg}");
}

#[test]
fn missing_and_invalid_sizes() {
    let (e, msg) = err(&with(gemma2_2b(), "", "hidden_size", None));
    assert!(
        matches!(e, ConfigError::Missing { ref field, .. } if field == "hidden_size"),
        "{msg}"
    );
    let (e, _) = err(&with(gemma2_2b(), "", "num_key_value_heads", None));
    assert!(matches!(e, ConfigError::Missing { ref field, .. } if field == "num_key_value_heads"));
    let (e, msg) = err(&with(gemma2_2b(), "", "intermediate_size", Some(json!(0))));
    assert!(
        matches!(e, ConfigError::Invalid { ref field, .. } if field == "intermediate_size"),
        "{msg}"
    );
    let (_, msg) = err(&with(gemma2_2b(), "", "vocab_size", Some(json!("256000"))));
    assert!(
        msg.contains("vocab_size") && msg.contains("integer"),
        "{msg}"
    );
    let (_, msg) = err(&with(gemma2_2b(), "", "head_dim", Some(Value::Null)));
    assert!(msg.contains("head_dim") && msg.contains("null"), "{msg}");
    let (_, msg) = err(&with(gemma2_2b(), "", "rms_norm_eps", Some(json!(-1.0))));
    assert!(msg.contains("rms_norm_eps"), "{msg}");
    let (_, msg) = err(&with(gemma2_2b(), "", "head_dim", Some(json!(255))));
    assert!(msg.contains("head_dim") && msg.contains("even"), "{msg}");
    let (_, msg) = err(&with(
        gemma2_2b(),
        "",
        "eos_token_id",
        Some(json!([1, "x"])),
    ));
    assert!(msg.contains("eos_token_id"), "{msg}");
}

#[test]
fn heads_must_divide() {
    let (_, msg) = err(&with(
        gemma2_2b(),
        "",
        "num_key_value_heads",
        Some(json!(3)),
    ));
    assert!(
        msg.contains("num_key_value_heads") && msg.contains("divisor of num_attention_heads (8)"),
        "{msg}"
    );
    assert!(msg.contains("found 3"), "{msg}");
}

#[test]
fn bad_layer_types() {
    let (_, msg) = err(&with(
        gemma3_270m_v4(),
        "",
        "num_hidden_layers",
        Some(json!(20)),
    ));
    assert!(
        msg.contains("layer_types")
            && msg.contains("20 entries")
            && msg.contains("found 18 entries"),
        "{msg}"
    );

    let mut types = gemma3_270m_v4()["layer_types"].clone();
    types[3] = json!("chunked_attention");
    let (_, msg) = err(&with(gemma3_270m_v4(), "", "layer_types", Some(types)));
    assert!(
        msg.contains("layer_types[3]") && msg.contains("chunked_attention"),
        "{msg}"
    );

    let sliding = json!(vec!["sliding_attention"; 18]);
    let (_, msg) = err(&with(gemma_2b(), "", "layer_types", Some(sliding)));
    assert!(
        msg.contains("layer_types[0]") && msg.contains("Gemma 1"),
        "{msg}"
    );
    let (_, msg) = err(&with(
        with(gemma3_270m_v4(), "", "layer_types", None),
        "",
        "_sliding_window_pattern",
        Some(json!(0)),
    ));
    assert!(msg.contains("_sliding_window_pattern"), "{msg}");
}

#[test]
fn bad_rope() {
    let (e, msg) = err(&with(
        gemma3_270m_v4(),
        "",
        "rope_scaling",
        Some(json!({"rope_type": "yarn", "factor": 4.0})),
    ));
    assert!(
        matches!(e, ConfigError::UnsupportedRope { ref field, ref rope_type, .. }
        if field == "rope_scaling.rope_type" && rope_type == "yarn"),
        "{msg}"
    );

    let mut v5 = gemma3_270m_v5();
    v5["rope_parameters"]["full_attention"]["rope_type"] = json!("dynamic");
    let (_, msg) = err(&v5);
    assert!(
        msg.contains("rope_parameters.full_attention.rope_type") && msg.contains("dynamic"),
        "{msg}"
    );

    let (e, msg) = err(&with(
        gemma3_270m_v4(),
        "",
        "rope_scaling",
        Some(json!({"rope_type": "linear"})),
    ));
    assert!(
        matches!(e, ConfigError::Missing { ref field, .. } if field == "rope_scaling.factor"),
        "{msg}"
    );
    let (e, msg) = err(&with(
        gemma3_270m_v4(),
        "",
        "rope_scaling",
        Some(json!({"factor": 8.0})),
    ));
    assert!(
        matches!(e, ConfigError::Missing { ref field, .. } if field == "rope_scaling.rope_type"),
        "{msg}"
    );
    let (_, msg) = err(&with(gemma3_270m_v4(), "", "rope_theta", Some(json!(0))));
    assert!(msg.contains("rope_theta"), "{msg}");

    // Gemma 3 needs the nested form; Gemma 1/2 the flat one.
    let flat = with(
        gemma3_270m_v5(),
        "",
        "rope_parameters",
        Some(json!({"rope_type": "default", "rope_theta": 1e6})),
    );
    let (_, msg) = err(&flat);
    assert!(
        msg.contains("rope_parameters") && msg.contains("full_attention"),
        "{msg}"
    );
    let mut half = gemma3_270m_v5();
    half["rope_parameters"]
        .as_object_mut()
        .unwrap()
        .remove("sliding_attention");
    let (_, msg) = err(&half);
    assert!(msg.contains("rope_parameters.sliding_attention"), "{msg}");
    let nested = with(
        gemma2_2b(),
        "",
        "rope_parameters",
        Some(gemma3_270m_v5()["rope_parameters"].clone()),
    );
    let (_, msg) = err(&nested);
    assert!(
        msg.contains("rope_parameters") && msg.contains("flat"),
        "{msg}"
    );
}

#[test]
fn layer_type_names_round_trip() {
    for lt in [LayerType::Sliding, LayerType::Full] {
        assert_eq!(LayerType::from_name(lt.name()), Some(lt));
        assert_eq!(serde_json::to_value(lt).unwrap(), json!(lt.name()));
    }
    assert_eq!(LayerType::from_name("chunked_attention"), None);
}

// ---------------------------------------------------------------------------------------------------------------
// Configs that mix generations, or ask for maths we do not build

#[test]
fn fields_of_another_generation_are_refused() {
    // (config, field, value, words the message must contain)
    let cases = [
        (
            gemma_2b(),
            "attn_logit_softcapping",
            json!(50.0),
            "Gemma 2 field",
        ),
        (
            gemma_2b(),
            "final_logit_softcapping",
            json!(30.0),
            "GemmaForCausalLM ignores",
        ),
        (gemma_2b(), "sliding_window", json!(4096), "Gemma 2/3 field"),
        (
            gemma_2b(),
            "query_pre_attn_scalar",
            json!(256),
            "Gemma 2/3 field",
        ),
        (
            gemma_2b(),
            "rope_local_base_freq",
            json!(10000.0),
            "Gemma 3 field",
        ),
        (
            gemma2_2b(),
            "rope_local_base_freq",
            json!(10000.0),
            "Gemma2ForCausalLM ignores",
        ),
        (
            gemma2_2b(),
            "sliding_window_pattern",
            json!(6),
            "Gemma 3 field",
        ),
        (
            gemma2_2b(),
            "_sliding_window_pattern",
            json!(6),
            "Gemma 3 field",
        ),
    ];
    for (base, key, value, words) in cases {
        let (e, msg) = err(&with(base, "", key, Some(value)));
        match e {
            ConfigError::Invalid { field, .. } => assert_eq!(field, key),
            other => panic!("{key}: expected Invalid, got {other:?}"),
        }
        assert!(msg.contains(words) && msg.contains("model_type"), "{msg}");
    }
    // null means "not set", as transformers reads it.
    for key in [
        "attn_logit_softcapping",
        "sliding_window",
        "query_pre_attn_scalar",
    ] {
        ok(&with(gemma_2b(), "", key, Some(Value::Null)));
    }
    ok(&with(
        gemma2_2b(),
        "",
        "rope_local_base_freq",
        Some(Value::Null),
    ));
    // Gemma 2 hub configs carry the ignored `sliding_window_size`; that stays accepted.
    ok(&with(
        gemma2_2b(),
        "",
        "sliding_window_size",
        Some(json!(4096)),
    ));
}

#[test]
fn bidirectional_attention_and_attention_bias_are_refused() {
    for base in [gemma_2b(), gemma2_2b(), gemma3_270m_v4()] {
        for key in ["use_bidirectional_attention", "attention_bias"] {
            let (_, msg) = err(&with(base.clone(), "", key, Some(json!(true))));
            assert!(
                msg.contains(&format!("field `{key}`")) && msg.contains("found true"),
                "{msg}"
            );
            ok(&with(base.clone(), "", key, Some(Value::Null)));
            ok(&with(base.clone(), "", key, Some(json!(false))));
        }
    }
}

#[test]
fn gemma2_missing_soft_caps_take_the_class_defaults_like_transformers() {
    // Gemma2Config defaults both soft-caps (50.0 / 30.0), so an absent field is not an error: transformers would
    // run with the defaults, and so do we. Only an explicit null turns one off.
    let t = ok(&with(gemma2_2b(), "", "attn_logit_softcapping", None)).text;
    assert_eq!(t.attn_logit_softcapping, Some(50.0));
    let t = ok(&with(gemma2_2b(), "", "final_logit_softcapping", None)).text;
    assert_eq!(t.final_logit_softcapping, Some(30.0));
}

/// Absurd sizes are refused before anything is sized from them, naming the key and the limit (issue 15: 10⁹
/// layers used to allocate until the process aborted).
#[test]
fn sizes_beyond_the_sanity_limits_are_refused() {
    for (path, key, value, limit) in [
        ("", "num_hidden_layers", 1_000_000_000u64, "at most 1024"),
        ("", "hidden_size", 1 << 40, "at most 65536"),
        ("", "intermediate_size", 1 << 30, "at most 1048576"),
        ("", "num_attention_heads", 100_000, "at most 1024"),
        ("", "num_key_value_heads", 100_000, "at most 1024"),
        ("", "head_dim", 1 << 20, "at most 4096"),
        ("", "vocab_size", 1 << 40, "at most 4194304"),
        ("", "max_position_embeddings", u64::MAX, "at most 4194304"),
        ("", "sliding_window", 1 << 62, "at most 4194304"),
    ] {
        let (_, msg) = err(&with(gemma3_270m_v4(), path, key, Some(json!(value))));
        assert!(msg.contains(key) && msg.contains(limit), "{key}: {msg}");
    }
    for (path, key, value, limit) in [
        (
            "vision_config",
            "num_hidden_layers",
            1u64 << 33,
            "at most 1024",
        ),
        ("vision_config", "image_size", 1 << 20, "at most 16384"),
        ("vision_config", "num_channels", 1000, "at most 16"),
        ("", "mm_tokens_per_image", 1 << 40, "at most 65536"),
    ] {
        let (_, msg) = err(&with(gemma3_4b(), path, key, Some(json!(value))));
        assert!(msg.contains(key) && msg.contains(limit), "{key}: {msg}");
    }
    let (_, msg) = err(&with(
        gemma3_4b(),
        "",
        "mm_tokens_per_image",
        Some(json!(0)),
    ));
    assert!(msg.contains("mm_tokens_per_image"), "{msg}");
}
