//! Gemma 3n config tests: the fixture's config, the multimodal nesting, defaults, and each refusal.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::names;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/tiny/gemma3n-text-f32"
);

fn fixture_json() -> Value {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn parse(v: &Value) -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_json_str(&v.to_string(), Path::new("/m/config.json"))
}

#[test]
fn fixture_config_parses_with_every_gemma3n_field() {
    let cfg = parse(&fixture_json()).unwrap();
    let t = &cfg.text;
    assert_eq!(t.family, Family::Gemma3n);
    assert_eq!(cfg.text_prefix, "model.");
    assert_eq!(t.attention_scale(), 1.0);
    assert_eq!(t.final_logit_softcapping, Some(3.0));
    assert_eq!(t.intermediate_size, 128);
    let n = t.gemma3n.as_ref().unwrap();
    assert_eq!(n.intermediate_sizes, [96, 96, 128, 128, 96, 64]);
    assert_eq!(n.activation_sparsity, [0.95, 0.95, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(
        (n.altup_num_inputs, n.altup_active_idx, n.laurel_rank),
        (4, 0, 8)
    );
    assert_eq!(
        (n.hidden_size_per_layer_input, n.vocab_size_per_layer_input),
        (8, 192)
    );
    let sources: Vec<_> = (0..6).map(|l| n.kv_source(&t.layer_types, l)).collect();
    assert_eq!(sources, [0, 1, 2, 3, 3, 2]);
    assert_eq!(n.kv_layers(6), 4);
}

#[test]
fn fixture_checkpoint_has_every_named_tensor() {
    let cfg = parse(&fixture_json()).unwrap();
    let ckpt = crate::Checkpoint::open(Path::new(FIXTURE)).unwrap();
    let want = names::text_tensors(&cfg.text, &cfg.text_prefix);
    for (name, shape) in &want {
        ckpt.tensor_with_shape(name, shape).unwrap();
    }
    // Nothing left over: the shared layers' missing k/v tensors are exactly what the names leave out.
    assert_eq!(want.len(), ckpt.names().len());
    names::check_layer_tensors(&cfg, &ckpt).unwrap();
}

#[test]
fn conditional_generation_nests_the_text_config_and_keeps_the_soft_cap() {
    let mut text = fixture_json();
    text.as_object_mut().unwrap().remove("architectures");
    let v = json!({
        "model_type": "gemma3n",
        "architectures": ["Gemma3nForConditionalGeneration"],
        "text_config": text,
        "vision_config": {"model_type": "gemma3n_vision"},
        "audio_config": {"model_type": "gemma3n_audio"},
    });
    let cfg = parse(&v).unwrap();
    assert_eq!(cfg.text_prefix, "model.language_model.");
    assert_eq!(cfg.text.final_logit_softcapping, Some(3.0));
    assert!(cfg.vision_config.is_none() && cfg.vision.is_some());
}

#[test]
fn defaults_follow_gemma3n_text_config() {
    let v = json!({"model_type": "gemma3n_text", "hidden_size": 64, "num_hidden_layers": 20, "head_dim": 16});
    let t = parse(&v).unwrap().text;
    let n = t.gemma3n.unwrap();
    assert_eq!(t.final_logit_softcapping, Some(30.0));
    assert_eq!(t.sliding_window, Some(512));
    assert_eq!(t.layer_types[4], LayerType::Full);
    assert_eq!(t.layer_types[3], LayerType::Sliding);
    assert_eq!(n.intermediate_sizes, vec![16_384; 20]);
    assert_eq!(n.activation_sparsity[9], 0.95);
    assert_eq!(n.activation_sparsity[10], 0.0);
    assert_eq!(n.num_kv_shared_layers, 15);
}

#[test]
fn refuses_inconsistent_gemma3n_fields() {
    let cases: [(&str, Value, &str); 6] = [
        (
            "intermediate_size",
            json!([1, 2]),
            "6 (num_hidden_layers) numbers",
        ),
        (
            "activation_sparsity_pattern",
            json!([1.0, 0, 0, 0, 0, 0]),
            "[0, 1)",
        ),
        (
            "activation_sparsity_pattern",
            json!(0.5),
            "a list of 6 numbers",
        ),
        (
            "num_kv_shared_layers",
            json!(6),
            "less than num_hidden_layers",
        ),
        (
            "num_kv_shared_layers",
            json!(4),
            "has no layer to share with",
        ),
        ("altup_active_idx", json!(4), "less than altup_num_inputs"),
    ];
    for (key, value, expected) in cases {
        let mut v = fixture_json();
        v[key] = value;
        let msg = parse(&v).expect_err(key).to_string();
        assert!(msg.contains(expected), "{key}: {msg}");
    }
    let mut v = fixture_json();
    v["attn_logit_softcapping"] = json!(50.0);
    assert!(parse(&v).is_err());
}

/// The text_config keys of google/gemma-3n-E4B's config.json (transformers 4.53 form, as other tools list them):
/// one intermediate_size for all layers, the 4.x RoPE keys, and fields Gemma3nTextConfig ignores
/// (`query_pre_attn_scalar`, `altup_lr_multiplier`).
#[test]
fn e4b_shaped_config_parses() {
    let types: Vec<&str> = (0..35)
        .map(|i| {
            if (i + 1) % 5 == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    let sparsity: Vec<f64> = (0..35).map(|i| if i < 10 { 0.95 } else { 0.0 }).collect();
    let v = json!({
        "architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n",
        "audio_config": {"model_type": "gemma3n_audio"}, "vision_config": {"model_type": "gemma3n_vision"},
        "text_config": {
            "model_type": "gemma3n_text", "vocab_size": 262400, "vocab_size_per_layer_input": 262144,
            "hidden_size": 2048, "hidden_size_per_layer_input": 256, "intermediate_size": 16384,
            "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
            "max_position_embeddings": 32768, "sliding_window": 512, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
            "attention_bias": false, "attention_dropout": 0.0, "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": 30.0, "altup_active_idx": 0, "altup_coef_clip": 120.0,
            "altup_correct_scale": true, "altup_lr_multiplier": 1.0, "altup_num_inputs": 4, "laurel_rank": 64,
            "num_kv_shared_layers": 15, "query_pre_attn_scalar": 256, "layer_types": types,
            "activation_sparsity_pattern": sparsity, "torch_dtype": "bfloat16"
        }
    });
    let cfg = parse(&v).unwrap();
    let t = &cfg.text;
    assert_eq!(
        (t.attention_scale(), t.final_logit_softcapping),
        (1.0, Some(30.0))
    );
    assert_eq!((t.rope_full.theta, t.rope_sliding.theta), (1e6, 1e4));
    let n = t.gemma3n.as_ref().unwrap();
    assert_eq!(n.kv_layers(35), 20);
    assert_eq!(n.kv_source(&t.layer_types, 34), 19);
    assert_eq!(n.kv_source(&t.layer_types, 33), 18);
    let tensors = names::text_tensors(t, &cfg.text_prefix);
    assert!(tensors
        .iter()
        .all(|(n, _)| n.starts_with("model.language_model.")));
}
