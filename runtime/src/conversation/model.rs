//! [`ChatModel`]: what a [`Conversation`](super::Conversation) needs of the model it talks to. Three models implement
//! it: [`Generator`] (a text export, `model.onnx`), [`VisionGenerator`] (a multimodal export, whose user turns may
//! carry images; `decoder_model_merged.onnx` on embeddings) and
//! [`Gemma3nGenerator`](crate::attachments::Gemma3nGenerator) (whose user turns may carry audio clips).

use std::path::Path;

use super::ChatOptions;
use crate::attachments::EncodedAudio;
use crate::error::{Error, Result};
use crate::generate::{with_single_bos, GenerationOutput, Generator};
use crate::kv_cache::KvCache;
use crate::model_text::ModelText;
use crate::vision::{EncodedImage, ImageReport, VisionGenerator, VisionOptions};

/// A model a [`Conversation`](super::Conversation) can run on.
pub trait ChatModel {
    /// Whether user turns may carry images: they are then rendered as lists of content items (the images, then the
    /// text) and `gemma chat` takes `/image PATH`.
    const SEES_IMAGES: bool;
    /// Whether user turns may carry audio clips (rendered as content items too); `gemma chat` then takes
    /// `/audio PATH`.
    const HEARS_AUDIO: bool = false;

    /// The tokenizer, chat template, stop tokens, BOS and positions.
    fn text(&self) -> &ModelText;
    /// The error for an export without a chat template (it says what to use instead).
    fn no_chat_template(&self) -> Error;
    /// An empty batch-1 cache for [`continue_turn`](Self::continue_turn).
    fn new_cache(&self) -> Result<KvCache>;
    /// `<image_soft_token>`'s id and the soft tokens of one image block; `None` for a text model.
    fn image_blocks(&self) -> Option<(u32, usize)>;
    /// Token ids of a rendered conversation (one BOS), whose image placeholders take the blocks of images with
    /// `num_crops` crops each, in order.
    fn encode_rendered(&self, text: &str, num_crops: &[usize]) -> Result<Vec<u32>>;
    /// `<audio_soft_token>`'s id and the soft tokens of one clip; `None` for a model without audio.
    fn audio_blocks(&self) -> Option<(u32, usize)> {
        None
    }
    /// Reads and encodes a WAV file; a model without audio refuses it.
    fn encode_audio_file(&mut self, path: &Path) -> Result<EncodedAudio> {
        Err(Error::InvalidArgument(format!(
            "{}: this model takes no audio (only Gemma 3n exports of checkpoints with an audio tower do)",
            path.display()
        )))
    }
    /// Reads and encodes an image file; a text model refuses it with [`Error::NoVision`].
    fn encode_image_file(
        &mut self,
        path: &Path,
        pan_and_scan: bool,
    ) -> Result<(EncodedImage, ImageReport)>;
    /// Feeds `feed` (whose soft tokens take `new_images`' blocks and `new_clips`' rows, in order) after what `cache`
    /// holds, then generates the reply until a token of `stop_ids` or `max_new_tokens`, streaming its text.
    #[allow(clippy::too_many_arguments)]
    fn continue_turn(
        &mut self,
        cache: &mut KvCache,
        feed: &[u32],
        new_images: &[&EncodedImage],
        new_clips: &[&EncodedAudio],
        stop_ids: &[u32],
        options: &ChatOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput>;
}

impl ChatModel for Generator {
    const SEES_IMAGES: bool = false;

    fn text(&self) -> &ModelText {
        Generator::text(self)
    }

    fn no_chat_template(&self) -> Error {
        Error::InvalidArgument(format!(
            "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja), so \
             it cannot chat; use `gemma generate` with a plain prompt",
            self.decoder_dir().display()
        ))
    }

    fn new_cache(&self) -> Result<KvCache> {
        Generator::new_cache(self)
    }

    fn image_blocks(&self) -> Option<(u32, usize)> {
        None
    }

    fn encode_rendered(&self, text: &str, _num_crops: &[usize]) -> Result<Vec<u32>> {
        let text_side = self.text();
        Ok(with_single_bos(
            text_side.tokenizer.encode(text, false)?,
            text_side.bos_token_id,
        ))
    }

    fn encode_image_file(&mut self, _: &Path, _: bool) -> Result<(EncodedImage, ImageReport)> {
        Err(Error::NoVision {
            dir: self.decoder_dir().to_path_buf(),
        })
    }

    fn continue_turn(
        &mut self,
        cache: &mut KvCache,
        feed: &[u32],
        _new_images: &[&EncodedImage],
        _new_clips: &[&EncodedAudio],
        stop_ids: &[u32],
        options: &ChatOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput> {
        self.continue_generation(cache, feed, stop_ids, &options.generate, on_text)
    }
}

impl ChatModel for VisionGenerator {
    const SEES_IMAGES: bool = true;

    fn text(&self) -> &ModelText {
        VisionGenerator::text(self)
    }

    fn no_chat_template(&self) -> Error {
        Error::InvalidArgument(format!(
            "{} has no chat template, so it cannot chat; use `gemma-vision describe --raw`",
            self.dir().display()
        ))
    }

    fn new_cache(&self) -> Result<KvCache> {
        VisionGenerator::new_cache(self)
    }

    fn image_blocks(&self) -> Option<(u32, usize)> {
        Some((
            self.vision().image_token_id,
            self.vision().mm_tokens_per_image,
        ))
    }

    fn encode_rendered(&self, text: &str, num_crops: &[usize]) -> Result<Vec<u32>> {
        self.prompt_ids(text, num_crops, true)
    }

    fn encode_image_file(
        &mut self,
        path: &Path,
        pan_and_scan: bool,
    ) -> Result<(EncodedImage, ImageReport)> {
        self.encode_file(path, pan_and_scan)
    }

    fn continue_turn(
        &mut self,
        cache: &mut KvCache,
        feed: &[u32],
        new_images: &[&EncodedImage],
        _new_clips: &[&EncodedAudio],
        stop_ids: &[u32],
        options: &ChatOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput> {
        let options = VisionOptions {
            generate: options.generate.clone(),
            pan_and_scan: options.pan_and_scan,
            ..Default::default()
        };
        self.continue_generation(cache, feed, new_images, stop_ids, &options, on_text)
            .map(|(output, _)| output)
    }
}
