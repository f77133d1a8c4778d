//! The GGUF container, versions 2 and 3 (little-endian), parsed from a byte slice (the memory-mapped file).
//!
//! Layout (ggml's `docs/gguf.md`): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count, the
//! metadata (`string` key, `u32` value type, value), the tensor infos (`string` name, `u32` n_dims, `n_dims × u64`
//! dims fastest first, `u32` ggml type, `u64` offset), padding to `general.alignment` (default 32), then the data
//! section; tensor offsets are relative to its start. A string is a `u64` length and that many UTF-8 bytes; an
//! array is a `u32` element type, a `u64` count and the elements.
//!
//! Every count and length is checked against the bytes left in the file *before* anything is allocated, so a
//! hostile header cannot make us reserve more memory than a small multiple of the file's own size; counts, string
//! lengths and array nesting are capped as well.

mod reader;
mod types;
mod value;

pub use types::{ggml_type_name, supported_types};
pub use value::{Array, Value};

use std::collections::BTreeMap;
use std::path::Path;

use super::GgufError;
use crate::checkpoint::DType;
use reader::Reader;

/// `GGUF` in file order.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// At most this many tensors (the largest published models have a few thousand).
pub const MAX_TENSORS: u64 = 100_000;
/// At most this many metadata entries.
pub const MAX_METADATA: u64 = 100_000;
/// Longest string value accepted (chat templates are tens of KiB).
pub const MAX_STRING_BYTES: u64 = 16 << 20;
/// Longest key or tensor name accepted (ggml's own limit for names is 64).
pub const MAX_NAME_BYTES: u64 = 4096;
/// ggml tensors have at most 4 dimensions.
pub const MAX_DIMS: u32 = 4;
/// `general.alignment` when absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor info, validated against the file: a type we decode, a whole number of blocks per row, and data
/// inside the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: fastest-varying first (`ne[0]` is the row length).
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// Absolute byte range in the file.
    pub begin: usize,
    pub end: usize,
}

/// What [`parse`] read.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// In file order; empty when parsed with `tensors = false`.
    pub tensors: Vec<TensorInfo>,
}

/// Parses the header of a GGUF file held in `bytes`; with `tensors = false` stops after the metadata (the tensor
/// infos and data are not looked at). `path` is only used in errors.
pub fn parse(path: &Path, bytes: &[u8], tensors: bool) -> Result<Parsed, GgufError> {
    let mut r = Reader {
        path,
        bytes,
        pos: 0,
    };
    if bytes.len() < 4 {
        return Err(r.truncated("the 4-byte magic", 4));
    }
    let magic = r.take(4, "the magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: magic.to_vec(),
        });
    }
    let version = r.u32("the version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 8 + 4 + 4 + 8.
    r.check_count(n_kv, MAX_METADATA, 13, "metadata entries")?;
    r.check_count(n_tensors, MAX_TENSORS, 24, "tensors")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("a metadata key", MAX_NAME_BYTES)?;
        let ty = r.u32(&format!("the type of metadata key {key}"))?;
        let value = r.value(ty, &key, 0)?;
        if metadata.contains_key(&key) {
            return Err(r.invalid(format!("metadata key {key} appears twice")));
        }
        metadata.insert(key, value);
    }
    if !tensors {
        return Ok(Parsed {
            version,
            metadata,
            tensors: Vec::new(),
        });
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(GgufError::Metadata {
                path: path.to_path_buf(),
                key: "general.alignment".into(),
                detail: format!("expected a u32 power of two, found {} {v:?}", v.type_name()),
            })
        }
    };

    // Tensor infos: (name, dims, dtype, offset, bytes).
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&format!("the name of tensor #{i}"), MAX_NAME_BYTES)?;
        let n_dims = r.u32(&format!("the dimension count of tensor {name}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.bad_tensor(
                &name,
                format!("{n_dims} dimensions (ggml tensors have 1 to {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64(&format!("the dimensions of tensor {name}"))?;
            let d = usize::try_from(d)
                .map_err(|_| r.bad_tensor(&name, format!("dimension {d} is too large")))?;
            dims.push(d);
        }
        let ty = r.u32(&format!("the type of tensor {name}"))?;
        let offset = r.u64(&format!("the data offset of tensor {name}"))?;
        let Some(dtype) = DType::from_ggml_type(ty) else {
            return Err(GgufError::UnsupportedQuant {
                path: path.to_path_buf(),
                tensor: name,
                type_name: ggml_type_name(ty),
                id: ty,
            });
        };
        let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if dims[0] % dtype.block_elems() != 0 {
            return Err(r.bad_tensor(
                &name,
                format!(
                    "rows of {} elements are not a whole number of {} blocks ({} elements each)",
                    dims[0],
                    dtype.name(),
                    dtype.block_elems()
                ),
            ));
        }
        let Some(nbytes) = numel.and_then(|n| dtype.byte_len(n)) else {
            return Err(r.bad_tensor(&name, format!("dimensions {dims:?} overflow")));
        };
        if offset % alignment != 0 {
            return Err(r.bad_tensor(
                &name,
                format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        infos.push((name, dims, dtype, offset, nbytes as u64));
    }

    let data_start = (r.pos as u64).next_multiple_of(alignment);
    let file_len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    let mut seen = std::collections::HashSet::new();
    for (name, dims, dtype, offset, nbytes) in infos {
        if !seen.insert(name.clone()) {
            return Err(r.invalid(format!("tensor {name} appears twice")));
        }
        let end = data_start
            .checked_add(offset)
            .and_then(|b| b.checked_add(nbytes));
        match end {
            Some(end) if end <= file_len => {
                let begin = (data_start + offset) as usize;
                tensors.push(TensorInfo {
                    name,
                    dims,
                    dtype,
                    begin,
                    end: end as usize,
                });
            }
            _ => {
                return Err(GgufError::Truncated {
                    path: path.to_path_buf(),
                    what: format!(
                        "the data of tensor {name} ({} bytes of {})",
                        nbytes,
                        dtype.name()
                    ),
                    expected: end.unwrap_or(u64::MAX),
                    actual: file_len,
                })
            }
        }
    }
    check_overlaps(path, &tensors)?;
    Ok(Parsed {
        version,
        metadata,
        tensors,
    })
}

/// Refuses tensors whose data ranges overlap (empty tensors are ignored).
fn check_overlaps(path: &Path, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut ranges: Vec<&TensorInfo> = tensors.iter().filter(|t| t.end > t.begin).collect();
    ranges.sort_by_key(|t| (t.begin, t.end));
    for pair in ranges.windows(2) {
        if pair[1].begin < pair[0].end {
            return Err(GgufError::BadTensor {
                path: path.to_path_buf(),
                tensor: pair[1].name.clone(),
                detail: format!("its data overlaps tensor {}", pair[0].name),
            });
        }
    }
    Ok(())
}
