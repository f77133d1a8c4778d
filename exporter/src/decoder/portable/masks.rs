//! What the portable backend computes once per graph for each layer type: RoPE tables and the additive attention
//! mask (causal, sliding window, padding, and Gemma 3's image blocks).

use crate::builder::{GraphBuilder, Value};
use crate::layers::{inv_freq, MASK_MIN};
use crate::onnx::DataType;
use gemma_models::RopeParams;

/// RoPE cos/sin tables for one layer type (semantics §1.3, §4.3), computed in the graph in float32 from
/// `position_ids` exactly as transformers does: `ang = float(pos) * inv_freq`, `emb = concat(ang, ang)`, then cos
/// and sin; shaped `[B, 1, S, hd]` to broadcast over heads.
pub(crate) fn rope_tables(
    g: &mut GraphBuilder,
    position_ids: &Value,
    label: &str,
    rope: &RopeParams,
    head_dim: usize,
) -> (Value, Value) {
    let l = |s: &str| format!("rope_{label}/{s}");
    let inv_freq = inv_freq(rope.theta, rope.linear_factor, head_dim);
    let inv = g.const_f32(
        &format!("/rope/{label}/inv_freq"),
        &[inv_freq.len() as i64],
        &inv_freq,
    );
    let pos = g.cast(&l("cast"), position_ids, DataType::Float);
    let axes = g.const_i64("axes_last", &[-1]);
    let pos = g.unsqueeze(&l("unsqueeze"), &pos, &axes);
    let ang = g.op("Mul", &l("freqs"), &[&pos, &inv], &[]);
    let emb = g.concat(&l("emb"), &[&ang, &ang], -1);
    let axis1 = g.const_i64("axes_1", &[1]);
    let cos = g.op("Cos", &l("cos"), &[&emb], &[]);
    let sin = g.op("Sin", &l("sin"), &[&emb], &[]);
    let cos = g.unsqueeze(&l("cos_heads"), &cos, &axis1);
    let sin = g.unsqueeze(&l("sin_heads"), &sin, &axis1);
    (cos, sin)
}

/// The additive attention mask `[B, 1, S, T]` (0 where allowed, `MASK_MIN` elsewhere) for queries at absolute
/// KV indices `past .. past+S` and keys `0 .. T` (semantics §1.6, §5.5):
/// `allowed(i, j) = (j ≤ i OR same_block(i, j)) AND [sliding: j > i − W] AND key_not_padded(j)`.
///
/// `blocks` is `[B, S]` int64 from [`image_blocks`]: 0 for text, k ≥ 1 for the k-th run of image tokens of the
/// current chunk. Keys from the past cache get block 0, so a block never spans chunks: the runtime must prefill
/// each image whole in one chunk. Only the sequence length of the token input `tokens` is read (`input_ids` or
/// `inputs_embeds`).
///
/// With `block_overrides_window` (PaliGemma, semantics §8.3) the block term is or-ed in after the window, as
/// transformers' `or_masks(sliding_window_causal, blockwise_overlay)` does:
/// `allowed(i, j) = ((j ≤ i AND j > i − W) OR same_block(i, j)) AND key_not_padded(j)`.
pub(crate) fn attention_mask(
    g: &mut GraphBuilder,
    (tokens, attention_mask): (&Value, &Value),
    window: Option<usize>,
    blocks: Option<&Value>,
    block_overrides_window: bool,
    label: &str,
) -> Value {
    let l = |s: &str| format!("mask_{label}/{s}");
    let zero = g.scalar_i64("zero", 0);
    let one = g.scalar_i64("one", 1);
    let ids_shape = g.shape(&l("ids_shape"), tokens);
    let mask_shape = g.shape(&l("mask_shape"), attention_mask);
    let s = g.gather(&l("seq_len"), &ids_shape, &one, 0);
    let t = g.gather(&l("total_len"), &mask_shape, &one, 0);
    let past = g.op("Sub", &l("past_len"), &[&t, &s], &[]);
    let q_idx = g.op("Range", &l("q_idx"), &[&past, &t, &one], &[]);
    let k_idx = g.op("Range", &l("k_idx"), &[&zero, &t, &one], &[]);
    let ax1 = g.const_i64("axes_1", &[1]);
    let ax0 = g.const_i64("axes_0", &[0]);
    let qi = g.unsqueeze(&l("qi"), &q_idx, &ax1);
    let kj = g.unsqueeze(&l("kj"), &k_idx, &ax0);
    let mut allowed = g.op("LessOrEqual", &l("causal"), &[&kj, &qi], &[]);
    let mut late_block = None;
    if let Some(blocks) = blocks {
        // Key block ids [B, T]: 0 for the `past` cached keys, then the chunk's own ids.
        let past_1 = g.unsqueeze(&l("past_1d"), &past, &ax0);
        let zero_1 = g.const_i64("zero_1d", &[0]);
        let pads = g.concat(&l("block_pads"), &[&zero_1, &past_1, &zero_1, &zero_1], 0);
        let k_blocks = g.op("Pad", &l("key_blocks"), &[blocks, &pads], &[]);
        let ax2 = g.const_i64("axes_2", &[2]);
        let qb = g.unsqueeze(&l("q_block"), blocks, &ax2);
        let kb = g.unsqueeze(&l("k_block"), &k_blocks, &ax1);
        let same = g.op("Equal", &l("same_block"), &[&qb, &kb], &[]);
        let in_image = g.op("Greater", &l("in_image"), &[&qb, &zero], &[]);
        let same = g.op("And", &l("same_image"), &[&same, &in_image], &[]);
        let same = g.unsqueeze(&l("same_image_4d"), &same, &ax1);
        if block_overrides_window {
            late_block = Some(same);
        } else {
            allowed = g.op("Or", &l("causal_or_block"), &[&allowed, &same], &[]);
        }
    }
    if let Some(w) = window {
        let wv = g.scalar_i64("window", w as i64);
        let lo = g.op("Sub", &l("window_start"), &[&qi, &wv], &[]);
        let inside = g.op("Greater", &l("in_window"), &[&kj, &lo], &[]);
        allowed = g.op("And", &l("sliding"), &[&allowed, &inside], &[]);
    }
    if let Some(same) = late_block {
        allowed = g.op("Or", &l("window_or_block"), &[&allowed, &same], &[]);
    }
    let keys = g.cast(&l("keys_bool"), attention_mask, DataType::Bool);
    let ax12 = g.const_i64("axes_1_2", &[1, 2]);
    let keys = g.unsqueeze(&l("keys_4d"), &keys, &ax12);
    let allowed = g.op("And", &l("allowed"), &[&allowed, &keys], &[]);
    let zero_f = g.scalar_f32("mask_zero", 0.0);
    let min_f = g.scalar_f32("mask_min", MASK_MIN);
    g.where_(&l("additive"), &allowed, &zero_f, &min_f)
}

/// Image block ids `[B, S]` int64 of one chunk from `token_type_ids` `[B, S]` (1 at `<image_soft_token>`): each
/// maximal run of consecutive type-1 tokens gets its own id 1, 2, … in order, every other token 0. This is
/// transformers' `get_block_sequence_ids_for_mask` shifted by one (−1 there is 0 here).
pub(super) fn image_blocks(g: &mut GraphBuilder, token_type_ids: &Value) -> Value {
    let l = |s: &str| format!("image_blocks/{s}");
    let one = g.scalar_i64("one", 1);
    let is_image = g.op("Equal", &l("is_image"), &[token_type_ids, &one], &[]);
    let is_image = g.cast(&l("is_image_i64"), &is_image, DataType::Int64);
    // previous[b, i] = is_image[b, i − 1], 0 for i = 0
    let zero_1 = g.const_i64("zero_1d", &[0]);
    let minus_one = g.const_i64("minus_one_1d", &[-1]);
    let ax1 = g.const_i64("axes_1", &[1]);
    let head = g.slice(&l("all_but_last"), &is_image, [&zero_1, &minus_one, &ax1]);
    let shift = g.const_i64("pads_shift_right", &[0, 1, 0, 0]);
    let previous = g.op("Pad", &l("previous"), &[&head, &shift], &[]);
    let starts = g.op("Greater", &l("run_starts"), &[&is_image, &previous], &[]);
    let starts = g.cast(&l("run_starts_i64"), &starts, DataType::Int64);
    let axis = g.scalar_i64("axis_1", 1);
    let run = g.op("CumSum", &l("run_index"), &[&starts, &axis], &[]);
    g.op("Mul", &l("blocks"), &[&run, &is_image], &[])
}

/// PaliGemma's prefix-LM block ids `[B, S]` int64 (semantics §8.3): 1 where `token_type_ids` is 0 (the image and
/// prompt prefix, which attends to itself both ways), 0 elsewhere (generated tokens and a suffix: causal).
/// transformers' `block_sequence_ids = where(token_type_ids == 0, 0, -1)`, shifted by one, on the prefill only;
/// a decode step passes 1, which gives the causal mask transformers uses there.
pub(super) fn prefix_block(g: &mut GraphBuilder, token_type_ids: &Value) -> Value {
    let zero = g.scalar_i64("zero", 0);
    let prefix = g.op(
        "Equal",
        "prefix_block/is_prefix",
        &[token_type_ids, &zero],
        &[],
    );
    g.cast("prefix_block/blocks", &prefix, DataType::Int64)
}
