//! The transformers.js layout of a Gemma 3n export: the sessions transformers.js 4.x's
//! `Gemma3nForConditionalGeneration` loads (`embed_tokens`, `decoder_model_merged`, and `vision_encoder` and
//! `audio_encoder` when the export has the image and audio graphs), with the I/O it feeds them:
//!
//! - `embed_tokens`: `input_ids` → `inputs_embeds`, `per_layer_inputs`;
//! - `decoder_model_merged`: `inputs_embeds`, `per_layer_inputs`, `attention_mask`, `position_ids` (0-based: the
//!   one-based types are Gemma 3's and PaliGemma's only) and the `past_key_values.{i}.*` the session declares (it
//!   makes the empty cache from the session's own inputs, so the KV layers only) → `logits`, `present.{i}.*`;
//! - `vision_encoder`: `pixel_values` → `image_features`;
//! - `audio_encoder`: `input_features`, `input_features_mask` → `audio_features`.
//!
//! Weights: the text ones are already in `onnx/decoder_model_merged{suffix}.onnx_data` (both text graphs read
//! them; `embed_tokens` is thus left out of `use_external_data_format`, as for Gemma 3 vision). The two encoders,
//! float32 at every precision, are named for `dtype` fp32 (`vision_encoder.onnx`, `audio_encoder.onnx`, config
//! `dtype` per session): each data file moves into `onnx/` and the top-level graph is pointed there.
//!
//! Files (`docs/stacks.md`): transformers.js knows these sessions only under `model_type` `gemma3n`, so a text-only
//! (`Gemma3nForCausalLM`, `gemma3n_text`) config.json is wrapped as a `gemma3n` one ([`wrap_text_config`]); and
//! `AutoProcessor` reads the image processor and the audio feature extractor from `preprocessor_config.json` and the
//! soft-token counts from `processor_config.json`, written from the export's own settings when the checkpoint
//! brought none ([`write_processor_files`]).

use super::{beside, relocate, ModelProto};
use crate::vision::preprocess::gemma3n_from_dir;
use crate::ExportError;
use gemma_models::config::gemma3n_audio::AudioFeatureConfig;
use gemma_models::contract::{files, Gemma3nSection};
use prost::Message;
use std::fs;
use std::path::Path;

/// The audio encoder's session, float32 whatever the export's precision.
pub(super) const AUDIO_SESSION: &str = "audio_encoder";
/// The vision encoder's session, float32 whatever the export's precision.
pub(super) const VISION_SESSION: &str = "vision_encoder";

/// The export's Gemma 3n graphs by transformers.js session: (session, graph, whether it takes `position_ids`);
/// `decoder` is the graph written as `decoder_model_merged.onnx`. Moves the encoders' data into `onnx/`.
pub(super) fn graphs(
    dir: &Path,
    section: &Gemma3nSection,
    decoder: &ModelProto,
) -> Result<Vec<(&'static str, ModelProto, bool)>, ExportError> {
    let mut out = vec![
        (
            "embed_tokens",
            read(&dir.join(&section.embed_tokens))?,
            false,
        ),
        ("decoder_model_merged", decoder.clone(), true),
    ];
    if let Some(vision) = &section.vision {
        out.push((VISION_SESSION, encoder(dir, &vision.encoder)?, false));
    }
    if let Some(audio) = &section.audio {
        out.push((AUDIO_SESSION, encoder(dir, &audio.encoder)?, false));
    }
    Ok(out)
}

/// The encoder graph `file` of `dir` for its `onnx/` copy: its data moves into `onnx/`, and the top-level graph is
/// rewritten to read it there.
fn encoder(dir: &Path, file: &str) -> Result<ModelProto, ExportError> {
    let top = dir.join(file);
    let mut proto = read(&top)?;
    let inside = |name: &str| format!("{}/{name}", files::TRANSFORMERS_JS_DIR);
    for name in beside(&mut proto) {
        let (from, to) = (dir.join(&name), dir.join(inside(&name)));
        fs::rename(&from, &to).map_err(|e| ExportError::io(&from, e))?;
    }
    let copy = proto.clone();
    relocate(&mut proto, inside);
    fs::write(&top, proto.encode_to_vec()).map_err(|e| ExportError::io(&top, e))?;
    Ok(copy)
}

/// The graph in the file `path`.
fn read(path: &Path) -> Result<ModelProto, ExportError> {
    let bytes = fs::read(path).map_err(|e| ExportError::io(path, e))?;
    ModelProto::decode(&*bytes).map_err(|e| {
        let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        ExportError::io(path, invalid)
    })
}

/// The processor class transformers (Python and JS) builds for Gemma 3n.
const PROCESSOR_CLASS: &str = "Gemma3nProcessor";

/// Rewrites the config.json at `path` of a text-only Gemma 3n checkpoint (`model_type` `gemma3n_text`) as the
/// `gemma3n` config transformers.js knows: the checkpoint's config whole under `text_config`, and
/// `architectures` `Gemma3nForConditionalGeneration`, which makes transformers.js's `AutoModelForCausalLM` load the
/// `embed_tokens` and `decoder_model_merged` sessions only (its text-only mode; with `Gemma3nForCausalLM` it would
/// look for `onnx/model.onnx`). `vision_config` and `audio_config` are null: there are no towers. Other configs are
/// left as they are. The runtime reads its sizes from `text_config` first.
pub(super) fn wrap_text_config(path: &Path) -> Result<(), ExportError> {
    let text = fs::read_to_string(path).map_err(|e| ExportError::io(path, e))?;
    let json_err = |source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    };
    let config: serde_json::Value = serde_json::from_str(&text).map_err(json_err)?;
    let Some(wrapped) = wrapped_text_config(&config) else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(&wrapped).map_err(json_err)? + "\n";
    fs::write(path, text).map_err(|e| ExportError::io(path, e))
}

/// The `gemma3n` config around a `gemma3n_text` one, or `None` for any other config.
fn wrapped_text_config(config: &serde_json::Value) -> Option<serde_json::Value> {
    if config.get("model_type").and_then(|t| t.as_str()) != Some("gemma3n_text") {
        return None;
    }
    let top = |key: &str| config.get(key).cloned().unwrap_or(serde_json::Value::Null);
    Some(serde_json::json!({
        "architectures": ["Gemma3nForConditionalGeneration"],
        "model_type": "gemma3n",
        "text_config": config,
        "vision_config": null,
        "audio_config": null,
        "dtype": top("dtype"),
        "tie_word_embeddings": top("tie_word_embeddings"),
        "transformers_version": top("transformers_version"),
    }))
}

/// Writes, into the export folder `dir` of a Gemma 3n export with image or audio graphs, the processor files
/// transformers.js's `AutoProcessor` (`Gemma3nProcessor`) reads, each only when the checkpoint did not bring one:
///
/// - `preprocessor_config.json`: `AutoImageProcessor` (`SiglipImageProcessor`) and `AutoFeatureExtractor`
///   (`Gemma3nAudioFeatureExtractor`) both read this file; written flat, as transformers 4.x saves Gemma 3n's, from
///   the settings the export's `preprocess.onnx` and `preprocess_audio.onnx` were built with (read again from the
///   files copied into `dir`, as the export read them from the checkpoint);
/// - `processor_config.json`: `image_seq_length` and `audio_seq_length`, the soft tokens of an image and a clip.
pub(super) fn write_processor_files(
    dir: &Path,
    section: &Gemma3nSection,
) -> Result<(), ExportError> {
    if section.vision.is_none() && section.audio.is_none() {
        return Ok(());
    }
    let preprocessor = dir.join("preprocessor_config.json");
    if !preprocessor.exists() {
        let mut json = serde_json::Map::new();
        if let Some(v) = &section.vision {
            let pre = gemma3n_from_dir(dir, v.image_size)?;
            json.extend(image_processor_json(&pre));
        }
        if section.audio.is_some() {
            let features = AudioFeatureConfig::from_checkpoint_dir(dir)?;
            json.extend(feature_extractor_json(&features));
        }
        json.insert("processor_class".into(), PROCESSOR_CLASS.into());
        write_json(&preprocessor, &json.into())?;
    }
    let processor = dir.join("processor_config.json");
    if !processor.exists() {
        let mut json = serde_json::Map::new();
        if let Some(a) = &section.audio {
            json.insert("audio_seq_length".into(), a.soft_tokens.into());
        }
        if let Some(v) = &section.vision {
            json.insert("image_seq_length".into(), v.soft_tokens.into());
        }
        json.insert("processor_class".into(), PROCESSOR_CLASS.into());
        write_json(&processor, &json.into())?;
    }
    Ok(())
}

/// The image processor's keys (`SiglipImageProcessor`, no Pan & Scan) for `pre`.
fn image_processor_json(
    pre: &gemma_models::contract::PreprocessConfig,
) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "image_processor_type": "SiglipImageProcessor",
        "do_convert_rgb": true,
        "do_resize": true,
        "size": {"height": pre.height, "width": pre.width},
        "resample": pre.resample,
        "do_rescale": true,
        "rescale_factor": pre.rescale_factor,
        "do_normalize": pre.do_normalize,
        "image_mean": pre.image_mean,
        "image_std": pre.image_std,
    });
    v.as_object().cloned().expect("object")
}

/// The audio feature extractor's keys (`Gemma3nAudioFeatureExtractor`) for `f`, named as transformers saves them.
/// `per_bin_mean` and `per_bin_stddev` are written when the checkpoint has them (transformers applies them;
/// transformers.js 4.3 does not read them).
fn feature_extractor_json(f: &AudioFeatureConfig) -> serde_json::Map<String, serde_json::Value> {
    let mut v = serde_json::json!({
        "feature_extractor_type": "Gemma3nAudioFeatureExtractor",
        "feature_size": f.feature_size,
        "sampling_rate": f.sampling_rate,
        "frame_length": f.frame_length,
        "hop_length": f.hop_length,
        "fft_length": f.fft_length,
        "fft_overdrive": f.fft_length > f.frame_length.next_power_of_two(),
        "min_frequency": f.min_frequency,
        "max_frequency": f.max_frequency,
        "preemphasis": f.preemphasis,
        "preemphasis_htk_flavor": f.preemphasis_htk_flavor,
        "input_scale_factor": f.input_scale_factor,
        "mel_floor": f.mel_floor,
        "dither": 0.0,
        "padding_side": "right",
        "padding_value": f.padding_value,
        "return_attention_mask": true,
    });
    let object = v.as_object_mut().expect("object");
    for (key, values) in [
        ("per_bin_mean", &f.per_bin_mean),
        ("per_bin_stddev", &f.per_bin_stddev),
    ] {
        if let Some(values) = values {
            object.insert(key.into(), serde_json::json!([[values]]));
        }
    }
    object.clone()
}

fn write_json(path: &Path, json: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(json).expect("json") + "\n";
    fs::write(path, text).map_err(|e| ExportError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_config_is_wrapped_as_gemma3n() {
        let text = serde_json::json!({"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"],
            "hidden_size": 64, "dtype": "float32"});
        let wrapped = wrapped_text_config(&text).unwrap();
        assert_eq!(wrapped["model_type"], "gemma3n");
        assert_eq!(
            wrapped["architectures"][0],
            "Gemma3nForConditionalGeneration"
        );
        assert_eq!(wrapped["text_config"], text);
        assert_eq!(wrapped["dtype"], "float32");
        assert!(wrapped["vision_config"].is_null() && wrapped["audio_config"].is_null());
        assert!(
            wrapped_text_config(&wrapped).is_none(),
            "a gemma3n config stays as it is"
        );
    }

    #[test]
    fn the_feature_extractor_keys_are_transformers_names() {
        let f = AudioFeatureConfig::from_json_str("{}", "p.json".as_ref()).unwrap();
        let json = feature_extractor_json(&f);
        assert_eq!(
            json["feature_extractor_type"],
            "Gemma3nAudioFeatureExtractor"
        );
        assert_eq!(json["fft_length"], 1024);
        assert_eq!(json["fft_overdrive"], true);
        assert_eq!(json["frame_length"], 512);
        assert!(!json.contains_key("per_bin_mean"));
    }
}
