//! The decoder graph's inputs and outputs: names, types and symbolic dimensions. The KV dimensions that differ
//! between graphs come from the [`Backend`].
//!
//! I/O follows Hugging Face Optimum / transformers.js: `input_ids` (or `inputs_embeds`), `attention_mask`,
//! `position_ids`, `num_logits_to_keep`, `past_key_values.{i}.key|value` → `logits`, `present.{i}.key|value`.

use super::Backend;
use crate::builder::{Dim, GraphBuilder, Value};
use crate::onnx::DataType;
use gemma_models::TextConfig;

/// The graph I/O names of the export contract (`gemma_models::contract::io`): the runtime uses the same constants.
pub use gemma_models::contract::io::{
    past_key, past_value, present_key, present_value, ATTENTION_MASK, GLOBAL_CACHE_DIM,
    INPUTS_EMBEDS, INPUT_IDS, LOGITS, LOGITS_TO_KEEP, POSITION_IDS, SLIDING_CACHE_DIM,
    TOKEN_TYPE_IDS,
};

const BATCH: &str = "batch_size";
const SEQUENCE: &str = "sequence_length";
/// The past and this chunk: `attention_mask`'s length.
pub const TOTAL_SEQUENCE: &str = "total_sequence_length";
/// The portable graph's past keys and values.
pub const PAST_SEQUENCE: &str = "past_sequence_length";
/// The `logits` positions kept (`num_logits_to_keep`).
pub const KEPT_SEQUENCE: &str = "kept_sequence_length";
/// The KV inputs' head and head-size axes where [`Backend::open_past_head_dims`] leaves them open.
const PAST_HEADS: &str = "past_num_key_value_heads";
const PAST_HEAD_DIM: &str = "past_head_dim";

/// What the decoder graph takes as its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderInput {
    /// `input_ids` int64 `[batch, seq]`, embedded and scaled inside the graph (`model.onnx`).
    InputIds,
    /// `inputs_embeds` float32 `[batch, seq, hidden]`, already scaled by sqrt(hidden) (`embed_tokens.onnx`) with
    /// image features in place of the `<image_soft_token>` rows (`decoder_model_merged.onnx`). With
    /// `with_token_type_ids`, an int64 `[batch, seq]` input `token_type_ids` (1 at image soft tokens of this chunk)
    /// makes each image's tokens attend to each other in both directions (semantics §5.5).
    InputsEmbeds { with_token_type_ids: bool },
}

/// The graph inputs.
pub struct Inputs {
    pub kind: DecoderInput,
    /// `input_ids` or `inputs_embeds`.
    pub tokens: Value,
    pub attention_mask: Value,
    pub position_ids: Value,
    pub token_type_ids: Option<Value>,
    /// `num_logits_to_keep`.
    pub keep: Value,
    /// `(past_key_values.{i}.key, past_key_values.{i}.value)` per layer.
    pub past: Vec<(Value, Value)>,
}

/// Declares the token input `input_ids` or `inputs_embeds` (`hidden` wide).
pub fn token_input(g: &mut GraphBuilder, kind: DecoderInput, hidden: usize) -> Value {
    match kind {
        DecoderInput::InputIds => {
            g.input(INPUT_IDS, DataType::Int64, &[BATCH.into(), SEQUENCE.into()])
        }
        DecoderInput::InputsEmbeds { .. } => g.input(
            INPUTS_EMBEDS,
            DataType::Float,
            &[BATCH.into(), SEQUENCE.into(), hidden.into()],
        ),
    }
}

/// Declares every input, in the order consumers see them.
pub(super) fn declare_inputs(
    g: &mut GraphBuilder,
    t: &TextConfig,
    kind: DecoderInput,
    backend: &dyn Backend,
) -> Inputs {
    let tokens = token_input(g, kind, t.hidden_size);
    let attention_mask = g.input(
        ATTENTION_MASK,
        DataType::Int64,
        &[BATCH.into(), TOTAL_SEQUENCE.into()],
    );
    let batch_seq: [Dim; 2] = [BATCH.into(), SEQUENCE.into()];
    let position_ids = g.input(POSITION_IDS, DataType::Int64, &batch_seq);
    let token_type_ids = match kind {
        DecoderInput::InputsEmbeds {
            with_token_type_ids: true,
        } => Some(g.input(TOKEN_TYPE_IDS, DataType::Int64, &batch_seq)),
        _ => None,
    };
    let keep = match backend.logits_to_keep_default() {
        Some(default) => g.input_i64_with_default(LOGITS_TO_KEEP, default),
        None => g.input_any_rank(LOGITS_TO_KEEP, DataType::Int64),
    };
    let (nkv, hd) = (t.num_key_value_heads, t.head_dim);
    let past = t
        .layer_types
        .iter()
        .enumerate()
        .map(|(l, &ty)| {
            let mut dims = kv_dims(nkv, hd, backend.kv_length_dim(ty, false));
            if backend.open_past_head_dims() {
                dims[1] = PAST_HEADS.into();
                dims[3] = PAST_HEAD_DIM.into();
            }
            let k = g.input(&past_key(l), DataType::Float, &dims);
            let v = g.input(&past_value(l), DataType::Float, &dims);
            (k, v)
        })
        .collect();
    Inputs {
        kind,
        tokens,
        attention_mask,
        position_ids,
        token_type_ids,
        keep,
        past,
    }
}

/// Declares the outputs `logits` and `present.{i}.key|value`.
pub(super) fn declare_outputs(
    g: &mut GraphBuilder,
    t: &TextConfig,
    backend: &dyn Backend,
    logits: &Value,
    presents: &[(Value, Value)],
) {
    g.set_scope("");
    let logits_dims = [BATCH.into(), KEPT_SEQUENCE.into(), t.vocab_size.into()];
    g.output(logits, LOGITS, DataType::Float, &logits_dims);
    let (nkv, hd) = (t.num_key_value_heads, t.head_dim);
    for (l, (k, v)) in presents.iter().enumerate() {
        let dims = kv_dims(nkv, hd, backend.kv_length_dim(t.layer_types[l], true));
        g.output(k, &present_key(l), DataType::Float, &dims);
        g.output(v, &present_value(l), DataType::Float, &dims);
    }
}

/// `[batch, kv_heads, length, head_dim]` of one layer's keys or values.
pub(super) fn kv_dims(kv_heads: usize, head_dim: usize, length: &str) -> Vec<Dim> {
    vec![
        BATCH.into(),
        kv_heads.into(),
        length.into(),
        head_dim.into(),
    ]
}
