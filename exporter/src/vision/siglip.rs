//! The SigLIP vision tower of Gemma 3 (semantics §5.2), float32, standard ONNX ops:
//!
//! ```text
//! pixel_values [N, C, S, S] ─Conv(k=p, stride=p)→ [N, D, P, P] → [N·T, D] (patch t = row·P + col) + positions
//! repeat L×:  x += out_proj(MHA(LayerNorm1(x)))     heads × hd, scale hd^-0.5, no mask, biased projections
//!             x += fc2(gelu_tanh(fc1(LayerNorm2(x))))
//! x = post_layernorm(x)                              → [N·T, D], what Gemma 3's projector reads
//! ```
//!
//! The residual stream is kept flat as `[N·T, D]` so every linear is one `Gemm` with its bias (or, in quantized
//! exports, one quantized matmul, see [`super::kernels`]); it is reshaped to heads only inside attention. T, D and
//! the head sizes are fixed by the config, only N (images) is symbolic.

use super::kernels::{VisionAttention, VisionKernels, VisionLinear};
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::onnx::DataType;
use crate::ops::dynamic_quantize_matmul::dynamic_quantize_matmul;
use crate::ops::multi_head_attention::multi_head_attention;
use crate::quant::rounding::{quantize_block, Rounding};
use crate::ExportError;
use gemma_models::names::vision::{self as tensor, attn, VisionNames};
use gemma_models::VisionConfig;

impl Ctx<'_> {
    /// A checkpoint tensor as a float32 initializer (written once per export, see [`crate::weights`]).
    pub(crate) fn weight(&mut self, name: &str) -> Result<Value, ExportError> {
        if let Some(v) = self.g.existing(name) {
            return Ok(v);
        }
        let view = self.ckpt.tensor(name)?;
        let t = self.w.f32_from_checkpoint(self.ckpt, name, &view, None)?;
        Ok(self.g.initializer(t))
    }

    /// `x · Wᵀ + b` for an `nn.Linear` with bias: `x` `[M, in]`, `W` `[out, in]`, `b` `[out]`.
    pub(super) fn linear_bias(&mut self, x: &Value, prefix: &str) -> Result<Value, ExportError> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        Ok(self
            .g
            .op("Gemm", "linear", &[x, &w, &b], &[("transB", Attr::Int(1))]))
    }

    /// One of the tower's linears (`nn.Linear` with bias) in the kernel `k` chooses.
    fn tower_linear(
        &mut self,
        x: &Value,
        prefix: &str,
        k: &VisionKernels,
    ) -> Result<Value, ExportError> {
        match k.linear {
            VisionLinear::Gemm => self.linear_bias(x, prefix),
            VisionLinear::DynamicQuantize => {
                let (w, scales) = self.int8_columns(&format!("{prefix}.weight"))?;
                let b = self.weight(&format!("{prefix}.bias"))?;
                Ok(dynamic_quantize_matmul(
                    self.g,
                    "linear_int8",
                    x,
                    [&w, &scales],
                    Some(&b),
                ))
            }
            VisionLinear::NBits(cfg) => {
                let y = self.linear_nbits(x, &format!("{prefix}.weight"), &cfg, false)?;
                let b = self.weight(&format!("{prefix}.bias"))?;
                Ok(self.g.op("Add", "linear_bias", &[&y, &b], &[]))
            }
        }
    }

    /// `W` `[out, in]` as `DynamicQuantizeMatMul` wants it: `Wᵀ` int8 `[in, out]` and one float32 scale per output
    /// column, symmetric round-to-nearest over the whole column (the text quantizer's rounder on one block of `in`
    /// values): the value of largest magnitude becomes −128, so a column's scale is negative when that value is
    /// positive, which the kernel's per-column multiply takes as is. Initializers `{name}_int8` and `{name}_scale`.
    fn int8_columns(&mut self, name: &str) -> Result<(Value, Value), ExportError> {
        let (qname, sname) = (format!("{name}_int8"), format!("{name}_scale"));
        if let (Some(w), Some(s)) = (self.g.existing(&qname), self.g.existing(&sname)) {
            return Ok((w, s));
        }
        let view = self.ckpt.tensor(name)?;
        let (n, k) = (view.shape[0], view.shape[1]);
        let values = view.to_f32_vec();
        crate::finite::check(&view, 0, &values, self.w.allow_nonfinite)?;
        self.ckpt.release(&view);
        let mut codes = vec![0u8; k];
        let mut transposed = vec![0u8; k * n];
        let mut scales = Vec::with_capacity(n);
        for (col, row) in values.chunks_exact(k).enumerate() {
            let block = quantize_block(row, 8, true, Rounding::Nearest, None, &mut codes);
            scales.push(block.scale);
            for (i, &c) in codes.iter().enumerate() {
                // code − 128 as int8: flip the sign bit.
                transposed[i * n + col] = c ^ 0x80;
            }
        }
        let dims = [k as i64, n as i64];
        let w = self
            .w
            .raw_values(&qname, DataType::Int8, &dims, &transposed)?;
        let s = self.w.f32_values(&sname, &[n as i64], &scales)?;
        self.w.advance((n * k * 4) as u64);
        Ok((self.g.initializer(w), self.g.initializer(s)))
    }

    /// Standard LayerNorm over the last axis (biased variance, affine), as `nn.LayerNorm`.
    fn layer_norm(&mut self, x: &Value, prefix: &str, eps: f64) -> Result<Value, ExportError> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        Ok(self.g.op(
            "LayerNormalization",
            "layer_norm",
            &[x, &w, &b],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
            ],
        ))
    }
}

/// Builds the tower from `pixel_values` `[N, C, S, S]`; returns `last_hidden_state` flattened to `[N·T, D]`.
pub fn tower(
    cx: &mut Ctx<'_>,
    pixel_values: &Value,
    v: &VisionConfig,
    names: &VisionNames,
    k: &VisionKernels,
) -> Result<Value, ExportError> {
    let (d, t, p) = (v.hidden_size, v.num_patches(), v.patch_size);
    let eps = v.layer_norm_eps;

    // Patch embedding: a stride-p convolution, then tokens in row-major patch order, plus learned positions.
    cx.g.set_scope("/vision_tower/embeddings");
    let w = cx.weight(&names.weight(tensor::PATCH_EMBEDDING))?;
    let b = cx.weight(&names.bias(tensor::PATCH_EMBEDDING))?;
    let patches = cx.g.op(
        "Conv",
        "patch_embedding",
        &[pixel_values, &w, &b],
        &[
            ("kernel_shape", Attr::Ints(vec![p as i64, p as i64])),
            ("strides", Attr::Ints(vec![p as i64, p as i64])),
        ],
    );
    let seq_shape =
        cx.g.const_i64("vision_channels_tokens", &[-1, d as i64, t as i64]);
    let patches = cx.g.reshape("flatten_patches", &patches, &seq_shape);
    let tokens = cx.g.transpose("tokens", &patches, &[0, 2, 1]);
    let pos = cx.weight(&names.weight(tensor::POSITION_EMBEDDING))?;
    let x = cx.g.op("Add", "positions", &[&tokens, &pos], &[]);
    let flat = cx.g.const_i64("vision_flat", &[-1, d as i64]);
    let mut x = cx.g.reshape("flatten", &x, &flat);

    for l in 0..v.num_hidden_layers {
        cx.g.set_scope(format!("/vision_tower/encoder/layers.{l}"));
        let n = |s: &str| names.layer(l, s);
        let h = cx.layer_norm(&x, &n(tensor::LAYER_NORM1), eps)?;
        let a = self_attention(cx, &h, v, &n(tensor::SELF_ATTN), k)?;
        x = cx.g.op("Add", "residual_attn", &[&x, &a], &[]);
        let h = cx.layer_norm(&x, &n(tensor::LAYER_NORM2), eps)?;
        let h = cx.tower_linear(&h, &n(tensor::FC1), k)?;
        let h = cx.g.op(
            "Gelu",
            "mlp/gelu",
            &[&h],
            &[("approximate", Attr::Str("tanh".into()))],
        );
        let h = cx.tower_linear(&h, &n(tensor::FC2), k)?;
        x = cx.g.op("Add", "residual_mlp", &[&x, &h], &[]);
    }
    cx.g.set_scope("/vision_tower/post_layernorm");
    cx.layer_norm(&x, &names.tower(tensor::POST_LAYERNORM), eps)
}

/// Bidirectional multi-head attention over the T patches of each image: `x` `[N·T, D]` → `[N·T, D]`.
fn self_attention(
    cx: &mut Ctx<'_>,
    x: &Value,
    v: &VisionConfig,
    prefix: &str,
    k: &VisionKernels,
) -> Result<Value, ExportError> {
    let (nh, hd, t, d) = (
        v.num_attention_heads,
        v.head_dim(),
        v.num_patches(),
        v.hidden_size,
    );
    let scale = (hd as f64).powf(-0.5) as f32;
    let out_proj = format!("{prefix}.{}", attn::OUT_PROJ);
    if k.attention == VisionAttention::MultiHead {
        // [N·T, D] → [N, T, D] for q, k, v; one kernel; back to [N·T, D].
        let images = cx.g.const_i64("vision_images", &[-1, t as i64, d as i64]);
        let mut qkv = Vec::with_capacity(3);
        for which in [attn::Q_PROJ, attn::K_PROJ, attn::V_PROJ] {
            let y = cx.tower_linear(x, &format!("{prefix}.{which}"), k)?;
            qkv.push(cx.g.reshape("heads/images", &y, &images));
        }
        let ctx = multi_head_attention(cx.g, "attn/mha", [&qkv[0], &qkv[1], &qkv[2]], nh, scale);
        let flat = cx.g.const_i64("vision_flat", &[-1, d as i64]);
        let ctx = cx.g.reshape("attn/context_flat", &ctx, &flat);
        return cx.tower_linear(&ctx, &out_proj, k);
    }
    let heads_shape =
        cx.g.const_i64("vision_heads", &[-1, t as i64, nh as i64, hd as i64]);
    let proj = |cx: &mut Ctx<'_>, which: &str, perm: &[i64]| -> Result<Value, ExportError> {
        let y = cx.tower_linear(x, &format!("{prefix}.{which}"), k)?;
        let y = cx.g.reshape("heads/reshape", &y, &heads_shape);
        Ok(cx.g.transpose("heads/transpose", &y, perm))
    };
    let q = proj(cx, attn::Q_PROJ, &[0, 2, 1, 3])?; // [N, nh, T, hd]
    let kt = proj(cx, attn::K_PROJ, &[0, 2, 3, 1])?; // [N, nh, hd, T]
    let vv = proj(cx, attn::V_PROJ, &[0, 2, 1, 3])?; // [N, nh, T, hd]
    let g = &mut *cx.g;
    let scores = g.op("MatMul", "attn/qk", &[&q, &kt], &[]);
    let scale = g.scalar_f32("vision_attn_scale", scale);
    let scores = g.op("Mul", "attn/scale", &[&scores, &scale], &[]);
    let probs = g.op(
        "Softmax",
        "attn/softmax",
        &[&scores],
        &[("axis", Attr::Int(-1))],
    );
    let ctx = g.op("MatMul", "attn/pv", &[&probs, &vv], &[]);
    let ctx = g.transpose("attn/context_t", &ctx, &[0, 2, 1, 3]);
    let flat = g.const_i64("vision_flat", &[-1, d as i64]);
    let ctx = g.reshape("attn/context_flat", &ctx, &flat);
    cx.tower_linear(&ctx, &out_proj, k)
}
