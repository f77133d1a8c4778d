//! Gemma self-attention (semantics §1.4, §4.1): what one layer's attention is ([`AttentionSpec`], read from the
//! config), and its portable form with standard ops ([`Ctx::attention_portable`]): projections, optional QK-norm,
//! RoPE, grouped-query attention against `past ⧺ new` keys/values, optional logit soft-cap, additive mask, softmax,
//! output projection. ONNX Runtime's fused form is in [`crate::decoder::cpu`].

use crate::builder::Value;
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::names::{self, suffix};
use gemma_models::{LayerType, TextConfig};

/// The name of `q_proj`, `k_proj` and `v_proj` stacked into one quantized weight (no checkpoint has it; see
/// [`Ctx::linears`]).
pub const QKV_PROJ: &str = "self_attn.qkv_proj.weight";

/// Shapes and tensor names of one attention layer.
pub struct AttentionSpec {
    pub layer_type: LayerType,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·kᵀ` (`query_pre_attn_scalar^-0.5`, or `head_dim^-0.5` for Gemma 1).
    pub scaling: f64,
    pub softcap: Option<f64>,
    /// Sliding layers: the window W (keys `i − W < j ≤ i`, semantics §1.6).
    pub window: Option<usize>,
    pub rms_norm_eps: f64,
    pub q_proj: String,
    pub k_proj: String,
    pub v_proj: String,
    pub o_proj: String,
    /// q/k/v stacked, when the linears stack them ([`QKV_PROJ`]).
    pub qkv_proj: String,
    /// Gemma 3's per-head RMSNorm of q and k (before RoPE).
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
}

impl AttentionSpec {
    /// Layer `l` of the text config `t`, its weights under text prefix `prefix`.
    pub fn of_layer(t: &TextConfig, prefix: &str, l: usize) -> AttentionSpec {
        let n = |s: &str| names::layer(prefix, l, s);
        let layer_type = t.layer_types[l];
        AttentionSpec {
            layer_type,
            num_heads: t.num_attention_heads,
            num_kv_heads: t.num_key_value_heads,
            head_dim: t.head_dim,
            scaling: t.attention_scale(),
            softcap: t.attn_logit_softcapping,
            window: t
                .sliding_window
                .filter(|_| layer_type == LayerType::Sliding),
            rms_norm_eps: t.rms_norm_eps,
            q_proj: n(suffix::Q_PROJ),
            k_proj: n(suffix::K_PROJ),
            v_proj: n(suffix::V_PROJ),
            o_proj: n(suffix::O_PROJ),
            qkv_proj: n(QKV_PROJ),
            q_norm: t.has_qk_norm().then(|| n(suffix::Q_NORM)),
            k_norm: t.has_qk_norm().then(|| n(suffix::K_NORM)),
        }
    }
}

/// RoPE tables `(cos, sin)` `[B, 1, S, hd]` and the additive mask `[B, 1, S, T]` of one layer type.
pub struct LayerTables {
    pub cos: Value,
    pub sin: Value,
    pub mask: Value,
}

/// The graph values the portable attention of one layer reads.
pub struct AttentionInputs<'a> {
    /// `Shape(input_ids)` = `[B, S]`.
    pub batch_seq: &'a Value,
    pub tables: &'a LayerTables,
    /// `(past_key, past_value)` `[B, kv_heads, P, hd]`.
    pub past: &'a (Value, Value),
}

/// Output of the attention block: `[N, H]` hidden states and the present key/value.
pub struct AttentionOutputs {
    pub hidden: Value,
    pub present_key: Value,
    pub present_value: Value,
}

impl Ctx<'_> {
    /// Projects `x [N, H]` with `proj` to `heads` heads `[B, heads, S, hd]`, with the optional per-head norm.
    fn heads(
        &mut self,
        x: &Value,
        (proj, heads, norm): (&str, usize, Option<&str>),
        spec: &AttentionSpec,
        batch_seq: &Value,
    ) -> Result<Value, ExportError> {
        let y = self.linear(x, proj)?;
        let tail = self
            .g
            .const_i64("heads_shape", &[heads as i64, spec.head_dim as i64]);
        let shape = self.g.concat("heads/shape", &[batch_seq, &tail], 0);
        let mut y = self.g.reshape("heads/reshape", &y, &shape);
        if let Some(norm) = norm {
            y = self.rms_norm(&y, norm, spec.rms_norm_eps)?;
        }
        Ok(self.g.transpose("heads/transpose", &y, &[0, 2, 1, 3]))
    }

    /// Self-attention on `x [N, H]` with standard ops; the present KV is `Concat(past, new)`.
    pub fn attention_portable(
        &mut self,
        x: &Value,
        spec: &AttentionSpec,
        io: &AttentionInputs<'_>,
    ) -> Result<AttentionOutputs, ExportError> {
        let (nh, nkv) = (spec.num_heads, spec.num_kv_heads);
        let (q_norm, k_norm) = (spec.q_norm.as_deref(), spec.k_norm.as_deref());
        let q = self.heads(x, (&spec.q_proj, nh, q_norm), spec, io.batch_seq)?;
        let k = self.heads(x, (&spec.k_proj, nkv, k_norm), spec, io.batch_seq)?;
        let v = self.heads(x, (&spec.v_proj, nkv, None), spec, io.batch_seq)?;
        let LayerTables { cos, sin, mask } = io.tables;
        let q = self.rope(&q, cos, sin);
        let k = self.rope(&k, cos, sin);

        let g = &mut *self.g;
        let present_key = g.concat("kv/key", &[&io.past.0, &k], 2);
        let present_value = g.concat("kv/value", &[&io.past.1, &v], 2);
        let hidden = self.attend(&q, (&present_key, &present_value), spec, mask)?;
        Ok(AttentionOutputs {
            hidden,
            present_key,
            present_value,
        })
    }

    /// Attention of the RoPE'd queries `q [B, nh, S, hd]` over all keys and values `[B, nkv, T, hd]` (past and
    /// new) with the additive `mask [B, 1, S, T]`, then the output projection: `[N, H]`.
    pub fn attend(
        &mut self,
        q: &Value,
        (present_key, present_value): (&Value, &Value),
        spec: &AttentionSpec,
        mask: &Value,
    ) -> Result<Value, ExportError> {
        let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let g = &mut *self.g;
        // Grouped-query attention without repeating K/V: query head h = kv·rep + r, so [B, nh, S, hd] regroups
        // as [B, nkv, rep·S, hd] and each kv head meets its own queries in one MatMul.
        let grouped = g.const_i64("gqa_grouped", &[0, nkv as i64, -1, 0]);
        let per_head = g.const_i64("gqa_per_head", &[0, nh as i64, -1, 0]);
        let qg = g.reshape("attn/q_grouped", q, &grouped);
        let kt = g.transpose("attn/k_t", present_key, &[0, 1, 3, 2]);
        let scores = g.op("MatMul", "attn/qk", &[&qg, &kt], &[]);
        let scores = g.reshape("attn/scores", &scores, &per_head);
        let scale = g.scalar_f32("attn_scaling", spec.scaling as f32);
        let mut scores = g.op("Mul", "attn/scale", &[&scores, &scale], &[]);
        if let Some(cap) = spec.softcap {
            scores = self.softcap(&scores, cap);
        }
        let g = &mut *self.g;
        let scores = g.op("Add", "attn/mask", &[&scores, mask], &[]);
        let probs = g.op(
            "Softmax",
            "attn/softmax",
            &[&scores],
            &[("axis", crate::builder::Attr::Int(-1))],
        );
        let probs = g.reshape("attn/probs_grouped", &probs, &grouped);
        let ctx = g.op("MatMul", "attn/pv", &[&probs, present_value], &[]);
        let ctx = g.reshape("attn/context", &ctx, &per_head);
        let ctx = g.transpose("attn/context_t", &ctx, &[0, 2, 1, 3]);
        let flat = g.const_i64("flat_heads", &[-1, (nh * hd) as i64]);
        let ctx = g.reshape("attn/context_flat", &ctx, &flat);
        self.linear(&ctx, &spec.o_proj)
    }
}
