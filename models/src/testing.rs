//! Checkpoint writers for tests: the one GGUF writer and the one safetensors writer of the workspace, so that the
//! unit tests here and the integration tests of `gemma-exporter` and `gemma-tests` write their small checkpoints
//! the same way. Compiled for this crate's tests and with the `testing` feature, which only test code enables.
//!
//! The helpers panic on failure (with the path concerned): they write files the test itself made up.

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

/// One safetensors tensor: name, dtype, shape, raw little-endian bytes.
pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// A float32 [`Tensor`].
pub fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    let n: usize = shape.iter().product();
    assert_eq!(
        values.len(),
        n,
        "{name}: {} values for {shape:?}",
        values.len()
    );
    (name.into(), Dtype::F32, shape.to_vec(), f32_bytes(values))
}

/// Little-endian float32 bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `tensors` as a safetensors file (no metadata) with the `safetensors` crate, which orders them itself:
/// the file does not depend on the order of `tensors`.
pub fn write_safetensors(path: &Path, tensors: &[Tensor]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name.as_str(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None)
        .unwrap_or_else(|e| panic!("serializing {}: {e}", path.display()));
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Every tensor of a safetensors file, in the file's order: to edit a checkpoint and write it back with
/// [`write_safetensors`].
pub fn read_safetensors(path: &Path) -> Vec<Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tensors: Vec<(usize, Tensor)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let start = t.data().as_ptr() as usize;
            let tensor = (name, t.dtype(), t.shape().to_vec(), t.data().to_vec());
            (start, tensor)
        })
        .collect();
    tensors.sort_by_key(|(start, _)| *start);
    tensors.into_iter().map(|(_, t)| t).collect()
}

/// GGUF metadata value type ids.
pub mod gguf_type {
    pub const U32: u32 = 4;
    pub const F32: u32 = 6;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
}

/// A GGUF string: u64 length, then the bytes.
pub fn gguf_str(text: &str) -> Vec<u8> {
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b
}

/// A minimal GGUF writer: version 3 unless changed, metadata and tensors in the order given, tensor data at
/// 32-byte-aligned offsets of the data section (GGUF's default alignment).
#[derive(Default)]
pub struct GgufWriter {
    /// Metadata: key, value type id, value bytes (public so that a test can break an entry).
    pub kv: Vec<(String, u32, Vec<u8>)>,
    /// Tensors: name, dims fastest first, GGML type id, data.
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    pub version: u32,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            ..Default::default()
        }
    }

    /// A metadata entry: key, value type id ([`gguf_type`]), the value's bytes.
    pub fn raw(&mut self, key: &str, ty: u32, bytes: Vec<u8>) -> &mut Self {
        self.kv.push((key.into(), ty, bytes));
        self
    }

    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw(key, gguf_type::U32, v.to_le_bytes().to_vec())
    }

    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw(key, gguf_type::F32, v.to_le_bytes().to_vec())
    }

    pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
        self.raw(key, gguf_type::STRING, gguf_str(v))
    }

    pub fn strings(&mut self, key: &str, items: &[&str]) -> &mut Self {
        let mut b = gguf_type::STRING.to_le_bytes().to_vec();
        b.extend((items.len() as u64).to_le_bytes());
        for i in items {
            b.extend(gguf_str(i));
        }
        self.raw(key, gguf_type::ARRAY, b)
    }

    /// A tensor with dims fastest first, as GGUF stores them, of GGML type id `ty`.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    /// A GGML F32 tensor.
    pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        self.tensor(name, dims, 0, f32_bytes(values))
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            b.extend(gguf_str(k));
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            b.extend(gguf_str(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(32);
        }
        b.resize(b.len().next_multiple_of(32), 0);
        let start = b.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            b.resize(start + off as usize, 0);
            b.extend(data);
        }
        b
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
