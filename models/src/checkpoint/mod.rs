//! Reading weights from a Hugging Face checkpoint folder, safetensors only.
//!
//! A folder holds either one `model.safetensors`, or `model.safetensors.index.json` whose `weight_map` sends
//! each tensor name to a shard file in the same folder (a Hugging Face hub-cache snapshot may symlink its shards
//! into the cache's `blobs` folder; any other path leaving the folder is refused). Every file is memory-mapped and
//! its header validated when the checkpoint is opened, so later reads cannot run off the end of a file. Pickle
//! checkpoints (`*.bin`, `*.pt`, …) are refused: unpickling can run arbitrary code.
//!
//! Tensors are handed out as [`TensorView`]s borrowing the mapped bytes; [`TensorView::read_f32`] converts any
//! window of elements to f32, so a caller can stream a multi-gigabyte model through a small buffer, calling
//! [`Checkpoint::release`] after each tensor to keep the resident set small.

mod adjust;
mod folder;
pub mod ggml;
mod gguf;
mod select;
mod shard;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::CheckpointError;
pub use adjust::{LowRank, ReadAdjust};
pub use folder::check_inside;
pub use select::Selection;
use shard::{Shard, StoredDType};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Storage types we can convert to f32: the safetensors floats, and the block-quantized formats of GGUF (ggml),
/// which store `block_elems()` values in `block_bytes()` bytes along the tensor's last (fastest) dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// ggml Q8_0: blocks of 32, an f16 scale and 32 int8 (x = d·q).
    Q8_0,
    /// ggml Q4_0: blocks of 32, an f16 scale and 16 bytes of nibbles (x = d·(q − 8)).
    Q4_0,
    /// ggml Q4_1: blocks of 32, f16 scale and min, 16 bytes of nibbles (x = d·q + m).
    Q4_1,
    /// ggml Q5_0: blocks of 32, f16 scale, 4 bytes of fifth bits, 16 bytes of nibbles (x = d·(q − 16)).
    Q5_0,
    /// ggml Q5_1: blocks of 32, f16 scale and min, fifth bits, nibbles (x = d·q + m).
    Q5_1,
    /// ggml Q4_K: super-blocks of 256 in 8 sub-blocks with 6-bit scales and mins.
    Q4K,
    /// ggml Q5_K: super-blocks of 256, as Q4_K with a fifth bit.
    Q5K,
    /// ggml Q6_K: super-blocks of 256 in 16 sub-blocks with int8 scales.
    Q6K,
}

impl DType {
    /// Elements per storage block: 1 for the float types, 32 or 256 for the ggml block formats.
    pub fn block_elems(&self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
        }
    }

    /// Bytes per storage block.
    pub fn block_bytes(&self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// Bytes per element of the float types; for a block format, bytes per block (use [`byte_len`](Self::byte_len)).
    pub fn size(&self) -> usize {
        self.block_bytes()
    }

    /// Bytes that `numel` elements take, or `None` if `numel` is not a whole number of blocks (or overflows).
    pub fn byte_len(&self, numel: usize) -> Option<usize> {
        (numel % self.block_elems() == 0)
            .then(|| numel / self.block_elems())
            .and_then(|b| b.checked_mul(self.block_bytes()))
    }

    /// Whether this is a ggml block format (decoded block by block).
    pub fn is_block_quantized(&self) -> bool {
        self.block_elems() > 1
    }

    /// The name as safetensors ("F32", "F16", "BF16") or ggml ("Q8_0", "Q4_K", …) writes it.
    pub fn name(&self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
        }
    }

    /// Parses a safetensors dtype name; `None` for every dtype we do not convert (they are reported by name in
    /// [`CheckpointError::UnsupportedDtype`]).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        match name {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }

    /// The type for a ggml type id as GGUF stores it (`ggml_type`); `None` for the ones we do not decode.
    pub fn from_ggml_type(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            8 => DType::Q8_0,
            12 => DType::Q4K,
            13 => DType::Q5K,
            14 => DType::Q6K,
            30 => DType::BF16,
            _ => return None,
        })
    }
}

/// An opened checkpoint folder. Cheap to query; tensor bytes are read lazily through the memory maps.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    tensors: BTreeMap<String, usize>,
    /// Low-rank updates merged into tensors as they are read (LoRA), by tensor name.
    low_rank: BTreeMap<String, LowRank>,
    /// Names given by [`strip_prefix`](Checkpoint::strip_prefix) or [`rename`](Checkpoint::rename) → the names in
    /// the files.
    stored_names: BTreeMap<String, String>,
    /// Tensors read as a part of the stored one ([`select`](Checkpoint::select)), by tensor name.
    selections: BTreeMap<String, Selection>,
}

/// One tensor's bytes inside a mapped file, with its metadata.
#[derive(Clone)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The raw little-endian element bytes (`numel × dtype.size()` of them; not necessarily aligned).
    pub data: &'a [u8],
    /// The file holding the tensor.
    pub file: &'a Path,
    /// Applied by [`read_f32`](Self::read_f32) after decoding (see [`ReadAdjust`]); code that copies `data` as it
    /// is must check [`ReadAdjust::is_identity`] first.
    pub adjust: ReadAdjust<'a>,
    /// Reads return only these rows and columns of the stored tensor ([`Selection`]); `shape` is the selected one,
    /// `data` the whole stored tensor's. Code that copies `data` as it is must check that this is `None`.
    pub select: Option<&'a Selection>,
}

impl Checkpoint {
    /// Opens a checkpoint folder: finds the weights, maps every file and validates every header (see the module
    /// docs for what is accepted).
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        // `exists`, not `is_file`: a FIFO or device under these names is refused by name, not skipped.
        let (shards, tensors) = if single.exists() {
            folder::check_inside(dir, &single)?;
            let shard = Shard::open(&single)?;
            let tensors = shard.tensors.keys().map(|name| (name.clone(), 0)).collect();
            (vec![shard], tensors)
        } else if index.exists() {
            folder::open_index(dir, &index)?
        } else {
            return Err(folder::no_weights_error(dir));
        };
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            shards,
            tensors,
            low_rank: BTreeMap::new(),
            stored_names: BTreeMap::new(),
            selections: BTreeMap::new(),
        })
    }

    /// Opens one safetensors file on its own, whatever its name (a PEFT adapter's `adapter_model.safetensors`),
    /// with the same validation as [`open`](Self::open); [`dir`](Self::dir) is the file's folder.
    pub fn open_file(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let shard = Shard::open(path)?;
        let tensors = shard.tensors.keys().map(|name| (name.clone(), 0)).collect();
        Ok(Checkpoint {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            shards: vec![shard],
            tensors,
            low_rank: BTreeMap::new(),
            stored_names: BTreeMap::new(),
            selections: BTreeMap::new(),
        })
    }

    /// Merges `update` into tensor `name` from now on: every read returns `W + B·A`. Fails if the tensor is absent
    /// or is not a 2-D `[update.rows, update.cols]` tensor.
    pub fn add_low_rank(&mut self, name: &str, update: LowRank) -> Result<(), CheckpointError> {
        let view = self.tensor_with_shape(name, &[update.rows, update.cols])?;
        let key = view.name.to_string();
        self.low_rank.insert(key, update);
        Ok(())
    }

    /// Reads a wrapper class's checkpoint as the class it wraps: every tensor whose name starts with `prefix` is
    /// named without it from now on (ShieldGemma 2's `model.` + Gemma3ForConditionalGeneration). Fails, renaming
    /// nothing, when a new name is already taken. Returns how many tensors were renamed.
    pub fn strip_prefix(&mut self, prefix: &str) -> Result<usize, CheckpointError> {
        self.rename_checked(
            |n| Some(n.strip_prefix(prefix).unwrap_or(n).to_string()),
            |new| format!("is also {new:?} once the wrapper prefix {prefix:?} is removed"),
        )
    }

    /// The name of tensor `name` in its file.
    fn stored_name<'n>(&'n self, name: &'n str) -> &'n str {
        self.stored_names.get(name).map_or(name, String::as_str)
    }

    /// Renames and drops tensors: `f` maps each name to its new name, or to `None` to drop the tensor. Low-rank
    /// updates and selections move with their tensor. Fails, changing nothing, when two tensors would get the same
    /// name. Returns how many tensors were renamed or dropped.
    pub fn rename(
        &mut self,
        f: impl FnMut(&str) -> Option<String>,
    ) -> Result<usize, CheckpointError> {
        self.rename_checked(f, |new| {
            format!("would be renamed to {new:?}, which another tensor already is")
        })
    }

    /// [`rename`](Self::rename), with `clash(new)` the error detail when two tensors would be named `new`; the
    /// error names the tensor of the two whose name changes.
    fn rename_checked(
        &mut self,
        mut f: impl FnMut(&str) -> Option<String>,
        clash: impl Fn(&str) -> String,
    ) -> Result<usize, CheckpointError> {
        // New name -> (shard, old name).
        let mut tensors: BTreeMap<String, (usize, &str)> = BTreeMap::new();
        let mut changed = Vec::new();
        for (name, &shard) in &self.tensors {
            let new = f(name);
            if new.as_deref() != Some(name.as_str()) {
                changed.push((name.clone(), new.clone()));
            }
            if let Some(new) = new {
                if let Some((_, other)) = tensors.insert(new.clone(), (shard, name.as_str())) {
                    let tensor = if other == new { name.as_str() } else { other };
                    return Err(CheckpointError::BadTensor {
                        path: self.dir.clone(),
                        tensor: tensor.to_string(),
                        detail: clash(&new),
                    });
                }
            }
        }
        let tensors = tensors.into_iter().map(|(n, (shard, _))| (n, shard)).collect();
        self.tensors = tensors;
        for (old, new) in &changed {
            let stored = self.stored_names.remove(old).unwrap_or_else(|| old.clone());
            let low_rank = self.low_rank.remove(old);
            let selection = self.selections.remove(old);
            if let Some(new) = new {
                self.stored_names.insert(new.clone(), stored);
                if let Some(lr) = low_rank {
                    self.low_rank.insert(new.clone(), lr);
                }
                if let Some(sel) = selection {
                    self.selections.insert(new.clone(), sel);
                }
            }
        }
        Ok(changed.len())
    }

    /// Reads the 2-D tensor `name` from now on as these rows and columns of it (`None`: all), see [`Selection`].
    /// Fails if the tensor is absent, not 2-D, already selected or has a low-rank update, or if the ranges do not
    /// fit it.
    pub fn select(
        &mut self,
        name: &str,
        rows: Option<Vec<std::ops::Range<usize>>>,
        cols: Option<Vec<std::ops::Range<usize>>>,
    ) -> Result<(), CheckpointError> {
        let view = self.tensor(name)?;
        let bad = |detail: String| CheckpointError::BadTensor {
            path: view.file.to_path_buf(),
            tensor: name.to_string(),
            detail,
        };
        let [r, c] = view.shape[..] else {
            return Err(bad(format!(
                "is {}-D, a selection needs 2-D",
                view.shape.len()
            )));
        };
        if view.select.is_some() || view.adjust.low_rank.is_some() {
            return Err(bad("is already selected or adjusted".into()));
        }
        let what = format!("rows {rows:?} and columns {cols:?}");
        let sel = Selection::new([r, c], rows, cols)
            .ok_or_else(|| bad(format!("has shape [{r}, {c}], which has no {what}")))?;
        self.selections.insert(name.to_string(), sel);
        Ok(())
    }

    /// The tensors that have a low-rank update, sorted.
    pub fn low_rank_names(&self) -> Vec<&str> {
        self.low_rank.keys().map(String::as_str).collect()
    }

    /// The folder this checkpoint was opened from (the file itself for a GGUF checkpoint).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors (or GGUF) files, in the order they were opened.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// A view of one tensor. Fails if it is absent or stored in a dtype other than F32/F16/BF16.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, CheckpointError> {
        let Some((key, &shard_index)) = self.tensors.get_key_value(name) else {
            return Err(CheckpointError::TensorMissing {
                name: name.to_string(),
                files: self.shards.iter().map(|s| s.path.clone()).collect(),
            });
        };
        let shard = &self.shards[shard_index];
        shard.check_unchanged()?;
        let stored = &shard.tensors[self.stored_name(name)];
        let dtype = match &stored.dtype {
            StoredDType::Supported(d) => *d,
            StoredDType::Other(dtype) => {
                return Err(CheckpointError::UnsupportedDtype {
                    path: shard.path.clone(),
                    tensor: name.to_string(),
                    dtype: dtype.clone(),
                })
            }
        };
        let select = self.selections.get(name);
        Ok(TensorView {
            name: key,
            dtype,
            shape: select.map_or_else(|| stored.shape.clone(), Selection::shape),
            data: &shard.mmap[stored.begin..stored.end],
            file: &shard.path,
            adjust: ReadAdjust {
                offset: stored.offset,
                low_rank: self.low_rank.get(name),
            },
            select,
        })
    }

    /// Like [`tensor`](Self::tensor), and also checks the shape.
    pub fn tensor_with_shape(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<TensorView<'_>, CheckpointError> {
        let view = self.tensor(name)?;
        if view.shape != shape {
            return Err(CheckpointError::ShapeMismatch {
                path: view.file.to_path_buf(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: view.shape,
            });
        }
        Ok(view)
    }

    /// [`release`](Self::release) for elements `[from, to)` of `view` only: streaming code calls it after each
    /// chunk so that even a single large tensor never becomes resident whole.
    pub fn release_elements(&self, view: &TensorView<'_>, from: usize, to: usize) {
        let (be, bb) = (view.dtype.block_elems(), view.dtype.block_bytes());
        let to = to.min(view.numel());
        if from >= to {
            return;
        }
        if let Some(sel) = view.select {
            // The stored rows behind the selected rows read whole (their unselected columns are never read).
            let cols = view.shape[1];
            let whole = from.div_ceil(cols)..to / cols;
            let stored_view = TensorView {
                select: None,
                shape: vec![view.data.len() / bb * be],
                ..view.clone()
            };
            for stored in sel.stored_rows(whole) {
                self.release_elements(&stored_view, stored.start, stored.end);
            }
            return;
        }
        // Whole blocks only: a block straddling either end may still be read.
        let (first, last) = (from.div_ceil(be), to / be);
        if first >= last {
            return;
        }
        self.release(&TensorView {
            data: &view.data[first * bb..last * bb],
            ..view.clone()
        });
    }

    /// Tells the OS that the bytes of `view` are no longer needed, so that streaming a whole model keeps the
    /// resident set near one tensor. Only whole pages inside the tensor are dropped; touching the bytes again
    /// simply re-reads them from the file. Errors are ignored (this is only a hint); a no-op off Unix.
    pub fn release(&self, view: &TensorView<'_>) {
        #[cfg(unix)]
        {
            // Page size bound used for rounding: rounding inward to 4 KiB keeps the range inside the tensor on
            // 4 KiB-page systems; on larger-page systems memmap2 rounds the start down to a page boundary, which
            // at worst also drops (re-readable) bytes of the neighbouring tensor.
            const PAGE: usize = 4096;
            let ptr = view.data.as_ptr() as usize;
            let Some(shard) = self.shards.iter().find(|s| {
                let base = s.mmap.as_ptr() as usize;
                ptr >= base && ptr + view.data.len() <= base + s.mmap.len()
            }) else {
                return;
            };
            let offset = ptr - shard.mmap.as_ptr() as usize;
            let start = offset.next_multiple_of(PAGE);
            let end = (offset + view.data.len()) / PAGE * PAGE;
            if start < end {
                // SAFETY: the mapping is a read-only file mapping we never write to, so MADV_DONTNEED only drops
                // clean pages; later reads fault them back in from the file with the same contents, and every
                // outstanding slice stays valid.
                let _ = unsafe {
                    shard.mmap.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = view;
    }

    /// Sum of the byte sizes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|(name, &i)| {
                let t = &self.shards[i].tensors[self.stored_name(name)];
                (t.end - t.begin) as u64
            })
            .sum()
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl std::fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .field("file", &self.file)
            .field("adjust", &self.adjust)
            .finish()
    }
}

impl TensorView<'_> {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Converts elements `[start, start + out.len())` (in row-major order) to f32: an exact upcast for BF16 and F16,
    /// a copy for F32, then applies [`adjust`](Self::adjust). Works on unaligned bytes.
    ///
    /// # Panics
    /// If the range goes past [`numel`](Self::numel).
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        let numel = self.numel();
        assert!(
            start <= numel && out.len() <= numel - start,
            "read_f32 on {:?}: elements [{start}, {}) are outside its {numel} elements",
            self.name,
            start + out.len()
        );
        match self.select {
            Some(sel) => sel.for_each_run(start, out, |s, o| self.decode(s, o)),
            None => self.decode(start, out),
        }
        self.adjust.apply(start, out);
    }

    /// Decodes stored elements `[start, start + out.len())` to f32, without [`adjust`](Self::adjust).
    fn decode(&self, start: usize, out: &mut [f32]) {
        if self.dtype.is_block_quantized() {
            ggml::read_blocks(self.dtype, self.data, start, out);
            return;
        }
        let size = self.dtype.size();
        let bytes = &self.data[start * size..(start + out.len()) * size];
        match self.dtype {
            DType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            DType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            DType::BF16 => {
                // bf16 is the top half of an f32, so the upcast is a shift (exact, NaN payloads included).
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
                }
            }
            _ => unreachable!("block formats are decoded above"),
        }
    }

    /// All elements as f32 (for small tensors such as norm weights).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        self.read_f32(0, &mut out);
        out
    }
}
