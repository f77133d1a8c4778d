//! What a turn of a [`Conversation`] feeds: the conversation rendered by the chat template and tokenized, and how
//! much of it the KV cache already holds (the three cases of the parent module's docs).
use super::{ChatModel, ChatOptions, Conversation, Media, Turn};
use crate::attachments::EncodedAudio;
use crate::chat_template::Message;
use crate::error::{Error, Result};
use crate::model_text::ModelText;
use crate::tokenizer::common_prefix_len;
use crate::vision::{processor::user_message, EncodedImage};

/// Whether `options.system` must be folded: the template raises an exception for it but renders the same
/// conversation without it. Fails instead when `fold_system` is off.
pub(super) fn system_rule(text: &ModelText, options: &ChatOptions) -> Result<bool> {
    let (Some(template), Some(system)) = (&text.chat_template, &options.system) else {
        return Ok(false);
    };
    let probe = [Message::system(system.as_str()), Message::user("?")];
    match template.render(&probe, true) {
        Err(Error::TemplateException(msg)) if template.render(&probe[1..], true).is_ok() => {
            if options.fold_system {
                Ok(true)
            } else {
                Err(Error::TemplateException(format!(
                    "{msg} (this model's chat template has no system role; allow folding the system prompt \
                     into the first user message, or leave the system prompt out)"
                )))
            }
        }
        _ => Ok(false),
    }
}

/// The images of `turns` whose blocks the cache (holding `cached_ids`) does not hold yet, in order: the cache holds
/// whole image blocks (1 + crops per image, `per` soft tokens `soft` each) of the first images only.
pub(super) fn uncached_images<'a>(
    turns: &'a [Turn],
    cached_ids: &[u32],
    blocks: Option<(u32, usize)>,
) -> Vec<&'a EncodedImage> {
    let images: Vec<&EncodedImage> = turns.iter().flat_map(Turn::images).collect();
    let Some((soft, per)) = blocks else {
        return images;
    };
    let mut cached_blocks = cached_ids.iter().filter(|&&t| t == soft).count() / per;
    let mut cached = 0;
    while cached_blocks > 0 && cached < images.len() {
        cached_blocks = cached_blocks.saturating_sub(1 + images[cached].num_crops);
        cached += 1;
    }
    images[cached..].to_vec()
}

/// The clips of `turns` whose audio blocks (`per` soft tokens `soft` each) the cache does not hold yet, in order.
pub(super) fn uncached_clips<'a>(
    turns: &'a [Turn],
    cached_ids: &[u32],
    blocks: Option<(u32, usize)>,
) -> Vec<&'a EncodedAudio> {
    let clips: Vec<&EncodedAudio> = turns.iter().flat_map(Turn::clips).collect();
    let cached = blocks.map_or(0, |(soft, per)| {
        cached_ids.iter().filter(|&&t| t == soft).count() / per.max(1)
    });
    clips[cached.min(clips.len())..].to_vec()
}

/// A user message as a list of content items: its media in order (`{"type": "image"}`, `{"type": "audio"}`), then
/// its text (left out when empty).
fn media_message(media: &[Media], text: &str) -> serde_json::Value {
    if media.iter().all(|m| matches!(m, Media::Image(_))) {
        return user_message(media.len(), text);
    }
    let mut content: Vec<serde_json::Value> = media
        .iter()
        .map(|m| match m {
            Media::Image(_) => serde_json::json!({"type": "image"}),
            Media::Audio(_) => serde_json::json!({"type": "audio"}),
        })
        .collect();
    if !text.is_empty() {
        content.push(serde_json::json!({"type": "text", "text": text}));
    }
    serde_json::json!({"role": "user", "content": content})
}

impl<M: ChatModel> Conversation<M> {
    /// The template's messages: the system prompt first (or folded into the first user message), then `turns`; on
    /// a model that sees images a user message is a list of items, its images then its text.
    fn template_messages(&self, turns: &[Turn]) -> serde_json::Value {
        let mut out = Vec::with_capacity(turns.len() + 1);
        let mut fold = None;
        match (&self.options.system, self.fold) {
            (Some(system), false) => {
                out.push(serde_json::json!({"role": "system", "content": system}))
            }
            (Some(system), true) => fold = Some(system.as_str()),
            (None, _) => {}
        }
        for turn in turns {
            let Message { role, content } = &turn.message;
            let content = match fold.filter(|_| role == "user") {
                Some(system) => {
                    fold = None;
                    format!("{system}\n\n{content}")
                }
                None => content.clone(),
            };
            out.push(if (M::SEES_IMAGES || M::HEARS_AUDIO) && role == "user" {
                media_message(&turn.media, &content)
            } else {
                serde_json::json!({"role": role, "content": content})
            });
        }
        serde_json::Value::Array(out)
    }

    /// The conversation as it stands, rendered for an empty cache without generating: its tokens and the images
    /// whose blocks they hold, in order. `gemma serve` prefills and decodes it in its own batch; unlike
    /// [`respond`](Self::respond) nothing is left out to fit the context, and the last message may be any role.
    pub fn prompt(&self) -> Result<(Vec<u32>, Vec<&EncodedImage>)> {
        let (_, ids) = self.render(&self.turns)?;
        Ok((ids, self.turns.iter().flat_map(Turn::images).collect()))
    }

    /// The clips of the conversation as it stands, in order: those whose blocks [`prompt`](Self::prompt)'s tokens
    /// hold.
    pub fn prompt_clips(&self) -> Vec<&EncodedAudio> {
        self.turns.iter().flat_map(Turn::clips).collect()
    }

    /// The rendered text (with the generation prompt) and its tokens (one BOS, no special tokens added, images
    /// expanded to their blocks).
    pub(super) fn render(&self, turns: &[Turn]) -> Result<(String, Vec<u32>)> {
        let template = (self.model.text().chat_template.as_ref())
            .ok_or_else(|| self.model.no_chat_template())?;
        let text = template.render_value(&self.template_messages(turns), true)?;
        let crops: Vec<usize> = turns
            .iter()
            .flat_map(Turn::images)
            .map(|i| i.num_crops)
            .collect();
        let ids = self.model.encode_rendered(&text, &crops)?;
        Ok((text, ids))
    }

    /// What to feed for the rendered conversation `text` / `ids` (after dropping `dropped` messages) and whether the
    /// cache was emptied although it held part of it; explains itself in `debug`.
    pub(super) fn what_to_feed(
        &mut self,
        text: &str,
        ids: Vec<u32>,
        dropped: usize,
        debug: &mut Vec<String>,
    ) -> Result<(Vec<u32>, bool)> {
        let cached = self.cached_ids.len();
        let limit = self.context_limit();
        let max_new = self.options.generate.max_new_tokens;
        if dropped > 0 {
            debug.push(format!(
                "dropped the {dropped} oldest message(s) to fit {} + {max_new} tokens in the context of {limit}; \
                 prefilling the remaining {} tokens",
                ids.len(),
                ids.len()
            ));
            self.forget_cache()?;
            return Ok((ids, cached > 0));
        }
        if cached == 0 {
            return Ok((ids, false));
        }
        if ids.starts_with(&self.cached_ids) {
            debug.push(format!(
                "reusing {cached} cached tokens, prefilling {} new",
                ids.len() - cached
            ));
            return Ok((ids[cached..].to_vec(), false));
        }
        // The rest of the text may be tokenized on its own only when it holds no new image or clip.
        let no_new_image =
            uncached_images(&self.turns, &self.cached_ids, self.model.image_blocks()).is_empty()
                && uncached_clips(&self.turns, &self.cached_ids, self.model.audio_blocks())
                    .is_empty();
        if let Some(rest) = text
            .strip_prefix(self.cached_text.as_str())
            .filter(|rest| !rest.is_empty() && no_new_image)
        {
            let rest = self.model.text().tokenizer.encode(rest, false)?;
            if cached + rest.len() + max_new <= limit {
                debug.push(format!(
                    "the cached reply is tokenized differently from the re-rendered text (same text); reusing \
                     {cached} cached tokens, prefilling {} new",
                    rest.len()
                ));
                return Ok((rest, false));
            }
            debug.push(format!(
                "the cached reply is tokenized differently from the re-rendered text, and continuing from the \
                 cache would not fit the context; prefilling the whole conversation ({} tokens) again",
                ids.len()
            ));
        } else {
            let at = common_prefix_len(&self.cached_text, text);
            debug.push(format!(
                "the template re-rendered the history differently from what the cache holds (first difference at \
                 byte {at}: cached {:?}, rendered {:?}); prefilling the whole conversation ({} tokens) again",
                snippet(&self.cached_text, at),
                snippet(text, at),
                ids.len()
            ));
        }
        self.forget_cache()?;
        Ok((ids, true))
    }
}

/// Up to 24 characters of `s` from byte `at` (a char boundary), for debug lines.
fn snippet(s: &str, at: usize) -> String {
    s[at..].chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_snippet() {
        assert_eq!(common_prefix_len("héllo", "hélp"), 4);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
        assert_eq!(snippet("abc\ndef", 3), "\ndef");
    }
}
