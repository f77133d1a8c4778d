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

use std::collections::BTreeMap;
use std::path::Path;

use super::GgufError;
use crate::checkpoint::DType;

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
/// Arrays of arrays nest at most this deep.
const MAX_ARRAY_DEPTH: usize = 4;
/// `general.alignment` when absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array, stored by element type (so a million-entry vocabulary costs what its elements cost).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

impl Value {
    /// The GGUF type name, for messages ("u32", "string", "array of f32", …).
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F32(_) => "f32".into(),
            Value::F64(_) => "f64".into(),
            Value::Bool(_) => "bool".into(),
            Value::String(_) => "string".into(),
            Value::Array(a) => format!("array of {} {}", a.len(), a.elem_name()),
        }
    }

    /// An integer value of any width, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number of any type, as f64. f32 values keep their shortest decimal form (1e-6 stored as f32 reads as
    /// 1e-6, not 9.99999997e-7), which is how the converter's Python float was written.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn elem_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F32(_) => "f32",
            Array::F64(_) => "f64",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::Array(_) => "array",
        }
    }

    /// Integer elements of any width as u64 (`None` if not an integer array or an element is negative).
    pub fn to_u64s(&self) -> Option<Vec<u64>> {
        fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> Option<u64>) -> Option<Vec<u64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            Array::U8(v) => conv(v, |x| Some(x.into())),
            Array::U16(v) => conv(v, |x| Some(x.into())),
            Array::U32(v) => conv(v, |x| Some(x.into())),
            Array::U64(v) => Some(v.clone()),
            Array::I8(v) => conv(v, |x| u64::try_from(x).ok()),
            Array::I16(v) => conv(v, |x| u64::try_from(x).ok()),
            Array::I32(v) => conv(v, |x| u64::try_from(x).ok()),
            Array::I64(v) => conv(v, |x| u64::try_from(x).ok()),
            _ => None,
        }
    }
}

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

/// The name ggml gives a type id (for messages about types we do not decode).
pub fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("an unknown type"),
    };
    name.to_string()
}

/// The ggml types we decode, for messages.
pub fn supported_types() -> &'static str {
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn truncated(&self, what: &str, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            expected: (self.pos as u64).saturating_add(needed),
            actual: self.bytes.len() as u64,
        }
    }

    fn invalid(&self, detail: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    fn bad_tensor(&self, tensor: &str, detail: String) -> GgufError {
        GgufError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: tensor.to_string(),
            detail,
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuses a count above `cap`, or one whose elements (at least `min_bytes` each) cannot fit in the rest of
    /// the file.
    fn check_count(&self, n: u64, cap: u64, min_bytes: u64, what: &str) -> Result<(), GgufError> {
        if n > cap {
            return Err(self.invalid(format!("{n} {what} (at most {cap} are accepted)")));
        }
        if n.saturating_mul(min_bytes) > self.remaining() {
            return Err(self.truncated(&format!("{n} {what}"), n.saturating_mul(min_bytes)));
        }
        Ok(())
    }

    fn string(&mut self, what: &str, cap: u64) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > cap {
            return Err(self.invalid(format!(
                "{what} is {len} bytes long (at most {cap} are accepted)"
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.invalid(format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = format!("the value of metadata key {key}");
        let w = what.as_str();
        Ok(match ty {
            0 => Value::U8(self.array::<1>(w)?[0]),
            1 => Value::I8(self.array::<1>(w)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(w)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(w)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(w)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(w)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(w)?)),
            7 => Value::Bool(self.bool(w)?),
            8 => Value::String(self.string(w, MAX_STRING_BYTES)?),
            9 => Value::Array(self.array_value(key, depth)?),
            10 => Value::U64(u64::from_le_bytes(self.array(w)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(w)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(w)?)),
            _ => {
                return Err(self.invalid(format!("metadata key {key} has unknown value type {ty}")))
            }
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.invalid(format!("{what}: bool byte {b} is neither 0 nor 1"))),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.invalid(format!(
                "metadata key {key}: arrays nest deeper than {MAX_ARRAY_DEPTH} levels"
            )));
        }
        let what = format!("the array of metadata key {key}");
        let w = what.as_str();
        let ty = self.u32(w)?;
        let n = self.u64(w)?;
        // Minimum encoded size per element: strings need their 8-byte length, arrays their 12-byte header.
        let min = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => {
                return Err(self.invalid(format!(
                    "metadata key {key}: unknown array element type {ty}"
                )))
            }
        };
        self.check_count(n, u64::MAX, min, &format!("elements of {what}"))?;
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take((n * std::mem::size_of::<$t>()) as u64, w)?;
                Array::$variant(
                    bytes
                        .chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("element size")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            0 => fixed!(U8, u8),
            1 => fixed!(I8, i8),
            2 => fixed!(U16, u16),
            3 => fixed!(I16, i16),
            4 => fixed!(U32, u32),
            5 => fixed!(I32, i32),
            6 => fixed!(F32, f32),
            10 => fixed!(U64, u64),
            11 => fixed!(I64, i64),
            12 => fixed!(F64, f64),
            7 => Array::Bool((0..n).map(|_| self.bool(w)).collect::<Result<_, _>>()?),
            8 => Array::String(
                (0..n)
                    .map(|_| self.string(w, MAX_STRING_BYTES))
                    .collect::<Result<_, _>>()?,
            ),
            9 => Array::Array(
                (0..n)
                    .map(|_| self.array_value(key, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            _ => unreachable!("element type checked above"),
        })
    }
}
