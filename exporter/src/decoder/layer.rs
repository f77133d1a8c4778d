//! One decoder layer, the family wiring written once (semantics §2.1, §3.1, §4.1):
//!
//! ```text
//! Gemma 1:   x = x + attn(norm(x));                 x = x + mlp(norm(x))
//! Gemma 2/3: x = x + norm(attn(norm(x)));           x = x + norm(mlp(norm(x)))      (sandwich norms)
//! ```
//!
//! QK-norm, soft-caps and the sliding/global choice are the attention's
//! ([`AttentionSpec`](crate::attention::AttentionSpec)).

use super::{Backend, Residual, Text};
use crate::builder::Value;
use crate::layers::{Ctx, MlpWeights};
use crate::ExportError;
use gemma_models::names::{self, suffix};

/// Layer `l` on the residual stream `r`; returns its present key and value.
pub(super) fn layer(
    cx: &mut Ctx<'_>,
    b: &mut dyn Backend,
    Text { t, prefix }: &Text,
    l: usize,
    r: &mut Residual,
) -> Result<(Value, Value), ExportError> {
    cx.g.set_scope(format!("/model/layers.{l}"));
    let n = |s: &str| names::layer(prefix, l, s);
    let sandwich = t.has_sandwich_norms();

    let normed = b.norm_residual(cx, r, &n(suffix::INPUT_LAYERNORM))?;
    let attn = b.attention(cx, &normed, l)?;
    let a = if sandwich {
        b.norm(cx, &attn.hidden, &n(suffix::POST_ATTENTION_LAYERNORM))?
    } else {
        attn.hidden
    };
    b.add_residual(cx, r, a, "residual_attn");

    // The pre-MLP norm: Gemma 1 calls it `post_attention_layernorm`.
    let pre_mlp = match sandwich {
        true => suffix::PRE_FEEDFORWARD_LAYERNORM,
        false => suffix::POST_ATTENTION_LAYERNORM,
    };
    let m = b.norm_residual(cx, r, &n(pre_mlp))?;
    let m = b.mlp(cx, &m, &MlpWeights::of_layer(prefix, l))?;
    let m = if sandwich {
        b.norm(cx, &m, &n(suffix::POST_FEEDFORWARD_LAYERNORM))?
    } else {
        m
    };
    b.add_residual(cx, r, m, "residual_mlp");
    Ok((attn.present_key, attn.present_value))
}
