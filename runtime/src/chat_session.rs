//! A multi-turn conversation that keeps its KV cache between turns, so each turn prefills only what is new: the end
//! of the last reply, the user's message and the model-turn header.
//!
//! Every turn renders the model's own chat template over the whole conversation and checks that the result starts
//! with what the cache already holds:
//!
//! 1. the rendered conversation's tokens start with the cached tokens → feed only the rest (the usual case);
//! 2. else its text starts with the cached text (the model split a word into tokens differently from how the
//!    tokenizer would) → feed the tokens of the remaining text; the cache still spells exactly the rendered text;
//! 3. else (the template re-rendered the history differently, e.g. it trimmed whitespace the model wrote at the end of
//!    its reply) → empty the cache and prefill the whole conversation, saying so in [`TurnReport::debug`].
//!
//! The reply may use at most `max_new_tokens`; before a turn starts, the conversation plus that budget must fit in
//! the context ([`ChatOptions::max_context`], at most the model's positions). When it does not, the oldest exchanges
//! are dropped and the rest is prefilled once ([`TurnReport::dropped_messages`]), rather than failing mid-reply.
//!
//! System prompts: Gemma 3's template folds a system message into the first user turn itself. Gemma 1 and 2
//! templates refuse it (`raise_exception('System role not supported')`); then, unless
//! [`ChatOptions::fold_system`] is off, the session does what Gemma 3's template does: the system text and a blank
//! line go before the first user message ([`ChatSession::system_folded`] says so).

use crate::chat_template::Message;
use crate::error::{Error, Result};
use crate::generate::{with_single_bos, GenerateOptions, GenerationOutput, Generator};
use crate::kv_cache::KvCache;

/// How a chat session generates and what it may keep.
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
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            generate: GenerateOptions::default(),
            system: None,
            fold_system: true,
            max_context: None,
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
}

pub struct ChatSession {
    generator: Generator,
    options: ChatOptions,
    /// User and assistant messages (the system prompt is kept apart in `options.system`).
    history: Vec<Message>,
    /// The template refuses a system role: the system prompt is folded into the first user message.
    fold: bool,
    stop_ids: Vec<u32>,
    cache: KvCache,
    /// The tokens in `cache`, and the text they spell.
    cached_ids: Vec<u32>,
    cached_text: String,
}

impl ChatSession {
    /// Starts an empty conversation. Fails if the export has no chat template, if `max_new_tokens` is 0, or if the
    /// template refuses the system prompt and `fold_system` is off.
    pub fn new(generator: Generator, options: ChatOptions) -> Result<ChatSession> {
        if options.generate.max_new_tokens == 0 {
            return Err(Error::InvalidArgument(
                "a chat reply needs max_new_tokens ≥ 1".into(),
            ));
        }
        if generator.chat_template().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja), so \
                 it cannot chat; use `gemma generate` with a plain prompt",
                generator.decoder_dir().display()
            )));
        }
        let fold = ChatSession::system_rule(&generator, &options)?;
        let stop_ids = generator.chat_stop_token_ids();
        let cache = generator.new_cache()?;
        Ok(ChatSession {
            generator,
            options,
            history: Vec::new(),
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

    /// The user and assistant messages so far (without the system prompt).
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// The tokens the KV cache holds.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached_ids
    }

    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The generator, e.g. for a one-off generation beside the conversation (it has its own cache).
    pub fn generator_mut(&mut self) -> &mut Generator {
        &mut self.generator
    }

    /// The options, e.g. to change sampling between turns.
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        &mut self.options
    }

    /// Forgets the conversation (the system prompt stays).
    pub fn reset(&mut self) -> Result<()> {
        self.history.clear();
        self.forget_cache()
    }

    /// Replaces the conversation with `messages` (a leading `system` message replaces the system prompt), to be
    /// answered by [`respond`](Self::respond). Roles must be `user` / `assistant` after the optional system message;
    /// the template checks their order.
    pub fn set_messages(&mut self, messages: &[Message]) -> Result<()> {
        let mut rest = messages;
        if let Some(first) = messages.first().filter(|m| m.role == "system") {
            let system_options = ChatOptions {
                system: Some(first.content.clone()),
                ..self.options.clone()
            };
            // Decide folding again for this system prompt (same rule as `new`).
            self.fold = ChatSession::system_rule(&self.generator, &system_options)?;
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
        self.history = rest.to_vec();
        self.forget_cache()
    }

    /// Whether `options.system` must be folded: the template raises an exception for it but renders the same
    /// conversation without it. Fails instead when `fold_system` is off.
    fn system_rule(generator: &Generator, options: &ChatOptions) -> Result<bool> {
        let (Some(template), Some(system)) = (generator.chat_template(), &options.system) else {
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

    /// Adds `text` as the user's message and generates the reply, streamed through `on_text`. On error the
    /// conversation is as it was before the call.
    pub fn send(&mut self, text: &str, on_text: impl FnMut(&str)) -> Result<TurnReport> {
        self.history.push(Message::user(text));
        let result = self.respond(on_text);
        if result.is_err() {
            self.history.pop();
        }
        result
    }

    /// Generates the assistant's reply to the conversation, whose last message must be the user's, and appends it.
    /// A reply cut short (Ctrl-C, `max_new_tokens`) is kept as it is.
    pub fn respond(&mut self, on_text: impl FnMut(&str)) -> Result<TurnReport> {
        match self.history.last() {
            Some(m) if m.role == "user" => {}
            Some(m) => {
                return Err(Error::InvalidArgument(format!(
                    "the last message is from {:?}; the conversation must end with a user message to be answered",
                    m.role
                )))
            }
            None => {
                return Err(Error::InvalidArgument(
                    "the conversation has no user message".into(),
                ))
            }
        }
        let mut debug = Vec::new();
        let limit = self.context_limit();
        let max_new = self.options.generate.max_new_tokens;

        // Render; while the conversation and the reply budget do not fit, leave out the oldest exchange (removed
        // from the history only once the reply succeeded).
        let mut dropped = 0;
        let (text, ids) = loop {
            let kept = &self.history[dropped..];
            let (text, ids) = self.render(kept)?;
            if ids.len().saturating_add(max_new) <= limit {
                break (text, ids);
            }
            if kept.len() <= 2 {
                return Err(Error::PromptTooLong {
                    prompt_tokens: ids.len(),
                    max_new_tokens: max_new,
                    max_positions: limit,
                });
            }
            dropped += if kept[1].role == "assistant" { 2 } else { 1 };
        };

        // What of it the cache already holds.
        let cached = self.cached_ids.len();
        let mut reprefilled = false;
        let feed: Vec<u32> = if dropped > 0 {
            debug.push(format!(
                "dropped the {dropped} oldest message(s) to fit {} + {max_new} tokens in the context of {limit}; \
                 prefilling the remaining {} tokens",
                ids.len(),
                ids.len()
            ));
            reprefilled = cached > 0;
            self.forget_cache()?;
            ids
        } else if cached == 0 {
            ids
        } else if ids.starts_with(&self.cached_ids) {
            debug.push(format!(
                "reusing {cached} cached tokens, prefilling {} new",
                ids.len() - cached
            ));
            ids[cached..].to_vec()
        } else if let Some(rest) = text
            .strip_prefix(self.cached_text.as_str())
            .filter(|rest| !rest.is_empty())
        {
            let rest = self.generator.tokenizer().encode(rest, false)?;
            if cached + rest.len() + max_new <= limit {
                debug.push(format!(
                    "the cached reply is tokenized differently from the re-rendered text (same text); reusing \
                     {cached} cached tokens, prefilling {} new",
                    rest.len()
                ));
                rest
            } else {
                debug.push(format!(
                    "the cached reply is tokenized differently from the re-rendered text, and continuing from the \
                     cache would not fit the context; prefilling the whole conversation ({} tokens) again",
                    ids.len()
                ));
                reprefilled = true;
                self.forget_cache()?;
                ids
            }
        } else {
            let at = common_prefix_len(&self.cached_text, &text);
            debug.push(format!(
                "the template re-rendered the history differently from what the cache holds (first difference at \
                 byte {at}: cached {:?}, rendered {:?}); prefilling the whole conversation ({} tokens) again",
                snippet(&self.cached_text, at),
                snippet(&text, at),
                ids.len()
            ));
            reprefilled = true;
            self.forget_cache()?;
            ids
        };
        let reused = self.cached_ids.len();

        let result = self.generator.continue_generation(
            &mut self.cache,
            &feed,
            &self.stop_ids,
            &self.options.generate,
            on_text,
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
            .push_str(&self.generator.tokenizer().decode(fed, false)?);
        debug_assert_eq!(self.cached_ids.len(), self.cache.len());
        self.history.drain(..dropped);
        self.history.push(Message::assistant(output.text.clone()));
        Ok(TurnReport {
            prefilled_tokens: feed.len(),
            reused_tokens: reused,
            dropped_messages: dropped,
            reprefilled,
            debug,
            output,
        })
    }

    /// The conversation as the template sees it (system prompt first, or folded into the first user message).
    pub fn conversation(&self, history: &[Message]) -> Vec<Message> {
        let mut messages = Vec::with_capacity(history.len() + 1);
        match (&self.options.system, self.fold) {
            (Some(system), false) => {
                messages.push(Message::system(system.as_str()));
                messages.extend_from_slice(history);
            }
            (Some(system), true) => {
                messages.extend_from_slice(history);
                if let Some(first) = messages.iter_mut().find(|m| m.role == "user") {
                    first.content = format!("{system}\n\n{}", first.content);
                }
            }
            (None, _) => messages.extend_from_slice(history),
        }
        messages
    }

    /// The rendered text (with the generation prompt) and its tokens (one BOS, no special tokens added).
    fn render(&self, history: &[Message]) -> Result<(String, Vec<u32>)> {
        let template = self
            .generator
            .chat_template()
            .expect("checked in ChatSession::new");
        let text = template.render(&self.conversation(history), true)?;
        let ids = with_single_bos(
            self.generator.tokenizer().encode(&text, false)?,
            self.generator.bos_token_id(),
        );
        Ok((text, ids))
    }

    fn context_limit(&self) -> usize {
        let positions = self.generator.max_positions();
        self.options
            .max_context
            .map_or(positions, |c| c.min(positions))
    }

    fn forget_cache(&mut self) -> Result<()> {
        self.cache.reset()?;
        self.cached_ids.clear();
        self.cached_text.clear();
        Ok(())
    }
}

/// Length in bytes of the common prefix of `a` and `b`, on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map(|((i, _), _)| i)
        .unwrap_or(a.len().min(b.len()))
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
