//! The one reader of the reference tensors the fixture scripts saved with transformers: `reference.safetensors`
//! (text logits), `vision_reference.safetensors` (images, image features, image-prompt logits) and
//! `images/preprocess-reference.safetensors` (the image processor's outputs). Every accessor checks the dtype and,
//! where it returns a fixed rank, the rank, and names the tensor when one is missing.

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array3, Array4, ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// One reference file, read whole.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    /// `reference.safetensors` of a fixture folder.
    pub fn load(fixture: &Path) -> Result<Reference> {
        Reference::open(&fixture.join("reference.safetensors"))
    }

    /// `vision_reference.safetensors` of a fixture folder.
    pub fn vision(fixture: &Path) -> Result<Reference> {
        Reference::open(&fixture.join("vision_reference.safetensors"))
    }

    /// Any reference file.
    pub fn open(path: &Path) -> Result<Reference> {
        Ok(Reference {
            bytes: std::fs::read(path).with_context(|| path.display().to_string())?,
        })
    }

    /// Shape and bytes of tensor `name`, which must have `dtype`.
    fn raw(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, Vec<u8>)> {
        let st = SafeTensors::deserialize(&self.bytes)?;
        let t = st
            .tensor(name)
            .with_context(|| format!("reference tensor {name}"))?;
        if t.dtype() != dtype {
            bail!(
                "{name}: expected {dtype:?}, found {:?} {:?}",
                t.dtype(),
                t.shape()
            );
        }
        Ok((t.shape().to_vec(), t.data().to_vec()))
    }

    /// A float32 tensor of any rank.
    pub fn f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let (shape, data) = self.raw(name, Dtype::F32)?;
        let v = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), v)?)
    }

    /// An int64 tensor of any rank.
    pub fn i64(&self, name: &str) -> Result<ArrayD<i64>> {
        let (shape, data) = self.raw(name, Dtype::I64)?;
        let v = data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), v)?)
    }

    pub fn i64_2d(&self, name: &str) -> Result<Array2<i64>> {
        self.i64(name)?
            .into_dimensionality()
            .with_context(|| format!("{name}: expected a 2-D int64 tensor"))
    }

    pub fn f32_3d(&self, name: &str) -> Result<Array3<f32>> {
        self.f32(name)?
            .into_dimensionality()
            .with_context(|| format!("{name}: expected a 3-D float32 tensor"))
    }

    pub fn f32_4d(&self, name: &str) -> Result<Array4<f32>> {
        self.f32(name)?
            .into_dimensionality()
            .with_context(|| format!("{name}: expected a 4-D float32 tensor"))
    }

    /// The reference images as the encoder takes them, `pixel_values` `[N, 3, S, S]` (vision references).
    pub fn pixel_values(&self) -> Result<Array4<f32>> {
        self.f32_4d("pixel_values")
    }

    /// transformers' `get_image_features` of [`pixel_values`](Self::pixel_values), `[N, tokens, hidden]`.
    pub fn image_features(&self) -> Result<Array3<f32>> {
        self.f32_3d("image_features")
    }

    /// A value of the file's `__metadata__` (e.g. the `generator` line the scripts record).
    pub fn metadata(&self, key: &str) -> Result<String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes)?;
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .with_context(|| format!("no {key} metadata"))
    }
}
