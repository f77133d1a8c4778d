//! One forward pass of each graph kind (see the parent module's docs): the portable graph's inputs and outputs
//! through `Session::run` (token ids or embeddings), and the cpu graph's in-place KV buffers through I/O binding.

use gemma_models::contract::io;
use std::borrow::Cow;

use ndarray::{s, Array3, Array4, ArrayView2, ArrayView3, CowArray, Ix3};
use ort::memory::MemoryInfo;
use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorRef};

use super::{Decoder, LogitsMode, Step, TokenInput};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::DType;

impl Decoder {
    /// The portable graph: the tokens, mask, positions and the cache's whole past in; the present values replace
    /// the cache.
    pub(super) fn run_portable<R>(
        &mut self,
        step: &Step<'_>,
        cache: &mut KvCache,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        let (batch, seq) = step.tokens.dim();
        let past = cache.len();
        let ctx = self.context;
        let e = |err| Error::ort(ctx, err);
        let mask = step.attention_mask.as_standard_layout();
        let pos = step.position_ids.as_standard_layout();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(4 + 2 * self.manifest.num_layers);
        let (ids, embeds, types, per_layer);
        match &step.tokens {
            TokenInput::Ids(input_ids) if self.embed_tokens.is_some() => {
                ids = input_ids.as_standard_layout();
                for (name, value) in self.embed_ids(ids.view())? {
                    inputs.push((name.into(), value.into()));
                }
            }
            TokenInput::Ids(input_ids) => {
                ids = input_ids.as_standard_layout();
                inputs.push((io::INPUT_IDS.into(), tensor_ref(&ids, ctx)?.into()));
            }
            TokenInput::Embeds {
                embeds: e_view,
                token_type_ids,
            } => {
                embeds = e_view.as_standard_layout();
                types = token_type_ids.as_standard_layout();
                let embeds = TensorRef::from_array_view(embeds.view()).map_err(e)?;
                inputs.push((io::INPUTS_EMBEDS.into(), embeds.into()));
                inputs.push((io::TOKEN_TYPE_IDS.into(), tensor_ref(&types, ctx)?.into()));
            }
            TokenInput::Gemma3nEmbeds {
                embeds: e_view,
                per_layer_inputs,
            } => {
                embeds = e_view.as_standard_layout();
                per_layer = per_layer_inputs.as_standard_layout();
                let embeds = TensorRef::from_array_view(embeds.view()).map_err(e)?;
                let per_layer = TensorRef::from_array_view(per_layer.view()).map_err(e)?;
                inputs.push((io::INPUTS_EMBEDS.into(), embeds.into()));
                inputs.push((io::PER_LAYER_INPUTS.into(), per_layer.into()));
            }
        }
        inputs.push((io::ATTENTION_MASK.into(), tensor_ref(&mask, ctx)?.into()));
        if self.has_position_ids {
            inputs.push((io::POSITION_IDS.into(), tensor_ref(&pos, ctx)?.into()));
        }
        // Exports with the optional `num_logits_to_keep` input skip the lm_head on all but the last position.
        let keep_input = match step.logits {
            LogitsMode::Last => self.manifest.portable_logits_to_keep_input.as_deref(),
            LogitsMode::All => None,
        };
        let keep = ndarray::arr0(1i64);
        if let Some(name) = &keep_input {
            let keep = TensorRef::from_array_view(&keep).map_err(e)?;
            inputs.push(((*name).into(), keep.into()));
        }
        for (i, (k, v)) in self.past_names.iter().enumerate() {
            let (pk, pv) = cache.past(i).ok_or_else(|| {
                Error::InvalidArgument(
                    "this KV cache was made for a cpu graph; make it with this decoder's new_cache"
                        .into(),
                )
            })?;
            inputs.push((k.as_str().into(), pk.into()));
            inputs.push((v.as_str().into(), pv.into()));
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
        let kept = if keep_input.is_some() { 1 } else { seq };
        let result = logits_view(
            ctx,
            &outputs,
            self.manifest.logits_dtype,
            (batch, kept, self.manifest.vocab_size),
            |l| match step.logits {
                LogitsMode::All => f(l),
                LogitsMode::Last => f(l.slice(s![.., kept - 1..kept, ..])),
            },
        )?;
        drop(outputs);
        cache.replace(keys, values, past + seq);
        Ok(result)
    }

    /// Gemma 3n: `embed_tokens.onnx` on `ids` `[b, s]` → `inputs_embeds` `[b, s, hidden]` and `per_layer_inputs`
    /// `[b, s, layers, P]`, to be edited (audio rows) and run as [`TokenInput::Gemma3nEmbeds`].
    pub fn embed(&mut self, ids: ArrayView2<i64>) -> Result<(Array3<f32>, Array4<f32>)> {
        const CTX: &str = "running embed_tokens.onnx";
        if self.embed_tokens.is_none() {
            return Err(Error::InvalidArgument(
                "only Gemma 3n exports have an embed_tokens graph for the decoder".into(),
            ));
        }
        let ids = ids.as_standard_layout();
        let [(_, embeds), (_, per_layer)] = self.embed_ids(ids.view())?;
        let array = |v: &DynValue| -> Result<ndarray::ArrayD<f32>> {
            Ok(v.try_extract_array::<f32>()
                .map_err(|e| Error::ort(CTX, e))?
                .to_owned())
        };
        let shape_err = |e: ndarray::ShapeError| Error::ort(CTX, e.to_string());
        let embeds = array(&embeds)?.into_dimensionality().map_err(shape_err)?;
        let per_layer = array(&per_layer)?
            .into_dimensionality()
            .map_err(shape_err)?;
        Ok((embeds, per_layer))
    }

    /// Gemma 3n: `embed_tokens.onnx` on `ids`, its `inputs_embeds` and `per_layer_inputs` by name.
    fn embed_ids(&mut self, ids: ArrayView2<i64>) -> Result<[(&'static str, DynValue); 2]> {
        const CTX: &str = "running embed_tokens.onnx";
        let embed = self
            .embed_tokens
            .as_mut()
            .expect("called for Gemma 3n decoders only");
        let ids = TensorRef::from_array_view(ids).map_err(|e| Error::ort(CTX, e))?;
        let mut out = embed
            .run(ort::inputs![io::INPUT_IDS => ids])
            .map_err(|e| Error::ort(CTX, e))?;
        let mut take = |name: &'static str| {
            out.remove(name)
                .map(|v| (name, v))
                .ok_or_else(|| Error::ort(CTX, format!("the graph produced no `{name}`")))
        };
        Ok([take(io::INPUTS_EMBEDS)?, take(io::PER_LAYER_INPUTS)?])
    }

    /// The cpu graph: binds the cache's buffers as both past inputs and present outputs (updated in place by the
    /// graph), and asks for the last position's logits only in [`LogitsMode::Last`].
    pub(super) fn run_in_place<R>(
        &mut self,
        step: &Step<'_>,
        cache: &mut KvCache,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        let ctx = self.context;
        let (batch, seq) = step.tokens.dim();
        let copy = |e: ort::Error| Error::ort(ctx, e);
        // The tokens: `input_ids`; for Gemma 3n, embed_tokens.onnx's outputs (or the caller's edited copies).
        let tokens: Vec<(&'static str, DynValue)> = match step.tokens {
            TokenInput::Ids(ids) if self.embed_tokens.is_some() => {
                self.embed_ids(ids.as_standard_layout().view())?.into()
            }
            TokenInput::Ids(ids) => {
                let ids = Tensor::from_array(ids.to_owned()).map_err(copy)?;
                vec![(io::INPUT_IDS, ids.into_dyn())]
            }
            TokenInput::Gemma3nEmbeds {
                embeds,
                per_layer_inputs,
            } => {
                let embeds = Tensor::from_array(embeds.to_owned()).map_err(copy)?;
                let per_layer = Tensor::from_array(per_layer_inputs.to_owned()).map_err(copy)?;
                vec![
                    (io::INPUTS_EMBEDS, embeds.into_dyn()),
                    (io::PER_LAYER_INPUTS, per_layer.into_dyn()),
                ]
            }
            TokenInput::Embeds { .. } => {
                return Err(Error::InvalidArgument(
                    "the cpu graph takes input_ids, not inputs_embeds".into(),
                ))
            }
        };
        let past = cache.len();
        let cpu = self
            .manifest
            .cpu
            .as_ref()
            .expect("validated with the manifest");
        if past > 0 && seq > 1 && batch > 1 && cpu.multi_token_steps_need_batch_1 {
            return Err(Error::InvalidArgument(format!(
                "this cpu graph cannot take {seq} new tokens per row on top of a cached context with batch {batch} \
                 (ONNX Runtime's GroupQueryAttention needs batch 1 for that): prefill a batch in one step, then \
                 decode one token per step, or export with --graph portable"
            )));
        }
        let keep = match step.logits {
            LogitsMode::All => 0i64,
            LogitsMode::Last => 1,
        };
        let owned =
            |a: ArrayView2<i64>| Tensor::from_array(a.to_owned()).map_err(|e| Error::ort(ctx, e));
        let mut binding = self
            .session
            .create_binding()
            .map_err(|e| Error::ort(ctx, e))?;
        let bind = |r: ort::Result<()>| r.map_err(|e| Error::ort(ctx, e));
        for (name, value) in &tokens {
            bind(binding.bind_input(*name, value))?;
        }
        bind(binding.bind_input(io::ATTENTION_MASK, &owned(step.attention_mask)?))?;
        bind(binding.bind_input(io::POSITION_IDS, &owned(step.position_ids)?))?;
        let keep = Tensor::from_array(((), vec![keep])).map_err(|e| Error::ort(ctx, e))?;
        bind(binding.bind_input(cpu.logits_to_keep_input.as_str(), &keep))?;
        let layers = cache.in_place_for(past + seq)?;
        for ((pk, pv), ((k, v), layer)) in self
            .past_names
            .iter()
            .zip(self.present_names.iter().zip(layers.iter_mut()))
        {
            bind(binding.bind_input(pk.as_str(), &layer.key))?;
            bind(binding.bind_input(pv.as_str(), &layer.value))?;
            bind(binding.bind_output(k.as_str(), &mut layer.key))?;
            bind(binding.bind_output(v.as_str(), &mut layer.value))?;
        }
        bind(binding.bind_output_to_device(io::LOGITS, &MemoryInfo::default()))?;

        // From here on the buffers may be partly written: the cache is only valid again once the step succeeds.
        cache.invalidate();
        let outputs = self
            .session
            .run_binding(&binding)
            .map_err(|e| Error::ort(ctx, e))?;
        let kept = match step.logits {
            LogitsMode::All => seq,
            LogitsMode::Last => 1,
        };
        let result = logits_view(
            ctx,
            &outputs,
            self.manifest.logits_dtype,
            (batch, kept, self.manifest.vocab_size),
            f,
        )?;
        drop(outputs);
        drop(binding);
        cache.advance(past + seq);
        Ok(result)
    }
}

/// Hands `f` the `logits` output of `outputs` as an f32 view `[b, s, vocab]` (converted from fp16 when `dtype` says
/// so) after checking its shape against `dim`; errors name `ctx`.
fn logits_view<R>(
    ctx: &str,
    outputs: &SessionOutputs<'_>,
    dtype: DType,
    dim: (usize, usize, usize),
    f: impl FnOnce(ArrayView3<f32>) -> R,
) -> Result<R> {
    let logits = outputs
        .get(io::LOGITS)
        .ok_or_else(|| Error::ort(ctx, "the graph produced no `logits`"))?;
    let check = |d: (usize, usize, usize)| {
        if d == dim {
            Ok(())
        } else {
            Err(Error::ort(
                ctx,
                format!("`logits` has shape {d:?}, expected {dim:?}"),
            ))
        }
    };
    Ok(match dtype {
        DType::Float32 => {
            let view = logits
                .try_extract_array::<f32>()
                .map_err(|e| Error::ort(ctx, e))?;
            let view = view
                .into_dimensionality::<Ix3>()
                .map_err(|e| Error::ort(ctx, e))?;
            check(view.dim())?;
            f(view)
        }
        DType::Float16 => {
            let view = logits
                .try_extract_array::<half::f16>()
                .map_err(|e| Error::ort(ctx, e))?;
            let view = view
                .into_dimensionality::<Ix3>()
                .map_err(|e| Error::ort(ctx, e))?;
            check(view.dim())?;
            f(view.mapv(|x| x.to_f32()).view())
        }
    })
}

fn tensor_ref<'a>(a: &'a CowArray<'_, i64, ndarray::Ix2>, ctx: &str) -> Result<TensorRef<'a, i64>> {
    TensorRef::from_array_view(a.view()).map_err(|e| Error::ort(ctx, e))
}
