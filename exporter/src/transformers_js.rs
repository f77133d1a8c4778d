//! The transformers.js layout of a portable export, so that one folder serves `gemma`, Optimum and transformers.js
//! with one copy of the weights and no links (docs/stacks.md). Every portable export at a precision transformers.js
//! names gets it.
//!
//! transformers.js's `from_pretrained(OUT)` looks for `OUT/onnx/model{suffix}.onnx`, the suffix naming the
//! precision (`dtype`: fp32 → `model.onnx`, fp16 → `model_fp16.onnx`, q8 → `model_quantized.onnx`, q4 →
//! `model_q4.onnx`), and for its external data in `OUT/onnx/model{suffix}.onnx_data`. In the browser it fetches that
//! file and hands it to ONNX Runtime under that name, so the graph's external-data `location` must be exactly it.
//! So the weights live there, once ([`Layout`]):
//!
//! - `onnx/model{suffix}.onnx_data`: the text weights, written there by the export itself;
//! - `model.onnx` at the top (the `gemma` runtime, Optimum and older tools read it there) references them as
//!   `onnx/model{suffix}.onnx_data`: a relative path into a subfolder, which ONNX Runtime and the `onnx` package
//!   accept (they refuse `..`, absolute paths and symbolic links leaving the graph's folder, and `onnx` refuses a
//!   data file with several hard links, which is why the weights are not linked);
//! - `onnx/model{suffix}.onnx`: the same decoder graph referencing `model{suffix}.onnx_data` beside it, and, for the
//!   model types whose positions transformers.js counts from 1 (`gemma3_text`, as transformers' multimodal Gemma 3
//!   and PaliGemma do), one `Sub` that takes them back to transformers' 0-based `position_ids` (semantics §1.3), so
//!   transformers.js computes exactly what `gemma` does: RoPE's angles are relative, but shifted positions round
//!   differently, and on the real int4 270M that flipped a near-tie after 19 greedy tokens;
//! - in `config.json`, `transformers.js_config` with the export's `dtype` (so a plain `from_pretrained(OUT)` picks
//!   the file) and `use_external_data_format` (so transformers.js loads the data file, in the browser too).
//!
//! A Gemma 3 vision export gets the image-text-to-text sessions instead of `model{suffix}.onnx`: the text weights
//! are `onnx/decoder_model_merged{suffix}.onnx_data` (transformers.js's decoder session), the image encoder's
//! `onnx/vision_encoder{suffix}.onnx_data`, the decoder gets the same shift, and the processor files are added
//! ([`vision`]). A Gemma 3n export gets Gemma 3n's sessions (`embed_tokens`, `decoder_model_merged`,
//! `audio_encoder`; `gemma3n.rs`), with `dtype` given per session, a text-only config.json wrapped as the `gemma3n`
//! config transformers.js knows, and the processor files when the checkpoint has none. The cpu graph (in-place KV buffers, contrib attention) is not a transformers.js model, and
//! transformers.js has no bf16 `dtype`: those exports keep `model.onnx_data` at the top and get no `onnx/` folder.

use crate::builder::inline_tensor;
use crate::onnx::{DataType, ModelProto, NodeProto};
use crate::ExportError;
use gemma_models::contract::{files, io, GraphKind, Manifest, Precision};
use prost::Message;
use std::fs;
use std::path::Path;

mod gemma3n;
mod vision;

/// The key of config.json that transformers.js reads its settings from.
pub const CONFIG_KEY: &str = "transformers.js_config";

/// The `model_type`s for which transformers.js 4.x feeds `position_ids` counted from 1 (its `decoder_forward`).
pub const ONE_BASED_POSITION_TYPES: &[&str] = &["paligemma", "gemma3_text", "gemma3"];

/// The graph input after the transformers.js copy's `Sub`: the positions the decoder uses.
const SHIFTED_POSITIONS: &str = "position_ids_from_zero";

/// transformers.js's `dtype` for an export precision and the file-name suffix its convention gives that dtype, or
/// `None` when transformers.js has no name for it (bf16). int8 is `q8` (`model_quantized.onnx`): 8-bit weights run
/// by ONNX Runtime, as transformers.js's own q8 models are.
pub fn dtype(precision: Precision) -> Option<(&'static str, &'static str)> {
    match precision {
        Precision::Fp32 => Some(("fp32", "")),
        Precision::Fp16 => Some(("fp16", "_fp16")),
        Precision::Int8 => Some(("q8", "_quantized")),
        Precision::Int4 => Some(("q4", "_q4")),
        Precision::Bf16 => None,
    }
}

/// The session (file name before the suffix) transformers.js loads a text decoder from.
const DECODER_SESSION: &str = "model";
/// The session transformers.js loads an image-text-to-text model's decoder from.
const VISION_DECODER_SESSION: &str = "decoder_model_merged";
/// The session transformers.js loads an image-text-to-text model's image encoder from.
const ENCODER_SESSION: &str = "vision_encoder";

/// `onnx/model{suffix}.onnx`, the decoder's path in the transformers.js layout of a `precision` export.
pub fn decoder_file(precision: Precision) -> Option<String> {
    dtype(precision).map(|(_, suffix)| {
        format!(
            "{}/{DECODER_SESSION}{suffix}.onnx",
            files::TRANSFORMERS_JS_DIR
        )
    })
}

/// Where a portable export keeps its weights: inside `onnx/`, named after the transformers.js session that loads
/// them (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// transformers.js's `dtype` of the export.
    pub dtype: &'static str,
    /// The file-name suffix of that `dtype`.
    pub suffix: &'static str,
    /// The session whose data file holds the text weights: `model`, or `decoder_model_merged` with images.
    decoder_session: &'static str,
}

impl Layout {
    /// The layout of a `graph` export at `precision` (`vision`: a Gemma 3 vision or a Gemma 3n export, whose text
    /// weights are the `decoder_model_merged` session's), or `None` when the export is no transformers.js model (the
    /// cpu graph, bf16) and keeps its data at the top.
    pub fn of(graph: GraphKind, precision: Precision, vision: bool) -> Option<Layout> {
        let (dtype, suffix) = dtype(precision)?;
        (graph == GraphKind::Portable).then_some(Layout {
            dtype,
            suffix,
            decoder_session: if vision {
                VISION_DECODER_SESSION
            } else {
                DECODER_SESSION
            },
        })
    }

    /// The text graphs' external data, relative to the export folder: `onnx/model{suffix}.onnx_data`
    /// (`onnx/decoder_model_merged{suffix}.onnx_data` with images).
    pub fn text_data(&self) -> String {
        self.data_of(self.decoder_session)
    }

    /// The image encoder's external data, relative to the export folder: `onnx/vision_encoder{suffix}.onnx_data`.
    pub fn encoder_data(&self) -> String {
        self.data_of(ENCODER_SESSION)
    }

    fn data_of(&self, session: &str) -> String {
        format!(
            "{}/{session}{}.onnx_data",
            files::TRANSFORMERS_JS_DIR,
            self.suffix
        )
    }
}

/// Writes the graphs of `onnx/` and the config keys of the transformers.js layout (see the module docs) into the
/// export folder `dir`, whose weights are already in `onnx/`; `decoder` is the graph written as `model.onnx`. A
/// vision export gets the image-text-to-text sessions instead ([`vision`]).
pub fn write(
    dir: &Path,
    layout: &Layout,
    manifest: &Manifest,
    decoder: &ModelProto,
) -> Result<(), ExportError> {
    // (session file name without suffix, graph, whether it is the decoder that takes `position_ids`)
    let mut graphs = match (&manifest.vision, &manifest.gemma3n) {
        (Some(v), _) => vision::graphs(dir, v)?,
        (None, Some(n)) => gemma3n::graphs(dir, n, decoder)?,
        (None, None) => vec![(DECODER_SESSION, decoder.clone(), true)],
    };
    // Gemma 3n's float32 encoders are named for their own `dtype` (Gemma 3's vision encoder, quantized with the
    // export, keeps the export's).
    let float_encoder = |session: &str| {
        manifest.gemma3n.is_some()
            && matches!(session, gemma3n::AUDIO_SESSION | gemma3n::VISION_SESSION)
    };
    let dtype_of = |session: &str| match float_encoder(session) {
        true => ("fp32", ""),
        false => (layout.dtype, layout.suffix),
    };
    let mut external = serde_json::Map::new();
    for (session, proto, _) in &mut graphs {
        let file = format!("{session}{}.onnx", dtype_of(session).1);
        // transformers.js loads `{file}_data` for the files listed; a graph that reads another session's data
        // (`embed_tokens`) is left out, and ONNX Runtime finds that file beside it.
        if beside(proto).contains(&format!("{file}_data")) {
            external.insert(file, 1.into());
        }
    }
    let dtype: serde_json::Value = match manifest.gemma3n {
        None => layout.dtype.into(),
        Some(_) => graphs
            .iter()
            .map(|(session, _, _)| (session.to_string(), dtype_of(session).0))
            .collect(),
    };
    let settings = serde_json::json!({
        "dtype": dtype,
        "use_external_data_format": external,
    });
    if manifest.gemma3n.is_some() {
        gemma3n::wrap_text_config(&dir.join(files::CONFIG_FILE))?;
    }
    let model_type = add_to_config(&dir.join(files::CONFIG_FILE), &settings)?;
    if let Some(v) = &manifest.vision {
        vision::write_processor_files(dir, v)?;
    }
    if let Some(n) = &manifest.gemma3n {
        gemma3n::write_processor_files(dir, n)?;
    }
    let sub = dir.join(files::TRANSFORMERS_JS_DIR);
    for (session, mut proto, is_decoder) in graphs {
        if is_decoder && ONE_BASED_POSITION_TYPES.contains(&model_type.as_str()) {
            positions_from_one(&mut proto);
        }
        let path = sub.join(format!("{session}{}.onnx", dtype_of(session).1));
        fs::write(&path, proto.encode_to_vec()).map_err(|e| ExportError::io(&path, e))?;
    }
    Ok(())
}

/// Points every external tensor of a top-level graph, stored in `onnx/NAME`, at `NAME` (the copy in `onnx/` reads
/// its data from beside it), and returns the data files the graph reads.
fn beside(proto: &mut ModelProto) -> Vec<String> {
    let prefix = format!("{}/", files::TRANSFORMERS_JS_DIR);
    let mut names = Vec::new();
    relocate(proto, |location| {
        let name = location.strip_prefix(&prefix).unwrap_or(location);
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        name.to_string()
    });
    names
}

/// Makes the graph take `position_ids` counted from 1: every node that read them reads `position_ids - 1`.
fn positions_from_one(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    for node in &mut graph.node {
        for input in &mut node.input {
            if input == io::POSITION_IDS {
                *input = SHIFTED_POSITIONS.to_string();
            }
        }
    }
    let one = "position_ids_one";
    graph.initializer.push(inline_tensor(
        one,
        DataType::Int64,
        &[],
        1i64.to_le_bytes().to_vec(),
    ));
    let sub = NodeProto {
        input: vec![io::POSITION_IDS.to_string(), one.to_string()],
        output: vec![SHIFTED_POSITIONS.to_string()],
        name: Some("transformers_js_positions_from_one".into()),
        op_type: Some("Sub".into()),
        ..Default::default()
    };
    graph.node.insert(0, sub);
}

/// Replaces the external-data `location` of every initializer of `proto` by `to(location)`.
pub(crate) fn relocate(proto: &mut ModelProto, mut to: impl FnMut(&str) -> String) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    for tensor in &mut graph.initializer {
        for entry in &mut tensor.external_data {
            if entry.key.as_deref() == Some("location") {
                if let Some(location) = entry.value.as_mut() {
                    *location = to(location);
                }
            }
        }
    }
}

/// Sets `transformers.js_config` in config.json and returns its `model_type`. The checkpoint's text is kept as it is
/// and the key added before its closing brace; a config that already has the key is rewritten whole.
fn add_to_config(path: &Path, settings: &serde_json::Value) -> Result<String, ExportError> {
    let text = fs::read_to_string(path).map_err(|e| ExportError::io(path, e))?;
    let json_err = |source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    };
    let mut config: serde_json::Value = serde_json::from_str(&text).map_err(json_err)?;
    let Some(object) = config.as_object_mut() else {
        return Ok(String::new()); // ModelConfig::from_file already refused a config that is not an object
    };
    let model_type = object
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let trimmed = text.trim_end();
    let new_text = match trimmed.strip_suffix('}') {
        Some(body) if !object.contains_key(CONFIG_KEY) => {
            let settings = serde_json::to_string_pretty(settings).map_err(json_err)?;
            let comma = if object.is_empty() { "" } else { "," };
            format!(
                "{}{comma}\n  \"{CONFIG_KEY}\": {}\n}}\n",
                body.trim_end(),
                settings.replace('\n', "\n  ")
            )
        }
        _ => {
            object.insert(CONFIG_KEY.into(), settings.clone());
            serde_json::to_string_pretty(&config).map_err(json_err)? + "\n"
        }
    };
    fs::write(path, new_text).map_err(|e| ExportError::io(path, e))?;
    Ok(model_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_the_checkpoint_text_and_adds_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "{\n  \"b\": 1,\n  \"a\": [2, 3]\n}\n").unwrap();
        add_to_config(&path, &serde_json::json!({"dtype": "q4"})).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"b\": 1,\n  \"a\": [2, 3],\n  \"transformers.js_config\": {")
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[CONFIG_KEY]["dtype"], "q4");
        // An existing key is replaced.
        add_to_config(&path, &serde_json::json!({"dtype": "fp32"})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v[CONFIG_KEY]["dtype"], "fp32");
        assert_eq!(v["a"][1], 3);
    }

    #[test]
    fn file_names_follow_the_dtype_convention() {
        assert_eq!(decoder_file(Precision::Fp32).unwrap(), "onnx/model.onnx");
        assert_eq!(decoder_file(Precision::Int4).unwrap(), "onnx/model_q4.onnx");
        assert_eq!(
            decoder_file(Precision::Int8).unwrap(),
            "onnx/model_quantized.onnx"
        );
        assert_eq!(
            decoder_file(Precision::Fp16).unwrap(),
            "onnx/model_fp16.onnx"
        );
        assert!(decoder_file(Precision::Bf16).is_none());
    }

    #[test]
    fn portable_exports_keep_their_weights_in_the_onnx_folder() {
        let text = Layout::of(GraphKind::Portable, Precision::Int4, false).unwrap();
        assert_eq!(text.text_data(), "onnx/model_q4.onnx_data");
        let images = Layout::of(GraphKind::Portable, Precision::Fp32, true).unwrap();
        assert_eq!(images.text_data(), "onnx/decoder_model_merged.onnx_data");
        assert_eq!(images.encoder_data(), "onnx/vision_encoder.onnx_data");
        assert!(Layout::of(GraphKind::Cpu, Precision::Int4, false).is_none());
        assert!(Layout::of(GraphKind::Portable, Precision::Bf16, false).is_none());
    }

    #[test]
    fn the_onnx_copy_reads_its_data_from_beside_it() {
        use crate::onnx::{GraphProto, StringStringEntryProto, TensorProto};
        let tensor = |location: &str| TensorProto {
            external_data: vec![StringStringEntryProto {
                key: Some("location".into()),
                value: Some(location.into()),
            }],
            ..Default::default()
        };
        let mut proto = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![
                    tensor("onnx/model_q4.onnx_data"),
                    tensor("onnx/model_q4.onnx_data"),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(beside(&mut proto), ["model_q4.onnx_data"]);
        let locations: Vec<_> = proto
            .graph
            .unwrap()
            .initializer
            .iter()
            .map(|t| t.external_data[0].value.clone().unwrap())
            .collect();
        assert_eq!(locations, ["model_q4.onnx_data", "model_q4.onnx_data"]);
    }
}
