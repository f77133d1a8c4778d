//! The building blocks of the MobileNetV5 tower (docs/gemma3n-vision.md), on NCHW float32 values: timm's
//! "same"-padded convolutions, RMSNorm2d, the edge-residual, universal-inverted-residual and multi-query attention
//! blocks, and the multi-scale fusion adapter's FFN. Channels and kernel sizes come from the weights' shapes.

use super::audio_conformer::reshape;
use super::audio_encoder::param;
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::config::gemma3n_vision::{BlockKind, BlockSpec};

/// Epsilon of every RMSNorm2d of the tower (timm's default; MobileNetV5 sets none).
const EPS: f32 = 1e-6;

type Result<T> = std::result::Result<T, ExportError>;

/// The shape of checkpoint tensor `name`.
pub(super) fn shape_of(cx: &Ctx<'_>, name: &str) -> Result<Vec<usize>> {
    Ok(cx.ckpt.tensor(name)?.shape)
}

/// A conv weight `[out, in/groups, k, k]`, checked square.
fn conv_weight(cx: &mut Ctx<'_>, name: &str) -> Result<(Value, [usize; 3])> {
    let s = shape_of(cx, name)?;
    if s.len() != 4 || s[2] != s[3] {
        return Err(ExportError::Unsupported(format!(
            "{name}: expected a square Conv2d weight [out, in, k, k], found {s:?}"
        )));
    }
    Ok((param(cx, name, &s)?, [s[0], s[1], s[2]]))
}

/// Conv2d of timm's `padding="same"`: for stride 1 and an odd kernel the symmetric `(k-1)/2`; for a larger stride
/// `Conv2dSame`'s dynamic padding, `max((ceil(i/s)-1)·s + k - i, 0)` split with the extra pixel at the end, which
/// is ONNX's `SAME_UPPER`. `groups` = the input channels for a depthwise conv.
pub(super) fn conv(
    cx: &mut Ctx<'_>,
    x: &Value,
    name: &str,
    stride: usize,
    bias: Option<&Value>,
) -> Result<(Value, usize)> {
    let (w, [out, per_group, k]) = conv_weight(cx, name)?;
    let groups = if per_group == 1 && out > 1 { out } else { 1 };
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
        ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
        ("group", Attr::Int(groups as i64)),
    ];
    if k > 1 {
        attrs.push(("auto_pad", Attr::Str("SAME_UPPER".into())));
    }
    let inputs: Vec<&Value> = match bias {
        Some(b) => vec![x, &w, b],
        None => vec![x, &w],
    };
    Ok((cx.g.op("Conv", "conv", &inputs, &attrs), out))
}

/// timm's RmsNorm2d over the channel axis: `x · rsqrt(mean_c(x²) + eps) · w[c]`.
pub(super) fn rms2d(cx: &mut Ctx<'_>, x: &Value, weight: &str, channels: usize) -> Result<Value> {
    let w = param(cx, weight, &[channels])?;
    let axes = cx.g.const_i64("channel_axis", &[1]);
    let sq = cx.g.op("Mul", "square", &[x, x], &[]);
    let keep = [("keepdims", Attr::Int(1))];
    let mean = cx.g.op("ReduceMean", "mean_square", &[&sq, &axes], &keep);
    let e = cx.g.scalar_f32("rms_eps", EPS);
    let var = cx.g.op("Add", "plus_eps", &[&mean, &e], &[]);
    let rms = cx.g.op("Sqrt", "rms", &[&var], &[]);
    let inv = cx.g.op("Reciprocal", "inv_rms", &[&rms], &[]);
    let y = cx.g.op("Mul", "normalized", &[x, &inv], &[]);
    let gain_axes = cx.g.const_i64("gain_axes", &[1, 2]);
    let w = cx.g.unsqueeze("gain", &w, &gain_axes);
    Ok(cx.g.op("Mul", "gain", &[&y, &w], &[]))
}

/// GELU, tanh approximation (timm's `_GELU`).
pub(super) fn gelu(cx: &mut Ctx<'_>, x: &Value) -> Value {
    let tanh = [("approximate", Attr::Str("tanh".into()))];
    cx.g.op("Gelu", "gelu", &[x], &tanh)
}

/// timm's ConvNormAct (`{prefix}.conv.weight`, `{prefix}.bn.weight`): conv, RmsNorm2d, GELU when `act`.
pub(super) fn conv_norm_act(
    cx: &mut Ctx<'_>,
    x: &Value,
    prefix: &str,
    stride: usize,
    act: bool,
) -> Result<Value> {
    let (y, c) = conv(cx, x, &format!("{prefix}.conv.weight"), stride, None)?;
    let y = rms2d(cx, &y, &format!("{prefix}.bn.weight"), c)?;
    Ok(if act { gelu(cx, &y) } else { y })
}

/// LayerScale2d when the block has one (`{prefix}layer_scale.gamma`), then the residual when it applies.
fn scale_and_skip(
    cx: &mut Ctx<'_>,
    y: &Value,
    x: &Value,
    prefix: &str,
    channels: usize,
    skip: bool,
) -> Result<Value> {
    let gamma = format!("{prefix}layer_scale.gamma");
    let y = if cx.ckpt.contains(&gamma) {
        let g = param(cx, &gamma, &[channels])?;
        let axes = cx.g.const_i64("gain_axes", &[1, 2]);
        let g = cx.g.unsqueeze("layer_scale", &g, &axes);
        cx.g.op("Mul", "scaled", &[y, &g], &[])
    } else {
        y.clone()
    };
    Ok(if skip {
        cx.g.op("Add", "residual", &[&y, x], &[])
    } else {
        y
    })
}

/// One block at `prefix` (`…blocks.{s}.{i}.`) on `x` with `in_chs` channels; returns the output and its channels.
pub(super) fn block(
    cx: &mut Ctx<'_>,
    x: &Value,
    prefix: &str,
    spec: &BlockSpec,
    in_chs: usize,
) -> Result<(Value, usize)> {
    let s = spec.stride;
    let has = |cx: &Ctx<'_>, rest: &str| cx.ckpt.contains(&format!("{prefix}{rest}"));
    match spec.kind {
        BlockKind::EdgeResidual => {
            let (y, mid) = conv(cx, x, &format!("{prefix}conv_exp.weight"), s, None)?;
            let y = rms2d(cx, &y, &format!("{prefix}bn1.weight"), mid)?;
            let y = gelu(cx, &y);
            let (y, out) = conv(cx, &y, &format!("{prefix}conv_pwl.weight"), 1, None)?;
            let y = rms2d(cx, &y, &format!("{prefix}bn2.weight"), out)?;
            let skip = s == 1 && in_chs == out;
            Ok((
                if skip {
                    cx.g.op("Add", "residual", &[&y, x], &[])
                } else {
                    y
                },
                out,
            ))
        }
        BlockKind::InvertedResidual => {
            let (start, mid, end) = (
                has(cx, "dw_start.conv.weight"),
                has(cx, "dw_mid.conv.weight"),
                has(cx, "dw_end.conv.weight"),
            );
            let mut y = x.clone();
            if start {
                let st = if mid { 1 } else { s };
                y = conv_norm_act(cx, &y, &format!("{prefix}dw_start"), st, false)?;
            }
            y = conv_norm_act(cx, &y, &format!("{prefix}pw_exp"), 1, true)?;
            if mid {
                y = conv_norm_act(cx, &y, &format!("{prefix}dw_mid"), s, true)?;
            }
            y = conv_norm_act(cx, &y, &format!("{prefix}pw_proj"), 1, false)?;
            if end {
                let st = if start || mid { 1 } else { s };
                y = conv_norm_act(cx, &y, &format!("{prefix}dw_end"), st, false)?;
            }
            if s > 1 && !(start || mid || end) {
                return Err(ExportError::Unsupported(format!(
                    "{prefix}: a strided inverted-residual block needs a depthwise conv"
                )));
            }
            let out = shape_of(cx, &format!("{prefix}pw_proj.conv.weight"))?[0];
            let y = scale_and_skip(cx, &y, x, prefix, out, s == 1 && in_chs == out)?;
            Ok((y, out))
        }
        BlockKind::Attention {
            heads,
            key_dim,
            value_dim,
            kv_stride,
        } => {
            if s != 1 {
                return Err(ExportError::Unsupported(format!(
                    "{prefix}: attention blocks with a stride (query strides) are not supported"
                )));
            }
            let y = rms2d(cx, x, &format!("{prefix}norm.weight"), in_chs)?;
            let y = attention(
                cx,
                &y,
                prefix,
                (heads, key_dim, value_dim),
                kv_stride,
                in_chs,
            )?;
            let out = shape_of(cx, &format!("{prefix}attn.output.proj.weight"))?[0];
            let y = scale_and_skip(cx, &y, x, prefix, out, in_chs == out)?;
            Ok((y, out))
        }
    }
}

/// MultiQueryAttention2d: `heads` query heads of `key_dim` from a 1×1 conv; one key and one value head from an
/// optional depthwise conv (stride `kv_stride`) + RmsNorm2d, then a 1×1 conv; softmax(q·kᵀ/√key_dim)·v per pixel,
/// heads concatenated on channels (head-major), then the 1×1 output conv.
fn attention(
    cx: &mut Ctx<'_>,
    x: &Value,
    prefix: &str,
    (heads, kd, vd): (usize, usize, usize),
    kv_stride: usize,
    channels: usize,
) -> Result<Value> {
    let p = format!("{prefix}attn.");
    let (q, qc) = conv(cx, x, &format!("{p}query.proj.weight"), 1, None)?;
    if qc != heads * kd {
        return Err(ExportError::Unsupported(format!(
            "{p}query.proj: {qc} channels, expected heads × key_dim = {}",
            heads * kd
        )));
    }
    let q = reshape(cx, "q_heads", &q, &[0, heads as i64, kd as i64, -1]);
    let q = cx.g.transpose("q_rows", &q, &[0, 1, 3, 2]); // [B, h, HW, kd]
    let mut kv = Vec::new();
    for (which, dim) in [("key", kd), ("value", vd)] {
        let mut t = x.clone();
        if kv_stride > 1 {
            t = conv(
                cx,
                &t,
                &format!("{p}{which}.down_conv.weight"),
                kv_stride,
                None,
            )?
            .0;
            t = rms2d(cx, &t, &format!("{p}{which}.norm.weight"), channels)?;
        }
        let (t, c) = conv(cx, &t, &format!("{p}{which}.proj.weight"), 1, None)?;
        if c != dim {
            return Err(ExportError::Unsupported(format!(
                "{p}{which}.proj: {c} channels, expected {dim}"
            )));
        }
        let t = reshape(cx, "kv_flat", &t, &[0, 1, dim as i64, -1]); // [B, 1, d, P]
        kv.push(t);
    }
    let scale = cx.g.scalar_f32("attn_scale", (kd as f32).powf(-0.5));
    let logits = cx.g.op("MatMul", "logits", &[&q, &kv[0]], &[]); // [B, h, HW, P]
    let logits = cx.g.op("Mul", "scaled_logits", &[&logits, &scale], &[]);
    let attn =
        cx.g.op("Softmax", "softmax", &[&logits], &[("axis", Attr::Int(-1))]);
    let v = cx.g.transpose("v_rows", &kv[1], &[0, 1, 3, 2]); // [B, 1, P, vd]
    let o = cx.g.op("MatMul", "context", &[&attn, &v], &[]); // [B, h, HW, vd]
    let o = cx.g.transpose("heads_last", &o, &[0, 1, 3, 2]); // [B, h, vd, HW]
    let shape = cx.g.shape("x_shape", x);
    let hw = cx.g.const_i64("hw_dims", &[2, 3]);
    let hw = cx.g.gather("hw", &shape, &hw, 0);
    let head = cx.g.const_i64("context_dims", &[0, (heads * vd) as i64]);
    let dims = cx.g.concat("context_shape", &[&head, &hw], 0);
    let o = cx.g.reshape("context_2d", &o, &dims);
    Ok(conv(cx, &o, &format!("{p}output.proj.weight"), 1, None)?.0)
}
