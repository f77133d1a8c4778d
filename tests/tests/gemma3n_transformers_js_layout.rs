//! A portable Gemma 3n export has the transformers.js layout (`exporter/src/transformers_js/gemma3n.rs`): the
//! sessions `onnx/embed_tokens{suffix}.onnx`, `onnx/decoder_model_merged{suffix}.onnx` (their weights once, in
//! `onnx/decoder_model_merged{suffix}.onnx_data`), `onnx/vision_encoder.onnx` and `onnx/audio_encoder.onnx` (+
//! `.onnx_data`, float32 at every precision), and config.json's `transformers.js_config` names them. Fed as transformers.js's
//! `Gemma3nForConditionalGeneration` feeds them (0-based positions, an empty cache for the session's own
//! `past_key_values.*` inputs), the `onnx/` copies give transformers' logits.

use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::ort_env::create_session;
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{
    export_precision_to_temp, parity_runtime, tiny_fixture, Reference, FP32_TOLERANCE,
};
use ndarray::{Array2, Array4};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};
use std::borrow::Cow;
use std::path::Path;

fn session(path: &Path) -> Session {
    create_session(path, &parity_runtime()).unwrap()
}

fn names(list: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = list.collect();
    v.sort();
    v
}

#[test]
fn the_onnx_copies_run_as_transformers_js_feeds_them() {
    let src = tiny_fixture("gemma3n-text-f32");
    let (_tmp, out) = export_precision_to_temp(&src, Precision::Fp32, GraphKind::Portable).unwrap();
    for file in ["model.onnx_data", "onnx/model.onnx"] {
        assert!(!out.join(file).exists(), "{file}");
    }
    let r = Reference::load(&src).unwrap();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let mut embed = session(&out.join("onnx/embed_tokens.onnx"));
    let embedded = embed
        .run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids).unwrap()])
        .unwrap();
    let mut decoder = session(&out.join("onnx/decoder_model_merged.onnx"));
    let inputs = names(decoder.inputs().iter().map(|i| i.name().to_string()));
    let mut want = vec![
        "attention_mask",
        "inputs_embeds",
        "per_layer_inputs",
        "position_ids",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for l in 0..4 {
        want.push(format!("past_key_values.{l}.key"));
        want.push(format!("past_key_values.{l}.value"));
    }
    want.sort();
    assert_eq!(inputs, want, "the KV layers only, no num_logits_to_keep");

    let n = ids.ncols();
    let mask = Array2::<i64>::ones((1, n));
    let pos = Array2::from_shape_fn((1, n), |(_, j)| j as i64);
    let mut feed: Vec<(Cow<str>, SessionInputValue)> = Vec::new();
    for name in ["inputs_embeds", "per_layer_inputs"] {
        let v = embedded[name]
            .try_extract_array::<f32>()
            .unwrap()
            .to_owned();
        feed.push((name.into(), Tensor::from_array(v).unwrap().into()));
    }
    feed.push((
        "attention_mask".into(),
        Tensor::from_array(mask).unwrap().into(),
    ));
    feed.push((
        "position_ids".into(),
        Tensor::from_array(pos).unwrap().into(),
    ));
    for name in want.iter().filter(|n| n.starts_with("past_key_values")) {
        let empty = Array4::<f32>::zeros((1, 2, 0, 16));
        feed.push((
            name.clone().into(),
            Tensor::from_array(empty).unwrap().into(),
        ));
    }
    let outputs = decoder.run(feed).unwrap();
    let logits = outputs["logits"].try_extract_array::<f32>().unwrap();
    let d = max_abs_diff(logits.view(), r.f32("prefill.logits").unwrap().view());
    eprintln!("onnx/decoder_model_merged.onnx as transformers.js feeds it: max |Δlogit| = {d:.2e}");
    assert!(d <= FP32_TOLERANCE, "{d}");
}

#[test]
fn an_int4_export_names_its_sessions_by_dtype() {
    let src = tiny_fixture("gemma3n-audio-f32");
    let (_tmp, out) = export_precision_to_temp(&src, Precision::INT4, GraphKind::Portable).unwrap();
    for file in [
        "onnx/embed_tokens_q4.onnx",
        "onnx/decoder_model_merged_q4.onnx",
        "onnx/decoder_model_merged_q4.onnx_data",
        "onnx/audio_encoder.onnx",
        "onnx/audio_encoder.onnx_data",
        "embed_tokens.onnx",
        "decoder_model_merged.onnx",
        "audio_encoder.onnx",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for file in ["model.onnx_data", "audio_encoder.onnx_data"] {
        assert!(
            !out.join(file).exists(),
            "{file}: the weights are stored once, in onnx/"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let tjs = &config["transformers.js_config"];
    assert_eq!(
        tjs["dtype"],
        serde_json::json!({"embed_tokens": "q4", "decoder_model_merged": "q4", "audio_encoder": "fp32"})
    );
    assert_eq!(
        tjs["use_external_data_format"],
        serde_json::json!({"decoder_model_merged_q4.onnx": 1, "audio_encoder.onnx": 1})
    );
    let audio = session(&out.join("onnx/audio_encoder.onnx"));
    let inputs = names(audio.inputs().iter().map(|i| i.name().to_string()));
    assert_eq!(inputs, ["input_features", "input_features_mask"]);
    assert_eq!(audio.outputs()[0].name(), "audio_features");
    // The runtime still reads everything through the top-level graphs.
    let mut decoder = gemma_runtime::Decoder::open(&out, &parity_runtime()).unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let ids = Array2::from_elem((1, 3), 5i64);
    let logits = decoder
        .run_after_cache(
            gemma_runtime::TokenInput::Ids(ids.view()),
            &mut cache,
            gemma_runtime::LogitsMode::Last,
            |l| l.to_owned(),
        )
        .unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
    gemma_runtime::audio::AudioEncoder::open(&out, &parity_runtime()).unwrap();
}

/// With the image graphs, `onnx/vision_encoder.onnx` (float32, its data moved beside it) is the session
/// transformers.js loads, and the top-level graph the runtime runs reads the same weights from there.
#[test]
fn the_vision_encoder_joins_the_layout() {
    let src = tiny_fixture("gemma3n-f32");
    let (_tmp, out) = export_precision_to_temp(&src, Precision::INT4, GraphKind::Portable).unwrap();
    for file in [
        "onnx/vision_encoder.onnx",
        "onnx/vision_encoder.onnx_data",
        "vision_encoder.onnx",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    assert!(
        !out.join("vision_encoder.onnx_data").exists(),
        "the encoder's weights are stored once, in onnx/"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let tjs = &config["transformers.js_config"];
    assert_eq!(tjs["dtype"]["vision_encoder"], "fp32");
    assert_eq!(tjs["use_external_data_format"]["vision_encoder.onnx"], 1);
    let mut copy = session(&out.join("onnx/vision_encoder.onnx"));
    let mut top = session(&out.join("vision_encoder.onnx"));
    assert_eq!(copy.inputs()[0].name(), "pixel_values");
    assert_eq!(copy.outputs()[0].name(), "image_features");
    let pixels = Array4::<f32>::from_shape_fn((1, 3, 96, 96), |(_, c, y, x)| {
        ((c * 31 + y * 7 + x) % 97) as f32 / 96.0
    });
    let run = |s: &mut Session| {
        let input = TensorRef::from_array_view(pixels.view()).unwrap();
        let out = s.run(ort::inputs!["pixel_values" => input]).unwrap();
        out["image_features"]
            .try_extract_array::<f32>()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (run(&mut copy), run(&mut top));
    assert_eq!(a.shape(), [1, 9, 64]);
    assert_eq!(
        a, b,
        "the onnx/ copy and the top-level graph are the same encoder"
    );
}

/// Only Gemma 3n's encoders are float32 sessions: a Gemma 3 vision export's vision encoder is quantized with the
/// export and keeps the export's dtype in its name and in config.json.
#[test]
fn a_gemma3_vision_encoder_keeps_the_exports_dtype() {
    let src = tiny_fixture("cg-mqa-bf16-sharded-hf4");
    for (p, file, dtype) in [
        (Precision::INT8, "onnx/vision_encoder_quantized.onnx", "q8"),
        (Precision::INT4, "onnx/vision_encoder_q4.onnx", "q4"),
    ] {
        let (_tmp, out) = export_precision_to_temp(&src, p, GraphKind::Portable).unwrap();
        assert!(out.join(file).is_file(), "{file}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["transformers.js_config"]["dtype"], dtype, "{file}");
    }
}
