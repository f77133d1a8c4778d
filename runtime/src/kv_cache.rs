//! The KV cache of one decoding run: per layer, the `present.{i}.key/value` ort values of the last step, fed back as
//! `past_key_values.{i}.key/value` of the next one. The values stay ort values (no copy back into Rust arrays).
//! The portable graph keeps the whole cache: it is never truncated, so `len` is the number of positions seen.

use ort::value::{DynValue, Tensor};

use crate::error::{Error, Result};
use crate::manifest::{DType, Manifest};

pub struct KvCache {
    batch: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    keys: Vec<DynValue>,
    values: Vec<DynValue>,
    len: usize,
}

impl KvCache {
    /// An empty cache (`[batch, num_kv_heads, 0, head_dim]` per layer) for a model described by `manifest`.
    pub fn new(manifest: &Manifest, batch: usize) -> Result<Self> {
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
            keys: Vec::with_capacity(manifest.num_layers),
            values: Vec::with_capacity(manifest.num_layers),
            len: 0,
        };
        for _ in 0..manifest.num_layers {
            cache.keys.push(cache.empty_value()?);
            cache.values.push(cache.empty_value()?);
        }
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
        self.keys.len()
    }

    /// Empties the cache (same batch size), ready for a new sequence.
    pub fn reset(&mut self) -> Result<()> {
        for i in 0..self.keys.len() {
            self.keys[i] = self.empty_value()?;
            self.values[i] = self.empty_value()?;
        }
        self.len = 0;
        Ok(())
    }

    pub(crate) fn key(&self, layer: usize) -> &DynValue {
        &self.keys[layer]
    }

    pub(crate) fn value(&self, layer: usize) -> &DynValue {
        &self.values[layer]
    }

    /// Replaces the whole cache with a step's present values, now `len` positions long.
    pub(crate) fn replace(&mut self, keys: Vec<DynValue>, values: Vec<DynValue>, len: usize) {
        debug_assert_eq!(keys.len(), self.keys.len());
        debug_assert_eq!(values.len(), self.values.len());
        self.keys = keys;
        self.values = values;
        self.len = len;
    }

    /// A copy of one layer's key and value as f32 arrays `[batch, num_kv_heads, len, head_dim]` (for tests and
    /// inspection; decoding never needs this).
    pub fn layer_to_arrays(
        &self,
        layer: usize,
    ) -> Result<(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>)> {
        if layer >= self.keys.len() {
            return Err(Error::InvalidArgument(format!(
                "layer {layer} out of range ({} layers)",
                self.keys.len()
            )));
        }
        let copy = |v: &DynValue| -> Result<ndarray::ArrayD<f32>> {
            let ctx = "reading the KV cache";
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
        Ok((copy(&self.keys[layer])?, copy(&self.values[layer])?))
    }
}
