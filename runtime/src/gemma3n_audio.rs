//! Gemma 3n audio + text prefill (semantics §13): a prompt's ids through `embed_tokens.onnx`, then each clip's
//! `audio_features` rows ([`crate::audio::AudioEncoder`]) written over its audio tokens, in order, as
//! `Gemma3nModel.forward` does with `masked_scatter`. The per-layer inputs stay as `embed_tokens.onnx` gives them
//! for the ids (an audio token is outside the per-layer table: row 0, as `get_per_layer_inputs` looks it up); the
//! decoder projects the edited `inputs_embeds` into them itself.
//!
//! The prompt lays each clip out as the processor does: `boa`, `audio_token_id` × `soft_tokens`, `eoa`
//! (manifest `gemma3n.audio`).

use ndarray::{Array2, Array3, Array4, ArrayView2, Axis};

use crate::decoder::{Decoder, TokenInput};
use crate::error::{Error, Result};

/// `inputs_embeds` and `per_layer_inputs` of a batch-1 prompt `ids` `[1, s]` with the rows of `clips` (each
/// `[S, hidden]`) at the positions of `audio_token_id`, clip after clip; run them as [`TokenInput::Gemma3nEmbeds`]
/// (see [`Gemma3nPrompt::input`]). Refused: a decoder that is not Gemma 3n's, a batch other than 1, or audio tokens
/// that do not add up to the clips' rows.
pub fn prompt_embeds(
    decoder: &mut Decoder,
    ids: ArrayView2<i64>,
    audio_token_id: u32,
    clips: &[Array2<f32>],
) -> Result<Gemma3nPrompt> {
    if ids.nrows() != 1 {
        return Err(Error::InvalidArgument(format!(
            "an audio prompt is one sequence, got a batch of {}",
            ids.nrows()
        )));
    }
    let (mut embeds, per_layer_inputs) = decoder.embed(ids)?;
    let positions: Vec<usize> = (0..ids.ncols())
        .filter(|&i| ids[[0, i]] == i64::from(audio_token_id))
        .collect();
    let rows: usize = clips.iter().map(|c| c.nrows()).sum();
    if positions.len() != rows {
        return Err(Error::InvalidArgument(format!(
            "the prompt has {} audio tokens (id {audio_token_id}) but the clips give {rows} audio rows",
            positions.len()
        )));
    }
    let hidden = embeds.dim().2;
    let mut at = positions.iter();
    for clip in clips {
        if clip.ncols() != hidden {
            return Err(Error::InvalidArgument(format!(
                "audio rows are {} wide, the decoder's embeddings {hidden}",
                clip.ncols()
            )));
        }
        for row in clip.axis_iter(Axis(0)) {
            let p = *at.next().expect("counted above");
            embeds.index_axis_mut(Axis(0), 0).row_mut(p).assign(&row);
        }
    }
    Ok(Gemma3nPrompt {
        embeds,
        per_layer_inputs,
    })
}

/// The decoder inputs of an audio prompt ([`prompt_embeds`]).
pub struct Gemma3nPrompt {
    pub embeds: Array3<f32>,
    pub per_layer_inputs: Array4<f32>,
}

impl Gemma3nPrompt {
    /// The step input for [`Decoder::run`] or [`Decoder::run_after_cache`].
    pub fn input(&self) -> TokenInput<'_> {
        TokenInput::Gemma3nEmbeds {
            embeds: self.embeds.view(),
            per_layer_inputs: self.per_layer_inputs.view(),
        }
    }
}
