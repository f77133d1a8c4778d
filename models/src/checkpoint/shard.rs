//! One memory-mapped safetensors file and its validated header.
//!
//! Format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`), then the
//! data section; offsets are relative to the start of the data section.
//!
//! We parse the header ourselves (rather than through `safetensors::SafeTensors`) so that every problem can be
//! reported with the file path and the tensor it concerns; the `safetensors` crate is only used for its table of
//! dtype bit sizes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Deserialize;
use serde_json::Value;

use super::DType;
use crate::error::CheckpointError;

/// Headers above this size are refused (the same limit as the `safetensors` crate).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The most tensors one file may list (Gemma 3 27B has about 1,250 across all its shards).
const MAX_TENSORS: usize = 100_000;

/// A tensor's dtype as stored: one we convert, or another valid safetensors dtype (kept by name so that a
/// checkpoint with, say, an I64 buffer still opens, and only asking for that tensor fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoredDType {
    Supported(DType),
    Other(String),
}

/// Where one tensor lives inside its file.
#[derive(Debug, Clone)]
pub(super) struct StoredTensor {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    /// Byte range in the whole file (already shifted past the header).
    pub begin: usize,
    pub end: usize,
    /// Added to every element on read ([`super::ReadAdjust::offset`]); 0 for safetensors.
    pub offset: f32,
}

/// An opened safetensors file.
pub(super) struct Shard {
    pub path: PathBuf,
    pub mmap: Mmap,
    pub tensors: BTreeMap<String, StoredTensor>,
    /// The open file and its size and modification time when mapped: [`Shard::check_unchanged`].
    file: File,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// A header entry as written in the JSON.
#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl Shard {
    /// Maps `path` and validates its header against the file size.
    pub(super) fn open(path: &Path) -> Result<Shard, CheckpointError> {
        let io_err = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let header_err = |detail: String| CheckpointError::Header {
            path: path.to_path_buf(),
            detail,
        };

        // A FIFO or device is refused before anything is read from it (opening never blocks).
        let file = crate::files::open_regular(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let file_len = meta.len();
        if file_len < 8 {
            return Err(header_err(format!(
                "file is {file_len} bytes, too short for the 8-byte header length"
            )));
        }
        // SAFETY: the mapping is read-only. Another process truncating the file while we hold it makes reads of the
        // lost pages fault (SIGBUS). We keep the mmap (tensors stream from it without copies, and pages are dropped
        // after use) and guard it instead: every tensor access first checks that the file still has the size and
        // modification time it had here ([`Shard::check_unchanged`]), and gemma-export turns a SIGBUS that still
        // slips between check and read into a clean error (`gemma_exporter::output`).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;

        let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(header_err(format!(
                "header length is {header_len} bytes (limit {MAX_HEADER_BYTES}); not a safetensors file?"
            )));
        }
        if 8 + header_len > file_len {
            return Err(header_err(format!(
                "header length is {header_len} bytes, but the file has only {} bytes after the length field",
                file_len - 8
            )));
        }
        let data_start = 8 + header_len as usize;
        let data_len = mmap.len() - data_start;

        let UniqueEntries(header) = serde_json::from_slice(&mmap[8..data_start])
            .map_err(|e| header_err(format!("header is not a JSON object: {e}")))?;

        let mut tensors = BTreeMap::new();
        let mut data_needed = 0usize;
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry = parse_entry(path, &name, value)?;
            data_needed = data_needed.max(entry.end);
            tensors.insert(name, entry);
        }
        if data_needed > data_len {
            return Err(CheckpointError::Truncated {
                path: path.to_path_buf(),
                expected: data_needed as u64,
                actual: data_len as u64,
            });
        }
        check_overlaps(path, &tensors)?;

        // Offsets become absolute file offsets from here on.
        for t in tensors.values_mut() {
            t.begin += data_start;
            t.end += data_start;
        }
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            tensors,
            file,
            len: file_len,
            modified: meta.modified().ok(),
        })
    }

    /// A shard over a file mapped elsewhere (GGUF): its size and modification time are taken now, for
    /// [`check_unchanged`](Self::check_unchanged).
    pub(super) fn from_mapped(
        path: PathBuf,
        file: File,
        mmap: Mmap,
        tensors: BTreeMap<String, StoredTensor>,
    ) -> Result<Shard, CheckpointError> {
        let meta = file.metadata().map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Shard {
            path,
            mmap,
            tensors,
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// Fails if the file's size or modification time changed since it was mapped: it is being rewritten or
    /// truncated, and reading the mapping could fault or give mixed data.
    pub(super) fn check_unchanged(&self) -> Result<(), CheckpointError> {
        let meta = self.file.metadata().map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })?;
        if meta.len() != self.len || meta.modified().ok() != self.modified {
            return Err(CheckpointError::ChangedWhileReading {
                path: self.path.clone(),
                was: self.len,
                now: meta.len(),
            });
        }
        Ok(())
    }
}

/// The header's entries in file order. Refuses a name given twice (JSON parsers keep the last one silently, so
/// two readers could disagree on the weights) and more than [`MAX_TENSORS`] entries.
struct UniqueEntries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for UniqueEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueEntries, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut entries = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if !seen.insert(name.clone()) {
                        return Err(serde::de::Error::custom(format!("it names {name:?} twice")));
                    }
                    if entries.len() == MAX_TENSORS {
                        return Err(serde::de::Error::custom(format!(
                            "it lists more than {MAX_TENSORS} tensors"
                        )));
                    }
                    entries.push((name, value));
                }
                Ok(UniqueEntries(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Validates one header entry: a known dtype, and offsets whose span matches shape × dtype size.
/// The returned offsets are still relative to the data section.
fn parse_entry(path: &Path, name: &str, value: Value) -> Result<StoredTensor, CheckpointError> {
    let bad = |detail: String| CheckpointError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        detail,
    };

    let entry: HeaderEntry =
        serde_json::from_value(value).map_err(|e| bad(format!("invalid header entry: {e}")))?;
    let (begin, end) = entry.data_offsets;
    if end < begin {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        )));
    }

    let (dtype, bits) = match DType::from_safetensors_name(&entry.dtype) {
        Some(d) => (StoredDType::Supported(d), d.size() * 8),
        None => {
            // Any other valid safetensors dtype is accepted here and refused only when the tensor is read.
            let known: Option<safetensors::Dtype> =
                serde_json::from_value(Value::String(entry.dtype.clone())).ok();
            match known {
                Some(d) => (StoredDType::Other(entry.dtype.clone()), d.bitsize()),
                None => return Err(bad(format!("unknown dtype {:?}", entry.dtype))),
            }
        }
    };

    let numel = entry
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let needed_bits = numel.and_then(|n| n.checked_mul(bits));
    let Some(needed_bits) = needed_bits.filter(|b| b % 8 == 0) else {
        return Err(bad(format!(
            "shape {:?} of dtype {} does not fill a whole number of bytes",
            entry.shape, entry.dtype
        )));
    };
    let needed = needed_bits / 8;
    if end - begin != needed {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] span {} bytes, but shape {:?} of dtype {} needs {needed}",
            end - begin,
            entry.shape,
            entry.dtype
        )));
    }
    Ok(StoredTensor {
        dtype,
        shape: entry.shape,
        begin,
        end,
        offset: 0.0,
    })
}

/// Refuses tensors whose byte ranges overlap (empty tensors are ignored).
fn check_overlaps(
    path: &Path,
    tensors: &BTreeMap<String, StoredTensor>,
) -> Result<(), CheckpointError> {
    let mut ranges: Vec<(&str, usize, usize)> = tensors
        .iter()
        .filter(|(_, t)| t.end > t.begin)
        .map(|(n, t)| (n.as_str(), t.begin, t.end))
        .collect();
    ranges.sort_by_key(|&(_, begin, end)| (begin, end));
    for pair in ranges.windows(2) {
        let ((prev, pb, pe), (cur, cb, ce)) = (pair[0], pair[1]);
        if cb < pe {
            return Err(CheckpointError::BadTensor {
                path: path.to_path_buf(),
                tensor: cur.to_string(),
                detail: format!(
                    "data_offsets [{cb}, {ce}] overlap tensor {prev:?} at [{pb}, {pe}]"
                ),
            });
        }
    }
    Ok(())
}
