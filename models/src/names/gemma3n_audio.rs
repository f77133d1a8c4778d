//! Safetensors tensor names of Gemma 3n's audio path (semantics §13.2–§13.4): the Conformer encoder
//! (`model.audio_tower.*`) and its embedder (`model.embed_audio.*`), as Gemma3nForConditionalGeneration saves them.
//! Every module is an `nn.Linear`/`nn.Conv*d` without bias or a norm with a gain, so every tensor is `.weight`
//! except the attention's `per_dim_scale`.
//!
//! ```
//! use gemma_models::names::gemma3n_audio::{self as audio, layer};
//! assert_eq!(layer(3, audio::ATTN_Q), "model.audio_tower.conformer.3.attention.attn.q_proj.weight");
//! assert_eq!(audio::sscp(1, audio::SSCP_NORM), "model.audio_tower.subsample_conv_projection.conv_1.norm.weight");
//! ```

/// Prefix of the encoder tensors.
pub const TOWER: &str = "model.audio_tower.";
/// Prefix of the embedder tensors.
pub const EMBEDDER: &str = "model.embed_audio.";

/// Subsampling block `i` (0, 1): its Conv2d `[C_out, C_in, kt, kf]` and its cumulative group norm gain `[C_out]`.
pub const SSCP_CONV: &str = "conv.weight";
pub const SSCP_NORM: &str = "norm.weight";
/// The projection of the flattened (frequency × channel) subsampled features to D, `[D, F·C]`.
pub const INPUT_PROJ: &str = "model.audio_tower.subsample_conv_projection.input_proj_linear.weight";

/// Modules of Conformer block `i`, below `conformer.{i}.`.
pub const FFW_START: &str = "ffw_layer_start";
pub const FFW_END: &str = "ffw_layer_end";
/// Below a feed-forward half: `pre_layer_norm`, `ffw_layer_1` `[4D, D]`, `ffw_layer_2` `[D, 4D]`, `post_layer_norm`.
pub const FFW_PRE_NORM: &str = "pre_layer_norm.weight";
pub const FFW_1: &str = "ffw_layer_1.weight";
pub const FFW_2: &str = "ffw_layer_2.weight";
pub const FFW_POST_NORM: &str = "post_layer_norm.weight";
pub const ATTN_PRE_NORM: &str = "attention.pre_attn_norm.weight";
pub const ATTN_Q: &str = "attention.attn.q_proj.weight";
pub const ATTN_K: &str = "attention.attn.k_proj.weight";
pub const ATTN_V: &str = "attention.attn.v_proj.weight";
/// The learned per-dimension query scale `[head_dim]`, applied through softplus.
pub const ATTN_PER_DIM_SCALE: &str = "attention.attn.per_dim_scale";
/// The projection of the sinusoidal relative-position signal `[D, D]`.
pub const ATTN_POS_PROJ: &str = "attention.attn.relative_position_embedding.pos_proj.weight";
pub const ATTN_POST: &str = "attention.post.weight";
pub const ATTN_POST_NORM: &str = "attention.post_norm.weight";
pub const LCONV_PRE_NORM: &str = "lconv1d.pre_layer_norm.weight";
/// `[2D, D]`, then GLU.
pub const LCONV_START: &str = "lconv1d.linear_start.weight";
/// The causal depthwise Conv1d `[D, 1, K]`.
pub const LCONV_DEPTHWISE: &str = "lconv1d.depthwise_conv1d.weight";
pub const LCONV_NORM: &str = "lconv1d.conv_norm.weight";
pub const LCONV_END: &str = "lconv1d.linear_end.weight";
/// The block's final norm.
pub const BLOCK_NORM: &str = "norm.weight";

/// The embedder: hard-token table `[vocab, D]`, its norm, the soft-token norm, the projection `[H_text, D]`.
pub const EMBEDDING: &str = "model.embed_audio.embedding.weight";
pub const HARD_NORM: &str = "model.embed_audio.hard_embedding_norm.weight";
pub const SOFT_NORM: &str = "model.embed_audio.soft_embedding_norm.weight";
pub const PROJECTION: &str = "model.embed_audio.embedding_projection.weight";

/// A tensor of subsampling block `i`.
pub fn sscp(i: usize, rest: &str) -> String {
    format!("{TOWER}subsample_conv_projection.conv_{i}.{rest}")
}

/// A tensor of Conformer block `i`.
pub fn layer(i: usize, rest: &str) -> String {
    format!("{TOWER}conformer.{i}.{rest}")
}

/// A tensor of feed-forward half `half` ([`FFW_START`] or [`FFW_END`]) of block `i`.
pub fn ffw(i: usize, half: &str, rest: &str) -> String {
    layer(i, &format!("{half}.{rest}"))
}
