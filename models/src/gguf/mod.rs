//! GGUF files (llama.cpp / Ollama) as a model source: the container, the config, the weights and the vocabulary.
//!
//! * [`container`]: the GGUF v2/v3 header, metadata of every value type, tensor infos and data section, every
//!   length checked against the file before anything is allocated.
//! * [`names`]: llama.cpp's tensor names (`blk.N.attn_q.weight`, …) → Hugging Face names, per architecture, and
//!   which tensors llama.cpp's converter stored as `1 + w` (Gemma's norm gains).
//! * [`config`]: the `{arch}.*` metadata → a transformers-style `config.json`, parsed by the one
//!   [`ModelConfig`] parser.
//! * [`vocab`]: the `tokenizer.ggml.*` metadata ([`GgufVocab`]) and the Hugging Face tokenizer files rebuilt from it
//!   ([`tokenizer_files`]); [`tokenizer`] explains how a SentencePiece vocabulary becomes transformers' BPE
//!   `tokenizer.json`.
//!
//! Only the architectures `gemma`, `gemma2` and `gemma3` are accepted. [`open`] reads all of it at once; the weights
//! come out as a [`Checkpoint`] whose reads apply the norm offset, so the exporter streams them like safetensors.
//! See `docs/gguf.md` for the mapping tables.

pub mod config;
pub mod container;
pub mod names;
pub mod tokenizer;
pub mod tokenizer_files;
pub mod vocab;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::ConfigError;
pub use container::{Array, TensorInfo, Value};
pub use tokenizer_files::{tokenizer_files, TokenizerFiles};
pub use vocab::{GgufVocab, VocabError};

/// Something is wrong with a GGUF file. Every message names the file, and the tensor or metadata key concerned.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file ends before something its header announces.
    #[error("{}: truncated GGUF file: {what} needs {expected} bytes, the file has {actual}", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{}: not a GGUF file: it starts with {found:02x?}, expected the magic \"GGUF\" (47 47 55 46)", path.display())]
    BadMagic { path: PathBuf, found: Vec<u8> },

    #[error("{}: unsupported GGUF version {version} (supported: 2 and 3, little-endian; version 1 files predate \
             August 2023 and need re-converting)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// A structural problem: a count or length over our caps, a duplicate key, an unknown value type.
    #[error("{}: invalid GGUF file: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },

    #[error("{}: unsupported architecture {arch:?} (general.architecture); supported: gemma, gemma2, gemma3", path.display())]
    UnsupportedArch { path: PathBuf, arch: String },

    #[error("{}: tensor {tensor} is {type_name} (ggml type {id}); supported: {}", path.display(), container::supported_types())]
    UnsupportedQuant {
        path: PathBuf,
        tensor: String,
        type_name: String,
        id: u32,
    },

    #[error("{}: tensor {tensor}: {detail}", path.display())]
    BadTensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    /// A tensor name that is not part of the architecture's text decoder.
    #[error("{}: unknown tensor {tensor} for architecture {arch}: {why}", path.display())]
    UnknownTensor {
        path: PathBuf,
        tensor: String,
        arch: String,
        why: String,
    },

    /// A metadata key is missing, of the wrong type, or out of range.
    #[error("{}: metadata key {key}: {detail}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        detail: String,
    },

    /// The config built from the metadata does not describe a model we export.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The Gemma generations GGUF files name in `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gemma,
    Gemma2,
    Gemma3,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "gemma" => Some(Arch::Gemma),
            "gemma2" => Some(Arch::Gemma2),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }
}

/// An opened, validated GGUF file: mapped, header parsed, architecture checked, every tensor named and typed.
pub struct GgufFile {
    pub path: PathBuf,
    /// The open file (its size and modification time guard the mapping: see `Checkpoint`).
    pub file: File,
    pub mmap: Mmap,
    pub version: u32,
    pub arch: Arch,
    pub metadata: std::collections::BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("arch", &self.arch)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<(File, Mmap), GgufError> {
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A FIFO or device is refused before anything is read from it (opening never blocks).
    let file = crate::files::open_regular(path).map_err(io)?;
    // SAFETY: read-only mapping; as for safetensors shards, every tensor access first checks that the file kept its
    // size and modification time (`Checkpoint`), and gemma-export turns a SIGBUS that still slips through into a
    // clean error.
    let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok((file, mmap))
}

/// `general.architecture`, checked.
fn arch_of(
    path: &Path,
    metadata: &std::collections::BTreeMap<String, Value>,
) -> Result<Arch, GgufError> {
    const KEY: &str = "general.architecture";
    let name = match metadata.get(KEY) {
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(GgufError::Metadata {
                path: path.to_path_buf(),
                key: KEY.into(),
                detail: format!("expected a string, found {}", v.type_name()),
            })
        }
        None => {
            return Err(GgufError::Metadata {
                path: path.to_path_buf(),
                key: KEY.into(),
                detail: "missing (every llama.cpp model file has it)".into(),
            })
        }
    };
    Arch::from_name(name).ok_or_else(|| GgufError::UnsupportedArch {
        path: path.to_path_buf(),
        arch: name.clone(),
    })
}

impl GgufFile {
    /// Maps and validates `path`: header, metadata, architecture, and every tensor's type and byte range.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let (file, mmap) = map_file(path)?;
        let parsed = container::parse(path, &mmap, true)?;
        let arch = arch_of(path, &parsed.metadata)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            file,
            version: parsed.version,
            arch,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Everything an export needs from one GGUF file.
#[derive(Debug)]
pub struct GgufModel {
    /// The transformers-style config.json built from the metadata (what the export writes).
    pub config_json: serde_json::Value,
    /// `config_json` parsed.
    pub config: ModelConfig,
    /// The weights under their Hugging Face names, norm offsets applied on read.
    pub checkpoint: Checkpoint,
    pub vocab: GgufVocab,
}

/// Opens a GGUF file as a model: config, weights and vocabulary.
pub fn open(path: &Path) -> Result<GgufModel, GgufError> {
    let file = GgufFile::open(path)?;
    let config_json = config::config_json(&file)?;
    let text = serde_json::to_string(&config_json).expect("config serializes");
    let config = ModelConfig::from_json_str(&text, path)?;
    let vocab = vocab::from_metadata(path, &file.metadata)?;
    let checkpoint = Checkpoint::from_gguf(file)?;
    Ok(GgufModel {
        config_json,
        config,
        checkpoint,
        vocab,
    })
}

/// The vocabulary of a GGUF file, reading only its metadata (not the tensor infos).
pub fn read_vocab(path: &Path) -> Result<GgufVocab, GgufError> {
    let (_file, mmap) = map_file(path)?;
    let parsed = container::parse(path, &mmap, false)?;
    vocab::from_metadata(path, &parsed.metadata)
}

/// `generation_config.json` from the special-token ids: `bos_token_id` and `pad_token_id` (class defaults 2 and 0
/// when absent), and `eos_token_id` = the EOS id (default 1) plus `<end_of_turn>` (when the vocabulary has it) and
/// `tokenizer.ggml.eot_token_id` (when set), as Google's instruction-tuned configs list both.
pub fn generation_config_json(vocab: &GgufVocab) -> serde_json::Value {
    let mut eos = vec![vocab.eos_id.unwrap_or(1)];
    let end_of_turn = vocab
        .tokens
        .iter()
        .position(|t| t == "<end_of_turn>")
        .and_then(|i| u32::try_from(i).ok());
    for id in [end_of_turn, vocab.eot_id].into_iter().flatten() {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    serde_json::json!({
        "bos_token_id": vocab.bos_id.unwrap_or(2),
        "eos_token_id": if eos.len() == 1 { serde_json::json!(eos[0]) } else { serde_json::json!(eos) },
        "pad_token_id": vocab.pad_id.unwrap_or(0),
    })
}

/// Whether `path` is a file that starts with the GGUF magic.
pub fn has_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == container::MAGIC
}

#[cfg(test)]
mod tests;
