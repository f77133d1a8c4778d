//! Gemma 3n multimodal prefill (semantics §13, docs/gemma3n-vision.md): a prompt's ids through
//! `embed_tokens.onnx`, then each attachment's encoder rows written over its soft tokens, in order, as
//! `Gemma3nModel.forward` does with `masked_scatter` — images (`image_token_id`, [`Gemma3nImageEncoder`]) and
//! audio clips (`audio_token_id`, [`crate::audio::AudioEncoder`]) alike. The per-layer inputs stay as
//! `embed_tokens.onnx` gives them for the ids (a soft token is outside the per-layer table: row 0, as
//! `get_per_layer_inputs` looks it up); the decoder projects the edited `inputs_embeds` into them itself.
//!
//! The prompt lays each attachment out as the processor does: `boi`, `image_token_id` × `soft_tokens`, `eoi` for an
//! image, `boa`, `audio_token_id` × `soft_tokens`, `eoa` for a clip (manifest `gemma3n.vision` / `gemma3n.audio`).

use std::path::Path;

use image::RgbImage;
use ndarray::{Array2, Array3, Array4, ArrayView2, Axis, Ix3};
use ort::session::Session;
use ort::value::TensorRef;

use crate::decoder::{Decoder, TokenInput};
use crate::error::{Error, Result};
use crate::ort_env::create_session;
use crate::vision::graphs::Preprocessor;
use crate::RuntimeOptions;
use gemma_models::contract::{io, Gemma3nVisionSection};

/// The rows of one modality's attachments, in prompt order, and the placeholder token they replace.
pub struct SoftTokens<'a> {
    /// The modality in messages (`"image"`, `"audio"`).
    pub kind: &'static str,
    pub token_id: u32,
    /// One `[soft_tokens, hidden]` matrix per attachment.
    pub rows: &'a [Array2<f32>],
}

/// `inputs_embeds` and `per_layer_inputs` of a batch-1 prompt `ids` `[1, s]` with every part's rows at the
/// positions of its token id, attachment after attachment; run them as [`TokenInput::Gemma3nEmbeds`] (see
/// [`Gemma3nPrompt::input`]). Refused: a decoder that is not Gemma 3n's, a batch other than 1, rows of the wrong
/// width, or placeholder tokens that do not add up to a part's rows.
pub fn prompt_embeds(
    decoder: &mut Decoder,
    ids: ArrayView2<i64>,
    parts: &[SoftTokens<'_>],
) -> Result<Gemma3nPrompt> {
    if ids.nrows() != 1 {
        return Err(Error::InvalidArgument(format!(
            "a multimodal prompt is one sequence, got a batch of {}",
            ids.nrows()
        )));
    }
    let (mut embeds, per_layer_inputs) = decoder.embed(ids)?;
    let hidden = embeds.dim().2;
    for part in parts {
        let token = i64::from(part.token_id);
        let positions: Vec<usize> = (0..ids.ncols()).filter(|&i| ids[[0, i]] == token).collect();
        let rows: usize = part.rows.iter().map(|c| c.nrows()).sum();
        if positions.len() != rows {
            return Err(Error::InvalidArgument(format!(
                "the prompt has {} {} tokens (id {token}) but the {} attachments give {rows} rows",
                positions.len(),
                part.kind,
                part.kind
            )));
        }
        let mut at = positions.iter();
        for m in part.rows {
            if m.ncols() != hidden {
                return Err(Error::InvalidArgument(format!(
                    "attachment rows are {} wide, the decoder's embeddings {hidden}",
                    m.ncols()
                )));
            }
            for row in m.axis_iter(Axis(0)) {
                let p = *at.next().expect("counted above");
                embeds.index_axis_mut(Axis(0), 0).row_mut(p).assign(&row);
            }
        }
    }
    Ok(Gemma3nPrompt {
        embeds,
        per_layer_inputs,
    })
}

/// [`prompt_embeds`] for a Gemma 3n export's attachments: `images` (command-line order) over its image tokens and
/// `clips` over its audio tokens, the token ids from the decoder's manifest. Refused when attachments are given
/// for a modality the export lacks.
pub fn attachments_embeds(
    decoder: &mut Decoder,
    ids: ArrayView2<i64>,
    images: &[Array2<f32>],
    clips: &[Array2<f32>],
) -> Result<Gemma3nPrompt> {
    let section =
        decoder.manifest().gemma3n.clone().ok_or_else(|| {
            Error::InvalidArgument("images and audio need a Gemma 3n export".into())
        })?;
    let mut parts = Vec::new();
    if !images.is_empty() {
        let v = section.vision.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this Gemma 3n export has no image graphs".into())
        })?;
        parts.push(SoftTokens {
            kind: "image",
            token_id: v.image_token_id,
            rows: images,
        });
    }
    if !clips.is_empty() {
        let a = section.audio.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this Gemma 3n export has no audio graphs".into())
        })?;
        parts.push(SoftTokens {
            kind: "audio",
            token_id: a.audio_token_id,
            rows: clips,
        });
    }
    prompt_embeds(decoder, ids, &parts)
}

/// The decoder inputs of a multimodal prompt ([`prompt_embeds`]).
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

/// `preprocess.onnx` then `vision_encoder.onnx` of a Gemma 3n export: a decoded RGB image → its
/// `soft_tokens` rows `[soft_tokens, hidden]`.
pub struct Gemma3nImageEncoder {
    preprocess: Preprocessor,
    encoder: Session,
    pub section: Gemma3nVisionSection,
}

impl Gemma3nImageEncoder {
    /// Opens the image graphs the manifest's `gemma3n.vision` names in `dir`.
    pub fn open(dir: &Path, options: &RuntimeOptions) -> Result<Gemma3nImageEncoder> {
        let manifest = crate::manifest::load(dir)?;
        let section = manifest.gemma3n.and_then(|g| g.vision).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: this export has no Gemma 3n image graphs: the model takes no images",
                dir.display()
            ))
        })?;
        Ok(Gemma3nImageEncoder {
            preprocess: Preprocessor::open(&dir.join(&section.preprocess), options)?,
            encoder: create_session(&dir.join(&section.encoder), options)?,
            section,
        })
    }

    /// `image_features` `[soft_tokens, hidden]` of one image.
    pub fn encode(&mut self, image: &RgbImage) -> Result<Array2<f32>> {
        const CTX: &str = "running vision_encoder.onnx";
        let pixels = self.preprocess.run(image, false)?.pixel_values;
        let input = TensorRef::from_array_view(pixels.view()).map_err(|e| Error::ort(CTX, e))?;
        let out = self
            .encoder
            .run(ort::inputs![io::PIXEL_VALUES => input])
            .map_err(|e| Error::ort(CTX, e))?;
        let features = out[io::IMAGE_FEATURES]
            .try_extract_array::<f32>()
            .map_err(|e| Error::ort(CTX, e))?
            .into_dimensionality::<Ix3>()
            .map_err(|e| Error::ort(CTX, e.to_string()))?;
        Ok(features.index_axis(Axis(0), 0).to_owned())
    }
}
