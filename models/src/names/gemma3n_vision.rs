//! Safetensors tensor names of Gemma 3n's vision path (docs/gemma3n-vision.md): the timm MobileNetV5 encoder
//! (`model.vision_tower.timm_model.*`) and its embedder (`model.embed_vision.*`), as Gemma3nForConditionalGeneration
//! saves them. Convolutions have no bias except the stem's; every norm is an RMSNorm2d gain.
//!
//! ```
//! use gemma_models::names::gemma3n_vision as vision;
//! assert_eq!(vision::block(2, 9, "attn.key.down_conv.weight"),
//!            "model.vision_tower.timm_model.blocks.2.9.attn.key.down_conv.weight");
//! ```

/// Prefix of the encoder tensors.
pub const TOWER: &str = "model.vision_tower.timm_model.";
/// The stem: Conv2d 3×3 stride 2 with bias, then RMSNorm2d + GELU.
pub const STEM_CONV: &str = "model.vision_tower.timm_model.conv_stem.conv.weight";
pub const STEM_BIAS: &str = "model.vision_tower.timm_model.conv_stem.conv.bias";
pub const STEM_NORM: &str = "model.vision_tower.timm_model.conv_stem.bn.weight";
/// The multi-scale fusion adapter: its FFN (a UIR without depthwise convs or skip) and final RMSNorm2d.
pub const MSFA_EXP: &str = "model.vision_tower.timm_model.msfa.ffn.pw_exp";
pub const MSFA_PROJ: &str = "model.vision_tower.timm_model.msfa.ffn.pw_proj";
pub const MSFA_NORM: &str = "model.vision_tower.timm_model.msfa.norm.weight";

/// The embedder: hard-token table `[vocab, D]`, its norm, the soft-token norm, the projection `[H_text, D]`.
pub const EMBEDDING: &str = "model.embed_vision.embedding.weight";
pub const HARD_NORM: &str = "model.embed_vision.hard_embedding_norm.weight";
pub const SOFT_NORM: &str = "model.embed_vision.soft_embedding_norm.weight";
pub const PROJECTION: &str = "model.embed_vision.embedding_projection.weight";

/// A tensor of block `i` of stage `s`.
pub fn block(s: usize, i: usize, rest: &str) -> String {
    format!("{TOWER}blocks.{s}.{i}.{rest}")
}
