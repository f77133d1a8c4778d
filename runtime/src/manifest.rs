//! Reading an export folder's `gemma-onnx.json` ([`Manifest`], the contract shared with gemma-export in
//! `gemma_models::contract`): [`load`] and [`parse`] refuse, naming the file and the field, anything this runtime
//! would misread; plus the stop tokens of `generation_config.json`.
//!
//! Compatibility: every `format_version` from 1 (also a manifest without the field) up to
//! [`contract::FORMAT_VERSION`] loads; a newer one is refused with a message naming both versions.

use std::path::{Path, PathBuf};

use gemma_models::contract::{self, files};
pub use gemma_models::contract::{
    files::MANIFEST_FILE, CpuSection, DType, GraphKind, LayerType, Manifest, VisionSection, FORMAT,
};

use crate::error::{Error, Result};

/// Reads and validates `<dir>/gemma-onnx.json`, and checks the folder against it ([`crate::integrity`]): file
/// names inside the folder, fingerprints, sizes against config.json.
pub fn load(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "model folder {} does not exist",
            dir.display()
        )));
    }
    if !path.is_file() {
        return Err(Error::NotAnExport {
            dir: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let manifest = parse(&text, &path)?;
    crate::integrity::inside(dir, &path, "decoder", &manifest.decoder)?;
    let decoder = dir.join(&manifest.decoder);
    if !decoder.is_file() {
        return Err(Error::invalid_file(
            &path,
            format!(
                "field `decoder` names {}, which does not exist",
                decoder.display()
            ),
        ));
    }
    crate::integrity::check_folder(dir, &path, &manifest)?;
    Ok(manifest)
}

/// Parses and validates manifest text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
    // Check the format and its version first, so that any other JSON file, or a newer export, gets the clearer
    // message rather than one about a field.
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid_file(path, format!("not valid JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::invalid_file(
                path,
                format!("field `format` is `{other}`, expected `{FORMAT}`"),
            ))
        }
        None => {
            return Err(Error::invalid_file(
                path,
                format!("missing field `format` (expected `{FORMAT}`)"),
            ))
        }
    }
    // Absent: version 1, from before the field was written.
    if let Some(v) = value.get("format_version") {
        let version = v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                Error::invalid_file(
                    path,
                    format!("field `format_version`: expected a version number, got {v}"),
                )
            })?;
        contract::check_format_version(version)
            .map_err(|e| Error::invalid_file(path, format!("field `format_version`: {e}")))?;
    }
    // The typed values one by one first: serde's message for an unknown one does not say which field it is in.
    typed_field::<contract::Family>(&value, "family", path)?;
    typed_field::<contract::Precision>(&value, "precision", path)?;
    typed_field::<GraphKind>(&value, "graph", path)?;
    typed_field::<Vec<LayerType>>(&value, "layer_types", path)?;
    typed_field::<DType>(&value, "kv_dtype", path)?;
    typed_field::<DType>(&value, "logits_dtype", path)?;
    let m: Manifest =
        serde_json::from_value(value).map_err(|e| Error::invalid_file(path, e.to_string()))?;
    validate(&m, path)?;
    Ok(m)
}

/// Refuses `value[key]`, when present, unless it reads as a `T`, naming the field.
fn typed_field<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    key: &str,
    path: &Path,
) -> Result<()> {
    match value.get(key) {
        Some(v) => T::deserialize(v).map(drop).map_err(|e| {
            Error::invalid_file(
                path,
                format!("field `{key}`: {e}; a newer gemma-export may need a newer runtime"),
            )
        }),
        None => Ok(()),
    }
}

/// What serde cannot check: sizes > 0, counts that agree, ids inside the vocabulary, the sections a graph kind
/// needs.
fn validate(m: &Manifest, path: &Path) -> Result<()> {
    let bad = |field: &str, why: String| {
        Err(Error::invalid_file(path, format!("field `{field}`: {why}")))
    };
    for (field, v) in [
        ("num_layers", m.num_layers),
        ("num_attention_heads", m.num_attention_heads),
        ("num_kv_heads", m.num_kv_heads),
        ("head_dim", m.head_dim),
        ("hidden_size", m.hidden_size),
        ("vocab_size", m.vocab_size),
        ("max_position_embeddings", m.max_position_embeddings),
    ] {
        if v == 0 {
            return bad(field, "must be > 0".into());
        }
    }
    if !m.layer_types.is_empty() && m.layer_types.len() != m.num_layers {
        return bad(
            "layer_types",
            format!(
                "has {} entries but num_layers is {}",
                m.layer_types.len(),
                m.num_layers
            ),
        );
    }
    if m.eos_token_ids.is_empty() {
        return bad("eos_token_ids", "must list at least one token id".into());
    }
    let vocab = m.vocab_size as u64;
    for (field, id) in std::iter::once(("bos_token_id", m.bos_token_id))
        .chain(m.eos_token_ids.iter().map(|&id| ("eos_token_ids", id)))
    {
        if id as u64 >= vocab {
            return bad(
                field,
                format!("token id {id} is outside the vocabulary ({vocab})"),
            );
        }
    }
    if m.decoder.is_empty() {
        return bad("decoder", "must name the decoder graph file".into());
    }
    if let Some(n) = &m.gemma3n {
        if n.kv_layers == 0 || n.kv_layers > m.num_layers {
            let why = format!(
                "must be 1..={} (num_layers), got {}",
                m.num_layers, n.kv_layers
            );
            return bad("gemma3n.kv_layers", why);
        }
        if n.embed_tokens.is_empty() {
            let why = "a Gemma 3n export names its embed_tokens graph".into();
            return bad("gemma3n", why);
        }
        if let Some(a) = &n.audio {
            if a.preprocess.is_empty() || a.encoder.is_empty() || a.soft_tokens == 0 {
                let why = "names its two graphs and has at least one soft token per clip".into();
                return bad("gemma3n.audio", why);
            }
            let ids = [
                ("gemma3n.audio.audio_token_id", a.audio_token_id),
                ("gemma3n.audio.boa_token_id", a.boa_token_id),
                ("gemma3n.audio.eoa_token_id", a.eoa_token_id),
            ];
            for (field, id) in ids {
                if id as u64 >= vocab {
                    let why = format!("token id {id} is outside the vocabulary ({vocab})");
                    return bad(field, why);
                }
            }
        }
    }
    if m.graph == GraphKind::Cpu {
        if m.cpu.is_none() {
            return bad("cpu", "a \"cpu\" graph needs the `cpu` section".into());
        }
        if m.kv_dtype != DType::Float32 {
            return bad("kv_dtype", "the cpu graph's KV buffers are float32".into());
        }
        if m.layer_types.is_empty() {
            return bad(
                "layer_types",
                "the cpu graph needs the type of every layer".into(),
            );
        }
        if m.layer_types.contains(&LayerType::Sliding) && m.sliding_window.is_none_or(|w| w == 0) {
            return bad("sliding_window", "sliding layers need a window > 0".into());
        }
    }
    // Divided by when splitting prompts into images; the exporter never writes 0.
    if m.vision
        .as_ref()
        .is_some_and(|v| v.mm_tokens_per_image == 0)
    {
        return bad(
            "vision.mm_tokens_per_image",
            "is 0; expected a positive number".into(),
        );
    }
    Ok(())
}

/// `eos_token_id` of `<dir>/generation_config.json` (an integer or a list), empty when the file or field is absent.
pub fn generation_config_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join(files::GENERATION_CONFIG_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_file(&path, format!("not valid JSON: {e}")))?;
    parse_token_ids(value.get("eos_token_id"), &path, "eos_token_id")
}

fn parse_token_ids(v: Option<&serde_json::Value>, path: &Path, field: &str) -> Result<Vec<u32>> {
    let as_id = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid_file(
                    path,
                    format!("field `{field}`: expected token ids, got {v}"),
                )
            })
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(other) => Ok(vec![as_id(other)?]),
    }
}

/// The stop tokens: the manifest's `eos_token_ids` united with generation_config.json's `eos_token_id`, in order,
/// without duplicates.
pub fn stop_token_ids(dir: &Path, manifest: &Manifest) -> Result<Vec<u32>> {
    let mut ids = manifest.eos_token_ids.clone();
    for id in generation_config_eos(dir)? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Path of the decoder graph.
pub fn decoder_path(dir: &Path, manifest: &Manifest) -> PathBuf {
    dir.join(&manifest.decoder)
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
