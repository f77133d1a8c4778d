//! Checks that an export folder is what its manifest says, before anything runs (issue 15: no silent wrong answer):
//!
//! - every file name in `gemma-onnx.json` stays inside the folder: relative, no `..`, no symlink leading out;
//! - every file fingerprinted in `files` (size + sampled CRC-32, see [`crate::fingerprint`]) still matches, so a
//!   `model.onnx_data` of random bytes, or a `model.onnx` from another export, is refused; exports made before
//!   fingerprints existed have no `files` and load unchecked;
//! - the model sizes agree with the folder's `config.json` and with the graph's own input and output shapes
//!   ([`check_graph_shapes`]), so a tampered `hidden_size` or `vocab_size` is refused, naming the key.

use std::path::{Component, Path, PathBuf};

use gemma_models::contract::{files::MANIFEST_FILE, io, FileFingerprint};
use ort::session::Session;
use serde_json::Value;

use crate::error::{Error, Result};
use gemma_models::contract::Manifest;

/// The manifest keys that name files, with their values (`vision.encoder` for nested ones).
fn file_keys(m: &Manifest) -> Vec<(String, &str)> {
    let mut out = vec![("decoder".to_string(), m.decoder.as_str())];
    if let Some(v) = &m.vision {
        for (key, name) in [
            ("encoder", &v.encoder),
            ("encoder_data", &v.encoder_data),
            ("embed_tokens", &v.embed_tokens),
            ("decoder_with_embeds", &v.decoder_with_embeds),
        ] {
            out.push((format!("vision.{key}"), name.as_str()));
        }
        if let Some(p) = &v.preprocess {
            out.push(("vision.preprocess.file".to_string(), p.file.as_str()));
        }
    }
    out.extend(m.files.keys().map(|k| (format!("files.{k}"), k.as_str())));
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

/// Runs every folder check on the manifest `m` of `dir` (see the module docs).
pub fn check_folder(dir: &Path, manifest_path: &Path, m: &Manifest) -> Result<()> {
    for (key, name) in file_keys(m) {
        inside(dir, manifest_path, &key, name)?;
    }
    if !m.files.is_empty() {
        check_fingerprints(dir, manifest_path, m)?;
    }
    check_config(dir, m)
}

fn check_fingerprints(dir: &Path, manifest_path: &Path, m: &Manifest) -> Result<()> {
    let files = &m.files;
    // Every graph the manifest names must be fingerprinted, or pointing `decoder` at another file would escape
    // the check.
    for (key, name) in file_keys(m) {
        if !key.starts_with("files.") && !files.contains_key(name) {
            return Err(Error::invalid_file(
                manifest_path,
                format!("field `{key}`: {name} has no entry in `files` (the fingerprints of the export)"),
            ));
        }
    }
    for (name, want) in files {
        let path = dir.join(name);
        let have = FileFingerprint::of(&path).map_err(|e| Error::io(&path, e))?;
        if have != *want {
            let what = if have.size != want.size {
                format!("{} bytes where the export wrote {}", have.size, want.size)
            } else {
                format!(
                    "sampled CRC-32 {} where the export wrote {}",
                    have.sampled_crc32, want.sampled_crc32
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
    let path = dir.join(gemma_models::contract::files::CONFIG_FILE);
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
                    &dir.join(MANIFEST_FILE),
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
/// and outputs `[batch, num_kv_heads, seq, head_dim]`, `logits` `[batch, seq, vocab_size]`, and `inputs_embeds`
/// `[batch, seq, hidden_size]` where the graph has it. Symbolic dimensions are not compared.
pub fn check_graph_shapes(session: &Session, m: &Manifest, graph: &Path) -> Result<()> {
    let manifest_path = graph.parent().unwrap_or(Path::new(".")).join(MANIFEST_FILE);
    // The exporter stamps its graphs with the export's precision and family: a graph from another export fails
    // here even in exports without fingerprints.
    if let Ok(meta) = session.metadata() {
        for (field, key, want) in [
            ("precision", io::META_PRECISION, m.precision.name()),
            (
                "family",
                io::META_FAMILY,
                gemma_models::contract::family_name(m.family),
            ),
        ] {
            if let Some(have) = meta.custom(key) {
                if have != want {
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
    // A KV tensor is `[batch, num_kv_heads, seq, head_dim]`.
    let kv = |checks: &mut Vec<_>, name: &str, shape: Option<&ort::value::Shape>| {
        checks.push((
            "num_kv_heads",
            name.to_string(),
            m.num_kv_heads,
            dim(shape, 1),
        ));
        checks.push(("head_dim", name.to_string(), m.head_dim, dim(shape, 3)));
    };
    for input in session.inputs() {
        let shape = input.dtype().tensor_shape();
        let name = input.name();
        if name.starts_with(io::PAST_PREFIX) {
            kv(&mut checks, name, shape);
        } else if name == io::INPUTS_EMBEDS {
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
        let name = output.name();
        if name.starts_with(io::PRESENT_PREFIX) {
            // Where the KV inputs leave these axes open (Gemma 2's portable graph), the outputs still fix them.
            kv(&mut checks, name, shape);
        }
        match name {
            io::LOGITS => {
                checks.push(("vocab_size", io::LOGITS.into(), m.vocab_size, dim(shape, 2)))
            }
            io::INPUTS_EMBEDS => checks.push((
                "hidden_size",
                io::INPUTS_EMBEDS.into(),
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
