//! [`VisionGenerator`]: text generation with images, the runtime side of Gemma3ForConditionalGeneration.
//!
//! 1. each image: `preprocess.onnx` (full image + Pan & Scan crops) then `vision_encoder.onnx`, one image at a time;
//! 2. the prompt: chat template with image items (or a raw prompt with `<start_of_image>` placeholders), expanded as
//!    `Gemma3Processor` does ([`ImageTokens::expand`]), tokenized;
//! 3. prefill: `embed_tokens.onnx` for the ids, the `<image_soft_token>` rows overwritten by the features in order
//!    (no sqrt(hidden) factor), `decoder_model_merged.onnx` with `token_type_ids` = 1 on those rows, in chunks that
//!    never cut an image block (the bidirectional image mask only spans one chunk);
//! 4. decode: each new token embedded through `embed_tokens.onnx`, `token_type_ids` 0, sampled and streamed with the
//!    same [`Sampler`] and [`TextStream`](crate::TextStream) as text generation.
//!
//! PaliGemma (the manifest's `vision.system`, semantics §8) differs in three places: the prompt layout
//! ([`paligemma`]), `token_type_ids` 0 on the whole prompt, prefilled in one step, and 1 on generated tokens (the
//! prefix-LM mask), and positions counted from 1 (the decoder adds `first_position`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use ndarray::{s, Array2, Array3, ArrayView3, ArrayView4};

use super::graphs::{ImageGraphs, VisionSection};
use super::image_file::{load_image, ImageLimits};
use super::paligemma;
use super::processor::{self, prefill_chunks, token_type_ids, ImageTokens};
use crate::decoder::{LogitsMode, TokenInput};
use crate::error::{Error, Result};
use crate::generate::{check_prompt, decode_loop, rate, GenerateOptions, GenerationOutput};
use crate::kv_cache::KvCache;
use crate::manifest::{self, Manifest};
use crate::model_text::ModelText;
use crate::ort_env::RuntimeOptions;
use crate::sampling::Sampler;

/// Default most tokens per prefill step: bounds the attention scores' memory for prompts with many crops while
/// keeping every image block (256 tokens for the released models) whole.
pub const DEFAULT_PREFILL_CHUNK: usize = 2048;

#[derive(Clone, Debug)]
pub struct VisionOptions {
    pub generate: GenerateOptions,
    /// Pan & Scan: add up to 4 crops of a long image (each crop costs one more image's tokens and encoder pass).
    pub pan_and_scan: bool,
    /// Use the prompt as given (it must hold one `<start_of_image>` per image) instead of the chat template.
    pub raw_prompt: bool,
    /// Most tokens per prefill step (image blocks are never cut, so a step may hold one block more).
    pub prefill_chunk: usize,
}

impl Default for VisionOptions {
    fn default() -> Self {
        VisionOptions {
            generate: GenerateOptions::default(),
            pan_and_scan: false,
            raw_prompt: false,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }
}

/// One image ready for a prompt.
#[derive(Clone, Debug)]
pub struct EncodedImage {
    /// `[1 + num_crops, mm_tokens_per_image, hidden]`: the full image, then the crops.
    pub features: Array3<f32>,
    pub num_crops: usize,
    /// Size of the decoded image (before preprocessing).
    pub width: u32,
    pub height: u32,
    pub preprocess_seconds: f64,
    pub encode_seconds: f64,
}

pub struct VisionGenerator {
    dir: PathBuf,
    manifest: Manifest,
    section: VisionSection,
    graphs: ImageGraphs,
    text: ModelText,
    tokens: ImageTokens,
    limits: ImageLimits,
}

impl VisionGenerator {
    /// Opens a multimodal export: the image graphs, tokenizer, chat template, stop tokens. A text-only export is
    /// [`Error::NoVision`].
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<VisionGenerator> {
        let dir = dir.as_ref();
        let manifest = manifest::load(dir)?;
        let section = manifest.vision.clone().ok_or_else(|| Error::NoVision {
            dir: dir.to_path_buf(),
        })?;
        let (tokenizer, tokens) =
            processor::image_tokenizer_for(dir, section.mm_tokens_per_image, section.system)?;
        for (token, expected) in [
            (&tokens.boi, section.boi_token_id),
            (&tokens.eoi, section.eoi_token_id),
            (&tokens.soft, section.image_token_id),
        ] {
            let id = tokenizer.token_to_id(token).unwrap_or(u32::MAX);
            if id != expected {
                return Err(Error::Tokenizer(format!(
                    "{}: {token} has id {id}, but the model's is {expected} (gemma-onnx.json); is it the model's own \
                     tokenizer?",
                    dir.join(crate::tokenizer::TOKENIZER_FILE).display()
                )));
            }
        }
        let graphs = ImageGraphs::open(dir, &manifest, &section, options)?;
        let text = ModelText::open(tokenizer, dir, &manifest)?;
        Ok(VisionGenerator {
            dir: dir.to_path_buf(),
            manifest,
            section,
            graphs,
            text,
            tokens,
            limits: ImageLimits::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn vision(&self) -> &VisionSection {
        &self.section
    }

    /// The tokenizer, chat template, stop tokens, BOS and positions.
    pub fn text(&self) -> &ModelText {
        &self.text
    }

    pub fn image_tokens(&self) -> &ImageTokens {
        &self.tokens
    }

    pub fn image_limits_mut(&mut self) -> &mut ImageLimits {
        &mut self.limits
    }

    /// The model's stop tokens; `chat` adds the tokenizer's `<end_of_turn>`.
    pub fn stop_token_ids(&self, chat: bool) -> Vec<u32> {
        if chat {
            self.text.chat_stop_token_ids()
        } else {
            self.text.stop_ids.clone()
        }
    }

    /// Decodes an image file (within this generator's [`ImageLimits`]).
    pub fn load_image(&self, path: &Path) -> Result<RgbImage> {
        load_image(path, &self.limits)
    }

    /// Preprocesses and encodes one decoded image.
    pub fn encode_image(&mut self, image: &RgbImage, pan_and_scan: bool) -> Result<EncodedImage> {
        let t0 = Instant::now();
        let pre = self.graphs.preprocess(image, pan_and_scan)?;
        let t1 = Instant::now();
        let features = self.graphs.encode(pre.pixel_values.view())?;
        Ok(EncodedImage {
            features,
            num_crops: pre.num_crops,
            width: image.width(),
            height: image.height(),
            preprocess_seconds: (t1 - t0).as_secs_f64(),
            encode_seconds: t1.elapsed().as_secs_f64(),
        })
    }

    /// `vision_encoder.onnx` on ready `pixel_values` `[N, 3, S, S]` (one image at a time).
    pub fn encode_pixels(&mut self, pixels: ArrayView4<f32>) -> Result<Array3<f32>> {
        self.graphs.encode(pixels)
    }

    /// `preprocess.onnx` alone: `pixel_values` `[1 + crops, 3, S, S]` and the crop count.
    pub fn preprocess(
        &mut self,
        image: &RgbImage,
        pan_and_scan: bool,
    ) -> Result<(ndarray::Array4<f32>, usize)> {
        let p = self.graphs.preprocess(image, pan_and_scan)?;
        Ok((p.pixel_values, p.num_crops))
    }

    /// Whether the export has PaliGemma's prefix-LM mask (its prompt layout, token types and positions).
    pub fn prefix_lm(&self) -> bool {
        self.section.system.spec().prefix_lm
    }

    /// The prompt's `token_type_ids`: 1 on Gemma 3's image tokens; 0 everywhere for PaliGemma (the prefix).
    pub fn token_types(&self, ids: &[u32]) -> Vec<i64> {
        if self.prefix_lm() {
            return vec![0; ids.len()];
        }
        token_type_ids(ids, self.section.image_token_id)
    }

    /// Token ids of `text` with its placeholders expanded for `num_crops` ([`processor::prompt_ids`]; PaliGemma's
    /// [`paligemma::prompt_ids`], without crops).
    pub fn prompt_ids(&self, text: &str, num_crops: &[usize], chat: bool) -> Result<Vec<u32>> {
        if self.prefix_lm() {
            let per = self.section.mm_tokens_per_image;
            return paligemma::prompt_ids(&self.text.tokenizer, text, per);
        }
        processor::prompt_ids(
            &self.text.tokenizer,
            &self.tokens,
            text,
            num_crops,
            chat,
            self.manifest.bos_token_id,
        )
    }

    /// The decoder on embeddings, for batched steps ([`super::classify`]).
    pub(crate) fn decoder_mut(&mut self) -> &mut crate::decoder::Decoder {
        &mut self.graphs.decoder
    }

    /// An empty cache for [`continue_generation`](Self::continue_generation).
    pub fn new_cache(&self) -> Result<KvCache> {
        self.graphs.new_cache()
    }

    /// Logits of every prompt position `[seq, vocab]`, the prompt prefilled in one step (for tests and scoring).
    /// `features` are the image blocks in prompt order, `[blocks, tokens, hidden]`.
    pub fn prompt_logits(&mut self, ids: &[u32], features: ArrayView3<f32>) -> Result<Array2<f32>> {
        let mut cache = self.new_cache()?;
        let embeds = self.embed_with_features(ids, features)?;
        let tt = self.token_types(ids);
        let tt = Array2::from_shape_vec((1, tt.len()), tt).expect("shape matches");
        let tokens = TokenInput::Embeds {
            embeds: embeds.view(),
            token_type_ids: tt.view(),
        };
        self.graphs
            .decoder
            .run_after_cache(tokens, &mut cache, LogitsMode::All, |l| {
                l.slice(s![0, .., ..]).to_owned()
            })
    }

    /// Embeddings of `ids` `[1, n, hidden]` with the soft-token rows replaced by `features` (all of them, in order).
    pub(crate) fn embed_with_features(
        &mut self,
        ids: &[u32],
        features: ArrayView3<f32>,
    ) -> Result<Array3<f32>> {
        let image = self.section.image_token_id;
        let soft = ids.iter().filter(|&&t| t == image).count();
        let (blocks, per, hidden) = features.dim();
        if soft != blocks * per {
            return Err(Error::InvalidArgument(format!(
                "the prompt has {soft} image soft tokens but the images give {blocks} × {per} features"
            )));
        }
        let mut embeds = self.graphs.embed(ids)?;
        if embeds.shape()[2] != hidden && blocks > 0 {
            return Err(Error::InvalidArgument(format!(
                "image features are {hidden} wide, the text embeddings {}",
                embeds.shape()[2]
            )));
        }
        let flat = features
            .to_shape((blocks * per, hidden))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut next = 0;
        for (j, &t) in ids.iter().enumerate() {
            if t == image {
                embeds.slice_mut(s![0, j, ..]).assign(&flat.row(next));
                next += 1;
            }
        }
        Ok(embeds)
    }

    /// The image blocks of `images` (full images and crops, in order) as one `[blocks, tokens, hidden]` array.
    pub fn stack_features(&self, images: &[&EncodedImage]) -> Result<Array3<f32>> {
        if images.is_empty() {
            let (t, h) = (self.section.mm_tokens_per_image, self.manifest.hidden_size);
            return Ok(Array3::zeros((0, t, h)));
        }
        let views: Vec<_> = images.iter().map(|i| i.features.view()).collect();
        ndarray::concatenate(ndarray::Axis(0), &views)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Feeds `ids` after what `cache` holds, in steps of at most `max_chunk` tokens that never cut an image block,
    /// the soft-token rows taking `features` `[blocks, tokens, hidden]` in order; returns the last position's
    /// logits.
    pub fn prefill(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        features: ArrayView3<f32>,
        max_chunk: usize,
    ) -> Result<Vec<f32>> {
        let image = self.section.image_token_id;
        let per = self.section.mm_tokens_per_image;
        let soft = ids.iter().filter(|&&t| t == image).count();
        if soft != features.shape()[0] * per {
            return Err(Error::InvalidArgument(format!(
                "the prompt has {soft} image soft tokens but the images give {} blocks of {per}",
                features.shape()[0]
            )));
        }
        let types = self.token_types(ids);
        // PaliGemma's prefix attends to itself both ways: one step, whatever its length.
        let chunks = match self.prefix_lm() {
            true => vec![0..ids.len()],
            false => prefill_chunks(&types, max_chunk),
        };
        let mut logits = Vec::new();
        let mut used = 0;
        for chunk in chunks {
            let part = &ids[chunk.clone()];
            let blocks = part.iter().filter(|&&t| t == image).count() / per;
            let embeds =
                self.embed_with_features(part, features.slice(s![used..used + blocks, .., ..]))?;
            used += blocks;
            let tt = Array2::from_shape_vec((1, chunk.len()), types[chunk].to_vec())
                .expect("shape matches");
            let tokens = TokenInput::Embeds {
                embeds: embeds.view(),
                token_type_ids: tt.view(),
            };
            logits = self
                .graphs
                .decoder
                .run_after_cache(tokens, cache, LogitsMode::Last, |l| {
                    l.slice(s![0, -1, ..]).to_vec()
                })?;
        }
        Ok(logits)
    }

    /// One decode step: `token` (a generated token) after the cache; returns its logits.
    pub fn decode_step(&mut self, cache: &mut KvCache, token: u32) -> Result<Vec<f32>> {
        let generated = self.generated_type();
        decode_step(&mut self.graphs, cache, token, generated)
    }

    /// The inputs of generated `tokens`, one per row of a batched step (`gemma serve`): their embeddings
    /// `[n, 1, hidden]` and token types `[n, 1]`, each row what [`decode_step`](Self::decode_step) feeds alone.
    pub(crate) fn embed_generated(&mut self, tokens: &[u32]) -> Result<(Array3<f32>, Array2<i64>)> {
        let embeds = self.graphs.embed(tokens)?;
        let shape = (tokens.len(), 1, embeds.shape()[2]);
        let embeds = embeds
            .into_shape_with_order(shape)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let types = Array2::from_elem((tokens.len(), 1), self.generated_type());
        Ok((embeds, types))
    }

    /// `token_type_ids` of a generated token: 0 (text) for Gemma 3, 1 (after the prefix) for PaliGemma.
    fn generated_type(&self) -> i64 {
        i64::from(self.prefix_lm())
    }

    /// Feeds `new_ids` (holding the soft tokens of `images`, in order) after what `cache` holds, in chunks that keep
    /// each image whole, then generates until a token of `stop_ids` or `max_new_tokens`, streaming text to
    /// `on_text`. Returns the output and the seconds to the first token (from the call).
    pub fn continue_generation(
        &mut self,
        cache: &mut KvCache,
        new_ids: &[u32],
        images: &[&EncodedImage],
        stop_ids: &[u32],
        options: &VisionOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<(GenerationOutput, f64)> {
        let start = Instant::now();
        let gen = &options.generate;
        check_prompt(
            new_ids,
            cache.len(),
            gen.max_new_tokens,
            self.manifest.max_position_embeddings,
            self.manifest.vocab_size,
        )?;
        let mut sampler = Sampler::new(gen.sampling.clone())?;
        let mut out = GenerationOutput::new(new_ids.len());
        let features = self.stack_features(images)?;
        let prefill_start = Instant::now();
        let logits = self.prefill(cache, new_ids, features.view(), options.prefill_chunk)?;
        out.prefill_seconds = prefill_start.elapsed().as_secs_f64();
        out.prefill_tokens_per_s = rate(new_ids.len(), out.prefill_seconds);
        if gen.max_new_tokens == 0 {
            return Ok((out, start.elapsed().as_secs_f64()));
        }
        let first = sampler.sample(&logits);
        let ttft = start.elapsed().as_secs_f64();
        let generated = self.generated_type();
        let graphs = &mut self.graphs;
        decode_loop(
            &self.text.tokenizer,
            first,
            stop_ids,
            gen,
            &mut out,
            &mut on_text,
            |token| {
                let logits = decode_step(graphs, cache, token, generated)?;
                Ok(sampler.sample(&logits))
            },
        )?;
        Ok((out, ttft))
    }
}

/// One generated token after the cache (`token_type_ids` `token_type`): its embedding through `embed_tokens.onnx`,
/// then one step of the decoder on embeddings; returns its logits.
fn decode_step(
    graphs: &mut ImageGraphs,
    cache: &mut KvCache,
    token: u32,
    token_type: i64,
) -> Result<Vec<f32>> {
    let embeds = graphs.embed(&[token])?;
    let types = Array2::<i64>::from_elem((1, 1), token_type);
    let tokens = TokenInput::Embeds {
        embeds: embeds.view(),
        token_type_ids: types.view(),
    };
    graphs
        .decoder
        .run_after_cache(tokens, cache, LogitsMode::Last, |l| {
            l.slice(s![0, -1, ..]).to_vec()
        })
}
