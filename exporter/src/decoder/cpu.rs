//! The ONNX Runtime CPU backend (`gemma-export --graph cpu`, the default): the same maths as the portable graph
//! (float32 activations), built from ONNX Runtime's contrib ops ([`crate::ops`]):
//!
//! - **KV cache updated in place.** Each layer's `past_key_values.{i}.key|value` is a preallocated buffer
//!   `[batch, kv_heads, capacity, head_dim]` that the runtime binds (I/O binding) as both the input and the matching
//!   `present.{i}.key|value` output; `GroupQueryAttention` writes the new keys/values into it, so no step copies the
//!   cache.
//! - **Window-bounded cache on sliding layers.** Sliding layers run `GroupQueryAttention` with a window-sized cache
//!   ([`GLOBAL_CACHE_DIM`] / [`SLIDING_CACHE_DIM`] name the capacities): memory grows only with the global layers.
//!   ONNX Runtime 1.31's window is exactly `i − W < j ≤ i` (semantics §1.6; checked by the parity tests).
//! - **Logits only where asked.** `num_logits_to_keep` (required here) keeps the last K positions before the final
//!   norm and the lm_head (1 in generation; 0 keeps all, for perplexity and parity tests).
//! - **Fused ops.** ONNX's `RMSNormalization` (so the graph imports opset 23; the portable graph stays at 21), and
//!   the contrib `SkipSimplifiedLayerNormalization` for every residual add: the stream is carried as
//!   `(x, pending)` and the next norm adds `pending` itself ([`Residual`]).
//!
//! `seqlens_k` and `total_sequence_length` are derived from the shape of `attention_mask`, which itself becomes an
//! additive `attention_bias`: that is how left padding works. RoPE is applied by `RotaryEmbedding` outside the
//! attention op, from `position_ids` (so left-padded rows get their own positions; see `cpu/shared.rs`).
//!
//! `GroupQueryAttention` restriction (ORT 1.31): a step with past context and `S > 1` needs batch 1. The runtime
//! therefore prefills a batch in one step and then decodes one token per step.

use super::backend::Result;
use super::io::{DecoderInput, Inputs, GLOBAL_CACHE_DIM, SLIDING_CACHE_DIM};
use super::{Backend, Begun, Residual, Text};
use crate::attention::{AttentionOutputs, AttentionSpec};
use crate::builder::Value;
use crate::layers::{Ctx, NormKind};
use crate::ops::rotary_embedding::rotary_embedding;
use crate::ops::skip_simplified_layer_norm::skip_simplified_layer_norm;
use crate::ExportError;
use gemma_models::{LayerType, ModelConfig};

pub(crate) mod shared;
use shared::Shared;

/// ONNX Runtime's CPU contrib ops, and the values every layer shares once [`Backend::begin`] has run.
pub struct OrtCpu {
    text: Text,
    shared: Option<Shared>,
    past: Vec<(Value, Value)>,
}

impl OrtCpu {
    /// The cpu backend for the text decoder of `cfg`.
    pub fn new(cfg: &ModelConfig) -> OrtCpu {
        OrtCpu {
            text: Text::of(cfg),
            shared: None,
            past: Vec::new(),
        }
    }
}

impl Backend for OrtCpu {
    fn text(&self) -> &Text {
        &self.text
    }

    fn norm_kind(&self) -> NormKind {
        NormKind::Fused
    }

    fn check(&self, input: DecoderInput) -> Result<()> {
        let t = &self.text.t;
        if t.layer_types.contains(&LayerType::Sliding) && t.sliding_window.is_none() {
            return Err(ExportError::Unsupported(
                "sliding layers without a sliding_window in config.json".into(),
            ));
        }
        if input != DecoderInput::InputIds {
            return Err(ExportError::Unsupported(
                "the cpu graph takes input_ids only (the image path uses the portable decoder)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn kv_length_dim(&self, ty: LayerType, _present: bool) -> &'static str {
        match ty {
            LayerType::Full => GLOBAL_CACHE_DIM,
            LayerType::Sliding => SLIDING_CACHE_DIM,
        }
    }

    fn logits_to_keep_default(&self) -> Option<i64> {
        None
    }

    fn begin(&mut self, cx: &mut Ctx<'_>, inputs: &Inputs) -> Result<Begun> {
        cx.g.set_scope("/model");
        let shared = shared::values(cx.g, &self.text.t, inputs);
        let batch_seq = shared.batch_seq.clone();
        self.shared = Some(shared);
        self.past = inputs.past.clone();
        let x = self.embed(cx, inputs)?;
        Ok(Begun { x, batch_seq })
    }

    /// Self-attention through `GroupQueryAttention`: `[N, H]` after `o_proj`, and the present key/value (the same
    /// buffers as the past ones when the runtime binds them so).
    fn attention(&mut self, cx: &mut Ctx<'_>, x: &Value, l: usize) -> Result<AttentionOutputs> {
        let Some(s) = self.shared.as_ref() else {
            unreachable!("begin runs before the layers")
        };
        let spec = AttentionSpec::of_layer(&self.text.t, &self.text.prefix, l);
        let (nh, nkv) = (spec.num_heads, spec.num_kv_heads);
        let rope = s.rope(spec.layer_type);
        let names = [spec.q_proj.as_str(), &spec.k_proj, &spec.v_proj];
        let [q, k, v]: [Value; 3] = cx
            .linears(x, &names, &spec.qkv_proj)?
            .try_into()
            .expect("three outputs");
        let q = project_heads(cx, q, nh, spec.q_norm.as_deref(), Some(rope), &spec, s)?;
        let k = project_heads(cx, k, nkv, spec.k_norm.as_deref(), Some(rope), &spec, s)?;
        let v = project_heads(cx, v, nkv, None, None, &spec, s)?;
        let (past_key, past_value) = &self.past[l];
        let (out, present_key, present_value) =
            s.attention(cx.g, &spec, [&q, &k, &v], (past_key, past_value), true);
        let flat =
            cx.g.const_i64("flat_heads", &[-1, (nh * spec.head_dim) as i64]);
        let ctx = cx.g.reshape("attn/flat", &out, &flat);
        Ok(AttentionOutputs {
            hidden: cx.linear(&ctx, &spec.o_proj)?,
            present_key,
            present_value,
        })
    }

    /// Defers the add to the next norm (which [`Self::norm_residual`] fuses).
    fn add_residual(&mut self, cx: &mut Ctx<'_>, r: &mut Residual, delta: Value, _label: &str) {
        if let Some(p) = r.pending.replace(delta) {
            // Two adds without a norm between them: the first one is its own node.
            r.x = cx.g.op("Add", "residual_pending", &[&r.x, &p], &[]);
        }
    }

    /// `RMSNorm(x + pending)` in one `SkipSimplifiedLayerNormalization`, whose sum becomes the stream.
    fn norm_residual(&mut self, cx: &mut Ctx<'_>, r: &mut Residual, w: &str) -> Result<Value> {
        let eps = self.text.t.rms_norm_eps;
        let Some(skip) = r.pending.take() else {
            return cx.rms_norm(&r.x, w, eps);
        };
        let gain = cx.norm_gain(w)?;
        let (normed, sum) =
            skip_simplified_layer_norm(cx.g, "skip_norm", &r.x, &skip, &gain, eps as f32);
        r.x = sum;
        Ok(normed)
    }
}

/// A projection `y [N, heads·hd]` to `[B, S, heads·hd]`, with the optional per-head QK-norm (before RoPE,
/// semantics §1.4) and RoPE (`rope`: the `(cos, sin)` tables of the layer type).
fn project_heads(
    cx: &mut Ctx<'_>,
    mut y: Value,
    heads: usize,
    norm: Option<&str>,
    rope: Option<&(Value, Value)>,
    spec: &AttentionSpec,
    s: &Shared,
) -> Result<Value> {
    let hd = spec.head_dim;
    if let Some(norm) = norm {
        let per_head = cx.g.const_i64("per_head", &[-1, hd as i64]);
        let yh = cx.g.reshape("heads/split", &y, &per_head);
        y = cx.rms_norm(&yh, norm, spec.rms_norm_eps)?;
    }
    let tail = cx.g.const_i64("flat_tail", &[-1]);
    let shape = cx.g.concat("heads/shape", &[&s.batch_seq, &tail], 0);
    let y = cx.g.reshape("heads/bsh", &y, &shape);
    Ok(match rope {
        None => y,
        Some((cos, sin)) => rotary_embedding(cx.g, "rope", &y, [&s.rope_ids, cos, sin], heads, hd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Dim;

    #[test]
    fn kv_dims_name_the_capacity_per_layer_type() {
        let json = include_str!("../../../tests/fixtures/tiny/mqa-f32-hf5/config.json");
        let cfg = ModelConfig::from_json_str(json, std::path::Path::new("config.json")).unwrap();
        let cpu = OrtCpu::new(&cfg);
        let d = super::super::io::kv_dims(2, 16, cpu.kv_length_dim(LayerType::Sliding, false));
        assert!(matches!(&d[2], Dim::Named(s) if s == SLIDING_CACHE_DIM));
        let d = super::super::io::kv_dims(2, 16, cpu.kv_length_dim(LayerType::Full, true));
        assert!(matches!(&d[2], Dim::Named(s) if s == GLOBAL_CACHE_DIM));
        assert!(matches!(d[3], Dim::Fixed(16)));
    }
}
