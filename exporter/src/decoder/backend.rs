//! The [`Backend`] trait: what a decoder graph's ops are, under the one layer loop of [`crate::decoder`].

use super::io::{DecoderInput, Inputs};
use crate::attention::AttentionOutputs;
use crate::builder::Value;
use crate::layers::{Ctx, MlpWeights, NormKind};
use crate::ExportError;
use gemma_models::{LayerType, ModelConfig, TextConfig};

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

/// The text decoder a backend builds: the text config and the tensor-name prefix of its weights.
#[derive(Debug, Clone)]
pub struct Text {
    pub t: TextConfig,
    pub prefix: String,
}

impl Text {
    /// The text part of `cfg`.
    pub fn of(cfg: &ModelConfig) -> Text {
        Text {
            t: cfg.text.clone(),
            prefix: cfg.text_prefix.clone(),
        }
    }
}

/// What a backend method returns.
pub type Result<T> = std::result::Result<T, ExportError>;

/// The choices that make one decoder graph: the graph's KV inputs, the values every layer shares, attention, and
/// how residual adds meet norms. The family wiring (which norms, in which order, with which residual adds) is not
/// the backend's: [`crate::decoder`] writes it once and calls these methods.
///
/// The default methods write standard ops through [`Ctx`], whose [`crate::layers::Kernels`] also decide the linear
/// layers' storage (fp32, fp16/bf16, block-quantized) for every backend.
pub trait Backend {
    /// The decoder this backend was made for.
    fn text(&self) -> &Text;

    /// How [`Ctx::rms_norm`] writes a plain RMSNorm (QK-norm, sandwich norms) in this graph.
    fn norm_kind(&self) -> NormKind;

    /// Refuses a config or token input this backend cannot build.
    fn check(&self, input: DecoderInput) -> Result<()>;

    /// The symbolic name of dimension 2 (the sequence axis) of a KV input (`present` false) or output of a layer of
    /// type `ty`.
    fn kv_length_dim(&self, ty: LayerType, present: bool) -> &'static str;

    /// Whether the KV inputs declare their head and head-size axes symbolic (`past_num_key_value_heads`,
    /// `past_head_dim`) instead of fixed. Only where a consumer feeds an empty past of the wrong width (see
    /// [`crate::decoder::portable`]); a past with rows must still have the right shape.
    fn open_past_head_dims(&self) -> bool {
        false
    }

    /// The value of `num_logits_to_keep` when a run does not feed it, or `None` when the input is required.
    fn logits_to_keep_default(&self) -> Option<i64>;

    /// Computes what every layer shares (masks, RoPE tables, sequence lengths) and embeds the tokens, calling
    /// [`Backend::embed`] where its graph wants the embedding.
    fn begin(&mut self, cx: &mut Ctx<'_>, inputs: &Inputs) -> Result<Begun>;

    /// Layer `l`'s self-attention ([`AttentionSpec::of_layer`](crate::attention::AttentionSpec::of_layer)) on the normed stream `x [N, H]`, with that layer's
    /// KV inputs from [`Inputs::past`].
    fn attention(&mut self, cx: &mut Ctx<'_>, x: &Value, l: usize) -> Result<AttentionOutputs>;

    /// The token embedding as the residual stream `[N, H]` (semantics §1.1): the scaled lookup of `input_ids`, or
    /// `inputs_embeds` (already scaled) as they are.
    fn embed(&mut self, cx: &mut Ctx<'_>, inputs: &Inputs) -> Result<Value> {
        cx.g.set_scope("/model/embed_tokens");
        let Text { t, prefix } = self.text();
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
    fn norm(&mut self, cx: &mut Ctx<'_>, x: &Value, weight: &str) -> Result<Value> {
        cx.rms_norm(x, weight, self.text().t.rms_norm_eps)
    }

    /// `r += delta`: an `Add` named `label` (after adding a pending delta first, if any).
    fn add_residual(&mut self, cx: &mut Ctx<'_>, r: &mut Residual, delta: Value, label: &str) {
        settle(cx, r);
        r.x = cx.g.op("Add", label, &[&r.x, &delta], &[]);
    }

    /// RMSNorm of the residual stream `r` with norm weight `w` (after adding a pending delta, if any).
    fn norm_residual(&mut self, cx: &mut Ctx<'_>, r: &mut Residual, w: &str) -> Result<Value> {
        settle(cx, r);
        cx.rms_norm(&r.x, w, self.text().t.rms_norm_eps)
    }

    /// The GeGLU MLP (semantics §1.5).
    fn mlp(&mut self, cx: &mut Ctx<'_>, x: &Value, w: &MlpWeights) -> Result<Value> {
        cx.geglu_mlp(x, w)
    }

    /// Logits `[B, K, vocab]` from the final-norm hidden states `[B, K, H]` (semantics §1.7).
    fn head(&mut self, cx: &mut Ctx<'_>, x: &Value) -> Result<Value> {
        let Text { t, prefix } = self.text();
        cx.lm_head(x, t, prefix)
    }
}

/// Adds `r`'s pending delta into `r.x` (no node when there is none).
fn settle(cx: &mut Ctx<'_>, r: &mut Residual) {
    if let Some(p) = r.pending.take() {
        r.x = cx.g.op("Add", "residual_pending", &[&r.x, &p], &[]);
    }
}
