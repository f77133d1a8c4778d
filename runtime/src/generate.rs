//! Text generation with the KV cache: encode (one BOS), check the length, prefill the prompt in one pass, then one
//! token per step until a stop token or `max_new_tokens`, streaming the decoded text through a callback.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::chat::{ChatTemplate, Message};
use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::manifest;
use crate::ort_env::RuntimeOptions;
use crate::sampling::{Sampler, SamplingConfig};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// When set (e.g. by a Ctrl-C handler), generation stops before the next step.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 128,
            sampling: SamplingConfig::greedy(),
            stop: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop (eos) token was generated; it is the last of `token_ids`.
    Eos,
    MaxNewTokens,
    Interrupted,
}

#[derive(Clone, Debug)]
pub struct GenerationOutput {
    /// The generated tokens, including the stop token when one ended the run (as transformers' `generate`).
    pub token_ids: Vec<u32>,
    /// The generated text (special tokens skipped), equal to the concatenation of the streamed deltas.
    pub text: String,
    pub prompt_tokens: usize,
    pub stop_reason: StopReason,
    /// Seconds of the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Seconds of the decode steps (forward pass, sampling and detokenization of every token after the first).
    pub decode_seconds: f64,
    /// Prompt tokens / prefill seconds.
    pub prefill_tokens_per_s: f64,
    /// Decode steps / decode seconds (0 when fewer than two tokens were generated).
    pub decode_tokens_per_s: f64,
}

pub struct Generator {
    decoder: Decoder,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
    stop_ids: Vec<u32>,
}

impl Generator {
    /// Opens an export folder: decoder session, tokenizer, chat template (if any), stop tokens (manifest ∪
    /// generation_config.json).
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Generator> {
        let dir = dir.as_ref();
        let decoder = Decoder::open(dir, options)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let chat_template = ChatTemplate::from_dir(dir)?;
        let stop_ids = manifest::stop_token_ids(dir, decoder.manifest())?;
        Ok(Generator {
            decoder,
            tokenizer,
            chat_template,
            stop_ids,
        })
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn bos_token_id(&self) -> u32 {
        self.decoder.manifest().bos_token_id
    }

    /// Token ids of a plain prompt: the tokenizer's post-processor adds BOS; the result starts with exactly one BOS
    /// whatever the tokenizer or the prompt text did.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(with_single_bos(
            self.tokenizer.encode(prompt, true)?,
            self.bos_token_id(),
        ))
    }

    /// Token ids of a conversation rendered by the chat template with the generation prompt. The rendered text holds
    /// `<bos>` already, so it is encoded without special tokens (no double BOS).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja); \
                 use a plain prompt",
                self.decoder.dir().display()
            ))
        })?;
        let text = template.render(messages, true)?;
        Ok(with_single_bos(
            self.tokenizer.encode(&text, false)?,
            self.bos_token_id(),
        ))
    }

    pub fn generate(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        let ids = self.encode_prompt(prompt)?;
        self.generate_from_ids(&ids, options, on_text)
    }

    pub fn generate_chat(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        let ids = self.encode_chat(messages)?;
        self.generate_from_ids(&ids, options, on_text)
    }

    /// Generates after `prompt_ids` (used as given: no BOS is added). `on_text` receives each new piece of
    /// complete UTF-8 text as soon as it is known.
    pub fn generate_from_ids(
        &mut self,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        if prompt_ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt has no tokens".into()));
        }
        let max_positions = self.decoder.manifest().max_position_embeddings;
        if prompt_ids.len() + options.max_new_tokens > max_positions {
            return Err(Error::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                max_new_tokens: options.max_new_tokens,
                max_positions,
            });
        }
        let vocab = self.decoder.vocab_size();
        if let Some(&bad) = prompt_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "prompt token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let mut out = GenerationOutput {
            token_ids: Vec::new(),
            text: String::new(),
            prompt_tokens: prompt_ids.len(),
            stop_reason: StopReason::MaxNewTokens,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            prefill_tokens_per_s: 0.0,
            decode_tokens_per_s: 0.0,
        };
        if options.max_new_tokens == 0 {
            return Ok(out);
        }
        let interrupted = || {
            options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        };

        let mut cache = self.decoder.new_cache(1)?;
        let start = Instant::now();
        let mut logits = self.decoder.forward_tokens(prompt_ids, &mut cache)?;
        out.prefill_seconds = start.elapsed().as_secs_f64();

        let mut stream = self.tokenizer.stream(true);
        let decode_start = Instant::now();
        let mut decode_steps = 0usize;
        loop {
            let token = sampler.sample(&logits);
            out.token_ids.push(token);
            if self.stop_ids.contains(&token) {
                out.stop_reason = StopReason::Eos;
                break;
            }
            if let Some(delta) = stream.push(token)? {
                out.text.push_str(&delta);
                on_text(&delta);
            }
            if out.token_ids.len() >= options.max_new_tokens {
                break;
            }
            if interrupted() {
                out.stop_reason = StopReason::Interrupted;
                break;
            }
            logits = self.decoder.forward_tokens(&[token], &mut cache)?;
            decode_steps += 1;
        }
        if let Some(rest) = stream.finish()? {
            out.text.push_str(&rest);
            on_text(&rest);
        }
        out.decode_seconds = if decode_steps > 0 {
            decode_start.elapsed().as_secs_f64()
        } else {
            0.0
        };
        out.prefill_tokens_per_s = rate(prompt_ids.len(), out.prefill_seconds);
        out.decode_tokens_per_s = rate(decode_steps, out.decode_seconds);
        Ok(out)
    }
}

fn rate(count: usize, seconds: f64) -> f64 {
    if count == 0 || seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// `ids` with exactly one leading `bos` (added if missing, extra leading copies removed).
pub fn with_single_bos(mut ids: Vec<u32>, bos: u32) -> Vec<u32> {
    let leading = ids.iter().take_while(|&&t| t == bos).count();
    match leading {
        0 => ids.insert(0, bos),
        1 => {}
        n => {
            ids.drain(..n - 1);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_bos() {
        assert_eq!(with_single_bos(vec![5, 6], 2), vec![2, 5, 6]);
        assert_eq!(with_single_bos(vec![2, 5], 2), vec![2, 5]);
        assert_eq!(with_single_bos(vec![2, 2, 2, 5], 2), vec![2, 5]);
        assert_eq!(with_single_bos(vec![], 2), vec![2]);
    }
}
