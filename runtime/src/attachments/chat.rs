//! [`ChatModel`] for [`Gemma3nGenerator`]: a [`Conversation`](crate::Conversation) whose user turns may carry images
//! and audio clips (`gemma chat`'s `--image`/`/image PATH`, `--audio`/`/audio PATH`), each encoded alone when
//! attached, rendered as content items in the order attached (Gemma3nProcessor's layout, as `gemma generate`).

use std::path::Path;

use super::{image_rows, AttachmentError, EncodedAudio, Gemma3nGenerator};
use crate::conversation::{ChatModel, ChatOptions};
use crate::error::{Error, Result};
use crate::generate::{with_single_bos, GenerationOutput};
use crate::kv_cache::KvCache;
use crate::model_text::ModelText;
use crate::vision::{EncodedImage, ImageReport};

fn runtime_error(e: AttachmentError) -> Error {
    e.into_runtime()
}

impl ChatModel for Gemma3nGenerator {
    // Whether this export has the vision part is known only at run time: `/image` on one without it is refused by
    // `encode_image_file`, naming the file and the export.
    const SEES_IMAGES: bool = true;
    const HEARS_AUDIO: bool = true;

    fn text(&self) -> &ModelText {
        self.generator.text()
    }

    fn no_chat_template(&self) -> Error {
        Error::InvalidArgument(format!(
            "{} has no chat template, so it cannot chat; use `gemma generate` with a plain prompt",
            self.dir().display()
        ))
    }

    fn new_cache(&self) -> Result<KvCache> {
        self.generator.new_cache()
    }

    fn image_blocks(&self) -> Option<(u32, usize)> {
        let v = &self.vision.as_ref()?.encoder.section;
        Some((v.image_token_id, v.soft_tokens))
    }

    fn audio_blocks(&self) -> Option<(u32, usize)> {
        let a = self.audio.as_ref()?;
        Some((a.section.audio_token_id, a.section.soft_tokens))
    }

    fn encode_rendered(&self, text: &str, _num_crops: &[usize]) -> Result<Vec<u32>> {
        let expanded = self.expand(text, None)?;
        let model = self.generator.text();
        Ok(with_single_bos(
            model.tokenizer.encode(&expanded, false)?,
            model.bos_token_id,
        ))
    }

    fn encode_audio_file(&mut self, path: &Path) -> Result<EncodedAudio> {
        let mut clips = self.encode_audio(&[path]).map_err(runtime_error)?;
        Ok(clips.remove(0))
    }

    fn encode_image_file(&mut self, path: &Path, _: bool) -> Result<(EncodedImage, ImageReport)> {
        self.image_from_file(path).map_err(runtime_error)
    }

    fn continue_turn(
        &mut self,
        cache: &mut KvCache,
        feed: &[u32],
        new_images: &[&EncodedImage],
        new_clips: &[&EncodedAudio],
        stop_ids: &[u32],
        options: &ChatOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput> {
        self.continue_generation(
            cache,
            feed,
            &image_rows(new_images),
            new_clips,
            stop_ids,
            &options.generate,
            on_text,
        )
    }
}
