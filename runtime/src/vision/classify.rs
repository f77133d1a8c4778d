//! `gemma-vision classify`: the probability that an image violates each safety policy, as
//! `ShieldGemma2ForImageClassification` + `ShieldGemma2Processor` compute it (the manifest's `classifier` section,
//! `gemma_models::contract::ClassifierSection`):
//!
//! 1. the image: `preprocess.onnx` (never Pan & Scan: the processor turns it off) and `vision_encoder.onnx`, once;
//! 2. per policy, the prompt: the export's prompt template over one user message (the image, then the policy
//!    text), its `<start_of_image>` expanded like `Gemma3Processor`, tokenized **with** special tokens (so the ids
//!    start `<bos><bos>`, as the processor's tokenizing call makes them);
//! 3. the prompts as one batch, left-padded with the pad id (`attention_mask` 0 there) and `position_ids`
//!    `0..len` on every row (what the model's forward uses when given none), each row's soft tokens taking the
//!    image's features: one step of `decoder_model_merged.onnx`, last-position logits only;
//! 4. per row, `softmax([logit(yes), logit(no)])`.

use std::path::Path;

use image::RgbImage;
use ndarray::{s, Array2, Array3};
use serde::Serialize;

pub use gemma_models::contract::{ClassifierSection, Policy};

use super::generate::VisionGenerator;
use super::processor::{token_type_ids, user_message};
use crate::chat_template::ChatTemplate;
use crate::decoder::{LogitsMode, Step, TokenInput};
use crate::error::{Error, Result};
use crate::ort_env::RuntimeOptions;

/// One policy's answer probabilities.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyScore {
    pub name: String,
    /// P("Yes"): the image violates the policy.
    pub yes: f64,
    /// P("No") = 1 − yes.
    pub no: f64,
}

/// A classifier export (ShieldGemma 2) opened for [`classify`](Classifier::classify).
pub struct Classifier {
    vision: VisionGenerator,
    section: ClassifierSection,
    template: ChatTemplate,
}

/// `NAME=TEXT` of `--policy-text`: a custom policy. Fails when there is no `=`, or the name or text is empty.
pub fn parse_policy_text(arg: &str) -> Result<Policy> {
    match arg.split_once('=') {
        Some((name, text)) if !name.trim().is_empty() && !text.trim().is_empty() => {
            Ok(Policy::new(name.trim(), text))
        }
        _ => Err(Error::InvalidArgument(format!(
            "--policy-text {arg:?}: expected NAME=TEXT, e.g. --policy-text \"weapons=No Weapons: The image shall \
             not show firearms.\""
        ))),
    }
}

impl Classifier {
    /// Opens the export in `dir`; fails unless its manifest has a `classifier` section.
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Classifier> {
        let dir = dir.as_ref();
        let manifest = crate::manifest::load(dir)?;
        let section = manifest.classifier.clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} is not an image classifier export: its gemma-onnx.json has no `classifier` section (export a \
                 ShieldGemma2ForImageClassification checkpoint; `gemma-vision describe` runs the other vision \
                 models)",
                dir.display()
            ))
        })?;
        let path = dir.join(crate::manifest::MANIFEST_FILE);
        for (field, id) in [
            ("yes_token_id", section.yes_token_id),
            ("no_token_id", section.no_token_id),
        ] {
            if id as usize >= manifest.vocab_size {
                return Err(Error::invalid_file(
                    &path,
                    format!(
                        "classifier.{field} {id} is outside the vocabulary ({})",
                        manifest.vocab_size
                    ),
                ));
            }
        }
        let vision = VisionGenerator::open(dir, options)?;
        let token = |id: u32| vision.text().tokenizer.id_to_token(id).unwrap_or_default();
        let eos = manifest
            .eos_token_ids
            .first()
            .map_or(String::new(), |&id| token(id));
        let template = ChatTemplate::new(
            section.prompt_template.clone(),
            token(manifest.bos_token_id),
            eos,
        )?;
        Ok(Classifier {
            vision,
            section,
            template,
        })
    }

    /// The export's policies, in the processor's order.
    pub fn default_policies(&self) -> &[Policy] {
        &self.section.policies
    }

    /// The policies to run: `selected` by name (all when empty) among the defaults and `custom`
    /// ([`gemma_models::contract::select_policies`]). An unknown name is an error.
    pub fn policies(&self, selected: &[String], custom: &[Policy]) -> Result<Vec<Policy>> {
        gemma_models::contract::select_policies(&self.section.policies, custom, selected)
            .map_err(Error::InvalidArgument)
    }

    /// The token ids of `policy`'s prompt, as `ShieldGemma2Processor` makes them.
    pub fn prompt_ids(&self, policy: &Policy) -> Result<Vec<u32>> {
        let messages = serde_json::Value::Array(vec![user_message(1, &policy.text)]);
        let text = self.template.render_value(&messages, false)?;
        let expanded = self.vision.image_tokens().expand(&text, &[0])?;
        self.vision.text().tokenizer.encode(&expanded, true)
    }

    /// Reads an image file (within the usual image limits).
    pub fn load_image(&self, path: &Path) -> Result<RgbImage> {
        self.vision.load_image(path)
    }

    /// The probabilities of `policies` for `image`: the image encoded once, the policies' prompts run as one batch.
    pub fn classify(&mut self, image: &RgbImage, policies: &[Policy]) -> Result<Vec<PolicyScore>> {
        if policies.is_empty() {
            return Err(Error::InvalidArgument(
                "no policy to classify against".into(),
            ));
        }
        let rows = policies
            .iter()
            .map(|p| self.prompt_ids(p))
            .collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let max = self.vision.manifest().max_position_embeddings;
        if len > max {
            return Err(Error::InvalidArgument(format!(
                "a policy prompt has {len} tokens, more than the model's {max} positions; shorten the policy text"
            )));
        }
        let encoded = self.vision.encode_image(image, false)?;
        let hidden = self.vision.manifest().hidden_size;
        let pad = self.vision.manifest().pad_token_id.unwrap_or(0);
        let image_token = self.vision.vision().image_token_id;
        let batch = rows.len();
        let mut embeds = Array3::<f32>::zeros((batch, len, hidden));
        let mut types = Array2::<i64>::zeros((batch, len));
        let mut mask = Array2::<i64>::zeros((batch, len));
        for (b, ids) in rows.iter().enumerate() {
            let start = len - ids.len();
            let mut padded = vec![pad; start];
            padded.extend_from_slice(ids);
            let row = self
                .vision
                .embed_with_features(&padded, encoded.features.view())?;
            embeds
                .slice_mut(s![b, .., ..])
                .assign(&row.slice(s![0, .., ..]));
            let tt = token_type_ids(&padded, image_token);
            types.row_mut(b).assign(&ndarray::ArrayView1::from(&tt[..]));
            mask.slice_mut(s![b, start..]).fill(1);
        }
        let positions = Array2::from_shape_fn((batch, len), |(_, j)| j as i64);
        let step = Step {
            tokens: TokenInput::Embeds {
                embeds: embeds.view(),
                token_type_ids: types.view(),
            },
            attention_mask: mask.view(),
            position_ids: positions.view(),
            logits: LogitsMode::Last,
        };
        let (yes, no) = (
            self.section.yes_token_id as usize,
            self.section.no_token_id as usize,
        );
        let decoder = self.vision.decoder_mut();
        let mut cache = decoder.new_cache(batch)?;
        let pairs = decoder.run(&step, &mut cache, |l| {
            (0..batch)
                .map(|b| (l[[b, 0, yes]] as f64, l[[b, 0, no]] as f64))
                .collect::<Vec<_>>()
        })?;
        Ok(policies
            .iter()
            .zip(pairs)
            .map(|(p, (y, n))| {
                let m = y.max(n);
                let (ey, en) = ((y - m).exp(), (n - m).exp());
                PolicyScore {
                    name: p.name.clone(),
                    yes: ey / (ey + en),
                    no: en / (ey + en),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_text_arguments() {
        let p = parse_policy_text("weapons=No guns = none.").unwrap();
        assert_eq!(p, Policy::new("weapons", "No guns = none."));
        for bad in ["weapons", "=text", "name=", " =x"] {
            let e = parse_policy_text(bad).unwrap_err().to_string();
            assert!(e.contains("NAME=TEXT"), "{bad}: {e}");
        }
    }
}
