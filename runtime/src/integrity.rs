//! Checks that an export folder is what its manifest says, before anything runs (issue 15: no silent wrong answer):
//!
//! - every file name in `gemma-onnx.json` stays inside the folder: relative, no `..`, no symlink leading out;
//! - every file fingerprinted in `files` (size + sampled CRC-32, see [`crate::fingerprint`]) still matches, so a
//!   `model.onnx_data` of random bytes, or a `model.onnx` from another export, is refused; exports made before
//!   fingerprints existed have no `files` and load unchecked;
//! - the model sizes agree with the folder's `config.json` and with the graph's own input and output shapes
//!   ([`check_graph_shapes`]), so a tampered `hidden_size` or `vocab_size` is refused, naming the key.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ort::session::Session;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// One entry of the manifest's `files`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct FileFingerprint {
    pub size: u64,
    pub sampled_crc32: String,
}

/// The manifest keys that name files, with their values (`vision.encoder` for nested ones).
fn file_keys(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(d) = value.get("decoder").and_then(Value::as_str) {
        out.push(("decoder".to_string(), d.to_string()));
    }
    if let Some(v) = value.get("vision") {
        for key in [
            "encoder",
            "encoder_data",
            "embed_tokens",
            "decoder_with_embeds",
        ] {
            if let Some(s) = v.get(key).and_then(Value::as_str) {
                out.push((format!("vision.{key}"), s.to_string()));
            }
        }
        if let Some(s) = v.pointer("/preprocess/file").and_then(Value::as_str) {
            out.push(("vision.preprocess.file".to_string(), s.to_string()));
        }
    }
    if let Some(files) = value.get("files").and_then(Value::as_object) {
        out.extend(files.keys().map(|k| (format!("files.{k}"), k.clone())));
    }
    out
}

/// `dir/name`, refused (naming `key`) unless `name` is a plain relative path that stays inside `dir`, symlinks
/// resolved.
pub fn inside(dir: &Path, manifest_path: &Path, key: &str, name: &str) -> Result<PathBuf> {
    let bad = |why: &str| {
        Err(Error::invalid_file(
            manifest_path,
            format!("field `{key}`: {name:?} {why}; file names must stay inside the export folder"),
        ))
    };
    let rel = Path::new(name);
    if name.is_empty() {
        return bad("is empty");
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return bad(if rel.is_absolute() {
            "is an absolute path"
        } else {
            "leaves the folder (`..`)"
        });
    }
    let path = dir.join(rel);
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&root) {
            return bad(&format!(
                "is a symlink to {}, outside the folder",
                real.display()
            ));
        }
    }
    Ok(path)
}

/// Runs every folder check on the manifest `value` of `dir` (see the module docs).
pub fn check_folder(dir: &Path, manifest_path: &Path, value: &Value, m: &Manifest) -> Result<()> {
    for (key, name) in file_keys(value) {
        inside(dir, manifest_path, &key, &name)?;
    }
    if !m.files.is_empty() {
        check_fingerprints(dir, manifest_path, value, &m.files)?;
    }
    check_config(dir, m)
}

fn check_fingerprints(
    dir: &Path,
    manifest_path: &Path,
    value: &Value,
    files: &BTreeMap<String, FileFingerprint>,
) -> Result<()> {
    // Every graph the manifest names must be fingerprinted, or pointing `decoder` at another file would escape
    // the check.
    for (key, name) in file_keys(value) {
        if !key.starts_with("files.") && !files.contains_key(&name) {
            return Err(Error::invalid_file(
                manifest_path,
                format!("field `{key}`: {name} has no entry in `files` (the fingerprints of the export)"),
            ));
        }
    }
    for (name, want) in files {
        let path = dir.join(name);
        let (size, crc) =
            crate::fingerprint::fingerprint(&path).map_err(|e| Error::io(&path, e))?;
        if size != want.size || crc != want.sampled_crc32 {
            let what = if size != want.size {
                format!("{size} bytes where the export wrote {}", want.size)
            } else {
                format!(
                    "sampled CRC-32 {crc} where the export wrote {}",
                    want.sampled_crc32
                )
            };
            return Err(Error::invalid_file(
                &path,
                format!(
                    "does not match the fingerprint in gemma-onnx.json ({what}): the file was changed, truncated \
                     or copied from another export; re-export the model"
                ),
            ));
        }
    }
    Ok(())
}

/// The manifest's sizes against the folder's `config.json` (the checkpoint's, copied by the exporter), when
/// present: `text_config` first (Gemma3ForConditionalGeneration), then the top level.
fn check_config(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let Ok(cfg) = serde_json::from_str::<Value>(&text) else {
        return Ok(());
    };
    let get = |key: &str| {
        cfg.get("text_config")
            .and_then(|t| t.get(key))
            .or_else(|| cfg.get(key))
            .and_then(Value::as_u64)
    };
    for (field, key, have) in [
        ("hidden_size", "hidden_size", m.hidden_size),
        ("num_layers", "num_hidden_layers", m.num_layers),
        (
            "num_attention_heads",
            "num_attention_heads",
            m.num_attention_heads,
        ),
        ("num_kv_heads", "num_key_value_heads", m.num_kv_heads),
        ("head_dim", "head_dim", m.head_dim),
    ] {
        if let Some(want) = get(key) {
            if want != have as u64 {
                return Err(Error::invalid_file(
                    &dir.join(crate::manifest::MANIFEST_FILE),
                    format!(
                        "field `{field}` is {have} but config.json's `{key}` is {want}; the manifest was edited \
                         or belongs to another export"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The manifest's sizes against the shapes ONNX Runtime reports for `session`'s inputs and outputs: the KV inputs
/// `[batch, num_kv_heads, seq, head_dim]`, `logits` `[batch, seq, vocab_size]`, and `inputs_embeds`
/// `[batch, seq, hidden_size]` where the graph has it. Symbolic dimensions are not compared.
pub fn check_graph_shapes(session: &Session, m: &Manifest, graph: &Path) -> Result<()> {
    let manifest_path = graph
        .parent()
        .unwrap_or(Path::new("."))
        .join(crate::manifest::MANIFEST_FILE);
    // The exporter stamps its graphs with the export's precision and family: a graph from another export fails
    // here even in exports without fingerprints.
    if let Ok(meta) = session.metadata() {
        for (field, key, want) in [
            ("precision", "gemma_onnx.precision", &m.precision),
            ("family", "gemma_onnx.family", &m.family),
        ] {
            if let Some(have) = meta.custom(key) {
                if &have != want {
                    return Err(Error::invalid_file(
                        &manifest_path,
                        format!(
                            "field `{field}` is {want:?} but {} was exported as {have:?}; the graph comes from                              another export",
                            graph.display()
                        ),
                    ));
                }
            }
        }
    }
    let dim = |shape: Option<&ort::value::Shape>, i: usize| {
        shape.and_then(|s| s.get(i).copied()).filter(|&d| d > 0)
    };
    let mut checks: Vec<(&str, String, usize, Option<i64>)> = Vec::new();
    for input in session.inputs() {
        let shape = input.dtype().tensor_shape();
        let name = input.name();
        if name.starts_with("past_key_values.") {
            checks.push((
                "num_kv_heads",
                name.to_string(),
                m.num_kv_heads,
                dim(shape, 1),
            ));
            checks.push(("head_dim", name.to_string(), m.head_dim, dim(shape, 3)));
        } else if name == "inputs_embeds" {
            checks.push((
                "hidden_size",
                name.to_string(),
                m.hidden_size,
                dim(shape, 2),
            ));
        }
    }
    for output in session.outputs() {
        let shape = output.dtype().tensor_shape();
        match output.name() {
            "logits" => checks.push(("vocab_size", "logits".into(), m.vocab_size, dim(shape, 2))),
            "inputs_embeds" => checks.push((
                "hidden_size",
                "inputs_embeds".into(),
                m.hidden_size,
                dim(shape, 2),
            )),
            _ => {}
        }
    }
    for (field, tensor, want, have) in checks {
        if let Some(have) = have {
            if have as u64 != want as u64 {
                return Err(Error::invalid_file(
                    &manifest_path,
                    format!(
                        "field `{field}` is {want} but {}'s `{tensor}` has {have}; the manifest does not describe \
                         this graph",
                        graph.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}
