//! Teacher-forced perplexity. `tokens = encode(text)` with special tokens (BOS first), cut into consecutive
//! non-overlapping windows of `context` tokens (the last may be shorter). Each window is scored from scratch (fresh
//! cache, one forward pass): the NLL of `window[t]` given `window[..t]` for t = 1..len-1, from the log-softmax of the
//! fp32 logits computed in f64. `mean_nll` = total NLL / tokens predicted; `perplexity` = exp(mean_nll).

use ndarray::{s, Array2};

use crate::decoder::{position_ids_from_mask, Decoder, LogitsMode, Step, TokenInput};
use crate::error::{Error, Result};
use crate::generate::with_single_bos;
use crate::tokenizer::Tokenizer;

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

/// Scores `tokens` as they are; `progress(done, total)` is called after each window.
pub fn score_tokens(
    decoder: &mut Decoder,
    tokens: &[u32],
    context: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityResult> {
    let max = decoder.manifest().max_position_embeddings;
    if context < 2 || context > max {
        return Err(Error::InvalidArgument(format!(
            "context must be between 2 and {max} (max_position_embeddings) tokens, got {context}"
        )));
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
    let mut total_nll = 0.0f64;
    let mut predicted = 0usize;
    for (i, window) in windows.iter().enumerate() {
        let n = window.len();
        let ids = Array2::from_shape_vec((1, n), window.iter().map(|&t| t as i64).collect())
            .expect("shape");
        let mask = Array2::<i64>::ones((1, n));
        let pos = position_ids_from_mask(mask.view());
        let mut cache = decoder.new_cache(1)?;
        let step = Step {
            tokens: TokenInput::Ids(ids.view()),
            attention_mask: mask.view(),
            position_ids: pos.view(),
            logits: LogitsMode::All,
        };
        let nll = decoder.run(&step, &mut cache, |logits| {
            let mut nll = 0.0f64;
            for t in 1..n {
                nll += token_nll(
                    logits.slice(s![0, t - 1, ..]).as_slice(),
                    &logits,
                    t - 1,
                    window[t],
                );
            }
            nll
        })?;
        total_nll += nll;
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

/// -log softmax(row)[target] in f64. `row` is the contiguous logits row when available; otherwise it is read from
/// `logits[0, t, ..]`.
fn token_nll(row: Option<&[f32]>, logits: &ndarray::ArrayView3<f32>, t: usize, target: u32) -> f64 {
    match row {
        Some(row) => nll_of_row(row.iter().copied(), row[target as usize]),
        None => {
            let r = logits.slice(s![0, t, ..]);
            nll_of_row(r.iter().copied(), r[target as usize])
        }
    }
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
