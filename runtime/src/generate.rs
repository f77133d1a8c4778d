//! Text generation with the KV cache: encode (one BOS), check the length, prefill the prompt in one pass, then one
//! token per step until a stop token or `max_new_tokens`, streaming the decoded text through a callback.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::chat_template::{ChatTemplate, Message};
use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::fim::FimTokens;
use crate::kv_cache::KvCache;
use crate::model_text::ModelText;
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
    text: ModelText,
}

impl Generator {
    /// Opens an export folder: decoder session, tokenizer, chat template (if any), stop tokens (manifest ∪
    /// generation_config.json).
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Generator> {
        let dir = dir.as_ref();
        let decoder = Decoder::open(dir, options)?;
        let text = ModelText::open(Tokenizer::from_dir(dir)?, dir, decoder.manifest())?;
        Ok(Generator { decoder, text })
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// The export's gemma-onnx.json.
    pub fn manifest(&self) -> &crate::manifest::Manifest {
        self.decoder.manifest()
    }

    /// The tokenizer, chat template, stop tokens, BOS and positions.
    pub fn text(&self) -> &ModelText {
        &self.text
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.text.tokenizer
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.text.chat_template.as_ref()
    }

    pub fn stop_token_ids(&self) -> &[u32] {
        &self.text.stop_ids
    }

    /// The stop tokens of chat mode ([`ModelText::chat_stop_token_ids`]).
    pub fn chat_stop_token_ids(&self) -> Vec<u32> {
        self.text.chat_stop_token_ids()
    }

    /// The fill-in-the-middle prompt of CodeGemma, `<bos><|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>`,
    /// and the tokens that end the middle part: the model's stop tokens and the four FIM tokens (the HF CodeGemma
    /// blog's advice; `<|file_separator|>` is the one the model emits). Fails, naming the missing tokens, when the
    /// tokenizer has no FIM tokens (models other than CodeGemma were not trained for it).
    pub fn encode_fim(&self, prefix: &str, suffix: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let fim = FimTokens::from_tokenizer(&self.text.tokenizer).map_err(|missing| {
            Error::InvalidArgument(format!(
                "{}: the tokenizer has no {missing} token, so this model cannot fill in the middle (CodeGemma \
                 2B/7B can); use a plain prompt instead of --fim-prefix/--fim-suffix",
                self.decoder.dir().join(crate::tokenizer::TOKENIZER_FILE).display()
            ))
        })?;
        let ids = fim.prompt_ids(&self.text.tokenizer, self.bos_token_id(), prefix, suffix)?;
        let mut stops = self.text.stop_ids.clone();
        for id in fim.stop_ids() {
            if !stops.contains(&id) {
                stops.push(id);
            }
        }
        Ok((ids, stops))
    }

    pub fn bos_token_id(&self) -> u32 {
        self.decoder.manifest().bos_token_id
    }

    /// The export folder.
    pub fn decoder_dir(&self) -> &Path {
        self.decoder.dir()
    }

    /// The model's positions (`max_position_embeddings`): prompt plus generated tokens must fit.
    pub fn max_positions(&self) -> usize {
        self.decoder.manifest().max_position_embeddings
    }

    /// An empty batch-1 KV cache for [`continue_generation`](Self::continue_generation).
    pub fn new_cache(&self) -> Result<KvCache> {
        self.decoder.new_cache(1)
    }

    /// Token ids of a plain prompt: the tokenizer's post-processor adds BOS; the result starts with exactly one BOS
    /// whatever the tokenizer or the prompt text did.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(with_single_bos(
            self.text.tokenizer.encode(prompt, true)?,
            self.bos_token_id(),
        ))
    }

    /// Token ids of a conversation rendered by the chat template with the generation prompt. The rendered text holds
    /// `<bos>` already, so it is encoded without special tokens (no double BOS).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let template = self.text.chat_template.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja); \
                 use a plain prompt",
                self.decoder.dir().display()
            ))
        })?;
        let text = template.render(messages, true)?;
        Ok(with_single_bos(
            self.text.tokenizer.encode(&text, false)?,
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

    /// Replies to `messages` (rendered by the chat template), stopping at the chat stop tokens
    /// ([`chat_stop_token_ids`](Self::chat_stop_token_ids)). For a conversation that goes on, see
    /// [`Conversation`](crate::Conversation), which keeps the KV cache between turns.
    pub fn generate_chat(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        let ids = self.encode_chat(messages)?;
        let stops = self.chat_stop_token_ids();
        self.generate_from_ids_until(&ids, &stops, options, on_text)
    }

    /// Generates after `prompt_ids` (used as given: no BOS is added), stopping at the model's stop tokens.
    /// `on_text` receives each new piece of complete UTF-8 text as soon as it is known.
    pub fn generate_from_ids(
        &mut self,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        let stops = self.text.stop_ids.clone();
        self.generate_from_ids_until(prompt_ids, &stops, options, on_text)
    }

    /// [`generate_from_ids`](Self::generate_from_ids) with explicit stop tokens (chat: `<end_of_turn>` too; FIM: the
    /// FIM tokens too).
    pub fn generate_from_ids_until(
        &mut self,
        prompt_ids: &[u32],
        stop_ids: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        // Sized for the whole run, so that a cpu-graph cache never grows on the way.
        let mut cache = self
            .decoder
            .new_cache_with_capacity(1, prompt_ids.len().saturating_add(options.max_new_tokens))?;
        self.continue_generation(&mut cache, prompt_ids, stop_ids, options, on_text)
    }

    /// Feeds `prompt_ids` after the positions `cache` already holds (one prefill pass), then generates until a token
    /// of `stop_ids` or `options.max_new_tokens`. This is how a chat turn reuses the conversation so far.
    ///
    /// On success the cache also holds `prompt_ids` and every generated token but the last one (the last token is
    /// returned, never fed). On error it may hold part of the run: reset it before reuse.
    /// `GenerationOutput::prompt_tokens` counts `prompt_ids` only, not what the cache held before.
    pub fn continue_generation(
        &mut self,
        cache: &mut KvCache,
        prompt_ids: &[u32],
        stop_ids: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        // The sampler reads ONNX Runtime's logits row in place (no copy of the vocabulary-wide row per token).
        let prefill = |decoder: &mut Decoder, cache: &mut KvCache, sampler: &mut Sampler| {
            decoder.forward_tokens_with(prompt_ids, cache, |row| sampler.sample(row))
        };
        self.continue_with_prefill(cache, prompt_ids, stop_ids, options, on_text, prefill)
    }

    /// [`continue_generation`](Self::continue_generation) whose prefill is `prefill`: it feeds `prompt_ids` (or their
    /// embeddings: Gemma 3n's audio prompts) after `cache` and returns the first token the sampler picks.
    pub(crate) fn continue_with_prefill(
        &mut self,
        cache: &mut KvCache,
        prompt_ids: &[u32],
        stop_ids: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
        prefill: impl FnOnce(&mut Decoder, &mut KvCache, &mut Sampler) -> Result<u32>,
    ) -> Result<GenerationOutput> {
        check_prompt(
            prompt_ids,
            cache.len(),
            options.max_new_tokens,
            self.decoder.manifest().max_position_embeddings,
            self.decoder.vocab_size(),
        )?;
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let mut out = GenerationOutput::new(prompt_ids.len());
        if options.max_new_tokens == 0 {
            return Ok(out);
        }
        let start = Instant::now();
        let first = prefill(&mut self.decoder, cache, &mut sampler)?;
        out.prefill_seconds = start.elapsed().as_secs_f64();
        out.prefill_tokens_per_s = rate(prompt_ids.len(), out.prefill_seconds);
        let decoder = &mut self.decoder;
        decode_loop(
            &self.text.tokenizer,
            first,
            stop_ids,
            options,
            &mut out,
            &mut on_text,
            |token| decoder.forward_tokens_with(&[token], cache, |row| sampler.sample(row)),
        )?;
        Ok(out)
    }
}

impl GenerationOutput {
    /// An output with nothing generated yet for a prompt of `prompt_tokens`.
    pub(crate) fn new(prompt_tokens: usize) -> GenerationOutput {
        GenerationOutput {
            token_ids: Vec::new(),
            text: String::new(),
            prompt_tokens,
            stop_reason: StopReason::MaxNewTokens,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            prefill_tokens_per_s: 0.0,
            decode_tokens_per_s: 0.0,
        }
    }
}

/// Refuses a prompt that is empty, holds an id outside the vocabulary, or cannot fit after `cached` positions with
/// `max_new_tokens` more.
pub(crate) fn check_prompt(
    prompt_ids: &[u32],
    cached: usize,
    max_new_tokens: usize,
    max_positions: usize,
    vocab: usize,
) -> Result<()> {
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt has no tokens".into()));
    }
    // Checked: `-n 18446744073709551615` must not wrap around to a small total.
    let total = cached
        .checked_add(prompt_ids.len())
        .and_then(|n| n.checked_add(max_new_tokens));
    if total.is_none_or(|n| n > max_positions) {
        return Err(Error::PromptTooLong {
            prompt_tokens: cached.saturating_add(prompt_ids.len()),
            max_new_tokens,
            max_positions,
        });
    }
    if let Some(&bad) = prompt_ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!(
            "prompt token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    Ok(())
}

/// The decode phase that text and image generation share: `first` (sampled from the prefill) and every later token
/// go into `out` and stream to `on_text` as complete UTF-8 text; `step(token)` feeds a token and returns the next
/// sampled one. Stops at a token of `stop_ids` (kept, like transformers), after `options.max_new_tokens` tokens, or
/// when `options.stop` is raised; fills the decode timings of `out`.
pub(crate) fn decode_loop(
    tokenizer: &Tokenizer,
    first: u32,
    stop_ids: &[u32],
    options: &GenerateOptions,
    out: &mut GenerationOutput,
    on_text: &mut dyn FnMut(&str),
    mut step: impl FnMut(u32) -> Result<u32>,
) -> Result<()> {
    let interrupted = || {
        options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    let mut stream = tokenizer.stream(true);
    let decode_start = Instant::now();
    let mut decode_steps = 0usize;
    let mut next = first;
    loop {
        let token = next;
        out.token_ids.push(token);
        if stop_ids.contains(&token) {
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
        next = step(token)?;
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
    out.decode_tokens_per_s = rate(decode_steps, out.decode_seconds);
    Ok(())
}

pub use crate::model_text::END_OF_TURN;

/// `count / seconds`, 0 when either is 0.
pub(crate) fn rate(count: usize, seconds: f64) -> f64 {
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
