//! Teacher-forced perplexity. `tokens = encode(text)` with special tokens (BOS first), cut into consecutive
//! non-overlapping windows of `context` tokens (the last may be shorter). Each window is scored from scratch (empty
//! cache): the NLL of `window[t]` given `window[..t]` for t = 1..len-1, from the log-softmax of the fp32 logits
//! computed in f64. `mean_nll` = total NLL / tokens predicted; `perplexity` = exp(mean_nll).
//!
//! **Bounded memory at any `context`.** A window is fed in chunks of [`chunk_tokens`] tokens through the KV cache
//! (the same positions and mask as one pass over the window), so a step's logits are `[1, chunk, vocab]` and ONNX
//! Runtime's intermediates are sized by the chunk, not by the window: one pass over a 2048-token window of a
//! 262k-word vocabulary held 2 GiB of logits alone. Every row is reduced to one NLL as soon as it is computed. The
//! cache is made once, sized for a whole window, and emptied between windows.

use ndarray::Axis;

use crate::decoder::{ids_row, Decoder, LogitsMode, TokenInput};
use crate::error::{Error, Result};
use crate::generate::with_single_bos;
use crate::tokenizer::Tokenizer;

/// Most bytes of fp32 logits one scoring step produces: it sets the chunk size ([`chunk_tokens`]).
pub const LOGITS_BUDGET_BYTES: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PerplexityResult {
    /// Tokens of the text (BOS included).
    pub tokens: usize,
    /// Tokens whose probability was scored (`tokens` minus one per window).
    pub predicted: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
    pub windows: usize,
}

/// Perplexity of `text` (encoded with special tokens: exactly one BOS first).
pub fn perplexity(
    decoder: &mut Decoder,
    tokenizer: &Tokenizer,
    text: &str,
    context: usize,
) -> Result<PerplexityResult> {
    let tokens = with_single_bos(
        tokenizer.encode(text, true)?,
        decoder.manifest().bos_token_id,
    );
    score_tokens(decoder, &tokens, context, |_, _| {})
}

/// Tokens per scoring step for a vocabulary of `vocab` words: as many as [`LOGITS_BUDGET_BYTES`] of fp32 logits
/// hold (64 for Gemma 3's 262,144 words), at least 1.
pub fn chunk_tokens(vocab: usize) -> usize {
    (LOGITS_BUDGET_BYTES / (4 * vocab.max(1))).max(1)
}

/// Scores `tokens` as they are, in steps of [`chunk_tokens`]; `progress(done, total)` is called after each window.
pub fn score_tokens(
    decoder: &mut Decoder,
    tokens: &[u32],
    context: usize,
    progress: impl FnMut(usize, usize),
) -> Result<PerplexityResult> {
    let chunk = chunk_tokens(decoder.vocab_size());
    score_tokens_chunked(decoder, tokens, context, chunk, progress)
}

/// [`score_tokens`] feeding at most `chunk` tokens per step. The result does not depend on `chunk` beyond float
/// rounding (the positions, mask and cached keys are those of one pass over the window).
pub fn score_tokens_chunked(
    decoder: &mut Decoder,
    tokens: &[u32],
    context: usize,
    chunk: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityResult> {
    let max = decoder.manifest().max_position_embeddings;
    if context < 2 || context > max {
        return Err(Error::InvalidArgument(format!(
            "context must be between 2 and {max} (max_position_embeddings) tokens, got {context}"
        )));
    }
    if chunk == 0 {
        return Err(Error::InvalidArgument(
            "the scoring chunk must be at least 1 token".into(),
        ));
    }
    let vocab = decoder.vocab_size();
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    let windows: Vec<&[u32]> = tokens.chunks(context).filter(|w| w.len() >= 2).collect();
    if windows.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the text has {} token(s) (with BOS): at least 2 are needed to predict anything",
            tokens.len()
        )));
    }
    let longest = windows.iter().map(|w| w.len()).max().unwrap_or(context);
    let mut cache = decoder.new_cache_with_capacity(1, longest)?;
    let mut total_nll = 0.0f64;
    let mut predicted = 0usize;
    for (i, window) in windows.iter().enumerate() {
        cache.reset()?;
        let n = window.len();
        // A chunk made of the window's last token alone would predict nothing: it is not fed.
        for (c, part) in window.chunks(chunk).enumerate() {
            let first = c * chunk;
            if first + 1 >= n {
                break;
            }
            let ids = ids_row(part);
            total_nll += decoder.run_after_cache(
                TokenInput::Ids(ids.view()),
                &mut cache,
                LogitsMode::All,
                |logits| {
                    let mut nll = 0.0f64;
                    // Row t predicts token first + t + 1; the window's last row predicts nothing.
                    for (t, row) in logits.index_axis(Axis(0), 0).outer_iter().enumerate() {
                        let Some(&target) = window.get(first + t + 1) else {
                            break;
                        };
                        let target = target as usize;
                        nll += match row.as_slice() {
                            Some(r) => nll_of_row(r.iter().copied(), r[target]),
                            None => nll_of_row(row.iter().copied(), row[target]),
                        };
                    }
                    nll
                },
            )?;
        }
        predicted += n - 1;
        progress(i + 1, windows.len());
    }
    let mean_nll = total_nll / predicted as f64;
    Ok(PerplexityResult {
        tokens: tokens.len(),
        predicted,
        mean_nll,
        perplexity: mean_nll.exp(),
        windows: windows.len(),
    })
}

/// logsumexp(row) - row[target], in f64.
pub fn nll_of_row(row: impl Iterator<Item = f32> + Clone, target_logit: f32) -> f64 {
    let max = row.clone().fold(f64::NEG_INFINITY, |m, x| m.max(x as f64));
    let sum: f64 = row.map(|x| (x as f64 - max).exp()).sum();
    max + sum.ln() - target_logit as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_matches_log_softmax() {
        let row = [1.0f32, 2.0, 3.0];
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((nll_of_row(row.iter().copied(), 2.0) - (lse - 2.0)).abs() < 1e-12);
        // Uniform logits over V tokens: NLL = ln V.
        let row = [0.5f32; 8];
        assert!((nll_of_row(row.iter().copied(), 0.5) - 8f64.ln()).abs() < 1e-12);
        // Large logits do not overflow.
        let row = [1000.0f32, 0.0];
        assert!(nll_of_row(row.iter().copied(), 1000.0).abs() < 1e-12);
    }
}
