//! [`VisionChat`]: a conversation with a Gemma 3 multimodal export whose user turns may hold images
//! (`gemma chat --image PATH`, `/image PATH`).
//!
//! Images are decoded and encoded when attached ([`VisionChat::add_image`]), so a bad file fails at once and the
//! encoder runs once per image for the whole conversation. Each turn renders the chat template over the whole
//! conversation (a user message is its images, then its text: `{"type": "image"}` items before a text item),
//! expands every image as the processor does and, like [`ChatSession`](crate::ChatSession), prefills only the
//! tokens after what the KV cache already holds. New images are always in that new part, so each image block is
//! prefilled whole. When the cache no longer matches the rendering, the whole conversation is prefilled again.
//! A conversation that outgrows the context is refused with [`Error::PromptTooLong`] (images are not dropped
//! silently): `/reset` starts over.

use std::path::Path;

use super::describe::ImageReport;
use super::generate::{EncodedImage, VisionGenerator, VisionOptions};
use crate::chat_session::{ChatOptions, TurnReport};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;

/// One message: its role, its images (indices into the conversation's images) and its text.
#[derive(Clone, Debug)]
struct Turn {
    role: &'static str,
    images: Vec<usize>,
    text: String,
}

pub struct VisionChat {
    generator: VisionGenerator,
    options: ChatOptions,
    pan_and_scan: bool,
    history: Vec<Turn>,
    /// Every image of the conversation, in order of attachment.
    images: Vec<EncodedImage>,
    /// Images attached to the next user message.
    pending: Vec<usize>,
    cache: KvCache,
    cached_ids: Vec<u32>,
}

impl VisionChat {
    /// Starts an empty conversation; `options.system` becomes the system message (Gemma 3's template puts it at
    /// the start of the first user turn). Fails without a chat template or with `max_new_tokens` 0.
    pub fn new(
        generator: VisionGenerator,
        options: ChatOptions,
        pan_and_scan: bool,
    ) -> Result<VisionChat> {
        if options.generate.max_new_tokens == 0 {
            return Err(Error::InvalidArgument(
                "a chat reply needs max_new_tokens ≥ 1".into(),
            ));
        }
        if generator.chat_template().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} has no chat template, so it cannot chat; use `gemma-vision describe --raw`",
                generator.dir().display()
            )));
        }
        let cache = generator.new_cache()?;
        Ok(VisionChat {
            generator,
            options,
            pan_and_scan,
            history: Vec::new(),
            images: Vec::new(),
            pending: Vec::new(),
            cache,
            cached_ids: Vec::new(),
        })
    }

    pub fn generator(&self) -> &VisionGenerator {
        &self.generator
    }

    pub fn options_mut(&mut self) -> &mut ChatOptions {
        &mut self.options
    }

    /// Images attached and waiting for the next message.
    pub fn pending_images(&self) -> usize {
        self.pending.len()
    }

    /// Reads and encodes the image at `path` and attaches it to the next user message.
    pub fn add_image(&mut self, path: &Path) -> Result<ImageReport> {
        let decoded = self.generator.decode(path)?;
        let e = self
            .generator
            .encode_image(&decoded.image, self.pan_and_scan)?;
        let report = ImageReport {
            path: path.to_path_buf(),
            width: e.width,
            height: e.height,
            num_crops: e.num_crops,
            decode_seconds: decoded.decode_seconds,
            preprocess_seconds: e.preprocess_seconds,
            encode_seconds: e.encode_seconds,
        };
        self.images.push(e);
        self.pending.push(self.images.len() - 1);
        Ok(report)
    }

    /// Forgets the conversation and its images (the system prompt stays).
    pub fn reset(&mut self) -> Result<()> {
        self.history.clear();
        self.images.clear();
        self.pending.clear();
        self.forget_cache()
    }

    /// Sends `text` with the pending images as the user's message and streams the reply. On error the
    /// conversation is as before (the images stay pending).
    pub fn send(&mut self, text: &str, on_text: impl FnMut(&str)) -> Result<TurnReport> {
        let images = std::mem::take(&mut self.pending);
        self.history.push(Turn {
            role: "user",
            images: images.clone(),
            text: text.to_string(),
        });
        let result = self.respond(on_text);
        if result.is_err() {
            self.history.pop();
            self.pending = images;
        }
        result
    }

    fn respond(&mut self, on_text: impl FnMut(&str)) -> Result<TurnReport> {
        let template = self.generator.chat_template().expect("checked in new");
        let text = template.render_value(&self.messages(), true)?;
        let order: Vec<usize> = self
            .history
            .iter()
            .flat_map(|t| t.images.iter().copied())
            .collect();
        let crops: Vec<usize> = order.iter().map(|&i| self.images[i].num_crops).collect();
        let ids = self.generator.prompt_ids(&text, &crops, true)?;
        let max_new = self.options.generate.max_new_tokens;
        let positions = self.generator.manifest().max_position_embeddings;
        let limit = self
            .options
            .max_context
            .map_or(positions, |c| c.min(positions));
        if ids.len().saturating_add(max_new) > limit {
            return Err(Error::PromptTooLong {
                prompt_tokens: ids.len(),
                max_new_tokens: max_new,
                max_positions: limit,
            });
        }

        let mut debug = Vec::new();
        let mut reprefilled = false;
        if !self.cached_ids.is_empty() && !ids.starts_with(&self.cached_ids) {
            debug.push(format!(
                "the template re-rendered the conversation differently from what the cache holds; prefilling all {} \
                 tokens again",
                ids.len()
            ));
            reprefilled = true;
            self.forget_cache()?;
        }
        let cached = self.cached_ids.len();
        if cached > 0 {
            debug.push(format!(
                "reusing {cached} cached tokens, prefilling {} new",
                ids.len() - cached
            ));
        }
        // The images whose blocks the cache holds, from its count of image blocks (1 + crops per image).
        let soft = self.generator.vision().image_token_id;
        let per = self.generator.vision().mm_tokens_per_image;
        let mut blocks = self.cached_ids.iter().filter(|&&t| t == soft).count() / per;
        let mut first_new = 0;
        while blocks > 0 && first_new < order.len() {
            blocks = blocks.saturating_sub(1 + self.images[order[first_new]].num_crops);
            first_new += 1;
        }
        let new_images: Vec<&EncodedImage> = order[first_new..]
            .iter()
            .map(|&i| &self.images[i])
            .collect();
        let feed = &ids[cached..];
        let options = VisionOptions {
            generate: self.options.generate.clone(),
            pan_and_scan: self.pan_and_scan,
            ..Default::default()
        };
        let stops = self.generator.stop_token_ids(true);
        let result = self.generator.continue_generation(
            &mut self.cache,
            feed,
            &new_images,
            &stops,
            &options,
            on_text,
        );
        let (output, _) = match result {
            Ok(o) => o,
            Err(e) => {
                self.forget_cache()?;
                return Err(e);
            }
        };
        let fed = &output.token_ids[..output.token_ids.len().saturating_sub(1)];
        self.cached_ids = ids.clone();
        self.cached_ids.extend_from_slice(fed);
        self.history.push(Turn {
            role: "assistant",
            images: Vec::new(),
            text: output.text.clone(),
        });
        Ok(TurnReport {
            prefilled_tokens: ids.len() - cached,
            reused_tokens: cached,
            dropped_messages: 0,
            reprefilled,
            debug,
            output,
        })
    }

    /// The conversation as chat-template messages: system, then user turns as lists of image items and a text item.
    fn messages(&self) -> serde_json::Value {
        let mut out = Vec::new();
        if let Some(system) = &self.options.system {
            out.push(serde_json::json!({"role": "system", "content": system}));
        }
        for t in &self.history {
            if t.role == "user" {
                let mut content: Vec<serde_json::Value> = t
                    .images
                    .iter()
                    .map(|_| serde_json::json!({"type": "image"}))
                    .collect();
                content.push(serde_json::json!({"type": "text", "text": t.text}));
                out.push(serde_json::json!({"role": "user", "content": content}));
            } else {
                out.push(serde_json::json!({"role": t.role, "content": t.text}));
            }
        }
        serde_json::Value::Array(out)
    }

    fn forget_cache(&mut self) -> Result<()> {
        self.cache.reset()?;
        self.cached_ids.clear();
        Ok(())
    }
}
