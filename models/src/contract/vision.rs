//! The manifest's `vision` section: the image graphs of a Gemma3ForConditionalGeneration export and what a runtime
//! needs to build their inputs (semantics §5–§7).

use serde::{Deserialize, Serialize};

use crate::family::VisionSystem;

/// The `vision` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionSection {
    /// `pixel_values` f32 `[num_images, num_channels, image_size, image_size]` → `image_features` f32
    /// `[num_images, mm_tokens_per_image, hidden_size]` ([`super::files::ENCODER_FILE`]).
    pub encoder: String,
    /// The encoder's external data (`vision_encoder.onnx_data`, or `onnx/vision_encoder{suffix}.onnx_data` in a
    /// portable export); the text graphs share one data file of their own.
    pub encoder_data: String,
    /// `input_ids` i64 `[batch, seq]` → `inputs_embeds` f32 `[batch, seq, hidden_size]`, scaled by
    /// sqrt(hidden_size).
    pub embed_tokens: String,
    /// The decoder on `inputs_embeds` (image features in place of the image-token rows, unscaled) with
    /// `token_type_ids` i64 `[batch, seq]`: 1 at the image tokens of the current chunk, 0 elsewhere. Each run of 1s
    /// is one image attending to itself in both directions, so an image must be prefilled whole in one chunk. It
    /// always has the portable I/O, also when `decoder` is a `cpu` graph.
    pub decoder_with_embeds: String,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    /// Image-token rows per image; > 0.
    pub mm_tokens_per_image: usize,
    /// `<start_of_image>`: the placeholder a prompt holds per image, before expansion.
    pub boi_token_id: u32,
    /// `<end_of_image>`.
    pub eoi_token_id: u32,
    /// `<image_soft_token>`: the rows that image features replace, `mm_tokens_per_image` per image.
    pub image_token_id: u32,
    /// `preprocess.onnx` and the image-processor settings it bakes in; absent in the oldest exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessSection>,
    /// The image system (`"paligemma"`; absent: Gemma 3): the prompt layout, the meaning of `token_type_ids`
    /// (PaliGemma: 0 for the image + prompt prefix, which attends both ways, 1 for generated tokens) and the first
    /// position id ([`crate::family::VisionSpec`]).
    #[serde(default, skip_serializing_if = "VisionSystem::is_default")]
    pub system: VisionSystem,
}

impl VisionSection {
    /// The section of an export of `v`'s image path, with the file names the exporter gives the graphs;
    /// `preprocess` is the exporter's to fill.
    pub fn new(v: &crate::VisionConfig) -> VisionSection {
        use super::files::{DECODER_WITH_EMBEDS_FILE, EMBED_FILE, ENCODER_DATA_FILE, ENCODER_FILE};
        VisionSection {
            encoder: ENCODER_FILE.into(),
            encoder_data: ENCODER_DATA_FILE.into(),
            embed_tokens: EMBED_FILE.into(),
            decoder_with_embeds: DECODER_WITH_EMBEDS_FILE.into(),
            image_size: v.image_size,
            patch_size: v.patch_size,
            num_channels: v.num_channels,
            mm_tokens_per_image: v.mm_tokens_per_image,
            boi_token_id: v.boi_token_id,
            eoi_token_id: v.eoi_token_id,
            image_token_id: v.image_token_id,
            preprocess: None,
            system: v.system,
        }
    }

    /// The processor's Pan & Scan default (false when the export does not say).
    pub fn default_pan_and_scan(&self) -> bool {
        self.preprocess
            .as_ref()
            .and_then(|p| p.config.as_ref())
            .is_some_and(|c| c.do_pan_and_scan)
    }
}

/// The `vision.preprocess` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreprocessSection {
    /// [`super::files::PREPROCESS_FILE`]: decoded RGB uint8 `[h, w, 3]` + `do_pan_and_scan` → `pixel_values`,
    /// `num_crops`, `crop_boxes`.
    pub file: String,
    /// What the graph bakes in; `config.do_pan_and_scan` is the processor's default for the graph's
    /// `do_pan_and_scan` input. Always written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PreprocessConfig>,
}

impl PreprocessSection {
    /// The entry for `preprocess.onnx` built with `config`.
    pub fn new(config: &PreprocessConfig) -> PreprocessSection {
        PreprocessSection {
            file: super::files::PREPROCESS_FILE.into(),
            config: Some(config.clone()),
        }
    }
}

/// The Gemma 3 image processor's settings that `preprocess.onnx` bakes in (semantics §6.1), with the processor's
/// defaults applied. gemma-export derives them from the checkpoint's processor files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Output height S_h (`size.height`).
    pub height: usize,
    /// Output width S_w (`size.width`).
    pub width: usize,
    /// `rescale_factor` (1/255); applied in float64 then cast to float32, as the PIL backend does.
    pub rescale_factor: f64,
    /// `do_normalize`: `(x − mean) / std` per channel in float32.
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// The processor's default for the graph's `do_pan_and_scan` input (which a caller may override).
    #[serde(default)]
    pub do_pan_and_scan: bool,
    pub pan_and_scan_min_crop_size: usize,
    pub pan_and_scan_max_num_crops: usize,
    pub pan_and_scan_min_ratio_to_activate: f64,
    /// PIL's resample filter: 2 bilinear (Gemma 3, the default when absent) or 3 bicubic (SigLIP, PaliGemma).
    #[serde(default = "bilinear", skip_serializing_if = "is_bilinear")]
    pub resample: i64,
    /// The file the settings came from (`processor_config.json#image_processor`, `preprocessor_config.json`), or
    /// `None` for the built-in defaults.
    pub source: Option<String>,
}

impl PreprocessConfig {
    /// The Gemma 3 processor's defaults at `size`×`size`.
    pub fn gemma3_defaults(size: usize) -> PreprocessConfig {
        PreprocessConfig {
            height: size,
            width: size,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            do_pan_and_scan: false,
            pan_and_scan_min_crop_size: 256,
            pan_and_scan_max_num_crops: 4,
            pan_and_scan_min_ratio_to_activate: 1.2,
            resample: PIL_BILINEAR,
            source: None,
        }
    }
}

/// PIL's `Image.BILINEAR`.
pub const PIL_BILINEAR: i64 = 2;
/// PIL's `Image.BICUBIC`.
pub const PIL_BICUBIC: i64 = 3;

fn bilinear() -> i64 {
    PIL_BILINEAR
}

fn is_bilinear(r: &i64) -> bool {
    *r == PIL_BILINEAR
}
