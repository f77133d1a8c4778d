//! The portable backend: standard ONNX ops (opset 21) for attention, norms and residual adds, which every runtime
//! and execution provider loads (the int8/int4 linears are ONNX Runtime's `MatMulNBits`/`GatherBlockQuantized`
//! whatever the backend). The KV cache is `Concat(past, new)`: `past_key_values.{i}.*` are
//! `[batch, kv_heads, past_sequence_length, head_dim]`, `present.{i}.*` the same with `total_sequence_length`.
//!
//! With [`DecoderInput::InputsEmbeds`] the same graph takes `inputs_embeds` (embedded and scaled outside, image
//! features scattered in; see [`crate::vision`]) instead of `input_ids`, plus `token_type_ids` for Gemma 3's
//! bidirectional image blocks: transformers.js's `decoder_model_merged.onnx`.

use super::backend::Result;
use super::io::{DecoderInput, Inputs, PAST_SEQUENCE, TOTAL_SEQUENCE};
use super::{Backend, Begun, Text};
use crate::attention::{AttentionInputs, AttentionOutputs, AttentionSpec, LayerTables};
use crate::builder::Value;
use crate::layers::{Ctx, NormKind};
use gemma_models::{Family, LayerType, ModelConfig};

pub(crate) mod masks;

/// Standard ONNX ops, and the values every layer shares once [`Backend::begin`] has run.
pub struct Portable {
    text: Text,
    batch_seq: Option<Value>,
    past: Vec<(Value, Value)>,
    global: Option<LayerTables>,
    local: Option<LayerTables>,
    /// PaliGemma's prefix-LM rule for `token_type_ids` instead of Gemma 3's image runs (`VisionSpec::prefix_lm`).
    prefix_lm: bool,
}

impl Portable {
    /// The portable backend for the text decoder of `cfg`.
    pub fn new(cfg: &ModelConfig) -> Portable {
        Portable {
            text: Text::of(cfg),
            batch_seq: None,
            past: Vec::new(),
            global: None,
            local: None,
            prefix_lm: cfg
                .vision_config
                .as_ref()
                .is_some_and(|v| v.system.spec().prefix_lm),
        }
    }
}

impl Backend for Portable {
    fn text(&self) -> &Text {
        &self.text
    }

    fn norm_kind(&self) -> NormKind {
        NormKind::Decomposed
    }

    fn check(&self, _: DecoderInput) -> Result<()> {
        Ok(())
    }

    fn kv_length_dim(&self, _: LayerType, present: bool) -> &'static str {
        if present {
            TOTAL_SEQUENCE
        } else {
            PAST_SEQUENCE
        }
    }

    /// Gemma 2 only: optimum-onnx 0.1.0 sizes the empty KV cache of model types it does not list, `gemma2` among
    /// them, from `num_attention_heads` and `hidden_size / num_attention_heads`, which are not Gemma 2's KV
    /// heads and head size. With those axes symbolic ONNX Runtime takes that empty past, and `Concat` (past,
    /// new) ignores an input with no elements, so the first step runs and every later one feeds back `present`.
    fn open_past_head_dims(&self) -> bool {
        self.text.t.family == Family::Gemma2
    }

    fn logits_to_keep_default(&self) -> Option<i64> {
        Some(0)
    }

    fn begin(&mut self, cx: &mut Ctx<'_>, inputs: &Inputs) -> Result<Begun> {
        let x = self.embed(cx, inputs)?;
        let g = &mut *cx.g;
        g.set_scope("/model");
        // [B, S]: the shape of input_ids, or the first two dims of inputs_embeds.
        let batch_seq = match inputs.kind {
            DecoderInput::InputIds => g.shape("batch_seq", &inputs.tokens),
            DecoderInput::InputsEmbeds { .. } => {
                g.shape_range("batch_seq", &inputs.tokens, None, 2)
            }
        };
        let blocks = inputs
            .token_type_ids
            .as_ref()
            .map(|tt| match self.prefix_lm {
                true => masks::prefix_block(g, tt),
                false => masks::image_blocks(g, tt),
            });
        let t = &self.text.t;
        let prefix_lm = self.prefix_lm;
        let mut tables = |ty: LayerType| {
            t.layer_types.contains(&ty).then(|| {
                let (label, window) = match ty {
                    LayerType::Full => ("global", None),
                    LayerType::Sliding => ("local", t.sliding_window),
                };
                let pos = &inputs.position_ids;
                let (cos, sin) = masks::rope_tables(g, pos, label, t.rope(ty), t.head_dim);
                let io = (&inputs.tokens, &inputs.attention_mask);
                let mask = masks::attention_mask(g, io, window, blocks.as_ref(), prefix_lm, label);
                LayerTables { cos, sin, mask }
            })
        };
        self.global = tables(LayerType::Full);
        self.local = tables(LayerType::Sliding);
        self.batch_seq = Some(batch_seq.clone());
        self.past = inputs.past.clone();
        Ok(Begun { x, batch_seq })
    }

    fn attention(&mut self, cx: &mut Ctx<'_>, x: &Value, l: usize) -> Result<AttentionOutputs> {
        let spec = AttentionSpec::of_layer(&self.text.t, &self.text.prefix, l);
        let tables = match spec.layer_type {
            LayerType::Full => self.global.as_ref(),
            LayerType::Sliding => self.local.as_ref(),
        };
        let (Some(tables), Some(batch_seq)) = (tables, self.batch_seq.as_ref()) else {
            unreachable!("begin computes the tables of every layer type in use")
        };
        let io = AttentionInputs {
            batch_seq,
            tables,
            past: &self.past[l],
        };
        cx.attention_portable(x, &spec, &io)
    }
}
