//! `gemma-export … --triton REPO`: a Triton Inference Server model repository for the export, written after the
//! export folder is in place. Two models:
//!
//! - `REPO/NAME/`: the text decoder under Triton's onnxruntime backend (`config.pbtxt` from [`config::decoder`]),
//!   its KV cache as Triton implicit state. The graph is the portable decoder whatever `--graph` the export used:
//!   the cpu graph's `GroupQueryAttention` attributes need ONNX Runtime ≥ 1.31 (Triton's backend pins 1.27) and
//!   its in-place, window-sized KV buffers are not something implicit state can carry. A cpu-graph export builds
//!   the portable graph too, into the same `model.onnx_data` (weights of the same name and layout are written
//!   once: at fp32/fp16/bf16 the portable graph adds no weight bytes; at int8/int4 it adds its own q/k/v and
//!   gate/up tensors, which the cpu graph stacks). `1/model.onnx` is that graph, reading `model.onnx_data` beside
//!   it, and `1/model.onnx_data` is a hard link to the export's text weights (`onnx/model{suffix}.onnx_data` in a
//!   portable export, `model.onnx_data` in a cpu-graph one).
//! - `REPO/NAME_generate/`: the Python backend running `model.py` (BLS): tokenizer and greedy decode loop over
//!   `NAME`, text or token ids in, text and ids out. Its tokenizer files are hard links to the export's.
//!
//! No large file is copied: the weights and tokenizer files are hard-linked, and only where linking fails (REPO on
//! another file system) is it copied, with a note in the export report saying so. A link is the only way to share
//! the weights without a copy: ONNX Runtime refuses external data reached through `..`, an absolute path or a
//! symbolic link out of the graph's folder. The `onnx` Python package refuses to load a data file with several
//! hard links, so run such tools on the export before `--triton`, or on a copy (docs/deploy.md).

pub mod config;

use crate::ExportError;
use gemma_models::contract::{files, Manifest};
use std::fs;
use std::path::{Path, PathBuf};

/// The generate model's Python source.
pub const MODEL_PY: &str = include_str!("triton/model.py");
/// The version folder of both models.
pub const VERSION: &str = "1";
/// Files of the export the generate model reads (those present are linked).
const TOKENIZER_FILES: &[&str] = &[
    files::TOKENIZER_FILE,
    files::TOKENIZER_CONFIG_FILE,
    files::GENERATION_CONFIG_FILE,
];

/// `--triton REPO [--triton-name NAME]`.
#[derive(Debug, Clone)]
pub struct TritonOptions {
    /// The model repository (created if missing; other models in it are left alone).
    pub repo: PathBuf,
    /// The decoder model's name; the generate model is `NAME_generate`.
    pub name: String,
}

impl TritonOptions {
    /// A repository at `repo` with models named after the export folder `out`.
    pub fn new(repo: impl Into<PathBuf>, out: &Path) -> TritonOptions {
        let stem = out.file_name().and_then(|n| n.to_str()).unwrap_or("gemma");
        TritonOptions {
            repo: repo.into(),
            name: sanitize(stem),
        }
    }

    /// The decoder model's folder.
    pub fn decoder_dir(&self) -> PathBuf {
        self.repo.join(&self.name)
    }

    /// The generate model's name.
    pub fn generate_name(&self) -> String {
        format!("{}_generate", self.name)
    }

    /// The generate model's folder.
    pub fn generate_dir(&self) -> PathBuf {
        self.repo.join(self.generate_name())
    }
}

/// A Triton model name: letters, digits, `_`, `-` and `.` kept, anything else `_`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => c,
            _ => '_',
        })
        .collect();
    match s.trim_matches('.') {
        "" => "gemma".into(),
        t => t.into(),
    }
}

fn refuse(t: &TritonOptions, reason: String) -> ExportError {
    ExportError::Output {
        out: t.repo.clone(),
        reason,
    }
}

/// Refuses, before anything is written, a name Triton cannot take or a model folder that exists (with `force`,
/// only one that is not ours: its `config.pbtxt` does not start with [`config::HEADER`]).
pub fn check(t: &TritonOptions, force: bool) -> Result<(), ExportError> {
    if t.name != sanitize(&t.name) {
        return Err(refuse(
            t,
            format!(
                "Triton model name {:?}: use letters, digits, _, - and .",
                t.name
            ),
        ));
    }
    for dir in [t.decoder_dir(), t.generate_dir()] {
        if fs::symlink_metadata(&dir).is_err() {
            continue;
        }
        if !force {
            return Err(refuse(
                t,
                format!("{} exists; pass --force to replace it", dir.display()),
            ));
        }
        let pbtxt = dir.join("config.pbtxt");
        let ours = fs::read_to_string(&pbtxt).is_ok_and(|s| s.starts_with(config::HEADER));
        if !ours || !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(refuse(
                t,
                format!(
                    "{} exists and was not written by gemma-export; not replacing it",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The decoder Triton runs: the portable graph, its external data named [`files::DECODER_DATA_FILE`] (beside it in
/// the version folder), and where the export keeps that data.
#[derive(Debug, Clone)]
pub struct TritonGraph {
    /// The encoded graph.
    pub graph: Vec<u8>,
    /// Its data file, relative to the export folder.
    pub data: String,
}

/// Writes both models for the finished export folder `out`, the decoder being `graph`. Returns notes for the export
/// report (files copied because linking failed).
pub fn write(
    t: &TritonOptions,
    out: &Path,
    manifest: &Manifest,
    graph: &TritonGraph,
    force: bool,
) -> Result<Vec<String>, ExportError> {
    check(t, force)?;
    let mut notes = Vec::new();

    let dir = t.decoder_dir();
    replace_dir(&dir)?;
    let version = dir.join(VERSION);
    create_dir(&version)?;
    write_file(
        &dir.join("config.pbtxt"),
        config::decoder(&t.name, manifest).as_bytes(),
    )?;
    write_file(&version.join(files::DECODER_FILE), &graph.graph)?;
    link_or_copy(
        &out.join(&graph.data),
        &version.join(files::DECODER_DATA_FILE),
        &mut notes,
    )?;

    let dir = t.generate_dir();
    replace_dir(&dir)?;
    let version = dir.join(VERSION);
    create_dir(&version)?;
    let pbtxt = config::generate(&t.generate_name(), &t.name, &manifest.eos_token_ids);
    write_file(&dir.join("config.pbtxt"), pbtxt.as_bytes())?;
    write_file(&version.join("model.py"), MODEL_PY.as_bytes())?;
    for name in TOKENIZER_FILES {
        let src = out.join(name);
        if src.is_file() {
            link_or_copy(&src, &version.join(name), &mut notes)?;
        }
    }
    Ok(notes)
}

/// Removes a model folder [`check`] allowed to be replaced, so the new one holds only what this export wrote.
fn replace_dir(dir: &Path) -> Result<(), ExportError> {
    if fs::symlink_metadata(dir).is_ok() {
        fs::remove_dir_all(dir).map_err(|e| ExportError::io(dir, e))?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), ExportError> {
    fs::create_dir_all(dir).map_err(|e| ExportError::io(dir, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    fs::write(path, bytes).map_err(|e| ExportError::io(path, e))
}

/// Hard-links `src` as `dst`; copies it when the link fails (another file system, or one without hard links), and
/// says so in `notes`.
fn link_or_copy(src: &Path, dst: &Path, notes: &mut Vec<String>) -> Result<(), ExportError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(link) => {
            let bytes = fs::copy(src, dst).map_err(|e| ExportError::io(dst, e))?;
            notes.push(format!(
                "copied {} to {} ({:.1} MiB): a hard link failed ({link}); put the repository on the export's file system to share the file",
                src.display(),
                dst.display(),
                bytes as f64 / (1024.0 * 1024.0)
            ));
            Ok(())
        }
    }
}
