//! Streams weights from the memory-mapped checkpoint into the ONNX external data file.
//!
//! Each tensor is converted to the export precision in small chunks and appended to `model.onnx_data`, so peak
//! memory stays near one chunk (plus the pages of the tensor being read, which are released right after; see
//! [`gemma_models::Checkpoint::release`]). Large tensors start at 64 KiB-aligned offsets so ONNX Runtime can map
//! them straight from the file on every platform; tensors under [`INLINE_LIMIT`] bytes stay inside the model proto.
//!
//! Several graphs can share one data file (`model.onnx`, `embed_tokens.onnx` and `decoder_model_merged.onnx` all
//! use `model.onnx_data`): the writer remembers every initializer it produced by name, and asking again for a name
//! returns the same `TensorProto` (same file offset) without reading or writing anything. An initializer name
//! therefore always stands for one content (a checkpoint tensor name, or a name derived from it such as
//! `..._plus_one`).

use crate::onnx::{tensor_proto::DataLocation, DataType, StringStringEntryProto, TensorProto};
use crate::ExportError;
use gemma_models::{Checkpoint, TensorView};
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Offsets of external tensors are multiples of this (the allocation granularity of Windows, a multiple of
/// every Linux/macOS page size).
pub const ALIGN: u64 = 64 * 1024;
/// Tensors smaller than this are stored inline in the model proto.
pub const INLINE_LIMIT: usize = 16 * 1024;
/// Elements converted per chunk while streaming.
const CHUNK: usize = 1 << 16;

pub struct WeightWriter {
    out: BufWriter<File>,
    path: PathBuf,
    location: String,
    offset: u64,
    progress: ProgressBar,
    /// Every initializer written so far, by name, so later graphs reuse it instead of writing it again.
    written: HashMap<String, TensorProto>,
    /// Reconstruction error of the block-quantized tensors written so far (see [`crate::quant`]).
    pub quant_stats: crate::quant::QuantStats,
    /// Write NaN/±inf weights instead of refusing them (`--allow-nonfinite`; see [`crate::finite`]).
    pub allow_nonfinite: bool,
}

impl WeightWriter {
    /// Creates the external data file `path`; tensors will reference it by its file name.
    pub fn create(path: &Path, progress: ProgressBar) -> Result<WeightWriter, ExportError> {
        let file = File::create(path).map_err(|e| ExportError::io(path, e))?;
        Ok(WeightWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            location: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx_data")
                .to_string(),
            offset: 0,
            progress,
            written: HashMap::new(),
            quant_stats: Default::default(),
            allow_nonfinite: false,
        })
    }

    /// Creates the external data file `dir/location`, `location` being its path relative to the folder of the
    /// graphs that reference it (e.g. `onnx/model_q4.onnx_data`, a subfolder path without `..`); tensors reference
    /// it by that path.
    pub fn create_in(
        dir: &Path,
        location: &str,
        progress: ProgressBar,
    ) -> Result<WeightWriter, ExportError> {
        let mut writer = WeightWriter::create(&dir.join(location), progress)?;
        writer.location = location.to_string();
        Ok(writer)
    }

    /// The initializer already written under `name` (by this or an earlier graph), if any.
    pub fn written(&self, name: &str) -> Option<TensorProto> {
        self.written.get(name).cloned()
    }

    fn remember(&mut self, tensor: TensorProto) -> TensorProto {
        let name = tensor.name.clone().expect("initializers are named");
        self.written.insert(name, tensor.clone());
        tensor
    }

    /// Streams a checkpoint tensor as float32, applying `map` to each element, under the initializer `name`.
    pub fn f32_from_checkpoint(
        &mut self,
        ckpt: &Checkpoint,
        name: &str,
        view: &TensorView<'_>,
        map: Option<&dyn Fn(f32) -> f32>,
    ) -> Result<TensorProto, ExportError> {
        if let Some(t) = self.written(name) {
            return Ok(t);
        }
        let dims: Vec<i64> = view.shape.iter().map(|&d| d as i64).collect();
        let numel = view.numel();
        let tensor = if numel * 4 < INLINE_LIMIT {
            let mut values = view.to_f32_vec();
            if let Some(f) = map {
                values.iter_mut().for_each(|v| *v = f(*v));
            }
            crate::finite::check(view, 0, &values, self.allow_nonfinite)?;
            self.progress.inc((numel * 4) as u64);
            inline_f32(name, &dims, &values)
        } else {
            let start = self.begin()?;
            let mut buf = vec![0f32; CHUNK.min(numel)];
            let mut done = 0;
            while done < numel {
                let n = CHUNK.min(numel - done);
                view.read_f32(done, &mut buf[..n]);
                if let Some(f) = map {
                    buf[..n].iter_mut().for_each(|v| *v = f(*v));
                }
                crate::finite::check(view, done, &buf[..n], self.allow_nonfinite)?;
                self.write(bytemuck::cast_slice(&buf[..n]))?;
                ckpt.release_elements(view, done, done + n);
                done += n;
            }
            self.external(name, DataType::Float, &dims, start)
        };
        ckpt.release(view);
        Ok(self.remember(tensor))
    }

    /// Stores computed float32 values (inline when small).
    pub fn f32_values(
        &mut self,
        name: &str,
        dims: &[i64],
        values: &[f32],
    ) -> Result<TensorProto, ExportError> {
        if let Some(t) = self.written(name) {
            return Ok(t);
        }
        if values.len() * 4 < INLINE_LIMIT {
            self.progress.inc((values.len() * 4) as u64);
            return Ok(self.remember(inline_f32(name, dims, values)));
        }
        let start = self.begin()?;
        self.write(bytemuck::cast_slice(values))?;
        let tensor = self.external(name, DataType::Float, dims, start);
        Ok(self.remember(tensor))
    }

    /// Starts an external tensor written piece by piece with [`append`](Self::append) and closed with
    /// [`end_tensor`](Self::end_tensor): how converted (fp16/bf16) and quantized weights stream. Returns its offset.
    pub fn begin_tensor(&mut self) -> Result<u64, ExportError> {
        self.begin()
    }

    /// Appends bytes to the tensor begun last. Unlike the f32 paths this does not move the progress bar, whose
    /// unit is the f32 size of the source: call [`advance`](Self::advance) for what was consumed.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.out
            .write_all(bytes)
            .map_err(|e| ExportError::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Closes the tensor begun at `start` and remembers it under `name`.
    pub fn end_tensor(
        &mut self,
        name: &str,
        elem: DataType,
        dims: &[i64],
        start: u64,
    ) -> TensorProto {
        let tensor = self.external(name, elem, dims, start);
        self.remember(tensor)
    }

    /// Stores a tensor given as little-endian bytes: inline under [`INLINE_LIMIT`], else external.
    pub fn raw_values(
        &mut self,
        name: &str,
        elem: DataType,
        dims: &[i64],
        bytes: &[u8],
    ) -> Result<TensorProto, ExportError> {
        if let Some(t) = self.written(name) {
            return Ok(t);
        }
        if bytes.len() < INLINE_LIMIT {
            let t = crate::builder::inline_tensor(name, elem, dims, bytes.to_vec());
            return Ok(self.remember(t));
        }
        let start = self.begin()?;
        self.append(bytes)?;
        Ok(self.end_tensor(name, elem, dims, start))
    }

    /// A second initializer `name` over the very bytes of `of` (same file range, or a copy when inline), with other
    /// dims of the same element count: one stored tensor seen with two shapes, e.g. the packed embedding as
    /// `MatMulNBits` wants it (`[V, blocks, blob]`) and as `GatherBlockQuantized` wants it (`[V, bytes]`).
    pub fn alias(&mut self, of: &TensorProto, name: &str, dims: &[i64]) -> TensorProto {
        if let Some(t) = self.written(name) {
            return t;
        }
        debug_assert_eq!(
            of.dims.iter().product::<i64>(),
            dims.iter().product::<i64>()
        );
        let mut t = of.clone();
        t.name = Some(name.into());
        t.dims = dims.to_vec();
        self.remember(t)
    }

    /// An initializer `name` over rows `start .. start + rows` (along the first axis) of `of`: the same file range
    /// when `of` is external, a copy of the bytes when it is inline.
    pub fn row_view(
        &mut self,
        of: &TensorProto,
        name: &str,
        start: usize,
        rows: usize,
    ) -> TensorProto {
        if let Some(t) = self.written(name) {
            return t;
        }
        let total_rows = of.dims.first().copied().unwrap_or(1).max(1) as usize;
        debug_assert!(start + rows <= total_rows);
        let mut t = of.clone();
        t.name = Some(name.into());
        if let Some(d) = t.dims.first_mut() {
            *d = rows as i64;
        }
        let field = |t: &TensorProto, key: &str| -> Option<u64> {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(key))
                .and_then(|e| e.value.as_deref()?.parse().ok())
        };
        match (field(of, "offset"), field(of, "length")) {
            (Some(offset), Some(length)) => {
                let row_bytes = length / total_rows as u64;
                for e in &mut t.external_data {
                    match e.key.as_deref() {
                        Some("offset") => {
                            e.value = Some((offset + start as u64 * row_bytes).to_string())
                        }
                        Some("length") => e.value = Some((rows as u64 * row_bytes).to_string()),
                        _ => {}
                    }
                }
            }
            _ => {
                if let Some(raw) = &of.raw_data {
                    let row_bytes = raw.len() / total_rows;
                    t.raw_data = Some(raw[start * row_bytes..(start + rows) * row_bytes].to_vec());
                }
            }
        }
        self.remember(t)
    }

    /// Moves the progress bar by `source_bytes` (f32 bytes of the source consumed).
    pub fn advance(&self, source_bytes: u64) {
        self.progress.inc(source_bytes);
    }

    /// Flushes and syncs the file; returns its size in bytes.
    pub fn finish(mut self) -> Result<u64, ExportError> {
        self.out
            .flush()
            .map_err(|e| ExportError::io(&self.path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| ExportError::io(&self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| ExportError::io(&self.path, e))?;
        Ok(self.offset)
    }

    fn begin(&mut self) -> Result<u64, ExportError> {
        let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
        if pad > 0 {
            self.out
                .write_all(&vec![0u8; pad as usize])
                .map_err(|e| ExportError::io(&self.path, e))?;
            self.offset += pad;
        }
        Ok(self.offset)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.out
            .write_all(bytes)
            .map_err(|e| ExportError::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        self.progress.inc(bytes.len() as u64);
        Ok(())
    }

    fn external(&self, name: &str, elem: DataType, dims: &[i64], start: u64) -> TensorProto {
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(elem as i32),
            name: Some(name.into()),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                entry("location", self.location.clone()),
                entry("offset", start.to_string()),
                entry("length", (self.offset - start).to_string()),
            ],
            ..Default::default()
        }
    }
}

fn inline_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    crate::builder::inline_tensor(
        name,
        DataType::Float,
        dims,
        bytemuck::cast_slice(values).to_vec(),
    )
}
