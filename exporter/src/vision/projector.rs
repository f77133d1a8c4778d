//! Gemma3MultiModalProjector (semantics §5.3), in transformers' exact order:
//!
//! ```text
//! [N·T, D] → [N, D, P, P] (channels first, row-major patches) → AveragePool(k, stride k) → [N, D, t, t]
//!          → [N, t·t, D] (soft token r·t + c) → RMSNorm (1 + w, fp32, eps = vision layer_norm_eps)
//!          → x @ mm_input_projection_weight ([D, H_text], stored [in, out]: not transposed) → [N, t·t, H_text]
//! ```
//!
//! The features are not multiplied by sqrt(H_text): they replace the already scaled `<image_soft_token>` rows.

use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::names::vision::VisionNames;
use gemma_models::VisionConfig;

/// `last_hidden_state` `[N·T, D]` → image features `[N, mm_tokens_per_image, H_text]`.
pub fn project(
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
