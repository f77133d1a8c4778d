//! Tests of [`super`]: the hub config, nulls, nesting, and the settings refused.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<PreprocessConfig, ExportError> {
    PreprocessConfig::from_json(&v, 56, Path::new("preprocessor_config.json"), "test")
}

#[test]
fn hub_config_fills_nulls_with_processor_defaults() {
    // The hub's Gemma 3 preprocessor_config.json (semantics §6.1), verbatim.
    let c = parse(json!({
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "size": {"height": 896, "width": 896}, "resample": 2, "do_resize": true,
        "do_rescale": true, "rescale_factor": 0.00392156862745098,
        "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": null, "do_pan_and_scan": null, "pan_and_scan_min_crop_size": null,
        "pan_and_scan_max_num_crops": null, "pan_and_scan_min_ratio_to_activate": null,
        "image_seq_length": 256
    }))
    .unwrap();
    let expected = PreprocessConfig {
        source: Some("test".into()),
        ..PreprocessConfig::gemma3_defaults(896)
    };
    assert_eq!(c, expected);
    assert_eq!(c.rescale_factor, 1.0 / 255.0);
}

#[test]
fn explicit_values_and_scalar_mean() {
    let c = parse(json!({
        "size": {"height": 64, "width": 48}, "do_pan_and_scan": true,
        "pan_and_scan_min_crop_size": 32.0, "pan_and_scan_max_num_crops": 3,
        "pan_and_scan_min_ratio_to_activate": 1.5, "image_mean": 0.25, "do_normalize": false
    }))
    .unwrap();
    assert_eq!((c.height, c.width), (64, 48));
    assert!(c.do_pan_and_scan && !c.do_normalize);
    assert_eq!(c.pan_and_scan_min_crop_size, 32);
    assert_eq!(c.pan_and_scan_max_num_crops, 3);
    assert_eq!(c.pan_and_scan_min_ratio_to_activate, 1.5);
    assert_eq!(c.image_mean, [0.25; 3]);
}

#[test]
fn missing_size_uses_the_tower_size() {
    assert_eq!(parse(json!({})).unwrap().height, 56);
}

#[test]
fn unsupported_settings_are_refused_with_the_key() {
    for (v, needle) in [
        (json!({"resample": 3}), "resample is 3"),
        (json!({"do_resize": false}), "do_resize"),
        (json!({"do_rescale": false}), "do_rescale"),
        (json!({"size": {"shortest_edge": 224}}), "size is"),
        (json!({"image_std": [0.5, 0.0, 0.5]}), "image_std"),
        (json!({"image_mean": [0.5, 0.5]}), "image_mean"),
        (
            json!({"pan_and_scan_max_num_crops": 0}),
            "pan_and_scan_max_num_crops is 0",
        ),
        (
            json!({"pan_and_scan_min_crop_size": "big"}),
            "pan_and_scan_min_crop_size must be an integer",
        ),
        (
            json!({"image_processor_type": "SiglipImageProcessor"}),
            "Gemma3ImageProcessor only",
        ),
        (json!([1, 2]), "JSON object"),
    ] {
        let msg = parse(v.clone()).unwrap_err().to_string();
        assert!(msg.contains(needle), "{v}: {msg}");
        assert!(msg.contains("preprocessor_config.json"), "{msg}");
    }
}

#[test]
fn nested_processor_config_wins_over_preprocessor_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(PREPROCESSOR_CONFIG_FILE),
        r#"{"size": {"height": 32, "width": 32}}"#,
    )
    .unwrap();
    let c = PreprocessConfig::from_dir(dir.path(), 56).unwrap();
    assert_eq!(
        (c.height, c.source.as_deref()),
        (32, Some(PREPROCESSOR_CONFIG_FILE))
    );

    // A processor_config.json without the nested object (transformers 4.x) leaves preprocessor_config.json.
    std::fs::write(
        dir.path().join(PROCESSOR_CONFIG_FILE),
        r#"{"image_seq_length": 256}"#,
    )
    .unwrap();
    assert_eq!(
        PreprocessConfig::from_dir(dir.path(), 56).unwrap().height,
        32
    );

    std::fs::write(
        dir.path().join(PROCESSOR_CONFIG_FILE),
        r#"{"image_processor": {"size": {"height": 40, "width": 40}, "do_pan_and_scan": true}}"#,
    )
    .unwrap();
    let c = PreprocessConfig::from_dir(dir.path(), 56).unwrap();
    assert_eq!((c.height, c.do_pan_and_scan), (40, true));

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        PreprocessConfig::from_dir(empty.path(), 56).unwrap(),
        PreprocessConfig::gemma3_defaults(56)
    );
}

#[test]
fn paligemma_reads_the_siglip_processor_and_needs_it() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paligemma/pg2-s48");
    let cfg = gemma_models::ModelConfig::from_file(&fixture.join("config.json")).unwrap();
    let v = cfg.vision_config.unwrap();
    let c = PreprocessConfig::for_checkpoint(&fixture, &v).unwrap();
    assert_eq!((c.height, c.width, c.resample), (48, 48, 3));
    assert_eq!(
        c.source.as_deref(),
        Some("processor_config.json#image_processor")
    );

    let dir = tempfile::tempdir().unwrap();
    let err = PreprocessConfig::for_checkpoint(dir.path(), &v)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("preprocessor_config.json") && err.contains("PaliGemma"),
        "{err}"
    );
    for (json, needle) in [
        (
            r#"{"resample": 2}"#,
            "only 3 (PIL BICUBIC, PaliGemma's filter)",
        ),
        (
            r#"{"image_processor_type": "Gemma3ImageProcessor"}"#,
            "SiglipImageProcessor only",
        ),
    ] {
        std::fs::write(dir.path().join(PREPROCESSOR_CONFIG_FILE), json).unwrap();
        let err = PreprocessConfig::for_checkpoint(dir.path(), &v)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}
