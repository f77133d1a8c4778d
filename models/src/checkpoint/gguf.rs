//! A [`Checkpoint`] over one GGUF file: the tensors under their Hugging Face names and shapes, Gemma's norm gains
//! read with an offset of −1 (llama.cpp's converter stores them as `1 + w`; see [`crate::gguf::names`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::shard::{Shard, StoredDType, StoredTensor};
use super::Checkpoint;
use crate::gguf::{self, GgufError, GgufFile};

impl Checkpoint {
    /// Opens a GGUF file's weights (architectures gemma, gemma2 and gemma3). [`dir`](Self::dir) and
    /// [`files`](Self::files) are then the file itself. Use [`gguf::open`] for the config and vocabulary too.
    pub fn open_gguf(path: &Path) -> Result<Checkpoint, GgufError> {
        Checkpoint::from_gguf(GgufFile::open(path)?)
    }

    /// The weights of an opened GGUF file: every tensor renamed (unknown names are refused), its shape reversed to
    /// Hugging Face's order (the bytes already are row-major in that order), norm gains offset by −1.
    pub fn from_gguf(file: GgufFile) -> Result<Checkpoint, GgufError> {
        let block_count = file
            .get(&format!("{}.block_count", file.arch.name()))
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize;
        let mut tensors = BTreeMap::new();
        for t in &file.tensors {
            let mapped = gguf::names::to_hf(file.arch, &t.name, block_count).map_err(|why| {
                GgufError::UnknownTensor {
                    path: file.path.clone(),
                    tensor: t.name.clone(),
                    arch: file.arch.name().to_string(),
                    why,
                }
            })?;
            let stored = StoredTensor {
                dtype: StoredDType::Supported(t.dtype),
                shape: t.dims.iter().rev().copied().collect(),
                begin: t.begin,
                end: t.end,
                offset: if mapped.norm { -1.0 } else { 0.0 },
            };
            tensors.insert(mapped.name, stored);
        }
        let names = tensors.keys().map(|n| (n.clone(), 0)).collect();
        Ok(Checkpoint {
            dir: file.path.clone(),
            shards: vec![
                Shard::from_mapped(file.path.clone(), file.file, file.mmap, tensors).map_err(
                    |e| GgufError::Io {
                        path: file.path,
                        source: std::io::Error::other(e.to_string()),
                    },
                )?,
            ],
            tensors: names,
            low_rank: BTreeMap::new(),
            stored_names: BTreeMap::new(),
            selections: BTreeMap::new(),
        })
    }
}
