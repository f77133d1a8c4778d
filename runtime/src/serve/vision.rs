//! Multimodal exports (Gemma 3 vision, PaliGemma) as an [`Engine`]: batched like text by the one scheduler. A
//! request's images (the bytes of `data:` URIs) are decoded and encoded once; its prompt is prefilled alone, in
//! steps that never cut an image block ([`VisionGenerator::prefill`]), then its generated tokens are embedded and
//! decoded with the other rows' (`token_type_ids` of a generated token; PaliGemma's positions from 1).

use std::path::Path;

use ndarray::Array3;

use super::engine::{Encoded, Engine, StepTokens};
use crate::conversation::Media;
use crate::decoder::Decoder;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use crate::vision::generate::DEFAULT_PREFILL_CHUNK;
use crate::vision::processor::image_tokenizer_for;
use crate::vision::{decode_image, EncodedImage, VisionGenerator};

impl Engine for VisionGenerator {
    fn decoder(&mut self) -> &mut Decoder {
        self.decoder_mut()
    }

    fn first_position(&self) -> i64 {
        self.vision().system.spec().first_position
    }

    fn stream_tokenizer(&self) -> Result<Tokenizer> {
        let v = self.vision();
        Ok(image_tokenizer_for(self.dir(), v.mm_tokens_per_image, v.system)?.0)
    }

    fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.prompt_ids(text, &[], false)
    }

    fn image(&mut self, bytes: &[u8]) -> Result<Media> {
        let limits = *self.image_limits_mut();
        let image = decode_image(bytes, Path::new("image_url"), &limits)?;
        Ok(Media::Image(self.encode_image(&image, false)?))
    }

    fn untemplated(&self, text: &str, images: &[&EncodedImage]) -> Result<(Vec<u32>, Vec<u32>)> {
        let (text, chat) = self.describe_text(text, images.len(), false)?;
        let crops: Vec<usize> = images.iter().map(|i| i.num_crops).collect();
        Ok((
            self.prompt_ids(&text, &crops, chat)?,
            self.stop_token_ids(chat),
        ))
    }

    fn features(&self, images: &[&EncodedImage]) -> Result<Option<Array3<f32>>> {
        self.stack_features(images).map(Some)
    }

    fn prefill(&mut self, p: &Encoded, cache: &mut KvCache, s: &mut Sampler) -> Result<u32> {
        let none = self.stack_features(&[])?;
        let features = p.features.as_ref().unwrap_or(&none).view();
        let logits = self.prefill(cache, &p.ids, features, DEFAULT_PREFILL_CHUNK)?;
        Ok(s.sample(&logits))
    }

    fn step_tokens(&mut self, tokens: &[u32]) -> Result<StepTokens> {
        let (embeds, types) = self.embed_generated(tokens)?;
        Ok(StepTokens::Embeds { embeds, types })
    }
}
