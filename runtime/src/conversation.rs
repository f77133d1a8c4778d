//! [`Conversation`]: a multi-turn chat that keeps its KV cache between turns, so each turn prefills only what is
//! new: the end of the last reply, the user's message and the model-turn header. It runs on a text export
//! ([`Generator`]) or on a multimodal one ([`VisionGenerator`](crate::VisionGenerator)), whose user turns may carry
//! images ([`Media`]); `gemma chat` uses it in both cases.
//!
//! Every turn renders the model's own chat template over the whole conversation (on a multimodal model a user
//! message is a list of content items: its images, then its text) and checks that the result starts with what the
//! cache already holds:
//!
//! 1. the rendered conversation's tokens start with the cached tokens → feed only the rest (the usual case);
//! 2. else its text starts with the cached text (the model split a word into tokens differently from how the
//!    tokenizer would) and the rest holds no image → feed the tokens of the remaining text; the cache still spells
//!    exactly the rendered text;
//! 3. else (the template re-rendered the history differently, e.g. it trimmed whitespace the model wrote at the end of
//!    its reply) → empty the cache and prefill the whole conversation, saying so in [`TurnReport::debug`].
//!
//! Images are decoded and encoded when attached ([`Conversation::add_image`]), so a bad file fails at once and the
//! encoder runs once per image for the whole conversation. New images are always in the part fed, so each image
//! block is prefilled whole.
//!
//! **Overflow, one rule for every model:** the reply may use at most `max_new_tokens`; before a turn starts, the
//! conversation plus that budget must fit in the context ([`ChatOptions::max_context`], at most the model's
//! positions). When it does not, the oldest exchanges (with their images) are dropped and the rest is prefilled once
//! ([`TurnReport::dropped_messages`], which `gemma chat` reports), rather than failing mid-reply. Only a conversation
//! whose last exchange alone does not fit is refused, with [`Error::PromptTooLong`].
//!
//! System prompts: Gemma 3's template folds a system message into the first user turn itself. Gemma 1 and 2
//! templates refuse it (`raise_exception('System role not supported')`); then, unless
//! [`ChatOptions::fold_system`] is off, the conversation does what Gemma 3's template does: the system text and a
//! blank line go before the first user message ([`Conversation::system_folded`] says so).

use std::path::Path;

use crate::attachments::EncodedAudio;
use crate::chat_template::Message;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, GenerationOutput, Generator};
use crate::kv_cache::KvCache;
use crate::vision::{EncodedImage, ImageReport};

mod fit;
mod model;
mod render;

pub use fit::RenderWork;
pub use model::ChatModel;

/// How a conversation generates and what it may keep.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// Per reply: `max_new_tokens` (also reserved in the context before each turn), sampling, stop flag.
    pub generate: GenerateOptions,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// When the template refuses a system role: put the system prompt at the start of the first user message
    /// (true, the default) or fail.
    pub fold_system: bool,
    /// Most positions the conversation may use (prompt and reply); `None` = the model's `max_position_embeddings`.
    pub max_context: Option<usize>,
    /// Images: Pan & Scan, up to 4 extra crops of a long image (multimodal models only).
    pub pan_and_scan: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            generate: GenerateOptions::default(),
            system: None,
            fold_system: true,
            max_context: None,
            pan_and_scan: false,
        }
    }
}

/// What one turn did besides generating.
#[derive(Clone, Debug)]
pub struct TurnReport {
    /// The reply (`prompt_tokens` = the tokens fed before generating, as `prefilled_tokens`).
    pub output: GenerationOutput,
    /// Tokens of the conversation that were already in the KV cache and not fed again.
    pub reused_tokens: usize,
    /// Tokens fed in this turn's prefill.
    pub prefilled_tokens: usize,
    /// Messages dropped from the start of the conversation so that it fits the context (0 normally).
    pub dropped_messages: usize,
    /// Whether the whole conversation was prefilled again although the cache held part of it.
    pub reprefilled: bool,
    /// Lines for a `--verbose` user: how the cache was reused, or why it was not.
    pub debug: Vec<String>,
    /// Chat-template renders this turn made to fit the conversation into the context, and the bytes they produced
    /// (one render of the whole conversation when it fits; O(log n) more of the kept part when messages are dropped).
    pub render_work: RenderWork,
}

/// What a user turn carries besides its text.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum Media {
    /// An image, encoded when attached.
    Image(EncodedImage),
    /// An audio clip (Gemma 3n), encoded when attached.
    Audio(EncodedAudio),
}

/// One message of the conversation and what it carries.
#[derive(Clone, Debug)]
pub struct Turn {
    pub message: Message,
    /// Shown to the model before the message's text, in order.
    pub media: Vec<Media>,
}

impl Turn {
    fn images(&self) -> impl Iterator<Item = &EncodedImage> {
        self.media.iter().filter_map(|m| match m {
            Media::Image(image) => Some(image),
            Media::Audio(_) => None,
        })
    }

    fn clips(&self) -> impl Iterator<Item = &EncodedAudio> {
        self.media.iter().filter_map(|m| match m {
            Media::Audio(clip) => Some(clip),
            Media::Image(_) => None,
        })
    }
}

pub struct Conversation<M: ChatModel = Generator> {
    model: M,
    options: ChatOptions,
    /// User and assistant messages (the system prompt is kept apart in `options.system`).
    turns: Vec<Turn>,
    /// Attached to the next user message.
    pending: Vec<Media>,
    /// The template refuses a system role: the system prompt is folded into the first user message.
    fold: bool,
    stop_ids: Vec<u32>,
    cache: KvCache,
    /// The tokens in `cache`, and the text they spell.
    cached_ids: Vec<u32>,
    cached_text: String,
}

impl<M: ChatModel> Conversation<M> {
    /// Starts an empty conversation. Fails if the export has no chat template, if `max_new_tokens` is 0, or if the
    /// template refuses the system prompt and `fold_system` is off.
    pub fn new(model: M, options: ChatOptions) -> Result<Conversation<M>> {
        if options.generate.max_new_tokens == 0 {
            return Err(Error::InvalidArgument(
                "a chat reply needs max_new_tokens ≥ 1".into(),
            ));
        }
        if model.text().chat_template.is_none() {
            return Err(model.no_chat_template());
        }
        let fold = render::system_rule(model.text(), &options)?;
        let stop_ids = model.text().chat_stop_token_ids();
        let cache = model.new_cache()?;
        Ok(Conversation {
            model,
            options,
            turns: Vec::new(),
            pending: Vec::new(),
            fold,
            stop_ids,
            cache,
            cached_ids: Vec::new(),
            cached_text: String::new(),
        })
    }

    /// Whether the template refused the system role, so the system prompt goes into the first user message.
    pub fn system_folded(&self) -> bool {
        self.fold
    }

    /// The user and assistant messages so far (without the system prompt and the media).
    pub fn history(&self) -> Vec<Message> {
        self.turns.iter().map(|t| t.message.clone()).collect()
    }

    /// The user and assistant turns so far, with their media.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// The tokens the KV cache holds.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached_ids
    }

    pub fn generator(&self) -> &M {
        &self.model
    }

    /// The generator, e.g. for a one-off generation beside the conversation (it has its own cache).
    pub fn generator_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The options, e.g. to change sampling between turns.
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        &mut self.options
    }

    /// Images and clips attached and waiting for the next user message.
    pub fn pending_images(&self) -> usize {
        self.pending.len()
    }

    /// Reads and encodes the image at `path` and attaches it to the next user message. A text model refuses it
    /// ([`Error::NoVision`]).
    pub fn add_image(&mut self, path: &Path) -> Result<ImageReport> {
        let (image, report) = self
            .model
            .encode_image_file(path, self.options.pan_and_scan)?;
        self.pending.push(Media::Image(image));
        Ok(report)
    }

    /// Reads and encodes the WAV file at `path` and attaches it to the next user message. A model without audio
    /// refuses it.
    pub fn add_audio(&mut self, path: &Path) -> Result<()> {
        let clip = self.model.encode_audio_file(path)?;
        self.pending.push(Media::Audio(clip));
        Ok(())
    }

    /// Attaches `media`, already encoded, to the next user message (`gemma serve` decodes images from request
    /// bodies, not files).
    pub fn attach(&mut self, media: Media) {
        self.pending.push(media);
    }

    /// Forgets the conversation and its media (the system prompt stays).
    pub fn reset(&mut self) -> Result<()> {
        self.turns.clear();
        self.pending.clear();
        self.forget_cache()
    }

    /// Replaces the conversation with `messages` (a leading `system` message replaces the system prompt), to be
    /// answered by [`respond`](Self::respond). Roles must be `user` / `assistant` after the optional system message;
    /// the template checks their order.
    pub fn set_messages(&mut self, messages: &[Message]) -> Result<()> {
        self.set_messages_with_media(messages, Vec::new())
    }

    /// [`set_messages`](Self::set_messages) where `media[i]` (if given) goes with `messages[i]`, a user message
    /// (`gemma serve` takes images in any user message of a request).
    pub fn set_messages_with_media(
        &mut self,
        messages: &[Message],
        mut media: Vec<Vec<Media>>,
    ) -> Result<()> {
        media.resize_with(messages.len(), Vec::new);
        if let Some(i) =
            (0..messages.len()).find(|&i| !media[i].is_empty() && messages[i].role != "user")
        {
            return Err(Error::InvalidArgument(format!(
                "message {i} has role {:?}: only user messages may carry images",
                messages[i].role
            )));
        }
        let mut rest = messages;
        if let Some(first) = messages.first().filter(|m| m.role == "system") {
            let system_options = ChatOptions {
                system: Some(first.content.clone()),
                ..self.options.clone()
            };
            // Decide folding again for this system prompt (same rule as `new`).
            self.fold = render::system_rule(self.model.text(), &system_options)?;
            self.options.system = system_options.system;
            rest = &messages[1..];
        }
        if let Some((i, m)) = rest
            .iter()
            .enumerate()
            .find(|(_, m)| m.role != "user" && m.role != "assistant")
        {
            let index = i + messages.len() - rest.len();
            return Err(Error::InvalidArgument(format!(
                "message {index} has role {:?}: only the first message may be \"system\", the others must be \
                 \"user\" or \"assistant\"",
                m.role
            )));
        }
        let skipped = messages.len() - rest.len();
        self.turns = rest
            .iter()
            .zip(media.into_iter().skip(skipped))
            .map(|(m, media)| Turn {
                message: m.clone(),
                media,
            })
            .collect();
        self.forget_cache()
    }

    /// Adds `text`, with the pending images, as the user's message and generates the reply, streamed through
    /// `on_text`. On error the conversation is as it was before the call (the images stay pending).
    pub fn send(&mut self, text: &str, on_text: impl FnMut(&str)) -> Result<TurnReport> {
        self.turns.push(Turn {
            message: Message::user(text),
            media: std::mem::take(&mut self.pending),
        });
        let result = self.respond(on_text);
        if result.is_err() {
            if let Some(turn) = self.turns.pop() {
                self.pending = turn.media;
            }
        }
        result
    }

    /// Generates the assistant's reply to the conversation, whose last message must be the user's, and appends it.
    /// A reply cut short (Ctrl-C, `max_new_tokens`) is kept as it is.
    pub fn respond(&mut self, mut on_text: impl FnMut(&str)) -> Result<TurnReport> {
        match self.turns.last() {
            Some(t) if t.message.role == "user" => {}
            Some(t) => {
                return Err(Error::InvalidArgument(format!(
                    "the last message is from {:?}; the conversation must end with a user message to be answered",
                    t.message.role
                )))
            }
            None => {
                return Err(Error::InvalidArgument(
                    "the conversation has no user message".into(),
                ))
            }
        }
        // Leave out the oldest exchanges while the conversation and the reply budget do not fit (removed from the
        // history only once the reply succeeded).
        let mut work = fit::RenderWork::default();
        let (dropped, text, ids) = self.fit_to_context(&mut work)?;

        let mut debug = Vec::new();
        let (feed, reprefilled) = self.what_to_feed(&text, ids, dropped, &mut debug)?;
        let reused = self.cached_ids.len();
        let blocks = self.model.image_blocks();
        let new_images = render::uncached_images(&self.turns[dropped..], &self.cached_ids, blocks);
        let clip_blocks = self.model.audio_blocks();
        let new_clips =
            render::uncached_clips(&self.turns[dropped..], &self.cached_ids, clip_blocks);

        let result = self.model.continue_turn(
            &mut self.cache,
            &feed,
            &new_images,
            &new_clips,
            &self.stop_ids,
            &self.options,
            &mut on_text,
        );
        let output = match result {
            Ok(out) => out,
            Err(e) => {
                // The cache may hold part of the run.
                self.forget_cache()?;
                return Err(e);
            }
        };

        // The cache now holds `feed` and every generated token but the last.
        let fed = &output.token_ids[..output.token_ids.len().saturating_sub(1)];
        self.cached_ids.extend_from_slice(&feed);
        self.cached_ids.extend_from_slice(fed);
        self.cached_text = text;
        self.cached_text
            .push_str(&self.model.text().tokenizer.decode(fed, false)?);
        debug_assert_eq!(self.cached_ids.len(), self.cache.len());
        self.turns.drain(..dropped);
        self.turns.push(Turn {
            message: Message::assistant(output.text.clone()),
            media: Vec::new(),
        });
        Ok(TurnReport {
            prefilled_tokens: feed.len(),
            reused_tokens: reused,
            dropped_messages: dropped,
            reprefilled,
            debug,
            render_work: work,
            output,
        })
    }

    pub(super) fn context_limit(&self) -> usize {
        let positions = self.model.text().max_positions;
        self.options
            .max_context
            .map_or(positions, |c| c.min(positions))
    }

    pub(super) fn forget_cache(&mut self) -> Result<()> {
        self.cache.reset()?;
        self.cached_ids.clear();
        self.cached_text.clear();
        Ok(())
    }
}
