//! Images for multimodal exports (Gemma3ForConditionalGeneration: Gemma 3 4B/12B/27B, MedGemma 4B...; and
//! PaliGemmaForConditionalGeneration: PaliGemma 1 and 2, whose prompt layout is [`paligemma`]'s and whose `detect`
//! answers [`detections`] parses):
//!
//! - [`image_file`]: image files → RGB (JPEG, PNG, WebP, GIF, BMP; alpha over white, grey → RGB), with decoding
//!   limits that refuse decompression bombs from their header;
//! - [`processor`]: `Gemma3Processor`'s prompt expansion (`<start_of_image>` → the image's soft tokens, with the
//!   Pan & Scan wording) and `token_type_ids`;
//! - [`graphs`]: the sessions of `preprocess.onnx`, `vision_encoder.onnx`, `embed_tokens.onnx` and
//!   `decoder_model_merged.onnx`, named by the manifest's `vision` section;
//! - [`generate`]: [`VisionGenerator`], generation with images; [`describe`]: `gemma-vision describe`;
//! - [`classify`]: [`Classifier`], ShieldGemma 2's policy probabilities (`gemma-vision classify`).
//!
//! A conversation with images is a [`Conversation`](crate::Conversation) over a [`VisionGenerator`]
//! (`gemma chat --image`).
//!
//! ```no_run
//! use gemma_runtime::{RuntimeOptions, VisionGenerator, VisionOptions};
//! let mut gen = VisionGenerator::open("gemma-3-4b-it-onnx", &RuntimeOptions::default())?;
//! let out = gen.describe(&["photo.jpg".into()], "Describe this image.", &VisionOptions::default(), |t| print!("{t}"))?;
//! println!("\n{:.1} s to the first token", out.time_to_first_token_seconds);
//! # Ok::<(), gemma_runtime::Error>(())
//! ```

pub mod classify;
pub mod describe;
pub mod detections;
pub mod generate;
pub mod graphs;
pub mod image_file;
pub mod paligemma;
pub mod processor;

pub use classify::{parse_policy_text, Classifier, Policy, PolicyScore};
pub use describe::{DecodedImage, ImageReport, VisionOutput};
pub use generate::{EncodedImage, VisionGenerator, VisionOptions};
pub use graphs::{PreprocessSection, Preprocessed, Preprocessor, VisionSection};
pub use image_file::{decode_image, load_image, ImageErrorKind, ImageLimits};
pub use processor::ImageTokens;

/// Whether the export in `dir` has the image graphs (a `vision` section in gemma-onnx.json).
pub fn export_has_vision(dir: &std::path::Path) -> crate::Result<bool> {
    Ok(crate::manifest::load(dir)?.vision.is_some())
}
