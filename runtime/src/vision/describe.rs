//! `gemma-vision describe`: image files and a question in, the streamed answer out, with the crop counts and the
//! time to the first token ([`VisionGenerator::describe`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;

use super::generate::{EncodedImage, VisionGenerator, VisionOptions};
use super::paligemma;
use super::processor::user_message;
use crate::error::{Error, Result};
use crate::generate::GenerationOutput;

/// What [`VisionGenerator::describe`] did.
#[derive(Clone, Debug)]
pub struct VisionOutput {
    pub generation: GenerationOutput,
    /// Per image, in prompt order: size, crop count and timings.
    pub images: Vec<ImageReport>,
    /// Seconds from the start (image files not yet read) to the first generated token.
    pub time_to_first_token_seconds: f64,
}

/// One image of a prompt: its decoded size, Pan & Scan crops and where its time went (`--json`'s `images`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageReport {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub num_crops: usize,
    pub decode_seconds: f64,
    pub preprocess_seconds: f64,
    pub encode_seconds: f64,
}

impl ImageReport {
    /// The report of `decoded` once encoded as `encoded`.
    pub fn new(decoded: &DecodedImage, encoded: &EncodedImage) -> ImageReport {
        ImageReport {
            path: decoded.path.clone(),
            width: encoded.width,
            height: encoded.height,
            num_crops: encoded.num_crops,
            decode_seconds: decoded.decode_seconds,
            preprocess_seconds: encoded.preprocess_seconds,
            encode_seconds: encoded.encode_seconds,
        }
    }
}

/// An image file read into RGB.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    pub path: PathBuf,
    pub image: RgbImage,
    pub decode_seconds: f64,
}

impl VisionGenerator {
    /// The text of a describe prompt before expansion, and whether it is a chat prompt: the chat template over one
    /// user message (the images, then `prompt`); with `raw`, `prompt` itself; without a template, the placeholders
    /// followed by `prompt`.
    ///
    /// Fails when the text's placeholders do not match `images` (a raw prompt with too few or too many, or a
    /// prompt that writes `<start_of_image>` itself).
    ///
    /// PaliGemma: `PaliGemmaProcessor`'s layout ([`paligemma::prompt_text`]), or the raw prompt.
    pub fn describe_text(&self, prompt: &str, images: usize, raw: bool) -> Result<(String, bool)> {
        let (text, chat) = if raw {
            (prompt.to_string(), false)
        } else if self.prefix_lm() {
            let bos = self
                .text()
                .tokenizer
                .id_to_token(self.manifest().bos_token_id);
            let text = paligemma::prompt_text(prompt, images, bos.as_deref().unwrap_or_default())?;
            (text, false)
        } else {
            match self.text().chat_template.as_ref() {
                Some(t) => {
                    let messages = serde_json::Value::Array(vec![user_message(images, prompt)]);
                    (t.render_value(&messages, true)?, true)
                }
                None => (
                    format!("{}{prompt}", self.image_tokens().boi.repeat(images)),
                    false,
                ),
            }
        };
        let placeholders = self.image_tokens().count_placeholders(&text);
        if placeholders != images {
            return Err(Error::ImagePlaceholders {
                placeholders,
                images,
                placeholder: self.image_tokens().boi.clone(),
            });
        }
        Ok((text, chat))
    }

    /// `gemma-vision describe`: reads the image files, encodes them, builds the prompt (chat template with the
    /// images first, then `prompt`; or the raw prompt) and streams the answer.
    pub fn describe(
        &mut self,
        paths: &[PathBuf],
        prompt: &str,
        options: &VisionOptions,
        on_text: impl FnMut(&str),
    ) -> Result<VisionOutput> {
        // Check the placeholders before any image is read.
        self.describe_text(prompt, paths.len(), options.raw_prompt)?;
        let images = paths
            .iter()
            .map(|p| self.decode(p))
            .collect::<Result<Vec<_>>>()?;
        self.describe_decoded(&images, prompt, options, |_, _| {}, on_text)
    }

    /// Reads one image file (within this generator's [`ImageLimits`](super::ImageLimits)), timed.
    pub fn decode(&self, path: &Path) -> Result<DecodedImage> {
        let t = Instant::now();
        let image = self.load_image(path)?;
        Ok(DecodedImage {
            path: path.to_path_buf(),
            image,
            decode_seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Reads and encodes the image file at `path` (a chat's `/image PATH`).
    pub fn encode_file(
        &mut self,
        path: &Path,
        pan_and_scan: bool,
    ) -> Result<(EncodedImage, ImageReport)> {
        let decoded = self.decode(path)?;
        let e = self.encode_image(&decoded.image, pan_and_scan)?;
        let report = ImageReport::new(&decoded, &e);
        Ok((e, report))
    }

    /// [`describe`](Self::describe) on images already read. `on_image(i, None)` is called before image i is
    /// encoded and `on_image(i, Some(report))` after (for progress). The time to the first token counts the images'
    /// decoding too.
    pub fn describe_decoded(
        &mut self,
        images: &[DecodedImage],
        prompt: &str,
        options: &VisionOptions,
        mut on_image: impl FnMut(usize, Option<&ImageReport>),
        on_text: impl FnMut(&str),
    ) -> Result<VisionOutput> {
        let start = Instant::now();
        let (text, chat) = self.describe_text(prompt, images.len(), options.raw_prompt)?;
        let mut encoded = Vec::with_capacity(images.len());
        let mut reports = Vec::with_capacity(images.len());
        for (i, d) in images.iter().enumerate() {
            on_image(i, None);
            let e = self.encode_image(&d.image, options.pan_and_scan)?;
            reports.push(ImageReport::new(d, &e));
            on_image(i, reports.last());
            encoded.push(e);
        }
        let crops: Vec<usize> = encoded.iter().map(|e| e.num_crops).collect();
        let ids = self.prompt_ids(&text, &crops, chat)?;
        let stops = self.stop_token_ids(chat);
        let mut cache = self.new_cache()?;
        let refs: Vec<&EncodedImage> = encoded.iter().collect();
        let before = start.elapsed().as_secs_f64();
        let (generation, ttft) =
            self.continue_generation(&mut cache, &ids, &refs, &stops, options, on_text)?;
        let decoding: f64 = images.iter().map(|d| d.decode_seconds).sum();
        Ok(VisionOutput {
            generation,
            images: reports,
            time_to_first_token_seconds: decoding + before + ttft,
        })
    }
}
