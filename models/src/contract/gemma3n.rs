//! The `gemma3n` section of the manifest: how a Gemma 3n export's text graphs fit together (semantics §12,
//! docs/export-format.md).

use serde::{Deserialize, Serialize};

use super::files;
use crate::config::{LayerType, TextConfig};

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
    /// The audio graphs, when the checkpoint has an audio tower (semantics §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Gemma3nAudioSection>,
    /// The image graphs, when the checkpoint has a vision tower (docs/gemma3n-vision.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<Gemma3nVisionSection>,
}

/// Gemma 3n's image path: `preprocess` (Gemma 3's `preprocess.onnx` contract: a decoded RGB image in,
/// `pixel_values` out) and `encoder` (`vision_encoder.onnx`: `pixel_values` → `image_features`, the
/// `soft_tokens` rows that replace an image's tokens), laid out as `boi_token_id`, `image_token_id` ×
/// `soft_tokens`, `eoi_token_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gemma3nVisionSection {
    pub preprocess: String,
    /// The vision tower graph (weights in `vision_encoder.onnx_data`).
    pub encoder: String,
    pub image_token_id: u32,
    pub boi_token_id: u32,
    pub eoi_token_id: u32,
    /// Image tokens (and encoder rows) per image (`vision_soft_tokens_per_image`).
    pub soft_tokens: usize,
    /// The side of the square `pixel_values` the encoder takes.
    pub image_size: usize,
}

/// Gemma 3n's audio path: `preprocess` turns a mono waveform into log-mel features and their mask, `encoder` turns
/// those into the `soft_tokens` rows that replace a clip's audio tokens in the prompt, laid out as
/// `boa_token_id`, `audio_token_id` × `soft_tokens`, `eoa_token_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gemma3nAudioSection {
    /// The feature extractor graph (`preprocess_audio.onnx`).
    pub preprocess: String,
    /// The audio tower graph (`audio_encoder.onnx`, weights in `audio_encoder.onnx_data`).
    pub encoder: String,
    /// The prompt token each audio row replaces.
    pub audio_token_id: u32,
    /// The tokens around a clip's audio tokens.
    pub boa_token_id: u32,
    pub eoa_token_id: u32,
    /// Audio tokens (and encoder rows) per clip (`audio_soft_tokens_per_image`).
    pub soft_tokens: usize,
    /// The sample rate the graphs take (Hz) and the longest clip in samples (the extractor's `max_length`).
    pub sampling_rate: u32,
    pub max_samples: usize,
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
            audio: None,
            vision: None,
        })
    }
}

/// The layers whose keys and values the KV-shared layers `kv_layers..` read (of `layer_types`): for each shared
/// layer, the last earlier layer of its type below `kv_layers` (transformers' `kv_sharing`), ascending, no repeats.
pub fn shared_kv_sources(layer_types: &[LayerType], kv_layers: usize) -> Vec<usize> {
    let mut out: Vec<usize> = layer_types
        .iter()
        .skip(kv_layers)
        .filter_map(|ty| (0..kv_layers).rev().find(|&i| layer_types[i] == *ty))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether the cpu graph keeps layer `l`'s keys and values in a window-sized buffer that ONNX Runtime evicts
/// (`sliding_window_cache`): a sliding layer that no KV-shared layer reads. A source of shared layers keeps every
/// position (a buffer that grows, like a global layer's), because the shared layers attend to all of this step's
/// keys after the source's own attention has written (and would have evicted) them.
pub fn window_sized_kv(layer_types: &[LayerType], kv_layers: usize, l: usize) -> bool {
    layer_types[l] == LayerType::Sliding && !shared_kv_sources(layer_types, kv_layers).contains(&l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LayerType::{Full as F, Sliding as S};

    #[test]
    fn shared_layers_read_the_last_kv_layer_of_their_type() {
        // E4B-like: 4 sliding + 1 full, the last 3 of 10 layers shared.
        let types = [S, S, S, S, F, S, S, S, S, F];
        assert_eq!(shared_kv_sources(&types, 7), [4, 6]);
        assert!(!window_sized_kv(&types, 7, 6));
        assert!(window_sized_kv(&types, 7, 5));
        assert!(!window_sized_kv(&types, 7, 4));
        assert_eq!(shared_kv_sources(&types, 10), Vec::<usize>::new());
    }
}
