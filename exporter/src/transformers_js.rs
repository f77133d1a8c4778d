//! The transformers.js layout of a portable export (`--transformers-js`), so that one folder serves `gemma`, Optimum
//! and transformers.js with one copy of the weights (docs/stacks.md). Opt-in: the `onnx` Python package refuses to
//! load a graph whose data file has several hard links.
//!
//! transformers.js's `from_pretrained(OUT)` looks for `OUT/onnx/model{suffix}.onnx`, the suffix naming the
//! precision (`dtype`: fp32 → `model.onnx`, fp16 → `model_fp16.onnx`, q8 → `model_quantized.onnx`, q4 →
//! `model_q4.onnx`), and for its external data in `OUT/onnx/model{suffix}.onnx_data`. In the browser it fetches that
//! file and hands it to ONNX Runtime under that name, so the graph's external-data `location` must be exactly it.
//! The export keeps `model.onnx` + `model.onnx_data` at the top (the `gemma` runtime, Optimum and older tools read
//! them there) and adds:
//!
//! - `onnx/model{suffix}.onnx`: the same decoder graph, its external data renamed to `model{suffix}.onnx_data`, and,
//!   for the model types whose positions transformers.js counts from 1 (`gemma3_text`, as transformers' multimodal
//!   Gemma 3 and PaliGemma do), one `Sub` that takes them back to transformers' 0-based `position_ids` (semantics
//!   §1.3), so transformers.js computes exactly what `gemma` does: RoPE's angles are relative, but shifted
//!   positions round differently, and on the real int4 270M that flipped a near-tie after 19 greedy tokens;
//! - `onnx/model{suffix}.onnx_data`: a hard link to `model.onnx_data`, not a copy (ONNX Runtime refuses a `location`
//!   with `..`, so the graph in `onnx/` cannot point at the top-level file; a symlink does not survive every tool);
//! - in `config.json`, `transformers.js_config` with the export's `dtype` (so a plain `from_pretrained(OUT)` picks
//!   the file) and `use_external_data_format` (so transformers.js loads the data file, in the browser too).
//!
//! A Gemma 3 vision export gets the image-text-to-text sessions instead of `model{suffix}.onnx`, each with its own
//! hard-linked data, the same shift in the decoder, and the processor files ([`vision`]). The cpu graph (in-place KV
//! buffers, contrib attention) is not a transformers.js model, and transformers.js has no bf16 `dtype`: those
//! exports get no `onnx/` folder.

use crate::builder::inline_tensor;
use crate::onnx::{DataType, ModelProto, NodeProto};
use crate::ExportError;
use gemma_models::contract::{files, io, GraphKind, Manifest, Precision};
use prost::Message;
use std::fs;
use std::path::Path;

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

/// `onnx/model{suffix}.onnx`, the decoder's path in the transformers.js layout of a `precision` export.
pub fn decoder_file(precision: Precision) -> Option<String> {
    dtype(precision).map(|(_, suffix)| {
        format!(
            "{}/{DECODER_SESSION}{suffix}.onnx",
            files::TRANSFORMERS_JS_DIR
        )
    })
}

/// Adds the transformers.js layout to the export folder `dir` (see the module docs) when the export is a portable
/// export at a precision transformers.js names; `decoder` is the graph written as `model.onnx`. A vision export gets
/// the image-text-to-text sessions instead ([`vision`]). Returns a warning when the layout could not be added (a file
/// system without hard links); the export stays usable.
pub fn write(
    dir: &Path,
    graph: GraphKind,
    manifest: &Manifest,
    decoder: &ModelProto,
) -> Result<Option<String>, ExportError> {
    let (Some((dtype, suffix)), GraphKind::Portable) = (dtype(manifest.precision), graph) else {
        return Ok(None);
    };
    // (session file name without suffix, graph, whether it is the decoder that takes `position_ids`)
    let mut graphs = match &manifest.vision {
        None => vec![(DECODER_SESSION, decoder.clone(), true)],
        Some(v) => vision::graphs(dir, v)?,
    };
    let sub = dir.join(files::TRANSFORMERS_JS_DIR);
    fs::create_dir(&sub).map_err(|e| ExportError::io(&sub, e))?;
    let mut external = serde_json::Map::new();
    for (session, proto, _) in &mut graphs {
        let file = format!("{session}{suffix}.onnx");
        match link_data(dir, &sub, proto, &file) {
            Ok(true) => {
                external.insert(file, 1.into());
            }
            Ok(false) => {}
            Err(why) => {
                fs::remove_dir_all(&sub).map_err(|e| ExportError::io(&sub, e))?;
                return Ok(Some(format!(
                    "no transformers.js layout ({}/): {why}; the export is complete without it",
                    files::TRANSFORMERS_JS_DIR
                )));
            }
        }
    }
    let settings = serde_json::json!({
        "dtype": dtype,
        "use_external_data_format": external,
    });
    let model_type = add_to_config(&dir.join(files::CONFIG_FILE), &settings)?;
    if let Some(v) = &manifest.vision {
        vision::write_processor_files(dir, v)?;
    }
    for (session, mut proto, is_decoder) in graphs {
        if is_decoder && ONE_BASED_POSITION_TYPES.contains(&model_type.as_str()) {
            positions_from_one(&mut proto);
        }
        let path = sub.join(format!("{session}{suffix}.onnx"));
        fs::write(&path, proto.encode_to_vec()).map_err(|e| ExportError::io(&path, e))?;
    }
    Ok(None)
}

/// Hard-links the external data file of `proto` (in `dir`) as `sub/{file}_data` and points the graph at it. Returns
/// whether the graph has external data; an error says why the link could not be made.
fn link_data(dir: &Path, sub: &Path, proto: &mut ModelProto, file: &str) -> Result<bool, String> {
    let mut locations: Vec<String> = proto
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .flat_map(|t| &t.external_data)
        .filter(|e| e.key.as_deref() == Some("location"))
        .filter_map(|e| e.value.clone())
        .collect();
    locations.sort();
    locations.dedup();
    let from = match locations.as_slice() {
        [] => return Ok(false),
        [one] => one,
        _ => {
            return Err(format!(
                "{file} keeps its weights in {} files",
                locations.len()
            ))
        }
    };
    let data_name = format!("{file}_data");
    let top = dir.join(from);
    fs::hard_link(&top, sub.join(&data_name))
        .map_err(|e| format!("could not hard-link {} ({e})", top.display()))?;
    relocate(proto, from, &data_name);
    Ok(true)
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

/// Points every initializer stored in the external data file `from` at `to` instead.
fn relocate(proto: &mut ModelProto, from: &str, to: &str) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    for tensor in &mut graph.initializer {
        for entry in &mut tensor.external_data {
            if entry.key.as_deref() == Some("location") && entry.value.as_deref() == Some(from) {
                entry.value = Some(to.to_string());
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
}
