//! Gemma 3n audio + text prefill (semantics §13): a prompt's ids through `embed_tokens.onnx`, then each clip's
//! `audio_features` rows ([`crate::audio::AudioEncoder`]) written over its audio tokens, in order, as
//! `Gemma3nModel.forward` does with `masked_scatter`. The per-layer inputs stay as `embed_tokens.onnx` gives them
//! for the ids (an audio token is outside the per-layer table: row 0, as `get_per_layer_inputs` looks it up); the
//! decoder projects the edited `inputs_embeds` into them itself.
//!
//! The prompt lays each clip out as the processor does: `boa`, `audio_token_id` × `soft_tokens`, `eoa`
//! (manifest `gemma3n.audio`).

use ndarray::{Array2, ArrayView2};

use crate::decoder::Decoder;
use crate::error::Result;
pub use crate::gemma3n_prompt::Gemma3nPrompt;
use crate::gemma3n_prompt::SoftTokens;

/// `inputs_embeds` and `per_layer_inputs` of a batch-1 prompt `ids` `[1, s]` with the rows of `clips` (each
/// `[S, hidden]`) at the positions of `audio_token_id`, clip after clip: [`crate::gemma3n_prompt::prompt_embeds`]
/// with audio only. Refused: a decoder that is not Gemma 3n's, a batch other than 1, or audio tokens that do not
/// add up to the clips' rows.
pub fn prompt_embeds(
    decoder: &mut Decoder,
    ids: ArrayView2<i64>,
    audio_token_id: u32,
    clips: &[Array2<f32>],
) -> Result<Gemma3nPrompt> {
    let part = SoftTokens {
        kind: "audio",
        token_id: audio_token_id,
        rows: clips,
    };
    crate::gemma3n_prompt::prompt_embeds(decoder, ids, &[part])
}
