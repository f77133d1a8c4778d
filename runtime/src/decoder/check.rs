//! What [`Decoder::open`](super::Decoder::open) and [`Decoder::open_on_embeds`](super::Decoder::open_on_embeds)
//! check of a graph before it runs: its input and output names and element types against the manifest.

use gemma_models::contract::io;
use std::path::Path;

use ort::value::{Outlet, TensorElementType};

use super::Decoder;
use crate::error::{Error, Result};
use crate::manifest::DType;

/// The ONNX element type of a manifest dtype.
fn element_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::Float32 => TensorElementType::Float32,
        DType::Float16 => TensorElementType::Float16,
    }
}

/// Name and element type of each graph input or output.
fn io_types(list: &[Outlet]) -> Vec<(String, Option<TensorElementType>)> {
    list.iter()
        .map(|o| (o.name().to_string(), o.dtype().tensor_type()))
        .collect()
}

impl Decoder {
    /// The text decoder (`model.onnx`): exactly the inputs of its graph kind (`position_ids` optional in the
    /// portable graph, where its presence is recorded) and the logits and present outputs, of the manifest's dtypes.
    pub(super) fn check_ids_graph(&mut self, model: &Path) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::invalid_file(
                model,
                format!("{msg} (does gemma-onnx.json match it?)"),
            ))
        };
        let kv_type = element_type(self.manifest.kv_dtype);
        let f32_type = Some(TensorElementType::Float32);
        let mut expected: Vec<(&str, Option<TensorElementType>)> = match self.embed_tokens {
            // Gemma 3n: the ids go through embed_tokens.onnx first.
            Some(_) => vec![
                (io::INPUTS_EMBEDS, f32_type),
                (io::PER_LAYER_INPUTS, f32_type),
                (io::POSITION_IDS, Some(TensorElementType::Int64)),
            ],
            None => vec![(io::INPUT_IDS, Some(TensorElementType::Int64))],
        };
        expected.push((io::ATTENTION_MASK, Some(TensorElementType::Int64)));
        if let Some(cpu) = &self.manifest.cpu {
            expected.push((io::POSITION_IDS, Some(TensorElementType::Int64)));
            expected.push((&cpu.logits_to_keep_input, Some(TensorElementType::Int64)));
        }
        for (k, v) in &self.past_names {
            expected.push((k, Some(kv_type)));
            expected.push((v, Some(kv_type)));
        }
        let inputs = io_types(self.session.inputs());
        for (name, ty) in &expected {
            match inputs.iter().find(|(n, _)| n == name) {
                None => return bad(format!("the graph has no input `{name}`")),
                Some((_, t)) if t != ty => {
                    return bad(format!("input `{name}` is {t:?}, expected {ty:?}"))
                }
                _ => {}
            }
        }
        for (name, _) in &inputs {
            if name == io::POSITION_IDS {
                self.has_position_ids = true;
            } else if !expected.iter().any(|(n, _)| n == name) {
                return bad(format!(
                    "the graph has an input `{name}` this runtime does not know"
                ));
            }
        }
        let outputs = io_types(self.session.outputs());
        let mut expected_out = vec![(
            io::LOGITS.to_string(),
            element_type(self.manifest.logits_dtype),
        )];
        for (k, v) in &self.present_names {
            expected_out.push((k.clone(), kv_type));
            expected_out.push((v.clone(), kv_type));
        }
        for (name, ty) in &expected_out {
            match outputs.iter().find(|(n, _)| n == name) {
                None => return bad(format!("the graph has no output `{name}`")),
                Some((_, t)) if *t != Some(*ty) => {
                    return bad(format!("output `{name}` is {t:?}, expected {ty:?}"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The image decoder on embeddings (`decoder_model_merged.onnx`): the inputs a step feeds it must exist;
    /// `position_ids` is optional (its presence is recorded).
    pub(super) fn check_embeds_graph(&mut self, model: &Path) -> Result<()> {
        let names: Vec<String> = self
            .session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for needed in [
            io::INPUTS_EMBEDS,
            io::TOKEN_TYPE_IDS,
            io::ATTENTION_MASK,
            &io::past_key(0),
        ] {
            if !names.iter().any(|n| n == needed) {
                return Err(Error::invalid_file(
                    model,
                    format!(
                        "the graph has no input `{needed}` (is it the decoder on inputs_embeds?)"
                    ),
                ));
            }
        }
        self.has_position_ids = names.iter().any(|n| n == io::POSITION_IDS);
        Ok(())
    }
}
