//! The image half of a multimodal class ([`ModelClass::vision`](super::ModelClass::vision)): one [`VisionSpec`]
//! per [`VisionSystem`] says how the image features are made and how the prompt attends to them, so that the
//! config parser, the exporter and the runtime read this table instead of matching on the class (semantics §5, §8).
//!
//! ```
//! use gemma_models::family::{Projector, VisionSystem};
//! let pali = VisionSystem::PaliGemma.spec();
//! assert_eq!((pali.projector, pali.prefix_lm, pali.first_position), (Projector::Linear, true, 1));
//! ```

use serde::{Deserialize, Serialize};

use super::Family;

/// The image system of a multimodal class; its name is the manifest's `vision.system`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisionSystem {
    /// Gemma 3 (Gemma3ForConditionalGeneration): pooled SigLIP features; each image attends to itself both ways.
    #[default]
    Gemma3,
    /// PaliGemma 1 and 2 (PaliGemmaForConditionalGeneration): SigLIP + one Linear; a prefix-LM mask.
    PaliGemma,
}

impl VisionSystem {
    /// The table entry of this system.
    pub fn spec(self) -> &'static VisionSpec {
        match self {
            VisionSystem::Gemma3 => &GEMMA3_VISION,
            VisionSystem::PaliGemma => &PALIGEMMA,
        }
    }

    /// Whether this is the default system (Gemma 3), which manifests leave unwritten.
    pub fn is_default(&self) -> bool {
        *self == VisionSystem::default()
    }
}

/// How SigLIP's last hidden state becomes the image features the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projector {
    /// Gemma3MultiModalProjector: average pooling to `mm_tokens_per_image`, RMSNorm, a bias-free projection.
    PoolNormProject,
    /// PaliGemmaMultiModalProjector: one `nn.Linear` with bias, one feature per patch.
    Linear,
}

/// SigLIP tower sizes that apply when `vision_config` omits them (the multimodal config class's defaults).
#[derive(Debug, PartialEq)]
pub struct TowerDefaults {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
}

/// Everything that differs between the image systems.
#[derive(Debug, PartialEq)]
pub struct VisionSpec {
    /// The name in messages.
    pub display: &'static str,
    /// The families the text decoder may belong to, chosen by `text_config.model_type` (the first one when absent).
    pub text_families: &'static [Family],
    pub projector: Projector,
    /// The prefix-LM mask (semantics §8.3): every token with `token_type_ids` 0 (image and prompt) attends to
    /// every other such token of the prefill; otherwise each run of `token_type_ids` 1 (one image) does.
    pub prefix_lm: bool,
    /// The position id of the first prompt token (PaliGemma counts from 1).
    pub first_position: i64,
    /// Whether the class's forward applies the text config's `final_logit_softcapping` (Gemma 3's never does).
    pub final_softcap: bool,
    /// The tower when `vision_config` is absent altogether; a `vision_config` object takes `SiglipVisionConfig`'s
    /// defaults (SigLIP-base, Gemma 3's entry) key by key, as transformers does.
    pub tower: TowerDefaults,
    /// `image_token_index` when absent.
    pub image_token_default: u32,
    /// The image processor class (`image_processor_type` prefix) that `preprocess.onnx` implements for it.
    pub image_processor: &'static str,
    /// PIL's resample filter of that class (2 bilinear, 3 bicubic), the only one accepted.
    pub resample_default: i64,
    /// Whether an export needs the checkpoint's processor files (PaliGemma: its image processor cannot be guessed,
    /// and its tokenizer must hold `<image>` and the `<loc>`/`<seg>` tokens); Gemma 3 falls back to its defaults.
    pub processor_files_required: bool,
}

/// SiglipVisionConfig's own defaults (SigLIP-base patch16-224), which Gemma3Config keeps.
const GEMMA3_VISION: VisionSpec = VisionSpec {
    display: "Gemma 3",
    text_families: &[Family::Gemma3],
    projector: Projector::PoolNormProject,
    prefix_lm: false,
    first_position: 0,
    final_softcap: false,
    tower: TowerDefaults {
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        image_size: 224,
        patch_size: 16,
    },
    image_token_default: 262_144,
    image_processor: "Gemma3ImageProcessor",
    resample_default: 2,
    processor_files_required: false,
};

/// PaliGemmaConfig's `sub_configs_defaults` for an absent tower (So400m-like, 224 px) and its image token.
const PALIGEMMA: VisionSpec = VisionSpec {
    display: "PaliGemma",
    text_families: &[Family::Gemma, Family::Gemma2],
    projector: Projector::Linear,
    prefix_lm: true,
    first_position: 1,
    final_softcap: true,
    tower: TowerDefaults {
        hidden_size: 1152,
        intermediate_size: 4096,
        num_hidden_layers: 27,
        num_attention_heads: 16,
        image_size: 224,
        patch_size: 14,
    },
    image_token_default: 256_000,
    image_processor: "SiglipImageProcessor",
    resample_default: 3,
    processor_files_required: true,
};
