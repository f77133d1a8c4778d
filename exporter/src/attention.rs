//! Gemma self-attention with a KV cache (spec §1.4, §4.1): projections, optional QK-norm, RoPE, grouped-query
//! attention against `past ⧺ new` keys/values, optional logit soft-cap, additive mask, softmax, output projection.

use crate::builder::{Attr, Value};
use crate::layers::{AttentionKind, Ctx};
use crate::ExportError;

/// Shapes and tensor names of one attention layer.
pub struct AttentionSpec {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·kᵀ` (`query_pre_attn_scalar^-0.5`, or `head_dim^-0.5` for Gemma 1).
    pub scaling: f64,
    pub softcap: Option<f64>,
    pub rms_norm_eps: f64,
    pub q_proj: String,
    pub k_proj: String,
    pub v_proj: String,
    pub o_proj: String,
    /// Gemma 3's per-head RMSNorm of q and k (before RoPE).
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
}

/// Graph values shared by the layers.
pub struct AttentionInputs<'a> {
    /// `Shape(input_ids)` = `[B, S]`.
    pub batch_seq: &'a Value,
    pub cos: &'a Value,
    pub sin: &'a Value,
    /// Additive mask `[B, 1, S, T]`.
    pub mask: &'a Value,
    pub past_key: &'a Value,
    pub past_value: &'a Value,
}

/// Output of the attention block: `[N, H]` hidden states and the present key/value `[B, nkv, T, hd]`.
pub struct AttentionOutputs {
    pub hidden: Value,
    pub present_key: Value,
    pub present_value: Value,
}

impl Ctx<'_> {
    pub fn self_attention(
        &mut self,
        x: &Value,
        spec: &AttentionSpec,
        io: &AttentionInputs<'_>,
    ) -> Result<AttentionOutputs, ExportError> {
        match self.kernels.attention {
            AttentionKind::Portable => self.attention_portable(x, spec, io),
            // GroupQueryAttention needs the CPU graph's own inputs (KV buffers, sequence lengths).
            AttentionKind::GroupQuery => Err(ExportError::Unsupported(
                "GroupQueryAttention is only built by the CPU decoder graph (decoder_cpu)".into(),
            )),
        }
    }

    /// Projects `x [N, H]` to heads `[B, heads, S, hd]`, with the optional per-head norm.
    fn heads(
        &mut self,
        x: &Value,
        proj: &str,
        heads: usize,
        hd: usize,
        norm: Option<&str>,
        eps: f64,
        bs: &Value,
    ) -> Result<Value, ExportError> {
        let y = self.linear(x, proj)?;
        let tail = self.g.const_i64("heads_shape", &[heads as i64, hd as i64]);
        let shape = self.g.op(
            "Concat",
            "heads/shape",
            &[bs, &tail],
            &[("axis", Attr::Int(0))],
        );
        let mut y = self.g.op("Reshape", "heads/reshape", &[&y, &shape], &[]);
        if let Some(norm) = norm {
            y = self.rms_norm(&y, norm, eps)?;
        }
        Ok(self.g.op(
            "Transpose",
            "heads/transpose",
            &[&y],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        ))
    }

    fn attention_portable(
        &mut self,
        x: &Value,
        spec: &AttentionSpec,
        io: &AttentionInputs<'_>,
    ) -> Result<AttentionOutputs, ExportError> {
        let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let q = self.heads(
            x,
            &spec.q_proj,
            nh,
            hd,
            spec.q_norm.as_deref(),
            spec.rms_norm_eps,
            io.batch_seq,
        )?;
        let k = self.heads(
            x,
            &spec.k_proj,
            nkv,
            hd,
            spec.k_norm.as_deref(),
            spec.rms_norm_eps,
            io.batch_seq,
        )?;
        let v = self.heads(
            x,
            &spec.v_proj,
            nkv,
            hd,
            None,
            spec.rms_norm_eps,
            io.batch_seq,
        )?;
        let q = self.rope(&q, io.cos, io.sin);
        let k = self.rope(&k, io.cos, io.sin);

        let g = &mut *self.g;
        let present_key = g.op(
            "Concat",
            "kv/key",
            &[io.past_key, &k],
            &[("axis", Attr::Int(2))],
        );
        let present_value = g.op(
            "Concat",
            "kv/value",
            &[io.past_value, &v],
            &[("axis", Attr::Int(2))],
        );

        // Grouped-query attention without repeating K/V: query head h = kv·rep + r, so [B, nh, S, hd] regroups
        // as [B, nkv, rep·S, hd] and each kv head meets its own queries in one MatMul.
        let grouped = g.const_i64("gqa_grouped", &[0, nkv as i64, -1, 0]);
        let per_head = g.const_i64("gqa_per_head", &[0, nh as i64, -1, 0]);
        let qg = g.op("Reshape", "attn/q_grouped", &[&q, &grouped], &[]);
        let kt = g.op(
            "Transpose",
            "attn/k_t",
            &[&present_key],
            &[("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let scores = g.op("MatMul", "attn/qk", &[&qg, &kt], &[]);
        let scores = g.op("Reshape", "attn/scores", &[&scores, &per_head], &[]);
        let scale = g.scalar_f32("attn_scaling", spec.scaling as f32);
        let mut scores = g.op("Mul", "attn/scale", &[&scores, &scale], &[]);
        if let Some(cap) = spec.softcap {
            scores = self.softcap(&scores, cap);
        }
        let g = &mut *self.g;
        let scores = g.op("Add", "attn/mask", &[&scores, io.mask], &[]);
        let probs = g.op(
            "Softmax",
            "attn/softmax",
            &[&scores],
            &[("axis", Attr::Int(-1))],
        );
        let probs = g.op("Reshape", "attn/probs_grouped", &[&probs, &grouped], &[]);
        let ctx = g.op("MatMul", "attn/pv", &[&probs, &present_value], &[]);
        let ctx = g.op("Reshape", "attn/context", &[&ctx, &per_head], &[]);
        let ctx = g.op(
            "Transpose",
            "attn/context_t",
            &[&ctx],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let flat = g.const_i64("flat_heads", &[-1, (nh * hd) as i64]);
        let ctx = g.op("Reshape", "attn/context_flat", &[&ctx, &flat], &[]);
        let hidden = self.linear(&ctx, &spec.o_proj)?;
        Ok(AttentionOutputs {
            hidden,
            present_key,
            present_value,
        })
    }
}
