//! Streams weights from the memory-mapped checkpoint into the ONNX external data file.
//!
//! Each tensor is converted to the export precision in small chunks and appended to `model.onnx_data`, so peak
//! memory stays near one chunk (plus the pages of the tensor being read, which are released right after; see
//! [`gemma_models::Checkpoint::release`]). Large tensors start at 64 KiB-aligned offsets so ONNX Runtime can map
//! them straight from the file on every platform; tensors under [`INLINE_LIMIT`] bytes stay inside the model proto.

use crate::onnx::{tensor_proto::DataLocation, DataType, StringStringEntryProto, TensorProto};
use crate::ExportError;
use gemma_models::{Checkpoint, TensorView};
use indicatif::ProgressBar;
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
        })
    }

    /// Streams a checkpoint tensor as float32, applying `map` to each element, under the initializer `name`.
    pub fn f32_from_checkpoint(
        &mut self,
        ckpt: &Checkpoint,
        name: &str,
        view: &TensorView<'_>,
        map: Option<&dyn Fn(f32) -> f32>,
    ) -> Result<TensorProto, ExportError> {
        let dims: Vec<i64> = view.shape.iter().map(|&d| d as i64).collect();
        let numel = view.numel();
        let tensor = if numel * 4 < INLINE_LIMIT {
            let mut values = view.to_f32_vec();
            if let Some(f) = map {
                values.iter_mut().for_each(|v| *v = f(*v));
            }
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
                self.write(bytemuck::cast_slice(&buf[..n]))?;
                done += n;
            }
            self.external(name, DataType::Float, &dims, start)
        };
        ckpt.release(view);
        Ok(tensor)
    }

    /// Stores computed float32 values (inline when small).
    pub fn f32_values(
        &mut self,
        name: &str,
        dims: &[i64],
        values: &[f32],
    ) -> Result<TensorProto, ExportError> {
        if values.len() * 4 < INLINE_LIMIT {
            self.progress.inc((values.len() * 4) as u64);
            return Ok(inline_f32(name, dims, values));
        }
        let start = self.begin()?;
        self.write(bytemuck::cast_slice(values))?;
        Ok(self.external(name, DataType::Float, dims, start))
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
