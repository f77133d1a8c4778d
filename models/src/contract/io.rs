//! The graphs' input and output tensor names, the symbolic dimensions a runtime sizes, and the metadata keys the
//! exporter stamps on every graph. docs/export-format.md gives the shapes and types.

/// Decoder input: token ids, int64 `[batch, seq]`.
pub const INPUT_IDS: &str = "input_ids";
/// Decoder input (image path): embeddings, float32 `[batch, seq, hidden_size]`.
pub const INPUTS_EMBEDS: &str = "inputs_embeds";
/// Decoder input: 1 for real tokens, int64 `[batch, past + seq]`.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Decoder input: positions, int64 `[batch, seq]`.
pub const POSITION_IDS: &str = "position_ids";
/// Decoder input (image path): 1 at image tokens, int64 `[batch, seq]`.
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// Gemma 3n: the per-layer inputs `[batch, seq, layers, P]` of `embed_tokens.onnx` and the decoder on embeddings.
pub const PER_LAYER_INPUTS: &str = "per_layer_inputs";
/// Decoder input, one-element int64 (`[]` or `[1]`): logits for this many trailing positions only (0 = all). The
/// manifest names it (`cpu.logits_to_keep_input`, `portable_logits_to_keep_input`).
pub const LOGITS_TO_KEEP: &str = "num_logits_to_keep";
/// Decoder output: float32 `[batch, kept, vocab_size]`.
pub const LOGITS: &str = "logits";
/// Prefix of the KV inputs `past_key_values.{layer}.key` / `.value`.
pub const PAST_PREFIX: &str = "past_key_values.";
/// Prefix of the KV outputs `present.{layer}.key` / `.value`.
pub const PRESENT_PREFIX: &str = "present.";

/// `past_key_values.{layer}.key`.
pub fn past_key(layer: usize) -> String {
    format!("{PAST_PREFIX}{layer}.key")
}

/// `past_key_values.{layer}.value`.
pub fn past_value(layer: usize) -> String {
    format!("{PAST_PREFIX}{layer}.value")
}

/// `present.{layer}.key`.
pub fn present_key(layer: usize) -> String {
    format!("{PRESENT_PREFIX}{layer}.key")
}

/// `present.{layer}.value`.
pub fn present_value(layer: usize) -> String {
    format!("{PRESENT_PREFIX}{layer}.value")
}

/// CPU graph: symbolic dim 2 of the global layers' KV buffers (manifest `cpu.global_cache_dim`).
pub const GLOBAL_CACHE_DIM: &str = "global_cache_length";
/// CPU graph: symbolic dim 2 of the sliding layers' KV buffers (manifest `cpu.sliding_cache_dim`).
pub const SLIDING_CACHE_DIM: &str = "sliding_cache_length";

/// Encoder input: float32 `[num_images, num_channels, image_size, image_size]`.
pub const PIXEL_VALUES: &str = "pixel_values";
/// Encoder output: float32 `[num_images, mm_tokens_per_image, hidden_size]`.
pub const IMAGE_FEATURES: &str = "image_features";
/// `preprocess.onnx` input: a decoded RGB image, uint8 `[height, width, 3]`.
pub const IMAGE: &str = "image";
/// `preprocess.onnx` input: whether to add Pan & Scan crops, bool `[]`.
pub const DO_PAN_AND_SCAN: &str = "do_pan_and_scan";
/// `preprocess.onnx` output: the number of crops, int64 `[]`.
pub const NUM_CROPS: &str = "num_crops";
/// `preprocess.onnx` output: `(y0, x0, y1, x1)` of each output image, int64 `[1 + num_crops, 4]`.
pub const CROP_BOXES: &str = "crop_boxes";

/// Graph metadata: the export's family ([`super::family_name`]); a runtime refuses a graph from another export.
pub const META_FAMILY: &str = "gemma_onnx.family";
/// Graph metadata: the export's precision (manifest `precision`).
pub const META_PRECISION: &str = "gemma_onnx.precision";
