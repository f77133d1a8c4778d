//! The chunked local attention with relative positions of a Conformer block (semantics §13.3); see the parent
//! module's header for the formula. Shapes: B batch, T frames, N heads, H head width, U query blocks of W frames,
//! C keys per block, F = P + R + 1 relative positions.

use super::{linear, reshape, Block};
use crate::builder::Value;
use crate::gemma3n::audio_encoder::param;
use crate::layers::{Ctx, MASK_MIN};
use crate::ExportError;
use gemma_models::names::gemma3n_audio::{self as names, layer};

impl Block<'_> {
    /// `x` `[B, T, D]` (normed) → the attention output `[B, T, D]` (heads concatenated).
    pub(super) fn attention(
        &self,
        cx: &mut Ctx<'_>,
        x: &Value,
        i: usize,
    ) -> Result<Value, ExportError> {
        let cfg = self.cfg;
        let (d, n, h) = (cfg.hidden_size, cfg.num_heads as i64, cfg.head_dim() as i64);
        let (w, c) = (cfg.chunk_size as i64, cfg.context_size() as i64);
        let f = (cfg.max_past() + cfg.context_right + 1) as i64;
        let heads = cx.g.const_i64("heads_shape", &[0, 0, n, h]);
        let proj = |cx: &mut Ctx<'_>, name: &str| -> Result<Value, ExportError> {
            let wt = param(cx, &layer(i, name), &[d, d])?;
            let y = linear(cx, x, &wt);
            Ok(cx.g.reshape("heads", &y, &heads))
        };
        let (q, k, v) = (
            proj(cx, names::ATTN_Q)?,
            proj(cx, names::ATTN_K)?,
            proj(cx, names::ATTN_V)?,
        );

        // q · head_dim^-½ / softplus(0) · softplus(per_dim_scale).
        let ln2 = 2f32.ln();
        let q_scale = (h as f64).powf(-0.5) as f32 * (1.0 / ln2);
        let s = cx.g.scalar_f32("q_scale", q_scale);
        let q = cx.g.op("Mul", "q_scaled", &[&q, &s], &[]);
        let pds = param(cx, &layer(i, names::ATTN_PER_DIM_SCALE), &[h as usize])?;
        let pds = cx.g.op("Softplus", "per_dim_scale", &[&pds], &[]);
        let q = cx.g.op("Mul", "q_per_dim", &[&q, &pds], &[]);

        // Query blocks [B, U, W, N, H]; key/value context blocks [B, U, C, N, H].
        let q = cx.g.op("Pad", "q_padded", &[&q, &self.query_pads], &[]);
        let qb = reshape(cx, "q_blocks", &q, &[0, -1, w, n, h]);
        let pads = cx.g.const_i64(
            "kv_pads",
            &[
                0,
                cfg.max_past() as i64,
                0,
                0,
                0,
                (cfg.context_right + cfg.chunk_size - 1) as i64,
                0,
                0,
            ],
        );
        let context = |cx: &mut Ctx<'_>, x: &Value, label: &str| {
            let p = cx.g.op("Pad", label, &[x, &pads], &[]);
            cx.g.gather(label, &p, &self.context_index, 1)
        };
        let kb = context(cx, &k, "k_context");
        let vb = context(cx, &v, "v_context");

        // Content term [B, N, U, W, C].
        let qp = cx.g.transpose("q_heads_first", &qb, &[0, 3, 1, 2, 4]);
        let kt = cx.g.transpose("k_heads_first_t", &kb, &[0, 3, 1, 4, 2]);
        let ac = cx.g.op("MatMul", "content", &[&qp, &kt], &[]);

        // Position term: q · sin_emb [N, H, F] → [B, N, U, W, F], then the relative shift to [B, N, U, W, C].
        let pos = param(cx, &layer(i, names::ATTN_POS_PROJ), &[d, d])?;
        let emb = linear(cx, &self.timing, &pos);
        let emb = reshape(cx, "sin_emb", &emb, &[f, n, h]);
        let emb = cx.g.transpose("sin_emb_t", &emb, &[1, 2, 0]);
        let qf = reshape(cx, "q_flat", &qp, &[0, 0, -1, h]);
        let bd = cx.g.op("MatMul", "position", &[&qf, &emb], &[]);
        let bd = reshape(cx, "position_blocks", &bd, &[0, 0, -1, w, f]);
        // Pad F to C + 1, flatten (W, C + 1), keep W·C, unflatten: row w moves right by w.
        let shift_pads =
            cx.g.const_i64("shift_pads", &[0, 0, 0, 0, 0, 0, 0, 0, 0, c + 1 - f]);
        let bd = cx.g.op("Pad", "shift_pad", &[&bd, &shift_pads], &[]);
        let bd = reshape(cx, "shift_flat", &bd, &[0, 0, 0, w * (c + 1)]);
        let [z, e, ax] = [0, w * c, -1].map(|v| cx.g.const_i64("shift_slice", &[v]));
        let bd = cx.g.slice("shift_cut", &bd, [&z, &e, &ax]);
        let bd = reshape(cx, "shifted", &bd, &[0, 0, 0, w, c]);
        let logits = cx.g.op("Add", "logits", &[&ac, &bd], &[]);

        let cap = cx.g.scalar_f32("logit_cap", cfg.logit_cap as f32);
        let l = cx.g.op("Div", "capped_in", &[&logits, &cap], &[]);
        let l = cx.g.op("Tanh", "tanh", &[&l], &[]);
        let l = cx.g.op("Mul", "capped", &[&l, &cap], &[]);
        let min = cx.g.scalar_f32("mask_min", MASK_MIN);
        let l = cx.g.where_("masked", &self.allowed, &l, &min);
        let probs = cx.g.op(
            "Softmax",
            "softmax",
            &[&l],
            &[("axis", crate::builder::Attr::Int(-1))],
        );

        // [B, N, U, W, C] · [B, N, U, C, H] → [B, U, W, N, H] → [B, U·W, D] → the first T frames.
        let vp = cx.g.transpose("v_heads_first", &vb, &[0, 3, 1, 2, 4]);
        let out = cx.g.op("MatMul", "weighted", &[&probs, &vp], &[]);
        let out = cx.g.transpose("blocks_first", &out, &[0, 2, 3, 1, 4]);
        let out = reshape(cx, "merged", &out, &[0, -1, d as i64]);
        let [z, one] = [0, 1].map(|v| cx.g.const_i64("frames_slice", &[v]));
        Ok(cx.g.slice("frames", &out, [&z, &self.frames, &one]))
    }
}
