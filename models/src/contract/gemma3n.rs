//! The `gemma3n` section of the manifest: how a Gemma 3n export's text graphs fit together (semantics §12,
//! docs/export-format.md).

use serde::{Deserialize, Serialize};

use super::files;
use crate::config::TextConfig;

/// Gemma 3n's text path: `embed_tokens` turns `input_ids` into `inputs_embeds` and `per_layer_inputs`, which the
/// manifest's `decoder` (`decoder_model_merged.onnx`) takes with the usual mask, positions and KV cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gemma3nSection {
    /// The embedding graph (`embed_tokens.onnx`).
    pub embed_tokens: String,
    /// The layers with a KV cache: the decoder has `past_key_values.{i}.*` and `present.{i}.*` for `i` below this;
    /// the other (last) layers reuse those keys and values.
    pub kv_layers: usize,
    /// The width P of each layer's per-layer input (`per_layer_inputs` is `[batch, seq, num_layers, P]`).
    pub hidden_size_per_layer_input: usize,
    /// Towers of the checkpoint that the export does not hold yet (`"vision"`, `"audio"`), so a reader knows the
    /// export is text-only on purpose; empty for Gemma3nForCausalLM checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub towers_not_exported: Vec<String>,
}

impl Gemma3nSection {
    /// The section for the Gemma 3n text config `t` (`None` for other families); `towers` as above.
    pub fn new(t: &TextConfig, towers_not_exported: Vec<String>) -> Option<Gemma3nSection> {
        let n = t.gemma3n.as_ref()?;
        Some(Gemma3nSection {
            embed_tokens: files::EMBED_FILE.into(),
            kv_layers: n.kv_layers(t.num_hidden_layers),
            hidden_size_per_layer_input: n.hidden_size_per_layer_input,
            towers_not_exported,
        })
    }
}
