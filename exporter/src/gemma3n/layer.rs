//! One Gemma 3n decoder layer (semantics §12.4), on the AltUp streams `[N, K, H]`:
//!
//! ```text
//! pred = predict(streams);  a = pred[active];  x = norm(a)
//! h = (a + norm(attn(x)) + laurel(x)) / sqrt(2)           laurel(x) = x + norm(right(left(x)))
//! out = h + norm(mlp(norm(h)))                            mlp: GeGLU, Gaussian top-k on the gate where sparse
//! c = correct(pred, out);  c[1:] += ple_gate(scale(c[active]), per_layer_input[l])
//! ```
//!
//! Attention: q/k RMSNorm (weights as is), an unscaled v-norm, RoPE, scaling 1. A KV-shared layer computes no keys
//! or values: it attends to the present keys and values of the layer it shares with.

use super::cpu::{self, LayerKv};
use super::{altup, n3_of, ple, rms_norm, Result, Tables, Text};
use crate::attention::{AttentionSpec, LayerTables};
use crate::builder::{Attr, Value};
use crate::layers::{Ctx, MlpWeights};
use gemma_models::names::gemma3n::layer_suffix;
use gemma_models::names::{layer as layer_name, suffix};
use gemma_models::{LayerType, TextConfig};

/// What every layer reads besides the streams.
pub(super) struct LayerIo<'a> {
    pub tables: &'a Tables,
    /// `(past_key, past_value)` of the layers with a KV cache.
    pub past: &'a [(Value, Value)],
    /// The combined per-layer inputs `[N, L, P]`.
    pub ple: &'a Value,
}

/// Layer `l` on `streams`; pushes its keys and values to `kv` when it has its own.
pub(super) fn layer(
    cx: &mut Ctx<'_>,
    tx: &Text,
    l: usize,
    streams: &Value,
    io: &LayerIo<'_>,
    kv: &mut Vec<LayerKv>,
) -> Result<Value> {
    let Text { t, prefix } = tx;
    let n = |s: &str| layer_name(prefix, l, s);
    let eps = t.rms_norm_eps;
    cx.g.set_scope(format!("/model/layers.{l}/altup"));
    let pred = altup::predict(cx, tx, l, streams)?;
    let active = altup::stream(cx, &pred, n3_of(t).altup_active_idx);
    cx.g.set_scope(format!("/model/layers.{l}"));
    let x = rms_norm(cx, &active, Some(&n(suffix::INPUT_LAYERNORM)), eps)?;

    cx.g.set_scope(format!("/model/layers.{l}/laurel"));
    let left = cx.linear(&x, &n(layer_suffix::LAUREL_LEFT))?;
    let right = cx.linear(&left, &n(layer_suffix::LAUREL_RIGHT))?;
    let normed = rms_norm(cx, &right, Some(&n(layer_suffix::LAUREL_NORM)), eps)?;
    let laurel = cx.g.op("Add", "laurel/residual", &[&x, &normed], &[]);

    cx.g.set_scope(format!("/model/layers.{l}/self_attn"));
    let attn = attention(cx, tx, l, &x, io, kv)?;
    cx.g.set_scope(format!("/model/layers.{l}"));
    let attn = rms_norm(cx, &attn, Some(&n(suffix::POST_ATTENTION_LAYERNORM)), eps)?;
    let g = &mut *cx.g;
    let gated = g.op("Add", "residual_attn", &[&active, &attn], &[]);
    let sum = g.op("Add", "add_laurel", &[&gated, &laurel], &[]);
    let sqrt2 = g.scalar_f32("sqrt2", 2f32.sqrt());
    let h = g.op("Div", "laurel_mix", &[&sum, &sqrt2], &[]);

    let m = rms_norm(cx, &h, Some(&n(suffix::PRE_FEEDFORWARD_LAYERNORM)), eps)?;
    cx.g.set_scope(format!("/model/layers.{l}/mlp"));
    let m = mlp(cx, tx, l, &m)?;
    cx.g.set_scope(format!("/model/layers.{l}"));
    let m = rms_norm(cx, &m, Some(&n(suffix::POST_FEEDFORWARD_LAYERNORM)), eps)?;
    let out = cx.g.op("Add", "residual_mlp", &[&h, &m], &[]);

    cx.g.set_scope(format!("/model/layers.{l}/altup"));
    let corrected = altup::correct(cx, tx, l, (&pred, &out))?;
    let first = altup::stream(cx, &corrected, n3_of(t).altup_active_idx);
    let first = altup::scale_corrected(cx, tx, l, first)?;
    cx.g.set_scope(format!("/model/layers.{l}/per_layer"));
    let input = ple::of_layer(cx, io.ple, l);
    let add = ple::gate(cx, tx, l, (&first, &input))?;
    add_to_all_but_first(cx, &corrected, &add, n3_of(t).altup_num_inputs)
}

/// `streams[1:] += add` for `streams [N, K, H]` and `add [N, H]`.
fn add_to_all_but_first(cx: &mut Ctx<'_>, streams: &Value, add: &Value, k: usize) -> Result<Value> {
    let g = &mut *cx.g;
    let split = g.const_i64("split_first", &[1, k as i64 - 1]);
    let parts = g.split("split_streams", streams, Some(&split), 1, 2);
    let axis1 = g.const_i64("axes_1", &[1]);
    let add = g.unsqueeze("per_layer_3d", add, &axis1);
    let rest = g.op("Add", "add_per_layer", &[&parts[1], &add], &[]);
    Ok(g.concat("streams", &[&parts[0], &rest], 1))
}

/// Self-attention of layer `l` on `x [N, H]` (semantics §12.5): standard ops, or the cpu graph's (`cpu.rs`).
fn attention(
    cx: &mut Ctx<'_>,
    tx: &Text,
    l: usize,
    x: &Value,
    io: &LayerIo<'_>,
    kv: &mut Vec<LayerKv>,
) -> Result<Value> {
    if let Some(shared) = &io.tables.cpu {
        return cpu::attention(cx, tx, l, x, (shared, io.past), kv);
    }
    let Text { t, prefix } = tx;
    let spec = AttentionSpec::of_layer(t, prefix, l);
    let tables = match spec.layer_type {
        LayerType::Full => io.tables.global.as_ref(),
        LayerType::Sliding => io.tables.local.as_ref(),
    };
    let LayerTables { cos, sin, mask } = tables.expect("tables exist for every layer type in use");
    let bs = &io.tables.batch_seq;
    let q = heads(
        cx,
        t,
        x,
        (&spec.q_proj, spec.num_heads, spec.q_norm.as_deref()),
        bs,
    )?;
    let q = cx.rope(&q, cos, sin);
    let source = n3_of(t).kv_source(&t.layer_types, l);
    if source == l {
        let k = heads(
            cx,
            t,
            x,
            (&spec.k_proj, spec.num_kv_heads, spec.k_norm.as_deref()),
            bs,
        )?;
        let k = cx.rope(&k, cos, sin);
        let v = heads(cx, t, x, (&spec.v_proj, spec.num_kv_heads, None), bs)?;
        let (past_k, past_v) = &io.past[l];
        let key = cx.g.concat("kv/key", &[past_k, &k], 2);
        let value = cx.g.concat("kv/value", &[past_v, &v], 2);
        kv.push(LayerKv {
            key,
            value,
            new: None,
        });
    }
    let LayerKv { key, value, .. } = &kv[source];
    cx.attend(&q, (key, value), &spec, mask)
}

/// `x [N, H]` projected by `proj` to `heads` heads `[B, heads, S, hd]`, RMSNorm'd per head with weight `norm`
/// (q, k), or without a weight (`None`: the v-norm).
fn heads(
    cx: &mut Ctx<'_>,
    t: &TextConfig,
    x: &Value,
    (proj, heads, norm): (&str, usize, Option<&str>),
    batch_seq: &Value,
) -> Result<Value> {
    let y = cx.linear(x, proj)?;
    let tail =
        cx.g.const_i64("heads_shape", &[heads as i64, t.head_dim as i64]);
    let shape = cx.g.concat("heads/shape", &[batch_seq, &tail], 0);
    let y = cx.g.reshape("heads/reshape", &y, &shape);
    let y = rms_norm(cx, &y, norm, t.rms_norm_eps)?;
    Ok(cx.g.transpose("heads/transpose", &y, &[0, 2, 1, 3]))
}

/// The GeGLU MLP of layer `l`, with the Gaussian top-k of the gate on sparse layers (semantics §12.6):
/// `gate ← relu(gate − (mean + std · Φ⁻¹(s)))` over the last axis (population std).
fn mlp(cx: &mut Ctx<'_>, tx: &Text, l: usize, x: &Value) -> Result<Value> {
    let Text { t, prefix } = tx;
    let w = MlpWeights::of_layer(prefix, l);
    let sparsity = n3_of(t).activation_sparsity[l];
    let mut gate = cx.linear(x, &w.gate)?;
    if sparsity > 0.0 {
        let g = &mut *cx.g;
        let axes = g.const_i64("axes_last", &[-1]);
        let keep = [("keepdims", Attr::Int(1))];
        let mean = g.op("ReduceMean", "topk/mean", &[&gate, &axes], &keep);
        let centered = g.op("Sub", "topk/centered", &[&gate, &mean], &[]);
        let sq = g.op("Mul", "topk/sq", &[&centered, &centered], &[]);
        let var = g.op("ReduceMean", "topk/var", &[&sq, &axes], &keep);
        let std = g.op("Sqrt", "topk/std", &[&var], &[]);
        let mult = g.scalar_f32("std_multiplier", normal_icdf(sparsity) as f32);
        let spread = g.op("Mul", "topk/spread", &[&std, &mult], &[]);
        let cutoff = g.op("Add", "topk/cutoff", &[&mean, &spread], &[]);
        let shifted = g.op("Sub", "topk/shifted", &[&gate, &cutoff], &[]);
        gate = g.op("Relu", "topk/relu", &[&shifted], &[]);
    }
    let g = &mut *cx.g;
    let tanh = [("approximate", Attr::Str("tanh".into()))];
    let act = g.op("Gelu", "mlp/gelu", &[&gate], &tanh);
    let up = cx.linear(x, &w.up)?;
    let prod = cx.g.op("Mul", "mlp/mul", &[&act, &up], &[]);
    cx.linear(&prod, &w.down)
}

/// Φ⁻¹(p), the standard normal quantile, for `p` in (0, 1) (Acklam's rational approximation, relative error below
/// 1.2e-9: exact in float32, where the graph uses it).
pub(crate) fn normal_icdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const LOW: f64 = 0.02425;
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn normal_quantiles() {
        for (p, want) in [
            (0.5, 0.0),
            (0.95, 1.6448536269514722),
            (0.99, 2.3263478740408408),
            (0.1, -1.2815515655446004),
            (0.01, -2.3263478740408408),
        ] {
            let got = super::normal_icdf(p);
            assert!((got - want).abs() < 1e-8, "{p}: {got} vs {want}");
        }
    }
}
