//! The blocks of the CPU decoder graph that differ from the portable ones ([`crate::layers`]): RMSNorm fused with
//! the residual add, head projections with QK-norm and `RotaryEmbedding`, and `GroupQueryAttention` on the shared
//! KV buffers.

use super::{Shared, MS_DOMAIN};
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::{LayerType, TextConfig};

impl Ctx<'_> {
    /// The `(1 + w)` gain of a norm weight as a float32 initializer (shared name with [`Ctx::rms_norm`]).
    fn norm_gain(&mut self, weight_name: &str) -> Result<Value, ExportError> {
        let name = format!("{weight_name}_plus_one");
        if let Some(v) = self.g.existing(&name) {
            return Ok(v);
        }
        let view = self.ckpt.tensor(weight_name)?;
        let gain = self
            .w
            .f32_from_checkpoint(self.ckpt, &name, &view, Some(&|v| 1.0 + v))?;
        Ok(self.g.initializer(gain))
    }

    /// `(RMSNorm(x + skip) · (1 + w), x + skip)` in one `SkipSimplifiedLayerNormalization`.
    pub(super) fn skip_rms_norm(
        &mut self,
        x: &Value,
        skip: &Value,
        weight_name: &str,
        eps: f64,
    ) -> Result<(Value, Value), ExportError> {
        let gain = self.norm_gain(weight_name)?;
        let out = self.g.op_domain(
            MS_DOMAIN,
            "SkipSimplifiedLayerNormalization",
            "skip_norm",
            &[x, skip, &gain],
            &[("epsilon", Attr::Float(eps as f32))],
            4,
        );
        Ok((out[0].clone(), out[3].clone()))
    }

    /// A projection `y [N, heads·hd]` to `[B, S, heads·hd]`, with the optional per-head QK-norm (before RoPE, spec
    /// §1.4) and RoPE.
    fn project_heads(
        &mut self,
        y: Value,
        heads: usize,
        norm: Option<&str>,
        rope: Option<(&Value, &Value, &Value)>,
        t: &TextConfig,
        batch_seq: &Value,
    ) -> Result<Value, ExportError> {
        let hd = t.head_dim;
        let mut y = y;
        if let Some(norm) = norm {
            let per_head = self.g.const_i64("per_head", &[-1, hd as i64]);
            let yh = self.g.op("Reshape", "heads/split", &[&y, &per_head], &[]);
            y = self.rms_norm(&yh, norm, t.rms_norm_eps)?;
        }
        let tail = self.g.const_i64("flat_tail", &[-1]);
        let shape = self.g.op(
            "Concat",
            "heads/shape",
            &[batch_seq, &tail],
            &[("axis", Attr::Int(0))],
        );
        let y = self.g.op("Reshape", "heads/bsh", &[&y, &shape], &[]);
        Ok(match rope {
            None => y,
            Some((ids, cos, sin)) => self
                .g
                .op_domain(
                    MS_DOMAIN,
                    "RotaryEmbedding",
                    "rope",
                    &[&y, ids, cos, sin],
                    &[
                        ("num_heads", Attr::Int(heads as i64)),
                        ("rotary_embedding_dim", Attr::Int(hd as i64)),
                        ("interleaved", Attr::Int(0)),
                    ],
                    1,
                )
                .remove(0),
        })
    }

    /// Layer `l`'s self-attention on `x [N, H]` through `GroupQueryAttention`: returns `[N, H]` after `o_proj`, and
    /// the present key/value (the same buffers as the past ones when the runtime binds them so).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gqa_attention(
        &mut self,
        x: &Value,
        t: &TextConfig,
        l: usize,
        n: &dyn Fn(&str) -> String,
        shared: &Shared,
        past_k: &Value,
        past_v: &Value,
    ) -> Result<(Value, Value, Value), ExportError> {
        let (nh, nkv, hd) = (t.num_attention_heads, t.num_key_value_heads, t.head_dim);
        let sliding = t.layer_types[l] == LayerType::Sliding;
        let (cos, sin) = if sliding {
            shared.local_rope.as_ref()
        } else {
            shared.global_rope.as_ref()
        }
        .expect("tables exist for every layer type in use");
        let rope = Some((&shared.rope_ids, cos, sin));
        let qk_norm = t.has_qk_norm();
        let q_norm = qk_norm.then(|| n("self_attn.q_norm.weight"));
        let k_norm = qk_norm.then(|| n("self_attn.k_norm.weight"));
        let q_proj = n("self_attn.q_proj.weight");
        let k_proj = n("self_attn.k_proj.weight");
        let v_proj = n("self_attn.v_proj.weight");
        let [q, k, v]: [Value; 3] = self
            .linears(
                x,
                &[&q_proj, &k_proj, &v_proj],
                &n("self_attn.qkv_proj.weight"),
            )?
            .try_into()
            .expect("three outputs");
        let q = self.project_heads(q, nh, q_norm.as_deref(), rope, t, &shared.batch_seq)?;
        let k = self.project_heads(k, nkv, k_norm.as_deref(), rope, t, &shared.batch_seq)?;
        let v = self.project_heads(v, nkv, None, None, t, &shared.batch_seq)?;

        let mut attrs = vec![
            ("num_heads", Attr::Int(nh as i64)),
            ("kv_num_heads", Attr::Int(nkv as i64)),
            ("scale", Attr::Float(t.attention_scale() as f32)),
            ("do_rotary", Attr::Int(0)),
        ];
        if let Some(cap) = t.attn_logit_softcapping {
            attrs.push(("softcap", Attr::Float(cap as f32)));
        }
        if sliding {
            let w = t.sliding_window.expect("checked in build") as i64;
            attrs.push(("local_window_size", Attr::Int(w)));
            attrs.push(("sliding_window_cache", Attr::Int(1)));
        }
        let none = Value(String::new());
        let out = self.g.op_domain(
            MS_DOMAIN,
            "GroupQueryAttention",
            "attn",
            &[
                &q,
                &k,
                &v,
                past_k,
                past_v,
                &shared.seqlens_k,
                &shared.total_len,
                &none, // cos_cache
                &none, // sin_cache
                &none, // position_ids
                &shared.bias,
            ],
            &attrs,
            3,
        );
        let flat = self.g.const_i64("flat_heads", &[-1, (nh * hd) as i64]);
        let ctx = self.g.op("Reshape", "attn/flat", &[&out[0], &flat], &[]);
        let hidden = self.linear(&ctx, &n("self_attn.o_proj.weight"))?;
        Ok((hidden, out[1].clone(), out[2].clone()))
    }
}
