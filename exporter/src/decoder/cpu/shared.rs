//! The per-step values every layer of the cpu graph shares: `GroupQueryAttention`'s lengths and bias, and the RoPE
//! tables `RotaryEmbedding` indexes.
//!
//! - `total_sequence_length` = T (int32 scalar) and `seqlens_k` = T − 1 for every row, from `attention_mask`'s shape.
//! - `attention_bias` `[B, 1, S, T]`: 0 for real keys, `f32::MIN` for padding (what eager attention adds).
//! - RoPE: one row of cos/sin per token of this chunk, computed in float32 from `position_ids` like transformers,
//!   indexed `0 .. B·S` by `RotaryEmbedding`.

use super::{DecoderInput, Inputs};
use crate::attention::AttentionSpec;
use crate::builder::{GraphBuilder, Value};
use crate::layers::{inv_freq, MASK_MIN};
use crate::onnx::DataType;
use crate::ops::group_query_attention::{group_query_attention, GqaAttributes, GqaInputs};
use gemma_models::{LayerType, RopeParams, TextConfig};

/// See the module documentation.
pub(crate) struct Shared {
    pub batch_seq: Value,
    pub seqlens_k: Value,
    pub total_len: Value,
    pub bias: Value,
    pub rope_ids: Value,
    global_rope: Option<(Value, Value)>,
    local_rope: Option<(Value, Value)>,
}

impl Shared {
    /// The `(cos, sin)` tables of a layer type in use.
    pub fn rope(&self, ty: LayerType) -> &(Value, Value) {
        match ty {
            LayerType::Full => self.global_rope.as_ref(),
            LayerType::Sliding => self.local_rope.as_ref(),
        }
        .expect("tables exist for every layer type in use")
    }

    /// `GroupQueryAttention` of the layer `spec` on `q` and the new `[k, v]` after the `past` buffers, with this
    /// step's lengths and bias: `(output, present_key, present_value)`. `window_cache`: a sliding layer's buffer is
    /// window-sized (see [`GqaAttributes::window_cache`]).
    pub fn attention(
        &self,
        g: &mut GraphBuilder,
        spec: &AttentionSpec,
        [q, k, v]: [&Value; 3],
        (past_key, past_value): (&Value, &Value),
        window_cache: bool,
    ) -> (Value, Value, Value) {
        let inputs = GqaInputs {
            query: q,
            key: k,
            value: v,
            past_key,
            past_value,
            seqlens_k: &self.seqlens_k,
            total_sequence_length: &self.total_len,
            attention_bias: &self.bias,
        };
        let attrs = GqaAttributes {
            num_heads: spec.num_heads,
            kv_num_heads: spec.num_kv_heads,
            scale: spec.scaling as f32,
            softcap: spec.softcap.map(|c| c as f32),
            local_window: spec.window,
            window_cache,
        };
        group_query_attention(g, "attn", &inputs, &attrs)
    }
}

/// Computes the shared values of one step.
pub(crate) fn values(g: &mut GraphBuilder, t: &TextConfig, inputs: &Inputs) -> Shared {
    let (ids, mask) = (&inputs.tokens, &inputs.attention_mask);
    // `[B, S]`: the shape of `input_ids`, the first two dims of `inputs_embeds` (Gemma 3n).
    let batch_seq = match inputs.kind {
        DecoderInput::InputIds => g.shape("batch_seq", ids),
        DecoderInput::InputsEmbeds { .. } => g.shape_range("batch_seq", ids, None, 2),
    };
    let batch = g.shape_range("batch", ids, Some(0), 1);
    let seq = g.shape_range("seq", ids, Some(1), 2);
    let total = g.shape_range("total", mask, Some(1), 2);
    let total_i32 = g.cast("total_i32", &total, DataType::Int32);
    let axes_0 = g.const_i64("axes_0", &[0]);
    let total_len = g.squeeze("total_len", &total_i32, &axes_0);
    let one_1d = g.const_i64("one_1d", &[1]);
    let last = g.op("Sub", "last_index", &[&total, &one_1d], &[]);
    let last = g.op("Expand", "last_per_row", &[&last, &batch], &[]);
    let seqlens_k = g.cast("seqlens_k", &last, DataType::Int32);

    let keys = g.cast("keys_bool", mask, DataType::Bool);
    let zero_f = g.scalar_f32("mask_zero", 0.0);
    let min_f = g.scalar_f32("mask_min", MASK_MIN);
    let bias = g.where_("key_bias", &keys, &zero_f, &min_f);
    let axes_12 = g.const_i64("axes_1_2", &[1, 2]);
    let bias = g.unsqueeze("key_bias_4d", &bias, &axes_12);
    let bias_shape = g.concat("bias_shape", &[&batch, &one_1d, &seq, &total], 0);
    let bias = g.op("Expand", "attention_bias", &[&bias, &bias_shape], &[]);

    let flat = g.const_i64("flat_1d", &[-1]);
    let pos_flat = g.reshape("positions_flat", &inputs.position_ids, &flat);
    let count = g.shape("token_count", &pos_flat);
    let count = g.squeeze("token_count_scalar", &count, &axes_0);
    let zero = g.scalar_i64("zero", 0);
    let one = g.scalar_i64("one", 1);
    let rows = g.op("Range", "rope_rows", &[&zero, &count, &one], &[]);
    let rope_ids = g.reshape("rope_ids", &rows, &batch_seq);
    let pos_f = g.cast("positions_f32", &pos_flat, DataType::Float);
    let axes_last = g.const_i64("axes_last", &[-1]);
    let pos_f = g.unsqueeze("positions_col", &pos_f, &axes_last);
    let mut tables = |label: &str, rope: &RopeParams| {
        let inv = inv_freq(rope.theta, rope.linear_factor, t.head_dim);
        let name = format!("/rope/{label}/inv_freq");
        let inv = g.const_f32(&name, &[inv.len() as i64], &inv);
        let ang = g.op("Mul", &format!("rope_{label}/freqs"), &[&pos_f, &inv], &[]);
        let cos = g.op("Cos", &format!("rope_{label}/cos"), &[&ang], &[]);
        let sin = g.op("Sin", &format!("rope_{label}/sin"), &[&ang], &[]);
        (cos, sin)
    };
    let uses = |ty: LayerType| t.layer_types.contains(&ty);
    let global_rope = uses(LayerType::Full).then(|| tables("global", &t.rope_full));
    let local_rope = uses(LayerType::Sliding).then(|| tables("local", &t.rope_sliding));
    Shared {
        batch_seq,
        seqlens_k,
        total_len,
        bias,
        rope_ids,
        global_rope,
        local_rope,
    }
}
