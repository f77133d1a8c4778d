//! The decoder session: one forward pass of the exported graph on explicit `input_ids`, `attention_mask` and
//! `position_ids` (batch ≥ 1, left padding allowed), continuing a [`KvCache`].
//!
//! Graph I/O (Optimum / transformers.js names): inputs `input_ids` i64 `[b, s]`, `attention_mask` i64
//! `[b, past + s]`, `position_ids` i64 `[b, s]` (optional in the graph), `past_key_values.{i}.key/value`
//! `[b, nkv, past, hd]`; outputs `logits` `[b, s, vocab]` and `present.{i}.key/value` `[b, nkv, past + s, hd]`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, CowArray, Ix3};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef};

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::{self, DType, Manifest};
use crate::ort_env::{self, RuntimeOptions};

pub struct Decoder {
    session: Session,
    manifest: Manifest,
    dir: PathBuf,
    has_position_ids: bool,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

/// Which positions' logits a step returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last position of each row: `[b, 1, vocab]`.
    Last,
    /// Every position: `[b, s, vocab]`.
    All,
}

fn element_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::Float32 => TensorElementType::Float32,
        DType::Float16 => TensorElementType::Float16,
    }
}

impl Decoder {
    /// Opens the export folder `dir`: reads the manifest, creates the session and checks the graph's inputs and
    /// outputs against it.
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Decoder> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::load(&dir)?;
        let model = manifest::decoder_path(&dir, &manifest);
        let session = ort_env::create_session(&model, options)?;
        let past_names = (0..manifest.num_layers)
            .map(|i| {
                (
                    format!("past_key_values.{i}.key"),
                    format!("past_key_values.{i}.value"),
                )
            })
            .collect();
        let present_names = (0..manifest.num_layers)
            .map(|i| (format!("present.{i}.key"), format!("present.{i}.value")))
            .collect();
        let mut decoder = Decoder {
            session,
            manifest,
            dir,
            has_position_ids: false,
            past_names,
            present_names,
        };
        decoder.check_graph(&model)?;
        Ok(decoder)
    }

    fn check_graph(&mut self, model: &Path) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::invalid_file(
                model,
                format!("{msg} (does gemma-onnx.json match it?)"),
            ))
        };
        let kv_type = element_type(self.manifest.kv_dtype);
        let mut expected: Vec<(&str, Option<TensorElementType>)> = vec![
            ("input_ids", Some(TensorElementType::Int64)),
            ("attention_mask", Some(TensorElementType::Int64)),
        ];
        for (k, v) in &self.past_names {
            expected.push((k, Some(kv_type)));
            expected.push((v, Some(kv_type)));
        }
        let inputs: Vec<(String, Option<TensorElementType>)> = self
            .session
            .inputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().tensor_type()))
            .collect();
        for (name, ty) in &expected {
            match inputs.iter().find(|(n, _)| n == name) {
                None => return bad(format!("the graph has no input `{name}`")),
                Some((_, t)) if t != ty => {
                    return bad(format!("input `{name}` is {t:?}, expected {ty:?}"))
                }
                _ => {}
            }
        }
        for (name, _) in &inputs {
            if name == "position_ids" {
                self.has_position_ids = true;
            } else if !expected.iter().any(|(n, _)| n == name) {
                return bad(format!(
                    "the graph has an input `{name}` this runtime does not know"
                ));
            }
        }
        let outputs: Vec<(String, Option<TensorElementType>)> = self
            .session
            .outputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().tensor_type()))
            .collect();
        let mut expected_out = vec![(
            "logits".to_string(),
            element_type(self.manifest.logits_dtype),
        )];
        for (k, v) in &self.present_names {
            expected_out.push((k.clone(), kv_type));
            expected_out.push((v.clone(), kv_type));
        }
        for (name, ty) in &expected_out {
            match outputs.iter().find(|(n, _)| n == name) {
                None => return bad(format!("the graph has no output `{name}`")),
                Some((_, t)) if *t != Some(*ty) => {
                    return bad(format!("output `{name}` is {t:?}, expected {ty:?}"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The export folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        KvCache::new(&self.manifest, batch)
    }

    /// One forward pass; returns every position's logits `[b, s, vocab]` and appends the step to `cache`.
    pub fn forward(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
    ) -> Result<Array3<f32>> {
        self.forward_with(input_ids, attention_mask, position_ids, cache, |l| {
            l.to_owned()
        })
    }

    /// One forward pass; returns only the last position's logits `[b, vocab]` (the only part copied out).
    pub fn forward_last(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        self.forward_with(input_ids, attention_mask, position_ids, cache, |l| {
            let last = l.shape()[1] - 1;
            l.slice(s![.., last, ..]).to_owned()
        })
    }

    /// One forward pass, as [`forward`](Self::forward) or [`forward_last`](Self::forward_last) per `mode`;
    /// the result is `[b, 1, vocab]` for [`LogitsMode::Last`].
    pub fn step(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
        mode: LogitsMode,
    ) -> Result<Array3<f32>> {
        self.forward_with(
            input_ids,
            attention_mask,
            position_ids,
            cache,
            |l| match mode {
                LogitsMode::All => l.to_owned(),
                LogitsMode::Last => {
                    let last = l.shape()[1] - 1;
                    l.slice(s![.., last..last + 1, ..]).to_owned()
                }
            },
        )
    }

    /// Single unpadded sequence (batch-1 cache with no padding): feeds `tokens` after the cache's positions with an
    /// all-ones mask and returns the last position's logits.
    pub fn forward_tokens(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        if cache.batch() != 1 {
            return Err(Error::InvalidArgument(format!(
                "forward_tokens needs a batch-1 cache, got batch {}",
                cache.batch()
            )));
        }
        let (ids, mask, pos) = single_sequence_inputs(tokens, cache.len());
        let logits = self.forward_last(ids.view(), mask.view(), pos.view(), cache)?;
        Ok(logits.into_raw_vec_and_offset().0)
    }

    /// Runs one forward pass and hands the logits `[b, s, vocab]` (as f32; a view of ONNX Runtime's output when the
    /// graph's logits are f32) to `f`, whose result is returned. On success the cache holds the step's present
    /// values; on error it is left as it was.
    pub fn forward_with<R>(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        let (batch, seq) = input_ids.dim();
        let past = cache.len();
        if batch == 0 || seq == 0 {
            return Err(Error::InvalidArgument(format!(
                "input_ids must be non-empty, got shape [{batch}, {seq}]"
            )));
        }
        if cache.batch() != batch {
            return Err(Error::InvalidArgument(format!(
                "input_ids has batch {batch} but the KV cache was made for batch {}",
                cache.batch()
            )));
        }
        if cache.num_layers() != self.manifest.num_layers {
            return Err(Error::InvalidArgument(format!(
                "the KV cache has {} layers, the model {}",
                cache.num_layers(),
                self.manifest.num_layers
            )));
        }
        if attention_mask.dim() != (batch, past + seq) {
            return Err(Error::InvalidArgument(format!(
                "attention_mask must be [batch, past + seq] = [{batch}, {}], got {:?}",
                past + seq,
                attention_mask.shape()
            )));
        }
        if position_ids.dim() != (batch, seq) {
            return Err(Error::InvalidArgument(format!(
                "position_ids must be [batch, seq] = [{batch}, {seq}], got {:?}",
                position_ids.shape()
            )));
        }

        let ctx = "running the decoder";
        let ids = input_ids.as_standard_layout();
        let mask = attention_mask.as_standard_layout();
        let pos = position_ids.as_standard_layout();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + 2 * self.manifest.num_layers);
        inputs.push(("input_ids".into(), tensor_ref(&ids)?.into()));
        inputs.push(("attention_mask".into(), tensor_ref(&mask)?.into()));
        if self.has_position_ids {
            inputs.push(("position_ids".into(), tensor_ref(&pos)?.into()));
        }
        for (i, (k, v)) in self.past_names.iter().enumerate() {
            inputs.push((k.as_str().into(), cache.key(i).into()));
            inputs.push((v.as_str().into(), cache.value(i).into()));
        }

        let mut outputs = self.session.run(inputs).map_err(|e| Error::ort(ctx, e))?;

        let mut keys = Vec::with_capacity(self.present_names.len());
        let mut values = Vec::with_capacity(self.present_names.len());
        for (k, v) in &self.present_names {
            for (name, out) in [(k, &mut keys), (v, &mut values)] {
                let value: DynValue = outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Error::ort(ctx, format!("the graph produced no `{name}`")))?;
                let shape = value
                    .dtype()
                    .tensor_shape()
                    .map(|s| s.to_vec())
                    .unwrap_or_default();
                let expected = [
                    batch as i64,
                    self.manifest.num_kv_heads as i64,
                    (past + seq) as i64,
                    self.manifest.head_dim as i64,
                ];
                if shape != expected {
                    return Err(Error::ort(
                        ctx,
                        format!("`{name}` has shape {shape:?}, expected {expected:?}"),
                    ));
                }
                out.push(value);
            }
        }

        let logits = outputs
            .get("logits")
            .ok_or_else(|| Error::ort(ctx, "the graph produced no `logits`"))?;
        let result = match self.manifest.logits_dtype {
            DType::Float32 => {
                let view = logits
                    .try_extract_array::<f32>()
                    .map_err(|e| Error::ort(ctx, e))?;
                let view = view
                    .into_dimensionality::<Ix3>()
                    .map_err(|e| Error::ort(ctx, e))?;
                check_logits_shape(view.dim(), batch, seq, self.manifest.vocab_size)?;
                f(view)
            }
            DType::Float16 => {
                let view = logits
                    .try_extract_array::<half::f16>()
                    .map_err(|e| Error::ort(ctx, e))?;
                let view = view
                    .into_dimensionality::<Ix3>()
                    .map_err(|e| Error::ort(ctx, e))?;
                check_logits_shape(view.dim(), batch, seq, self.manifest.vocab_size)?;
                f(view.mapv(|x| x.to_f32()).view())
            }
        };
        drop(outputs);
        cache.replace(keys, values, past + seq);
        Ok(result)
    }
}

fn tensor_ref<'a>(a: &'a CowArray<'_, i64, ndarray::Ix2>) -> Result<TensorRef<'a, i64>> {
    TensorRef::from_array_view(a.view()).map_err(|e| Error::ort("running the decoder", e))
}

fn check_logits_shape(
    dim: (usize, usize, usize),
    batch: usize,
    seq: usize,
    vocab: usize,
) -> Result<()> {
    if dim != (batch, seq, vocab) {
        return Err(Error::ort(
            "running the decoder",
            format!("`logits` has shape {dim:?}, expected ({batch}, {seq}, {vocab})"),
        ));
    }
    Ok(())
}

/// `input_ids [1, n]`, an all-ones `attention_mask [1, past + n]` and `position_ids past..past + n` for one
/// unpadded sequence.
pub fn single_sequence_inputs(
    tokens: &[u32],
    past: usize,
) -> (Array2<i64>, Array2<i64>, Array2<i64>) {
    let n = tokens.len();
    let ids = Array2::from_shape_vec((1, n), tokens.iter().map(|&t| t as i64).collect())
        .expect("shape matches");
    let mask = Array2::ones((1, past + n));
    let pos = Array2::from_shape_vec((1, n), (past..past + n).map(|p| p as i64).collect())
        .expect("shape matches");
    (ids, mask, pos)
}

/// Position ids for a (possibly left-padded) prompt as transformers' `generate` makes them:
/// `cumsum(mask) - 1`, with padded positions set to 1.
pub fn position_ids_from_mask(mask: ArrayView2<i64>) -> Array2<i64> {
    let mut pos = Array2::zeros(mask.dim());
    for (mut out_row, mask_row) in pos.rows_mut().into_iter().zip(mask.rows()) {
        let mut sum = 0i64;
        for (o, &m) in out_row.iter_mut().zip(mask_row.iter()) {
            sum += m;
            *o = if m == 0 { 1 } else { sum - 1 };
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn positions_from_left_padded_mask() {
        let mask = array![[0i64, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
        assert_eq!(
            position_ids_from_mask(mask.view()),
            array![[1i64, 1, 0, 1, 2], [0, 1, 2, 3, 4]]
        );
    }

    #[test]
    fn single_sequence_continues_the_cache() {
        let (ids, mask, pos) = single_sequence_inputs(&[5, 6], 3);
        assert_eq!(ids, array![[5i64, 6]]);
        assert_eq!(mask, Array2::<i64>::ones((1, 5)));
        assert_eq!(pos, array![[3i64, 4]]);
    }
}
