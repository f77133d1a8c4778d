//! The [`Backend`] trait: what a decoder graph's ops are, under the one layer loop of [`crate::decoder`].

use super::io::{DecoderInput, Inputs};
use crate::attention::{AttentionOutputs, AttentionSpec};
use crate::builder::Value;
use crate::layers::{Ctx, MlpWeights, NormKind};
use crate::ExportError;
use gemma_models::{LayerType, TextConfig};

/// The residual stream `[N, H]` between blocks: `x`, plus a `pending` delta not yet added, for backends that fuse
/// the residual add into the next norm (the stream's value is then `x + pending`).
pub struct Residual {
    pub x: Value,
    pub pending: Option<Value>,
}

/// What [`Backend::begin`] hands the layer loop.
pub struct Begun {
    /// The embedded tokens as the residual stream `[N, H]`.
    pub x: Value,
    /// `[B, S]` of this chunk, int64 `[2]`.
    pub batch_seq: Value,
}

/// The choices that make one decoder graph: the graph's KV inputs, the values every layer shares, attention, and
/// how residual adds meet norms. The family wiring (which norms, in which order, with which residual adds) is not
/// the backend's: [`crate::decoder`] writes it once and calls these methods.
///
/// The default methods write standard ops through [`Ctx`], whose [`crate::layers::Kernels`] also decide the linear
/// layers' storage (fp32, fp16/bf16, block-quantized) for every backend.
pub trait Backend {
    /// How [`Ctx::rms_norm`] writes a plain RMSNorm (QK-norm, sandwich norms) in this graph.
    fn norm_kind(&self) -> NormKind;

    /// Refuses a config or token input this backend cannot build.
    fn check(&self, t: &TextConfig, input: DecoderInput) -> Result<(), ExportError>;

    /// The symbolic name of dimension 2 (the sequence axis) of a KV input (`present` false) or output of a layer of
    /// type `ty`.
    fn kv_length_dim(&self, ty: LayerType, present: bool) -> &'static str;

    /// The value of `num_logits_to_keep` when a run does not feed it, or `None` when the input is required.
    fn logits_to_keep_default(&self) -> Option<i64>;

    /// Computes what every layer shares (masks, RoPE tables, sequence lengths) and embeds the tokens, calling
    /// [`Backend::embed`] where its graph wants the embedding.
    fn begin(
        &mut self,
        cx: &mut Ctx<'_>,
        t: &TextConfig,
        prefix: &str,
        inputs: &Inputs,
    ) -> Result<Begun, ExportError>;

    /// One layer's self-attention on the normed stream `x [N, H]`, with that layer's `(past_key, past_value)`.
    fn attention(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &Value,
        spec: &AttentionSpec,
        past: &(Value, Value),
    ) -> Result<AttentionOutputs, ExportError>;

    /// The token embedding as the residual stream `[N, H]` (semantics §1.1): the scaled lookup of `input_ids`, or
    /// `inputs_embeds` (already scaled) as they are.
    fn embed(
        &mut self,
        cx: &mut Ctx<'_>,
        t: &TextConfig,
        prefix: &str,
        inputs: &Inputs,
    ) -> Result<Value, ExportError> {
        cx.g.set_scope("/model/embed_tokens");
        let h = t.hidden_size;
        let rows = match inputs.kind {
            DecoderInput::InputIds => {
                let name = gemma_models::names::embed_tokens(prefix);
                cx.scaled_embedding(&inputs.tokens, &name, h)?
            }
            DecoderInput::InputsEmbeds { .. } => inputs.tokens.clone(),
        };
        Ok(cx.flatten_rows(&rows, h))
    }

    /// RMSNorm of a value that is not the residual stream (sandwich norms).
    fn norm(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &Value,
        weight: &str,
        eps: f64,
    ) -> Result<Value, ExportError> {
        cx.rms_norm(x, weight, eps)
    }

    /// `r += delta`: an `Add` named `label` (after adding a pending delta first, if any).
    fn add_residual(&mut self, cx: &mut Ctx<'_>, r: &mut Residual, delta: Value, label: &str) {
        settle(cx, r);
        r.x = cx.g.op("Add", label, &[&r.x, &delta], &[]);
    }

    /// RMSNorm of the residual stream `r` (after adding a pending delta, if any).
    fn norm_residual(
        &mut self,
        cx: &mut Ctx<'_>,
        r: &mut Residual,
        weight: &str,
        eps: f64,
    ) -> Result<Value, ExportError> {
        settle(cx, r);
        cx.rms_norm(&r.x, weight, eps)
    }

    /// The GeGLU MLP (semantics §1.5).
    fn mlp(&mut self, cx: &mut Ctx<'_>, x: &Value, w: &MlpWeights) -> Result<Value, ExportError> {
        cx.geglu_mlp(x, w)
    }

    /// Logits `[B, K, vocab]` from the final-norm hidden states `[B, K, H]` (semantics §1.7).
    fn head(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &Value,
        t: &TextConfig,
        prefix: &str,
    ) -> Result<Value, ExportError> {
        cx.lm_head(x, t, prefix)
    }
}

/// Adds `r`'s pending delta into `r.x` (no node when there is none).
fn settle(cx: &mut Ctx<'_>, r: &mut Residual) {
    if let Some(p) = r.pending.take() {
        r.x = cx.g.op("Add", "residual_pending", &[&r.x, &p], &[]);
    }
}
