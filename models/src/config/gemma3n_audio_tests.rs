//! Tests of the Gemma 3n audio config and the feature extractor settings.

use std::path::Path;

use serde_json::{json, Value};

use super::{AudioFeatureConfig, Gemma3nAudioConfig};

const ORIGIN: &str = "/models/gemma-3n-e2b/config.json";

fn parse(v: &Value) -> Result<Gemma3nAudioConfig, crate::ConfigError> {
    Gemma3nAudioConfig::from_json_str(&v.to_string(), Path::new(ORIGIN))
}

/// google/gemma-3n-E2B's audio fields (its config spells out the class defaults).
fn e2b() -> Value {
    json!({
        "model_type": "gemma3n", "audio_soft_tokens_per_image": 188, "audio_token_id": 262273,
        "boa_token_id": 256000, "eoa_token_id": 262272,
        "text_config": {"hidden_size": 2048, "vocab_size": 262400},
        "audio_config": {"model_type": "gemma3n_audio", "hidden_size": 1536, "input_feat_size": 128,
            "conf_attention_chunk_size": 12, "conf_attention_context_left": 13, "conf_attention_context_right": 0,
            "conf_num_attention_heads": 8, "conf_num_hidden_layers": 12, "sscp_conv_channel_size": [128, 32],
            "sscp_conv_kernel_size": [[3, 3], [3, 3]], "sscp_conv_stride_size": [[2, 2], [2, 2]],
            "vocab_offset": 262272, "vocab_size": 128}
    })
}

#[test]
fn e2b_values_and_derived_sizes() {
    let a = parse(&e2b()).unwrap();
    assert_eq!(
        (a.hidden_size, a.num_heads, a.head_dim(), a.num_layers),
        (1536, 8, 192, 12)
    );
    assert_eq!((a.max_past(), a.context_size()), (12, 24));
    assert_eq!(a.sscp_freq_out(), [64, 32]);
    assert_eq!(
        (a.text_hidden_size, a.padding_row(), a.soft_tokens),
        (2048, 127, 188)
    );
    assert_eq!(
        (a.gradient_clipping, a.logit_cap, a.reduction_factor),
        (1e10, 50.0, 4)
    );
    assert_eq!(parse(&json!({"model_type": "gemma3n"})).unwrap(), a);
}

#[test]
fn invalid_audio_fields_are_named() {
    let set = |key: &str, v: Value| {
        let mut c = e2b();
        c["audio_config"][key] = v;
        c
    };
    let cases = [
        (
            set("conf_num_attention_heads", json!(7)),
            "`audio_config.conf_num_attention_heads`: expected a divisor",
        ),
        (
            set("sscp_conv_kernel_size", json!([[3, 3]])),
            "`audio_config.sscp_conv_kernel_size`: expected two",
        ),
        (
            set("sscp_conv_channel_size", json!([0, 32])),
            "`audio_config.sscp_conv_channel_size`: expected two",
        ),
        (set("conf_num_hidden_layers", json!(100000)), "at most 256"),
        (set("vocab_offset", json!(5)), "`audio_config.vocab_offset`"),
        (
            set("model_type", json!("whisper")),
            "`audio_config.model_type`",
        ),
        (
            set("input_feat_size", json!(0)),
            "`audio_config.input_feat_size`: expected a positive integer",
        ),
    ];
    for (v, want) in cases {
        let msg = parse(&v).unwrap_err().to_string();
        assert!(
            msg.contains(ORIGIN) && msg.contains(want),
            "expected {want:?} in: {msg}"
        );
    }
}

#[test]
fn feature_extractor_defaults_and_nested_per_bin_values() {
    let origin = Path::new("preprocessor_config.json");
    let f = AudioFeatureConfig::from_json_str("{}", origin).unwrap();
    assert_eq!(
        (f.frame_length, f.hop_length, f.fft_length, f.feature_size),
        (512, 160, 1024, 128)
    );
    assert_eq!(
        (f.preemphasis, f.mel_floor, f.max_length),
        (0.97, 1e-5, 480_000)
    );
    let nested =
        json!({"feature_size": 2, "per_bin_mean": [[[0.5, -1.0]]], "per_bin_stddev": [2.0, 3.0]});
    let f = AudioFeatureConfig::from_json_str(&nested.to_string(), origin).unwrap();
    assert_eq!(f.per_bin_mean, Some(vec![0.5, -1.0]));
    for (bad, want) in [
        (
            json!({"feature_size": 2, "per_bin_mean": [1.0]}),
            "`per_bin_mean`: expected 2 finite numbers",
        ),
        (json!({"dither": 0.1}), "`dither`"),
        (
            json!({"per_bin_stddev": null, "hop_length_ms": 0.001}),
            "`hop_length_ms`",
        ),
        (
            json!({"feature_extractor_type": "WhisperFeatureExtractor"}),
            "`feature_extractor_type`",
        ),
    ] {
        let msg = AudioFeatureConfig::from_json_str(&bad.to_string(), origin)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(want), "expected {want:?} in: {msg}");
    }
}

#[test]
fn checkpoint_folders_give_the_flat_or_the_nested_settings() {
    let dir = tempfile::tempdir().unwrap();
    let f = AudioFeatureConfig::from_checkpoint_dir(dir.path()).unwrap();
    assert_eq!(f.feature_size, 128);
    let nested =
        json!({"feature_extractor": {"feature_size": 64}, "image_processor": {"size": 768}});
    std::fs::write(dir.path().join("processor_config.json"), nested.to_string()).unwrap();
    assert_eq!(
        AudioFeatureConfig::from_checkpoint_dir(dir.path())
            .unwrap()
            .feature_size,
        64
    );
    let flat = json!({"feature_size": 32, "image_processor_type": "SiglipImageProcessorFast"});
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        flat.to_string(),
    )
    .unwrap();
    assert_eq!(
        AudioFeatureConfig::from_checkpoint_dir(dir.path())
            .unwrap()
            .feature_size,
        32
    );
}
