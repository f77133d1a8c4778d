//! AltUp (semantics §12.2): the residual stream is `K` streams `[N, K, H]`. The embedding makes streams 1..K by
//! magnitude-matched projections; each layer computes on the active stream of a *prediction* mixed from all
//! streams, then *corrects* every stream with its output; after the last layer the streams are projected back,
//! magnitude-matched again, and averaged.

use super::{linear_f32, n3_of, rms_norm, weight, Result, Text};
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use gemma_models::names::gemma3n::{self as n3, layer_suffix};
use gemma_models::names::layer;

/// `sqrt(mean(x²))` over the last axis, `[N, 1]`; with `floor`, of `max(mean(x²), floor)`.
fn magnitude(cx: &mut Ctx<'_>, x: &Value, floor: Option<f32>) -> Value {
    let g = &mut *cx.g;
    let sq = g.op("Mul", "magnitude/sq", &[x, x], &[]);
    let axes = g.const_i64("axes_last", &[-1]);
    let keep = [("keepdims", Attr::Int(1))];
    let mut mean = g.op("ReduceMean", "magnitude/mean", &[&sq, &axes], &keep);
    if let Some(f) = floor {
        let f = g.scalar_f32("magnitude_floor", f);
        mean = g.op("Max", "magnitude/clamp", &[&mean, &f], &[]);
    }
    g.op("Sqrt", "magnitude/sqrt", &[&mean], &[])
}

/// `x · target / sqrt(max(mean(x²), 1e-5))` for each projected stream, then all `K` streams stacked `[N, K, H]`.
fn stack_matched(cx: &mut Ctx<'_>, first: &Value, projected: Vec<Value>) -> Value {
    let target = magnitude(cx, first, None);
    let axis1 = cx.g.const_i64("axes_1", &[1]);
    let mut parts = vec![cx.g.unsqueeze("stream", first, &axis1)];
    for p in projected {
        let new = magnitude(cx, &p, Some(1e-5));
        let g = &mut *cx.g;
        let scaled = g.op("Mul", "match/target", &[&p, &target], &[]);
        let matched = g.op("Div", "match/new", &[&scaled, &new], &[]);
        parts.push(g.unsqueeze("stream", &matched, &axis1));
    }
    let refs: Vec<&Value> = parts.iter().collect();
    cx.g.concat("streams", &refs, 1)
}

/// The `K` streams `[N, K, H]` of the embeddings `x0 [N, H]`: `x0` and its `altup_projections`.
pub(super) fn embed(cx: &mut Ctx<'_>, tx: &Text, x0: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    cx.g.set_scope("/model/altup_projections");
    let k = n3_of(t).altup_num_inputs;
    let projected = (0..k - 1)
        .map(|i| cx.linear(x0, &n3::altup_projection(prefix, i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(stack_matched(cx, x0, projected))
}

/// The hidden states `[N, H]` after the last layer: stream 0 and the `altup_unembed_projections` of the others,
/// magnitude-matched to stream 0, averaged.
pub(super) fn unembed(cx: &mut Ctx<'_>, tx: &Text, streams: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    cx.g.set_scope("/model/altup_unembed_projections");
    let k = n3_of(t).altup_num_inputs;
    let first = stream(cx, streams, 0);
    let mut projected = Vec::with_capacity(k - 1);
    for i in 1..k {
        let s = stream(cx, streams, i);
        projected.push(cx.linear(&s, &n3::altup_unembed_projection(prefix, i - 1))?);
    }
    let stacked = stack_matched(cx, &first, projected);
    let axis1 = cx.g.const_i64("axes_1", &[1]);
    let keep = [("keepdims", Attr::Int(0))];
    Ok(cx
        .g
        .op("ReduceMean", "mean_streams", &[&stacked, &axis1], &keep))
}

/// Stream `i` `[N, H]` of `streams [N, K, H]`.
pub(super) fn stream(cx: &mut Ctx<'_>, streams: &Value, i: usize) -> Value {
    let index = cx.g.scalar_i64(&format!("stream_{i}"), i as i64);
    cx.g.gather("stream", streams, &index, 1)
}

/// `tanh(router(norm(x) · fp32(1/H)))`: the router's `[N, K]` weights for `x [N, H]` of layer `l`.
fn modalities(cx: &mut Ctx<'_>, tx: &Text, l: usize, x: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    let n = |s: &str| layer(prefix, l, s);
    let normed = rms_norm(cx, x, Some(&n(layer_suffix::ROUTER_NORM)), t.rms_norm_eps)?;
    let scale =
        cx.g.scalar_f32("router_input_scale", (t.hidden_size as f32).powi(-1));
    let scaled = cx.g.op("Mul", "router/scale", &[&normed, &scale], &[]);
    let routed = linear_f32(cx, &scaled, &n(layer_suffix::MODALITY_ROUTER))?;
    Ok(cx.g.op("Tanh", "router/tanh", &[&routed], &[]))
}

/// `predict`: stream `j` of the prediction is `x_j + Σᵢ A[j, i] · x_i`, with `A [N, K, K]` the
/// `prediction_coefs` of the router's weights of the active stream.
pub(super) fn predict(cx: &mut Ctx<'_>, tx: &Text, l: usize, streams: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    let k = n3_of(t).altup_num_inputs as i64;
    let active = stream(cx, streams, n3_of(t).altup_active_idx);
    let m = modalities(cx, tx, l, &active)?;
    let coefs = linear_f32(cx, &m, &layer(prefix, l, layer_suffix::PREDICTION_COEFS))?;
    let g = &mut *cx.g;
    let square = g.const_i64("coefs_square", &[-1, k, k]);
    let a = g.reshape("predict/coefs", &coefs, &square);
    let mixed = g.op("MatMul", "predict/mix", &[&a, streams], &[]);
    Ok(g.op("Add", "predict/residual", &[&mixed, streams], &[]))
}

/// `correct`: every stream `k` of the prediction plus `(1 + c_k) · (out − prediction[active])`, with `c [N, K]`
/// the `correction_coefs` of the router's weights of the layer output `out [N, H]`.
pub(super) fn correct(
    cx: &mut Ctx<'_>,
    tx: &Text,
    l: usize,
    (predictions, out): (&Value, &Value),
) -> Result<Value> {
    let Text { t, prefix } = tx;
    let m = modalities(cx, tx, l, out)?;
    let coefs = linear_f32(cx, &m, &layer(prefix, l, layer_suffix::CORRECTION_COEFS))?;
    let active = stream(cx, predictions, n3_of(t).altup_active_idx);
    let g = &mut *cx.g;
    let one = g.scalar_f32("one_f", 1.0);
    let coefs = g.op("Add", "correct/plus_one", &[&coefs, &one], &[]);
    let innovation = g.op("Sub", "correct/innovation", &[out, &active], &[]);
    let axis1 = g.const_i64("axes_1", &[1]);
    let axis2 = g.const_i64("axes_2", &[2]);
    let innovation = g.unsqueeze("correct/innovation_3d", &innovation, &axis1);
    let coefs = g.unsqueeze("correct/coefs_3d", &coefs, &axis2);
    let delta = g.op("Mul", "correct/scaled", &[&innovation, &coefs], &[]);
    Ok(g.op("Add", "correct/add", &[&delta, predictions], &[]))
}

/// `correct_output_scale · x` (the active stream after correction), when `altup_correct_scale` is set.
pub(super) fn scale_corrected(cx: &mut Ctx<'_>, tx: &Text, l: usize, x: Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    if !n3_of(t).altup_correct_scale {
        return Ok(x);
    }
    let s = weight(cx, &layer(prefix, l, layer_suffix::CORRECT_OUTPUT_SCALE))?;
    Ok(cx.g.op("Mul", "correct_output_scale", &[&x, &s], &[]))
}
