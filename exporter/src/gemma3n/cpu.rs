//! Gemma 3n's attention in the cpu graph (`--graph cpu`, semantics §12.5): the same maths as `layer.rs`'s
//! portable attention, on ONNX Runtime's `RotaryEmbedding` and `GroupQueryAttention` over KV buffers updated in
//! place (see `crate::decoder::cpu`).
//!
//! KV sharing: a KV-shared layer has no buffers of its own. Its `GroupQueryAttention` takes the source layer's new
//! keys and values of this step and, as its past, the source's *present* buffers: the op copies their first
//! `T − S` rows (the past, untouched by the source's update) and appends the new ones, into a present of its own
//! that nothing reads. The source's buffers must therefore hold every position: a sliding source keeps a buffer
//! that grows ([`gemma_models::contract::window_sized_kv`]), with the window applied as a mask only.

use super::{n3_of, rms_norm, Result, Text};
use crate::attention::AttentionSpec;
use crate::builder::Value;
use crate::decoder::cpu::shared::Shared;
use crate::layers::Ctx;
use crate::ops::rotary_embedding::rotary_embedding;
use gemma_models::contract::window_sized_kv;
use gemma_models::TextConfig;

/// One KV layer's keys and values, as the later layers read them.
pub(super) struct LayerKv {
    /// The present key and value: portable, the past and the new ones concatenated; cpu, the updated buffers.
    pub key: Value,
    pub value: Value,
    /// cpu: this step's keys and values `[B, S, kv_heads · hd]` (after the k-norm, the v-norm and RoPE).
    pub new: Option<(Value, Value)>,
}

/// Self-attention of layer `l` on `x [N, H]` through `GroupQueryAttention`, before `o_proj`'s output `[N, H]`;
/// pushes the layer's [`LayerKv`] when it has its own keys and values.
pub(super) fn attention(
    cx: &mut Ctx<'_>,
    tx: &Text,
    l: usize,
    x: &Value,
    (s, past): (&Shared, &[(Value, Value)]),
    kv: &mut Vec<LayerKv>,
) -> Result<Value> {
    let Text { t, prefix } = tx;
    let spec = AttentionSpec::of_layer(t, prefix, l);
    let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
    let (cos, sin) = s.rope(spec.layer_type);
    let rope = |cx: &mut Ctx<'_>, y: &Value, heads: usize| {
        rotary_embedding(cx.g, "rope", y, [&s.rope_ids, cos, sin], heads, hd)
    };
    let q = heads(cx, t, x, (&spec.q_proj, spec.q_norm.as_deref()), s)?;
    let q = rope(cx, &q, nh);
    let kv_layers = n3_of(t).kv_layers(t.num_hidden_layers);
    let source = n3_of(t).kv_source(&t.layer_types, l);
    let (new, past) = if source == l {
        let k = heads(cx, t, x, (&spec.k_proj, spec.k_norm.as_deref()), s)?;
        let k = rope(cx, &k, nkv);
        let v = heads(cx, t, x, (&spec.v_proj, None), s)?;
        ((k, v), past[l].clone())
    } else {
        let src = &kv[source];
        let new = src
            .new
            .clone()
            .expect("the cpu graph records every KV layer's new keys");
        (new, (src.key.clone(), src.value.clone()))
    };
    let window_cache = window_sized_kv(&t.layer_types, kv_layers, source);
    let (out, present_key, present_value) = s.attention(
        cx.g,
        &spec,
        [&q, &new.0, &new.1],
        (&past.0, &past.1),
        window_cache,
    );
    if source == l {
        kv.push(LayerKv {
            key: present_key,
            value: present_value,
            new: Some(new),
        });
    }
    let flat = cx.g.const_i64("flat_heads", &[-1, (nh * hd) as i64]);
    let ctx = cx.g.reshape("attn/flat", &out, &flat);
    cx.linear(&ctx, &spec.o_proj)
}

/// `x [N, H]` projected by `proj` to heads of `head_dim`, RMSNorm'd per head with weight `norm` (q, k) or without one
/// (`None`: the v-norm), as `[B, S, heads · hd]`.
fn heads(
    cx: &mut Ctx<'_>,
    t: &TextConfig,
    x: &Value,
    (proj, norm): (&str, Option<&str>),
    s: &Shared,
) -> Result<Value> {
    let y = cx.linear(x, proj)?;
    let per_head = cx.g.const_i64("per_head", &[-1, t.head_dim as i64]);
    let y = cx.g.reshape("heads/split", &y, &per_head);
    let y = rms_norm(cx, &y, norm, t.rms_norm_eps)?;
    let tail = cx.g.const_i64("flat_tail", &[-1]);
    let shape = cx.g.concat("heads/shape", &[&s.batch_seq, &tail], 0);
    Ok(cx.g.reshape("heads/bsh", &y, &shape))
}
