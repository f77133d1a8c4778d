//! The KV cache of one decoding run, in the form the export's graph wants (manifest `graph`):
//!
//! - **portable**: per layer, the `present.{i}.key/value` ort values of the last step, fed back whole as
//!   `past_key_values.{i}.key/value` of the next one (no copy back into Rust arrays). The cache is never truncated,
//!   so it holds every position seen.
//! - **cpu**: per layer, one preallocated float32 buffer for K and one for V, `[batch, kv_heads, capacity, hd]`, bound
//!   by the decoder as both the past input and the present output. ONNX Runtime's `GroupQueryAttention` writes the
//!   new rows in place, so a step copies nothing. Global layers need `capacity ≥` the total length: their buffers
//!   start at the capacity asked for ([`KvCache::with_capacity`]) and double when a step would overflow them (the only
//!   copy, O(log n) times per run). Sliding layers keep a fixed capacity a little above the window: the op itself
//!   evicts old positions, a block of them at a time, so their memory never grows with the sequence.
//!
//! `len` is the number of positions seen (the `past` length of the next step) in both forms.

use ort::memory::Allocator;
use ort::value::{DynValue, Tensor};

use crate::error::{Error, Result};
use crate::manifest::{DType, GraphKind, Manifest};

mod rows;
pub use rows::RowSource;

/// Global-layer capacity of a cache made without a size hint (grows as needed).
pub const DEFAULT_CAPACITY: usize = 256;

/// Capacity of a sliding layer's buffer for window `w`: the window plus slack, so that ONNX Runtime evicts
/// `slack + 1` positions at once (one memmove of the window every `slack + 1` steps) instead of at every step.
pub fn sliding_capacity(window: usize) -> usize {
    window + (window / 4).clamp(1, 128)
}

pub struct KvCache {
    batch: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    /// The manifest's sliding window (0 if none), for [`KvCache::resident_len`].
    window: usize,
    store: Store,
    len: usize,
    /// False while a cpu-graph step is running (its buffers may be half written) and after one failed.
    valid: bool,
}

enum Store {
    /// Portable graph: the last step's present values.
    Replaced {
        keys: Vec<DynValue>,
        values: Vec<DynValue>,
    },
    /// CPU graph: buffers updated in place.
    InPlace(Vec<LayerBuffers>),
}

/// One layer's K and V buffers of the cpu graph.
pub(crate) struct LayerBuffers {
    pub(crate) key: Tensor<f32>,
    pub(crate) value: Tensor<f32>,
    /// Sliding layers: fixed capacity ≥ the window, evicted by ONNX Runtime. Global layers: grown on demand.
    sliding: bool,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `batch` rows of a model described by `manifest` (cpu graphs: global buffers of
    /// [`DEFAULT_CAPACITY`] positions, grown when needed).
    pub fn new(manifest: &Manifest, batch: usize) -> Result<Self> {
        Self::with_capacity(manifest, batch, DEFAULT_CAPACITY)
    }

    /// An empty cache sized for `positions` positions (prompt + new tokens), so that a cpu-graph run of that length
    /// never reallocates. Portable caches ignore the hint.
    pub fn with_capacity(manifest: &Manifest, batch: usize, positions: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        // Creating tensors needs the ONNX Runtime library: load it the checked way first.
        crate::ort_env::environment()?;
        let mut cache = KvCache {
            batch,
            num_kv_heads: manifest.num_kv_heads,
            head_dim: manifest.head_dim,
            dtype: manifest.kv_dtype,
            window: manifest.sliding_window.unwrap_or(0),
            store: Store::Replaced {
                keys: Vec::new(),
                values: Vec::new(),
            },
            len: 0,
            valid: true,
        };
        cache.store = match manifest.graph {
            GraphKind::Portable => {
                let mut keys = Vec::with_capacity(manifest.kv_layers());
                let mut values = Vec::with_capacity(manifest.kv_layers());
                for _ in 0..manifest.kv_layers() {
                    keys.push(cache.empty_value()?);
                    values.push(cache.empty_value()?);
                }
                Store::Replaced { keys, values }
            }
            GraphKind::Cpu => {
                let global = positions.clamp(1, manifest.max_position_embeddings.max(1));
                let window = manifest.sliding_window.unwrap_or(0);
                let mut layers = Vec::with_capacity(manifest.kv_layers());
                for l in 0..manifest.kv_layers() {
                    // Gemma 3n: a sliding layer whose keys later layers share keeps them all.
                    let sliding = manifest.window_sized_kv(l);
                    let capacity = if sliding {
                        sliding_capacity(window)
                    } else {
                        global
                    };
                    layers.push(LayerBuffers {
                        key: cache.buffer(capacity)?,
                        value: cache.buffer(capacity)?,
                        sliding,
                        capacity,
                    });
                }
                Store::InPlace(layers)
            }
        };
        Ok(cache)
    }

    fn empty_value(&self) -> Result<DynValue> {
        let shape = [self.batch, self.num_kv_heads, 0, self.head_dim];
        let v = match self.dtype {
            DType::Float32 => {
                Tensor::<f32>::from_array((shape, Vec::<f32>::new())).map(|t| t.into_dyn())
            }
            DType::Float16 => Tensor::<half::f16>::from_array((shape, Vec::<half::f16>::new()))
                .map(|t| t.into_dyn()),
        };
        v.map_err(|e| Error::ort("creating an empty KV cache tensor", e))
    }

    /// A `[batch, kv_heads, capacity, hd]` f32 buffer from ONNX Runtime's allocator. It is not cleared: the graph
    /// only reads rows it wrote, and fresh pages of a large allocation cost no memory until they are written.
    fn buffer(&self, capacity: usize) -> Result<Tensor<f32>> {
        Tensor::<f32>::new(
            &Allocator::default(),
            [self.batch, self.num_kv_heads, capacity, self.head_dim],
        )
        .map_err(|e| Error::ort("allocating a KV cache buffer", e))
    }

    /// Number of positions in the cache (the `past` length of the next step).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn num_layers(&self) -> usize {
        match &self.store {
            Store::Replaced { keys, .. } => keys.len(),
            Store::InPlace(layers) => layers.len(),
        }
    }

    /// Whether this cache is the in-place form of the cpu graph.
    pub fn is_in_place(&self) -> bool {
        matches!(self.store, Store::InPlace(_))
    }

    /// Bytes of K and V memory the cache holds now: the allocated buffers of a cpu-graph cache (pages not yet
    /// written included), the stored positions of a portable one.
    pub fn bytes(&self) -> usize {
        let row = self.batch * self.num_kv_heads * self.head_dim * self.dtype_size();
        match &self.store {
            Store::Replaced { keys, .. } => 2 * keys.len() * self.len * row,
            Store::InPlace(layers) => layers.iter().map(|l| 2 * l.capacity * row).sum(),
        }
    }

    fn dtype_size(&self) -> usize {
        match self.dtype {
            DType::Float32 => 4,
            DType::Float16 => 2,
        }
    }

    /// Empties the cache (same batch size), ready for a new sequence. A cpu-graph cache keeps its buffers.
    pub fn reset(&mut self) -> Result<()> {
        if let Store::Replaced { keys, values } = &self.store {
            let n = keys.len();
            debug_assert_eq!(n, values.len());
            let mut k = Vec::with_capacity(n);
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                k.push(self.empty_value()?);
                v.push(self.empty_value()?);
            }
            self.store = Store::Replaced { keys: k, values: v };
        }
        self.len = 0;
        self.valid = true;
        Ok(())
    }

    /// Portable form: layer `i`'s past key and value.
    pub(crate) fn past(&self, layer: usize) -> Option<(&DynValue, &DynValue)> {
        match &self.store {
            Store::Replaced { keys, values } => Some((&keys[layer], &values[layer])),
            Store::InPlace(_) => None,
        }
    }

    /// Portable form: replaces the whole cache with a step's present values, now `len` positions long.
    pub(crate) fn replace(
        &mut self,
        new_keys: Vec<DynValue>,
        new_values: Vec<DynValue>,
        len: usize,
    ) {
        if let Store::Replaced { keys, values } = &mut self.store {
            debug_assert_eq!(new_keys.len(), keys.len());
            debug_assert_eq!(new_values.len(), values.len());
            *keys = new_keys;
            *values = new_values;
        }
        self.len = len;
    }

    /// In-place form: the layer buffers, after making every global buffer hold at least `total` positions.
    pub(crate) fn in_place_for(&mut self, total: usize) -> Result<&mut [LayerBuffers]> {
        if !self.valid {
            return Err(Error::InvalidArgument(
                "a failed decoder step left this KV cache unusable: reset() it (or make a new one)"
                    .into(),
            ));
        }
        let len = self.len;
        let (batch, heads, hd) = (self.batch, self.num_kv_heads, self.head_dim);
        let Store::InPlace(layers) = &mut self.store else {
            return Err(Error::InvalidArgument(
                "this KV cache was made for a portable graph; make it with this decoder's new_cache".into(),
            ));
        };
        for layer in layers
            .iter_mut()
            .filter(|l| !l.sliding && l.capacity < total)
        {
            let capacity = total.max(2 * layer.capacity);
            let shape = [batch, heads, capacity, hd];
            let grow = |old: &mut Tensor<f32>| -> Result<Tensor<f32>> {
                let mut new = Tensor::<f32>::new(&Allocator::default(), shape)
                    .map_err(|e| Error::ort("growing the KV cache", e))?;
                let old_cap = old.shape()[2] as usize;
                let (_, src) = old.extract_tensor_mut();
                let (_, dst) = new.extract_tensor_mut();
                // Rows [0, len) of every (batch, head) block move to the same rows of the bigger block.
                for bh in 0..batch * heads {
                    let from = &src[bh * old_cap * hd..][..len * hd];
                    dst[bh * capacity * hd..][..len * hd].copy_from_slice(from);
                }
                Ok(new)
            };
            layer.key = grow(&mut layer.key)?;
            layer.value = grow(&mut layer.value)?;
            layer.capacity = capacity;
        }
        Ok(layers)
    }

    /// In-place form: marks the buffers as being written by a step (see [`advance`](Self::advance)).
    pub(crate) fn invalidate(&mut self) {
        self.valid = false;
    }

    /// In-place form: records that a step of the graph succeeded and advanced the cache to `len` positions.
    pub(crate) fn advance(&mut self, len: usize) {
        self.len = len;
        self.valid = true;
    }

    /// Rows of layer `layer`'s buffers that hold positions: all `len` of a portable or global layer; for a sliding
    /// layer of the cpu graph the last `L` positions, `L = T − G·⌈(T − C)/G⌉` once `T > C` (`C` the capacity,
    /// `G = C − W + 1`; ONNX Runtime's `sliding_window_cache` contract), so `min(T, W) ≤ L ≤ C`.
    pub fn resident_len(&self, layer: usize) -> usize {
        match &self.store {
            Store::InPlace(layers) if layers[layer].sliding => {
                sliding_resident_len(self.len, layers[layer].capacity, self.window)
            }
            _ => self.len,
        }
    }

    /// A copy of one layer's resident key and value rows as f32 arrays `[batch, num_kv_heads, rows, head_dim]`
    /// (for tests and inspection; decoding never needs this). Sliding layers of a cpu-graph cache give their
    /// resident rows only (see [`resident_len`](Self::resident_len)).
    pub fn layer_to_arrays(
        &self,
        layer: usize,
    ) -> Result<(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>)> {
        if layer >= self.num_layers() {
            return Err(Error::InvalidArgument(format!(
                "layer {layer} out of range ({} layers)",
                self.num_layers()
            )));
        }
        let ctx = "reading the KV cache";
        let copy = |v: &DynValue| -> Result<ndarray::ArrayD<f32>> {
            Ok(match self.dtype {
                DType::Float32 => v
                    .try_extract_array::<f32>()
                    .map_err(|e| Error::ort(ctx, e))?
                    .to_owned(),
                DType::Float16 => v
                    .try_extract_array::<half::f16>()
                    .map_err(|e| Error::ort(ctx, e))?
                    .mapv(|x| x.to_f32()),
            })
        };
        match &self.store {
            Store::Replaced { keys, values } => Ok((copy(&keys[layer])?, copy(&values[layer])?)),
            Store::InPlace(layers) => {
                let rows = self.resident_len(layer);
                let slice = |t: &Tensor<f32>| -> Result<ndarray::ArrayD<f32>> {
                    let a = t
                        .try_extract_array::<f32>()
                        .map_err(|e| Error::ort(ctx, e))?;
                    Ok(a.slice(ndarray::s![.., .., ..rows, ..])
                        .to_owned()
                        .into_dyn())
                };
                let l = &layers[layer];
                Ok((slice(&l.key)?, slice(&l.value)?))
            }
        }
    }
}

/// Positions a sliding layer of capacity `c` and window `window` holds after `t` positions (see
/// [`KvCache::resident_len`]).
fn sliding_resident_len(t: usize, c: usize, window: usize) -> usize {
    if t <= c {
        t
    } else {
        let g = c + 1 - window.min(c);
        t - g * (t - c).div_ceil(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_capacity_adds_slack_above_the_window() {
        assert_eq!(sliding_capacity(512), 640);
        assert_eq!(sliding_capacity(4096), 4224);
        assert_eq!(sliding_capacity(4), 5);
        assert!((1..3000).all(|w| sliding_capacity(w) > w));
    }
}
