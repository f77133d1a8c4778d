//! The Conformer blocks of Gemma 3n's audio tower (semantics §13.3), on the residual stream `[B, T, D]`:
//!
//! ```text
//! x = x + w · postnorm(clip(W2 silu(W1 prenorm(clip(x)))))          feed-forward half (start), w = residual weight
//! x = x + postnorm(clip(Wo attn(prenorm(clip(x)))))                  chunked local attention, below
//! x = x·valid;  x = x + Wend silu(norm(clip(dwconv_causal(glu(Wstart prenorm(x))))))   light conv
//! x = feed-forward half (end);  x = norm(clip(x))
//! ```
//!
//! Attention: queries in blocks of W frames; block u sees keys u·W − P .. u·W + W + R − 1 (P = context_left − 1,
//! R = context_right, C = W + P + R keys, zero-padded at both ends). Logits = q·k + q·sin_emb shifted (relative
//! positions P .. −R), q scaled by `head_dim^-0.5 / ln 2 · softplus(per_dim_scale)`; `cap · tanh(l / cap)`; keys
//! outside `w ≤ c ≤ w + P + R` or at padded frames get `f32::MIN`; softmax; weighted values. Clip bounds are
//! `gradient_clipping`; the norms are RMSNorm with a plain gain (eps 1e-6; the light conv's use `rms_norm_eps`).

use super::audio_encoder::param;
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::config::gemma3n_audio::Gemma3nAudioConfig;
use gemma_models::names::gemma3n_audio::{self as names, ffw, layer};

/// Epsilon of the norms built without `eps=` in transformers (`Gemma3nRMSNorm`'s default).
const DEFAULT_EPS: f64 = 1e-6;

/// `[-1]`, the last axis.
pub(super) fn last_axis(cx: &mut Ctx<'_>) -> Value {
    cx.g.const_i64("last_axis", &[-1])
}

/// Gemma3nRMSNorm: `x · (mean(x²) + eps)^-½`, times `gain` when given.
pub(super) fn rms(cx: &mut Ctx<'_>, x: &Value, gain: Option<&Value>, eps: f64) -> Value {
    let axes = last_axis(cx);
    let sq = cx.g.op("Mul", "square", &[x, x], &[]);
    let mean = cx.g.op(
        "ReduceMean",
        "mean_square",
        &[&sq, &axes],
        &[("keepdims", Attr::Int(1))],
    );
    let e = cx.g.scalar_f32("rms_eps", eps as f32);
    let mean = cx.g.op("Add", "plus_eps", &[&mean, &e], &[]);
    let p = cx.g.scalar_f32("minus_half", -0.5);
    let inv = cx.g.op("Pow", "inv_rms", &[&mean, &p], &[]);
    let y = cx.g.op("Mul", "normalized", &[x, &inv], &[]);
    match gain {
        Some(w) => cx.g.op("Mul", "gain", &[&y, w], &[]),
        None => y,
    }
}

/// `x · Wᵀ` for an `nn.Linear` without bias, `W` `[out, in]`, any rank of `x`.
pub(super) fn linear(cx: &mut Ctx<'_>, x: &Value, w: &Value) -> Value {
    let wt = cx.g.transpose("weight_t", w, &[1, 0]);
    cx.g.op("MatMul", "linear", &[x, &wt], &[])
}

/// `Reshape(x, dims)` (0 copies the input's dimension, −1 is inferred).
pub(super) fn reshape(cx: &mut Ctx<'_>, label: &str, x: &Value, dims: &[i64]) -> Value {
    let shape = cx.g.const_i64(label, dims);
    cx.g.reshape(label, x, &shape)
}

fn silu(cx: &mut Ctx<'_>, x: &Value) -> Value {
    let s = cx.g.op("Sigmoid", "sigmoid", &[x], &[]);
    cx.g.op("Mul", "silu", &[x, &s], &[])
}

/// The values shared by every block: masks, block indices, the relative-position signal.
pub(super) struct Block<'c> {
    cfg: &'c Gemma3nAudioConfig,
    /// `[B, T, 1]` float, 1 at real frames.
    valid_rows: Value,
    /// `[B, 1, U, W, C]` bool: the key is a real frame and within the local window.
    allowed: Value,
    /// `[U, C]` int64: padded-key index of key c of block u (`u·W + c`).
    context_index: Value,
    /// Pads of the query frames up to U·W (an 8-entry Pad vector for `[B, T, N, H]`).
    query_pads: Value,
    /// T, as `[1]`.
    frames: Value,
    /// `[F, D]` sinusoids of the relative positions P, P − 1, .., −R.
    timing: Value,
}

impl<'c> Block<'c> {
    pub(super) fn new(cx: &mut Ctx<'_>, valid: &Value, cfg: &'c Gemma3nAudioConfig) -> Block<'c> {
        cx.g.set_scope("/audio_tower/conformer_shared");
        let (w, p, r, c) = (
            cfg.chunk_size as i64,
            cfg.max_past() as i64,
            cfg.context_right as i64,
            cfg.context_size() as i64,
        );
        let [zero, one] = [0, 1].map(|v| cx.g.const_i64("idx", &[v]));
        let last = last_axis(cx);
        let vf = cx.g.cast("valid_f32", valid, crate::onnx::DataType::Float);
        let valid_rows = cx.g.unsqueeze("valid_rows", &vf, &last);
        let shape = cx.g.shape("mask_shape", valid);
        let frames = cx.g.gather("frames", &shape, &one, 0);
        // U = ⌈T / W⌉ blocks; queries padded by U·W − T.
        let wv = cx.g.const_i64("chunk", &[w]);
        let wm1 = cx.g.const_i64("chunk_minus_one", &[w - 1]);
        let up = cx.g.op("Add", "round_up", &[&frames, &wm1], &[]);
        let blocks = cx.g.op("Div", "blocks", &[&up, &wv], &[]);
        let total = cx.g.op("Mul", "padded", &[&blocks, &wv], &[]);
        let extra = cx.g.op("Sub", "query_pad", &[&total, &frames], &[]);
        let z5 = cx.g.const_i64("zeros5", &[0, 0, 0, 0, 0]);
        let z2 = cx.g.const_i64("zeros2", &[0, 0]);
        let query_pads = cx.g.concat("query_pads", &[&z5, &extra, &z2], 0);
        let [s0, e, s1] = [&zero, &total, &wv].map(|v| cx.g.squeeze("scalar", v, &zero));
        let starts = cx.g.op("Range", "block_starts", &[&s0, &e, &s1], &[]);
        let starts = cx.g.unsqueeze("block_starts_col", &starts, &one);
        let offsets: Vec<i64> = (0..c).collect();
        let offsets = cx.g.const_i64("context_offsets", &offsets);
        let context_index = cx.g.op("Add", "context_index", &[&starts, &offsets], &[]);
        // Real keys: the mask padded like the keys, gathered into blocks → [B, U, C] → [B, 1, U, 1, C].
        let pads = cx.g.const_i64("context_pads", &[0, p, 0, r + w - 1]);
        let vpad = cx.g.op("Pad", "valid_padded", &[&vf, &pads], &[]);
        let vctx = cx.g.gather("valid_context", &vpad, &context_index, 1);
        let half = cx.g.scalar_f32("half", 0.5);
        let vctx = cx.g.op("Greater", "valid_keys", &[&vctx, &half], &[]);
        let axes = cx.g.const_i64("head_and_query_axes", &[1, 3]);
        let vctx = cx.g.unsqueeze("valid_keys_5d", &vctx, &axes);
        // The local window: query w of a block sees keys w ≤ c ≤ w + P + R.
        let window: Vec<u8> = (0..w)
            .flat_map(|q| (0..c).map(move |k| u8::from(q <= k && k <= q + p + r)))
            .collect();
        let t = crate::builder::inline_tensor(
            "/const/local_window",
            crate::onnx::DataType::Bool,
            &[w, c],
            window,
        );
        let local = cx.g.initializer(t);
        let allowed = cx.g.op("And", "allowed", &[&vctx, &local], &[]);
        let timing = timing_signal(cfg);
        let timing = cx.g.const_f32(
            "/const/relative_timing",
            &[
                timing.len() as i64 / cfg.hidden_size as i64,
                cfg.hidden_size as i64,
            ],
            &timing,
        );
        Block {
            cfg,
            valid_rows,
            allowed,
            context_index,
            query_pads,
            frames,
            timing,
        }
    }

    /// Conformer block `i`.
    pub(super) fn block(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &Value,
        i: usize,
    ) -> Result<Value, ExportError> {
        let x = self.feed_forward(cx, x, i, names::FFW_START)?;
        let x = self.attention_block(cx, &x, i)?;
        let x = cx.g.op("Mul", "lconv_input", &[&x, &self.valid_rows], &[]);
        let x = self.light_conv(cx, &x, i)?;
        let x = self.feed_forward(cx, &x, i, names::FFW_END)?;
        let x = self.clip(cx, &x);
        let g = self.gain(cx, &layer(i, names::BLOCK_NORM))?;
        Ok(rms(cx, &x, Some(&g), DEFAULT_EPS))
    }

    fn clip(&self, cx: &mut Ctx<'_>, x: &Value) -> Value {
        let c = self.cfg.gradient_clipping as f32;
        let (lo, hi) = (
            cx.g.scalar_f32("clip_min", -c),
            cx.g.scalar_f32("clip_max", c),
        );
        cx.g.op("Clip", "clip", &[x, &lo, &hi], &[])
    }

    fn gain(&self, cx: &mut Ctx<'_>, name: &str) -> Result<Value, ExportError> {
        param(cx, name, &[self.cfg.hidden_size])
    }

    fn square(&self, cx: &mut Ctx<'_>, name: &str, rows: usize) -> Result<Value, ExportError> {
        param(cx, name, &[rows, self.cfg.hidden_size])
    }

    fn feed_forward(
        &self,
        cx: &mut Ctx<'_>,
        x: &Value,
        i: usize,
        half: &str,
    ) -> Result<Value, ExportError> {
        let d = self.cfg.hidden_size;
        let y = self.clip(cx, x);
        let g = self.gain(cx, &ffw(i, half, names::FFW_PRE_NORM))?;
        let y = rms(cx, &y, Some(&g), DEFAULT_EPS);
        let w1 = self.square(cx, &ffw(i, half, names::FFW_1), 4 * d)?;
        let y = linear(cx, &y, &w1);
        let y = silu(cx, &y);
        let w2 = param(cx, &ffw(i, half, names::FFW_2), &[d, 4 * d])?;
        let y = linear(cx, &y, &w2);
        let y = self.clip(cx, &y);
        let g = self.gain(cx, &ffw(i, half, names::FFW_POST_NORM))?;
        let y = rms(cx, &y, Some(&g), DEFAULT_EPS);
        let s =
            cx.g.scalar_f32("residual_weight", self.cfg.residual_weight as f32);
        let y = cx.g.op("Mul", "residual_scaled", &[&y, &s], &[]);
        Ok(cx.g.op("Add", "residual", &[x, &y], &[]))
    }

    fn light_conv(&self, cx: &mut Ctx<'_>, x: &Value, i: usize) -> Result<Value, ExportError> {
        let (d, k, eps) = (
            self.cfg.hidden_size,
            self.cfg.conv_kernel_size,
            self.cfg.rms_norm_eps,
        );
        let g = self.gain(cx, &layer(i, names::LCONV_PRE_NORM))?;
        let y = rms(cx, x, Some(&g), eps);
        let w = self.square(cx, &layer(i, names::LCONV_START), 2 * d)?;
        let y = linear(cx, &y, &w);
        let halves = cx.g.const_i64("glu_halves", &[d as i64, d as i64]);
        let ab = cx.g.node(
            "",
            "Split",
            "glu_split",
            &[&y, &halves],
            &[("axis", Attr::Int(-1))],
            2,
        );
        let gate = cx.g.op("Sigmoid", "glu_gate", &[&ab[1]], &[]);
        let y = cx.g.op("Mul", "glu", &[&ab[0], &gate], &[]);
        let y = cx.g.transpose("channels_first", &y, &[0, 2, 1]);
        let wc = param(cx, &layer(i, names::LCONV_DEPTHWISE), &[d, 1, k])?;
        let y = cx.g.op(
            "Conv",
            "depthwise_conv1d",
            &[&y, &wc],
            &[
                ("kernel_shape", Attr::Ints(vec![k as i64])),
                ("group", Attr::Int(d as i64)),
                ("pads", Attr::Ints(vec![k as i64 - 1, 0])),
            ],
        );
        let y = cx.g.transpose("channels_last", &y, &[0, 2, 1]);
        let y = self.clip(cx, &y);
        let g = self.gain(cx, &layer(i, names::LCONV_NORM))?;
        let y = rms(cx, &y, Some(&g), eps);
        let y = silu(cx, &y);
        let w = self.square(cx, &layer(i, names::LCONV_END), d)?;
        let y = linear(cx, &y, &w);
        Ok(cx.g.op("Add", "residual", &[&y, x], &[]))
    }

    fn attention_block(&self, cx: &mut Ctx<'_>, x: &Value, i: usize) -> Result<Value, ExportError> {
        let d = self.cfg.hidden_size;
        let y = self.clip(cx, x);
        let g = self.gain(cx, &layer(i, names::ATTN_PRE_NORM))?;
        let y = rms(cx, &y, Some(&g), DEFAULT_EPS);
        let y = self.attention(cx, &y, i)?;
        let w = self.square(cx, &layer(i, names::ATTN_POST), d)?;
        let y = linear(cx, &y, &w);
        let y = self.clip(cx, &y);
        let g = self.gain(cx, &layer(i, names::ATTN_POST_NORM))?;
        let y = rms(cx, &y, Some(&g), DEFAULT_EPS);
        Ok(cx.g.op("Add", "residual", &[x, &y], &[]))
    }
}

/// `[F, D]`: row f is position P − f; columns `sin(pos · inv_k)` then `cos(pos · inv_k)`, k < D/2,
/// `inv_k = exp(−k · ln(10⁴) / max(D/2 − 1, 1))`, in float32 as transformers computes them.
fn timing_signal(cfg: &Gemma3nAudioConfig) -> Vec<f32> {
    let n = cfg.hidden_size / 2;
    let inc = (1.0e4f64).ln() / (n.saturating_sub(1).max(1)) as f64;
    let inv: Vec<f32> = (0..n).map(|k| (k as f32 * (-inc) as f32).exp()).collect();
    let (p, r) = (cfg.max_past() as i64, cfg.context_right as i64);
    let mut out = Vec::new();
    for pos in (-r..=p).rev() {
        let scaled: Vec<f32> = inv.iter().map(|v| pos as f32 * v).collect();
        out.extend(scaled.iter().map(|s| s.sin()));
        out.extend(scaled.iter().map(|s| s.cos()));
    }
    out
}

#[path = "audio_attention.rs"]
mod attention;
