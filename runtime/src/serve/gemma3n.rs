//! Gemma 3n exports with a vision or an audio part as an [`Engine`]: batched like text by the one scheduler. A
//! request's images (the bytes of `data:` URIs, within the same limits as Gemma 3's) are decoded and encoded once by
//! the code `gemma generate --image` and `gemma chat` use ([`Gemma3nGenerator::image_from_bytes`]); its clips (the
//! WAV bytes of `input_audio` parts) are read as `--audio` files are and encoded alone, as `gemma chat` encodes each
//! clip ([`Gemma3nGenerator::audio_from_bytes`]). Its prompt is the [`Conversation`](crate::Conversation)'s
//! rendering, as `gemma chat` renders it, and is prefilled alone in one step with the images' and clips' rows over
//! their soft tokens ([`Gemma3nGenerator::prompt_input`]). Generated tokens are plain ids: the decoder runs
//! `embed_tokens.onnx` itself, as for a text-only Gemma 3n export.

use std::path::Path;

use ndarray::{s, Array2, Array3, Axis};

use super::engine::{Encoded, Engine, StepTokens};
use crate::attachments::Gemma3nGenerator;
use crate::conversation::{ChatModel, Media};
use crate::decoder::{Decoder, LogitsMode};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use crate::vision::EncodedImage;

impl Engine for Gemma3nGenerator {
    fn decoder(&mut self) -> &mut Decoder {
        self.generator_mut().decoder()
    }

    fn stream_tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_dir(self.dir())
    }

    fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.generator().encode_prompt(text)
    }

    fn image(&mut self, bytes: &[u8]) -> Result<Media> {
        self.image_from_bytes(bytes, Path::new("image_url"))
            .map(Media::Image)
            .map_err(|e| e.into_runtime())
    }

    fn audio(&mut self, bytes: &[u8]) -> Result<Media> {
        self.audio_from_bytes(bytes, Path::new("input_audio"))
            .map(Media::Audio)
            .map_err(|e| e.into_runtime())
    }

    fn untemplated(&self, _: &str, _: &[&EncodedImage]) -> Result<(Vec<u32>, Vec<u32>)> {
        Err(self.no_chat_template())
    }

    /// The images' blocks stacked `[images, soft_tokens, hidden]`; `None` without images.
    fn features(&self, images: &[&EncodedImage]) -> Result<Option<Array3<f32>>> {
        if images.is_empty() {
            return Ok(None);
        }
        let views: Vec<_> = images.iter().map(|i| i.features.view()).collect();
        ndarray::concatenate(Axis(0), &views)
            .map(Some)
            .map_err(|e| Error::InvalidArgument(format!("image blocks of different shapes: {e}")))
    }

    fn prefill(&mut self, p: &Encoded, cache: &mut KvCache, s: &mut Sampler) -> Result<u32> {
        let rows: Vec<Array2<f32>> = match &p.features {
            Some(blocks) => blocks.axis_iter(Axis(0)).map(|b| b.to_owned()).collect(),
            None => Vec::new(),
        };
        let clips: Vec<_> = p.clips.iter().collect();
        let prompt = self.prompt_input(&p.ids, &rows, &clips)?;
        self.generator_mut().decoder().run_after_cache(
            prompt.input(),
            cache,
            LogitsMode::Last,
            |l| s.sample(&l.slice(s![0, -1, ..]).to_vec()),
        )
    }

    fn step_tokens(&mut self, tokens: &[u32]) -> Result<StepTokens> {
        Ok(StepTokens::Ids(Array2::from_shape_fn(
            (tokens.len(), 1),
            |(b, _)| i64::from(tokens[b]),
        )))
    }
}
