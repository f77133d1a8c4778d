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

use super::{beside, relocate, ModelProto};
use crate::ExportError;
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
