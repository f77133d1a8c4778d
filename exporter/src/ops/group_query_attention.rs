//! `GroupQueryAttention` (domain `com.microsoft`, version 1): grouped-query attention over KV buffers that the op
//! updates in place, as ONNX Runtime 1.31's CPU provider implements it.
//!
//! Contract (inputs by position; an omitted optional input is the empty name):
//! - 0–2 `query` `[B, S, heads · hd]`, `key`, `value` `[B, S, kv_heads · hd]` (RoPE already applied here:
//!   `do_rotary = 0`, so 7–9 `cos_cache`, `sin_cache`, `position_ids` are omitted).
//! - 3–4 `past_key`, `past_value` `[B, kv_heads, capacity, hd]`: when the runtime binds the same buffer as the
//!   matching present output (`past_present_share_buffer`), the new keys/values are written into it.
//! - 5 `seqlens_k` int32 `[B]`: total length − 1 per row; 6 `total_sequence_length` int32 scalar.
//! - 10 `attention_bias` float `[B, 1, S, T]`: added to the scores (left padding is masked this way).
//! - outputs: `output` `[B, S, heads · hd]`, `present_key`, `present_value`.
//! - attributes: `num_heads`, `kv_num_heads`, `scale`, `do_rotary`, optional `softcap` (tanh soft-cap of the
//!   scores), and for sliding layers `local_window_size = W` with `sliding_window_cache = 1`: the buffer then holds
//!   `capacity ≥ W` rows, rows `[0, L)` the most recent L positions, and the op evicts old ones itself. The window
//!   is `i − W < j ≤ i` (semantics §1.6).
//!
//! Restriction: a step with past context and `S > 1` needs batch 1.

use super::MS_DOMAIN;
use crate::builder::{Attr, GraphBuilder, Value};

/// The tensors one `GroupQueryAttention` node reads.
pub struct GqaInputs<'a> {
    pub query: &'a Value,
    pub key: &'a Value,
    pub value: &'a Value,
    pub past_key: &'a Value,
    pub past_value: &'a Value,
    pub seqlens_k: &'a Value,
    pub total_sequence_length: &'a Value,
    pub attention_bias: &'a Value,
}

/// The attributes of one `GroupQueryAttention` node.
pub struct GqaAttributes {
    pub num_heads: usize,
    pub kv_num_heads: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Sliding layers: the window W.
    pub local_window: Option<usize>,
    /// With `local_window`: the buffer is window-sized and the op evicts old positions (`sliding_window_cache`);
    /// without, it holds every position, like a global layer's (Gemma 3n's sources of KV-shared layers).
    pub window_cache: bool,
}

/// `(output, present_key, present_value)`.
pub fn group_query_attention(
    g: &mut GraphBuilder,
    label: &str,
    i: &GqaInputs<'_>,
    a: &GqaAttributes,
) -> (Value, Value, Value) {
    let mut attrs = vec![
        ("num_heads", Attr::Int(a.num_heads as i64)),
        ("kv_num_heads", Attr::Int(a.kv_num_heads as i64)),
        ("scale", Attr::Float(a.scale)),
        ("do_rotary", Attr::Int(0)),
    ];
    if let Some(cap) = a.softcap {
        attrs.push(("softcap", Attr::Float(cap)));
    }
    if let Some(w) = a.local_window {
        attrs.push(("local_window_size", Attr::Int(w as i64)));
        if a.window_cache {
            attrs.push(("sliding_window_cache", Attr::Int(1)));
        }
    }
    let none = Value(String::new());
    let inputs = [
        i.query,
        i.key,
        i.value,
        i.past_key,
        i.past_value,
        i.seqlens_k,
        i.total_sequence_length,
        &none, // cos_cache
        &none, // sin_cache
        &none, // position_ids
        i.attention_bias,
    ];
    let out = g.node(MS_DOMAIN, "GroupQueryAttention", label, &inputs, &attrs, 3);
    let [o, k, v]: [Value; 3] = out.try_into().expect("three outputs");
    (o, k, v)
}
