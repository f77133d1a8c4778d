//! The end of the decoder: keep the last `num_logits_to_keep` positions (0, the default: all of them, what
//! Optimum-style consumers expect), then the final norm, the lm_head (tied: the embedding matrix, stored once) and
//! the optional final soft-cap on those rows only.

use super::{Backend, Residual, Text};
use crate::builder::{GraphBuilder, Value};
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::names;

/// Logits `[B, K, vocab]` of the residual stream `r` after the last layer; `keep` is `(num_logits_to_keep, [B, S])`.
pub(super) fn logits(
    cx: &mut Ctx<'_>,
    b: &mut dyn Backend,
    Text { t, prefix }: &Text,
    mut r: Residual,
    (keep, batch_seq): (&Value, &Value),
) -> Result<Value, ExportError> {
    cx.g.set_scope("/model/norm");
    let h = t.hidden_size;
    r.x = keep_last_positions(cx.g, &r.x, keep, batch_seq, h, "residual");
    if let Some(m) = r.pending.take() {
        r.pending = Some(keep_last_positions(cx.g, &m, keep, batch_seq, h, "pending"));
    }
    let xn = b.norm_residual(cx, &mut r, &names::final_norm(prefix))?;
    b.head(cx, &xn)
}

/// The last `keep` positions (all when `keep` is 0) of a flattened `[B·S, H]` stream `x`, as `[B, K, H]`; `label`
/// names the nodes.
pub(crate) fn keep_last_positions(
    g: &mut GraphBuilder,
    x: &Value,
    keep: &Value,
    batch_seq: &Value,
    hidden: usize,
    label: &str,
) -> Value {
    let hidden_dim = g.const_i64("hidden_dim", &[hidden as i64]);
    let shape3 = g.concat("hidden_3d", &[batch_seq, &hidden_dim], 0);
    let axes_1 = g.const_i64("axes_1", &[1]);
    // `keep` may be a scalar or `[1]`: Reshape to `[1]` serves both (Unsqueeze would make `[1, 1]` of the latter,
    // which Slice rejects).
    let shape_1 = g.const_i64("shape_1", &[1]);
    let keep_1d = g.reshape("keep_1d", keep, &shape_1);
    // Slice start −K keeps the last K rows; −0 = 0 keeps them all.
    let start = g.op("Neg", "keep_start", &[&keep_1d], &[]);
    let end = g.const_i64("slice_to_end", &[i64::MAX]);
    let x3 = g.reshape(&format!("{label}_3d"), x, &shape3);
    g.slice(&format!("{label}_kept"), &x3, [&start, &end, &axes_1])
}
