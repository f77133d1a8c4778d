//! What the scheduler needs of a model: [`Engine`], implemented by the text [`Generator`] (here) and the multimodal
//! [`VisionGenerator`](crate::VisionGenerator) ([`super::vision`]), so that one scheduler batches both.
//!
//! A request's prompt is built by the code `gemma generate` and `gemma chat` use ([`Served::encode`]): a raw prompt
//! as `gemma generate` encodes it; chat messages through the model's [`Conversation`], so a system message goes where
//! `gemma chat` puts it (folded into the first user message when the template refuses a system role) and images
//! (and Gemma 3n's clips) go with their user message, in the order of its parts.

use ndarray::{Array2, Array3};

use super::api::{Prompt, Upload};
use crate::attachments::EncodedAudio;
use crate::chat_template::Message;
use crate::conversation::{ChatModel, ChatOptions, Conversation, Media};
use crate::decoder::{Decoder, TokenInput};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::kv_cache::KvCache;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use crate::vision::EncodedImage;

/// A model the scheduler can serve: prefill one request alone, then decode one token per row in batched steps.
pub trait Engine: ChatModel {
    /// The decoder of the steps (its manifest says how its caches are laid out).
    fn decoder(&mut self) -> &mut Decoder;
    /// Added to every position: PaliGemma counts from 1.
    fn first_position(&self) -> i64 {
        0
    }
    /// A second copy of the tokenizer, for the text streams (which borrow it while the model runs).
    fn stream_tokenizer(&self) -> Result<Tokenizer>;
    /// The tokens of a raw prompt (`/v1/completions`), as `gemma generate` without `--chat` makes them.
    fn raw_prompt(&self, text: &str) -> Result<Vec<u32>>;
    /// Decodes and encodes the bytes of an image; a text model refuses it.
    fn image(&mut self, bytes: &[u8]) -> Result<Media>;
    /// Decodes and encodes the bytes of a WAV file; only Gemma 3n exports with audio take it.
    fn audio(&mut self, _bytes: &[u8]) -> Result<Media> {
        Err(Error::InvalidArgument(
            "this model takes no audio (only Gemma 3n exports with their audio tower do)".into(),
        ))
    }
    /// Without a chat template: the tokens and stop tokens of one user message `text` with `images`, as
    /// `gemma-vision describe` prompts (PaliGemma's layout); a text model refuses it.
    fn untemplated(&self, text: &str, images: &[&EncodedImage]) -> Result<(Vec<u32>, Vec<u32>)>;
    /// The image blocks `[blocks, tokens, hidden]` of `images`, in order; `None` on a text model.
    fn features(&self, images: &[&EncodedImage]) -> Result<Option<Array3<f32>>>;
    /// Feeds the prompt (its image soft tokens take its features) into the empty batch-1 `cache`, then samples the
    /// token after it from the last position's logits.
    fn prefill(
        &mut self,
        prompt: &Encoded,
        cache: &mut KvCache,
        sampler: &mut Sampler,
    ) -> Result<u32>;
    /// The inputs of a batched step on `tokens`, one generated token per row.
    fn step_tokens(&mut self, tokens: &[u32]) -> Result<StepTokens>;
}

/// A batched step's token inputs, owned.
pub enum StepTokens {
    /// `input_ids` `[n, 1]`.
    Ids(Array2<i64>),
    /// `inputs_embeds` `[n, 1, hidden]` and `token_type_ids` `[n, 1]`.
    Embeds {
        embeds: Array3<f32>,
        types: Array2<i64>,
    },
}

impl StepTokens {
    pub fn view(&self) -> TokenInput<'_> {
        match self {
            StepTokens::Ids(ids) => TokenInput::Ids(ids.view()),
            StepTokens::Embeds { embeds, types } => TokenInput::Embeds {
                embeds: embeds.view(),
                token_type_ids: types.view(),
            },
        }
    }
}

/// A request's prompt, ready to prefill.
pub struct Encoded {
    pub ids: Vec<u32>,
    /// The chat stop tokens for messages, the model's own for a raw prompt.
    pub stop_ids: Vec<u32>,
    /// The image blocks the prompt's soft tokens take (multimodal models).
    pub features: Option<Array3<f32>>,
    /// The clips whose rows the prompt's audio soft tokens take, in order (Gemma 3n).
    pub clips: Vec<EncodedAudio>,
}

/// The model, owned by the [`Conversation`] that renders its chat requests when it has a chat template.
pub enum Served<M: Engine> {
    Chat(Box<Conversation<M>>),
    Plain(M),
}

impl<M: Engine> Served<M> {
    pub fn new(model: M) -> Result<Served<M>> {
        if model.text().chat_template.is_none() {
            return Ok(Served::Plain(model));
        }
        Ok(Served::Chat(Box::new(Conversation::new(
            model,
            ChatOptions::default(),
        )?)))
    }

    pub fn model(&mut self) -> &mut M {
        match self {
            Served::Chat(c) => c.generator_mut(),
            Served::Plain(m) => m,
        }
    }

    pub fn model_ref(&self) -> &M {
        match self {
            Served::Chat(c) => c.generator(),
            Served::Plain(m) => m,
        }
    }

    /// The tokens, stop tokens, image blocks and clips of `prompt`. Chat messages are rendered by the conversation:
    /// `uploads[i]` go with message `i`, and a system message is folded into the first user message when the
    /// template has no system role.
    pub fn encode(&mut self, prompt: &Prompt) -> Result<Encoded> {
        let (messages, uploads) = match prompt {
            Prompt::Raw(text) => {
                let model = self.model_ref();
                return Ok(Encoded {
                    ids: model.raw_prompt(text)?,
                    stop_ids: model.text().stop_ids.clone(),
                    features: model.features(&[])?,
                    clips: Vec::new(),
                });
            }
            Prompt::Chat { messages, uploads } => (messages, uploads),
        };
        let conv = match self {
            Served::Chat(c) => c,
            Served::Plain(m) => return untemplated(m, messages, uploads),
        };
        let model = conv.generator_mut();
        let media = uploads
            .iter()
            .map(|own| {
                own.iter()
                    .map(|u| match u {
                        Upload::Image(b) => model.image(b),
                        Upload::Audio(b) => model.audio(b),
                    })
                    .collect()
            })
            .collect::<Result<Vec<Vec<Media>>>>()?;
        conv.reset()?;
        conv.options_mut().system = None;
        conv.set_messages_with_media(messages, media)?;
        let (ids, images) = conv.prompt()?;
        let clips = conv.prompt_clips().into_iter().cloned().collect();
        let model = conv.generator();
        Ok(Encoded {
            features: model.features(&images)?,
            clips,
            ids,
            stop_ids: model.text().chat_stop_token_ids(),
        })
    }
}

/// A chat request to a model without a chat template: one user message, prompted as `gemma-vision describe` does.
fn untemplated<M: Engine>(
    model: &mut M,
    messages: &[Message],
    uploads: &[Vec<Upload>],
) -> Result<Encoded> {
    let ([message], [own_uploads]) = (messages, uploads) else {
        return Err(model.no_chat_template());
    };
    if message.role != "user" {
        return Err(model.no_chat_template());
    }
    let mut own = Vec::with_capacity(own_uploads.len());
    for upload in own_uploads {
        let Upload::Image(b) = upload else {
            let why = "this model takes no audio (only Gemma 3n exports with their audio tower do)";
            return Err(Error::InvalidArgument(why.into()));
        };
        let Media::Image(image) = model.image(b)? else {
            return Err(Error::InvalidArgument(
                "gemma serve takes images, not audio".into(),
            ));
        };
        own.push(image);
    }
    let refs: Vec<&EncodedImage> = own.iter().collect();
    let (ids, stop_ids) = model.untemplated(&message.content, &refs)?;
    Ok(Encoded {
        features: model.features(&refs)?,
        clips: Vec::new(),
        ids,
        stop_ids,
    })
}

impl Engine for Generator {
    fn decoder(&mut self) -> &mut Decoder {
        Generator::decoder(self)
    }

    fn stream_tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_dir(self.decoder_dir())
    }

    fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_prompt(text)
    }

    fn image(&mut self, _bytes: &[u8]) -> Result<Media> {
        Err(Error::NoVision {
            dir: self.decoder_dir().to_path_buf(),
        })
    }

    fn untemplated(&self, _: &str, _: &[&EncodedImage]) -> Result<(Vec<u32>, Vec<u32>)> {
        Err(self.no_chat_template())
    }

    fn features(&self, _images: &[&EncodedImage]) -> Result<Option<Array3<f32>>> {
        Ok(None)
    }

    fn prefill(&mut self, p: &Encoded, cache: &mut KvCache, s: &mut Sampler) -> Result<u32> {
        Generator::decoder(self).forward_tokens_with(&p.ids, cache, |row| s.sample(row))
    }

    fn step_tokens(&mut self, tokens: &[u32]) -> Result<StepTokens> {
        Ok(StepTokens::Ids(Array2::from_shape_fn(
            (tokens.len(), 1),
            |(b, _)| tokens[b] as i64,
        )))
    }
}
