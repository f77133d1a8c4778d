//! Per-layer inputs (PLE, semantics §12.3): the token embedding projected to one `P`-wide input per layer,
//! normed, added to the per-layer embedding from `embed_tokens.onnx` and scaled by `1/sqrt(2)`; and, in each layer,
//! the gate that mixes layer `l`'s input into the AltUp streams.

use super::{rms_norm, Gemma3nText, Result, Text};
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use gemma_models::names::gemma3n::{self as n3, layer_suffix};
use gemma_models::names::layer;

/// `project_per_layer_inputs`: `(norm(reshape(x0·Wᵀ · fp32(H^-0.5))) + per_layer) · rsqrt(2)` as `[N, L, P]`,
/// from the embeddings `x0 [N, H]` and the graph input `per_layer [B, S, L, P]`.
pub(super) fn project(cx: &mut Ctx<'_>, tx: &Text, x0: &Value, per_layer: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    let n: &Gemma3nText = super::n3_of(t);
    let (layers, p) = (
        t.num_hidden_layers as i64,
        n.hidden_size_per_layer_input as i64,
    );
    cx.g.set_scope("/model/per_layer_projection");
    let proj = cx.linear(x0, &n3::per_layer_model_projection(prefix))?;
    let g = &mut *cx.g;
    let scale = g.scalar_f32(
        "per_layer_projection_scale",
        (t.hidden_size as f32).powf(-0.5),
    );
    let proj = g.op("Mul", "scale", &[&proj, &scale], &[]);
    let shape = g.const_i64("rows_layers_width", &[-1, layers, p]);
    let proj = g.reshape("per_layer", &proj, &shape);
    let norm = n3::per_layer_projection_norm(prefix);
    let proj = rms_norm(cx, &proj, Some(&norm), t.rms_norm_eps)?;
    let g = &mut *cx.g;
    let inputs = g.reshape("per_layer_inputs", per_layer, &shape);
    let sum = g.op("Add", "combine", &[&proj, &inputs], &[]);
    let rsqrt2 = g.scalar_f32("per_layer_input_scale", 1.0 / 2f32.sqrt());
    Ok(g.op("Mul", "combine_scale", &[&sum, &rsqrt2], &[]))
}

/// Layer `l`'s per-layer input `[N, P]` of the combined `[N, L, P]`.
pub(super) fn of_layer(cx: &mut Ctx<'_>, ple: &Value, l: usize) -> Value {
    let index = cx.g.scalar_i64(&format!("layer_{l}"), l as i64);
    cx.g.gather("per_layer_input", ple, &index, 1)
}

/// The per-layer input's contribution to the streams `[N, H]`: `norm(proj(gelu(gate(first)) · input))`, where
/// `first` is the corrected active stream (already scaled by `correct_output_scale` when the config says so).
pub(super) fn gate(
    cx: &mut Ctx<'_>,
    tx: &Text,
    l: usize,
    (first, input): (&Value, &Value),
) -> Result<Value> {
    let Text { t, prefix } = tx;
    let n = |s: &str| layer(prefix, l, s);
    let gated = cx.linear(first, &n(layer_suffix::PER_LAYER_INPUT_GATE))?;
    let tanh = [("approximate", Attr::Str("tanh".into()))];
    let act = cx.g.op("Gelu", "per_layer/gelu", &[&gated], &tanh);
    let mixed = cx.g.op("Mul", "per_layer/mul", &[&act, input], &[]);
    let proj = cx.linear(&mixed, &n(layer_suffix::PER_LAYER_PROJECTION))?;
    let norm = n(layer_suffix::POST_PER_LAYER_INPUT_NORM);
    rms_norm(cx, &proj, Some(&norm), t.rms_norm_eps)
}
