//! The decoder session: one forward pass of the exported graph on explicit `input_ids`, `attention_mask` and
//! `position_ids` (batch ≥ 1, left padding allowed), continuing a [`KvCache`].
//!
//! Graph I/O (Optimum / transformers.js names): inputs `input_ids` i64 `[b, s]`, `attention_mask` i64
//! `[b, past + s]`, `position_ids` i64 `[b, s]` (optional in the portable graph), `past_key_values.{i}.key/value`;
//! outputs `logits` `[b, s, vocab]` and `present.{i}.key/value`.
//!
//! Two graph kinds (manifest `graph`):
//! - **portable**: the past is `[b, nkv, past, hd]` and the present `[b, nkv, past + s, hd]`, a new tensor each step
//!   that replaces the cache; logits come for every position.
//! - **cpu**: the KV tensors are preallocated buffers `[b, nkv, capacity, hd]` that this module binds (ONNX Runtime
//!   I/O binding) as both the past input and the present output, so the graph updates them in place; the extra
//!   input `num_logits_to_keep` makes the graph compute logits for the last position only when that is all the
//!   caller wants ([`LogitsMode::Last`]). A step with cached context and several new tokens needs batch 1.

use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3};
use ort::session::Session;
use ort::value::TensorElementType;

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::{self, DType, GraphKind, Manifest};
use crate::ort_env::{self, RuntimeOptions};

pub(crate) mod run;

pub struct Decoder {
    session: Session,
    manifest: Manifest,
    dir: PathBuf,
    graph: GraphKind,
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
        let manifest = manifest::load(&dir)?;
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
            graph: manifest.graph,
            manifest,
            dir,
            has_position_ids: false,
            past_names,
            present_names,
        };
        decoder.check_graph(&model)?;
        crate::integrity::check_graph_shapes(&decoder.session, &decoder.manifest, &model)?;
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
        if let Some(cpu) = &self.manifest.cpu {
            expected.push(("position_ids", Some(TensorElementType::Int64)));
            expected.push((&cpu.logits_to_keep_input, Some(TensorElementType::Int64)));
        }
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

    /// The kind of graph this decoder runs.
    pub fn graph_kind(&self) -> GraphKind {
        self.graph
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        KvCache::new(&self.manifest, batch)
    }

    /// An empty cache for `batch` rows sized for `positions` positions (prompt + new tokens): with the cpu graph,
    /// a run of that length then never reallocates the cache.
    pub fn new_cache_with_capacity(&self, batch: usize, positions: usize) -> Result<KvCache> {
        KvCache::with_capacity(&self.manifest, batch, positions)
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

    /// One forward pass; returns only the last position's logits `[b, vocab]` (the only ones the cpu graph
    /// computes, and the only part copied out).
    pub fn forward_last(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        self.run(
            input_ids,
            attention_mask,
            position_ids,
            cache,
            LogitsMode::Last,
            |l| l.slice(s![.., 0, ..]).to_owned(),
        )
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
        self.run(input_ids, attention_mask, position_ids, cache, mode, |l| {
            l.to_owned()
        })
    }

    /// Single unpadded sequence (batch-1 cache with no padding): feeds `tokens` after the cache's positions with an
    /// all-ones mask and returns the last position's logits.
    pub fn forward_tokens(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.forward_tokens_with(tokens, cache, |row| row.to_vec())
    }

    /// [`forward_tokens`](Self::forward_tokens) handing the last position's logits (a view of ONNX Runtime's
    /// output, no copy for f32 graphs) to `f`, e.g. a sampler; returns what `f` returns.
    pub fn forward_tokens_with<R>(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Result<R> {
        if cache.batch() != 1 {
            return Err(Error::InvalidArgument(format!(
                "forward_tokens needs a batch-1 cache, got batch {}",
                cache.batch()
            )));
        }
        let (ids, mask, pos) = single_sequence_inputs(tokens, cache.len());
        self.run(
            ids.view(),
            mask.view(),
            pos.view(),
            cache,
            LogitsMode::Last,
            |l| match l.slice(s![0, 0, ..]).to_slice() {
                Some(row) => f(row),
                None => f(&l.slice(s![0, 0, ..]).to_vec()),
            },
        )
    }

    /// Runs one forward pass and hands the logits `[b, s, vocab]` (as f32; a view of ONNX Runtime's output when the
    /// graph's logits are f32) to `f`, whose result is returned. On success the cache holds the step's present
    /// values; on error a portable cache is left as it was, a cpu-graph cache must be [`reset`](KvCache::reset).
    pub fn forward_with<R>(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        self.run(
            input_ids,
            attention_mask,
            position_ids,
            cache,
            LogitsMode::All,
            f,
        )
    }

    /// One forward pass handing `f` the logits of every position (`All`, `[b, s, vocab]`) or of the last one
    /// (`Last`, `[b, 1, vocab]`).
    pub fn run<R>(
        &mut self,
        input_ids: ArrayView2<i64>,
        attention_mask: ArrayView2<i64>,
        position_ids: ArrayView2<i64>,
        cache: &mut KvCache,
        mode: LogitsMode,
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
        match self.graph {
            GraphKind::Portable => {
                self.run_portable(input_ids, attention_mask, position_ids, cache, mode, f)
            }
            GraphKind::Cpu => {
                self.run_in_place(input_ids, attention_mask, position_ids, cache, mode, f)
            }
        }
    }
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
