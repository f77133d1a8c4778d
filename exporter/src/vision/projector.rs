//! The multimodal projectors: SigLIP's last hidden state → image features in the text decoder's width.
//!
//! Gemma3MultiModalProjector (semantics §5.3), in transformers' exact order:
//!
//! ```text
//! [N·T, D] → [N, D, P, P] (channels first, row-major patches) → AveragePool(k, stride k) → [N, D, t, t]
//!          → [N, t·t, D] (soft token r·t + c) → RMSNorm (1 + w, fp32, eps = vision layer_norm_eps)
//!          → x @ mm_input_projection_weight ([D, H_text], stored [in, out]: not transposed) → [N, t·t, H_text]
//! ```
//!
//! PaliGemmaMultiModalProjector (semantics §8.1): one `nn.Linear` with bias per patch, `[N·T, D] → [N, T, H_text]`.
//!
//! Neither multiplies the features by sqrt(H_text): they replace already scaled embedding rows. (PaliGemma's
//! `/ sqrt(H_text)` of transformers 4.x cancelled the decoder's `× sqrt(H_text)` of those days; 5.x scales inside
//! the embedding and does neither.)

use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::family::Projector;
use gemma_models::names::vision::{self as tensor, VisionNames};
use gemma_models::VisionConfig;

/// `last_hidden_state` `[N·T, D]` → image features `[N, mm_tokens_per_image, H_text]`, by the projector of `v`'s
/// vision system.
pub fn project(
    cx: &mut Ctx<'_>,
    hidden: &Value,
    v: &VisionConfig,
    names: &VisionNames,
    text_hidden: usize,
) -> Result<Value, ExportError> {
    match v.system.spec().projector {
        Projector::PoolNormProject => pool_norm_project(cx, hidden, v, names),
        Projector::Linear => linear(cx, hidden, v, text_hidden),
    }
}

/// PaliGemmaMultiModalProjector: `x · Wᵀ + b` per patch, then `[N, T, H_text]`.
fn linear(
    cx: &mut Ctx<'_>,
    hidden: &Value,
    v: &VisionConfig,
    text_hidden: usize,
) -> Result<Value, ExportError> {
    cx.g.set_scope("/multi_modal_projector");
    let x = cx.linear_bias(hidden, tensor::PROJECTOR_LINEAR)?;
    let t = v.num_patches() as i64;
    let shape = cx.g.const_i64("features", &[-1, t, text_hidden as i64]);
    Ok(cx.g.reshape("unflatten", &x, &shape))
}

/// Gemma3MultiModalProjector.
fn pool_norm_project(
    cx: &mut Ctx<'_>,
    hidden: &Value,
    v: &VisionConfig,
    names: &VisionNames,
) -> Result<Value, ExportError> {
    let (d, t, side) = (v.hidden_size, v.num_patches(), v.patches_per_side());
    let (k, tokens) = (v.pool_kernel(), v.mm_tokens_per_image);
    cx.g.set_scope("/multi_modal_projector");
    let g = &mut *cx.g;
    let seq = g.const_i64("vision_tokens_channels", &[-1, t as i64, d as i64]);
    let x = g.reshape("unflatten", hidden, &seq);
    let x = g.transpose("channels_first", &x, &[0, 2, 1]);
    let grid = g.const_i64("patch_grid", &[-1, d as i64, side as i64, side as i64]);
    let x = g.reshape("grid", &x, &grid);
    let x = g.op(
        "AveragePool",
        "avg_pool",
        &[&x],
        &[
            ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
            ("strides", Attr::Ints(vec![k as i64, k as i64])),
        ],
    );
    let pooled = g.const_i64("pooled_channels_tokens", &[-1, d as i64, tokens as i64]);
    let x = g.reshape("flatten_tokens", &x, &pooled);
    let x = g.transpose("tokens", &x, &[0, 2, 1]);
    let x = cx.rms_norm(&x, names.projector_norm(), v.layer_norm_eps)?;
    let w = cx.weight(names.projection())?;
    Ok(cx.g.op("MatMul", "projection", &[&x, &w], &[]))
}
