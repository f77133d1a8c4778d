//! Entry points for the fuzz targets of `tests/fuzz` and for their stable-Rust regression test
//! (`tests/tests/fuzz_corpus.rs`), which runs every committed seed corpus file through the same functions. The
//! `fuzzing` feature.
//!
//! Each function takes the raw bytes of one untrusted input, runs it through the reader gemma-export uses, and
//! returns a typed error or `Ok`: it must never panic, hang or allocate without bound, whatever the bytes. Inputs
//! that the product reads from files are written to a private scratch folder first, so the same code paths
//! (opening, mapping, validating) run as on a real checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{CheckpointError, ConfigError};
use crate::gguf::{GgufError, VocabError};

/// Tensors up to this many elements are also converted to f32 (the exporter's read path); larger ones are only
/// validated, so one input cannot make a run slow.
const MAX_READ_ELEMENTS: usize = 1 << 16;

/// What an entry point refused: one of this crate's typed errors.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Vocab(#[from] VocabError),
    #[error("the fuzzing scratch folder: {0}")]
    Scratch(#[from] std::io::Error),
}

/// A fresh folder under the system temporary folder, removed on drop (one per call: tests call in parallel).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, std::io::Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gemma-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, std::io::Error> {
        let path = self.0.join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads every listed tensor that is small enough, as the exporter would.
fn read_tensors(checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    for name in checkpoint.names() {
        let view = match checkpoint.tensor(name) {
            Ok(view) => view,
            // A valid dtype we do not convert is refused only when read: a typed error, go on.
            Err(CheckpointError::UnsupportedDtype { .. }) => continue,
            Err(e) => return Err(e),
        };
        if view.numel() <= MAX_READ_ELEMENTS {
            let _ = view.to_f32_vec();
        }
    }
    Ok(())
}

/// One `model.safetensors` file: its header (length, JSON, entries, offsets), then a read of its tensors.
pub fn safetensors_file(bytes: &[u8]) -> Result<(), Refused> {
    let scratch = Scratch::new()?;
    let path = scratch.write("model.safetensors", bytes)?;
    let checkpoint = Checkpoint::open_file(&path)?;
    read_tensors(&checkpoint)?;
    Ok(())
}

/// A `model.safetensors.index.json` beside two small valid shards (`model-00001-of-00002.safetensors` holds `a`
/// and `b`, `model-00002-of-00002.safetensors` holds `c`), opened as a checkpoint folder.
pub fn safetensors_index(bytes: &[u8]) -> Result<(), Refused> {
    let scratch = Scratch::new()?;
    scratch.write(
        "model-00001-of-00002.safetensors",
        &shard(&[("a", "F32", &[2]), ("b", "BF16", &[2, 2])]),
    )?;
    scratch.write(
        "model-00002-of-00002.safetensors",
        &shard(&[("c", "F16", &[3])]),
    )?;
    scratch.write("model.safetensors.index.json", bytes)?;
    let checkpoint = Checkpoint::open(&scratch.0)?;
    read_tensors(&checkpoint)?;
    Ok(())
}

/// A valid safetensors file holding zero-filled tensors `(name, dtype, shape)`, laid out in order.
fn shard(tensors: &[(&str, &str, &[usize])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape) in tensors {
        let size = if *dtype == "F32" { 4 } else { 2 };
        let len = shape.iter().product::<usize>() * size;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let json = serde_json::Value::Object(header).to_string();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.resize(out.len() + offset, 0);
    out
}

/// A `config.json` (not UTF-8 is read lossily): parsing, the id and window checks, and every derived size the
/// exporter computes from it.
pub fn config_json(bytes: &[u8]) -> Result<(), Refused> {
    let text = String::from_utf8_lossy(bytes);
    let origin = Path::new("config.json");
    let config = ModelConfig::from_json_str(&text, origin)?;
    config.check_ids_and_window(origin)?;
    let text_config = &config.text;
    let _ = (text_config.num_kv_groups(), text_config.attention_scale());
    for layer_type in &text_config.layer_types {
        let _ = text_config.rope(*layer_type);
    }
    if let Some(v) = &config.vision_config {
        let _ = (v.head_dim(), v.num_patches(), v.tokens_per_side());
        let _ = v.pool_kernel();
    }
    Ok(())
}

/// A GGUF file opened as a model (container, config from metadata, tensor names, vocabulary), its tokenizer files
/// rebuilt, and its small tensors dequantized.
pub fn gguf(bytes: &[u8]) -> Result<(), Refused> {
    let scratch = Scratch::new()?;
    let path = scratch.write("model.gguf", bytes)?;
    let model = crate::gguf::open(&path)?;
    read_tensors(&model.checkpoint)?;
    let _ = crate::gguf::generation_config_json(&model.vocab);
    crate::gguf::tokenizer_files(&model.vocab)?;
    Ok(())
}
