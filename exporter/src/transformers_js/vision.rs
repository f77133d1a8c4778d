//! The transformers.js layout of a Gemma 3 vision export: the sessions `AutoModelForImageTextToText` loads for
//! `model_type` `gemma3` (`Gemma3ForConditionalGeneration`, a LLaVA-style image-text-to-text model), and the
//! processor files `AutoProcessor` reads (docs/stacks.md).
//!
//! transformers.js 4.x loads `onnx/vision_encoder{suffix}.onnx` (`pixel_values` → `image_features`),
//! `onnx/embed_tokens{suffix}.onnx` (`input_ids` → `inputs_embeds`) and `onnx/decoder_model_merged{suffix}.onnx`,
//! which is our decoder on `inputs_embeds`. It feeds that decoder `inputs_embeds`, `attention_mask`, 1-based
//! `position_ids` and the cache, but never `token_type_ids`, so the `onnx/` copy of the decoder has no such input:
//! it computes all-zero ids (every position is text) from the shape of `inputs_embeds`. Image tokens then attend
//! causally, not bidirectionally within their image as Gemma 3 does (semantics §5.5): transformers.js generates,
//! but not exactly what `gemma-vision` does, which always feeds the ids. The graphs at the top are unchanged.

use super::{inline_tensor, DataType, ModelProto, NodeProto};
use crate::ExportError;
use gemma_models::contract::{io, VisionSection};
use prost::Message;
use std::fs;
use std::path::Path;

/// The processor class transformers (Python and JS) builds for Gemma 3.
const PROCESSOR_CLASS: &str = "Gemma3Processor";

/// Reads the image graphs of the export in `dir` and names each by its transformers.js session: (session, graph,
/// whether it takes `position_ids`). The decoder's copy already computes its own `token_type_ids`.
pub(super) fn graphs(
    dir: &Path,
    vision: &VisionSection,
) -> Result<Vec<(&'static str, ModelProto, bool)>, ExportError> {
    let read = |file: &str| -> Result<ModelProto, ExportError> {
        let path = dir.join(file);
        let bytes = fs::read(&path).map_err(|e| ExportError::io(&path, e))?;
        ModelProto::decode(&*bytes).map_err(|e| {
            ExportError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    };
    let mut decoder = read(&vision.decoder_with_embeds)?;
    text_token_types(&mut decoder);
    Ok(vec![
        ("vision_encoder", read(&vision.encoder)?, false),
        ("embed_tokens", read(&vision.embed_tokens)?, false),
        ("decoder_model_merged", decoder, true),
    ])
}

/// Replaces the graph input `token_type_ids` by zeros of shape `inputs_embeds.shape[:2]` (Shape, Gather, Expand:
/// no attributes), so a caller that does not feed the ids gets the all-text attention.
fn text_token_types(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let before = graph.input.len();
    graph
        .input
        .retain(|i| i.name.as_deref() != Some(io::TOKEN_TYPE_IDS));
    if graph.input.len() == before {
        return;
    }
    let (shape, batch_seq, axes, zero) = (
        "tjs_embeds_shape",
        "tjs_batch_and_sequence",
        "tjs_batch_and_sequence_axes",
        "tjs_text_token_type",
    );
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect();
    graph
        .initializer
        .push(inline_tensor(axes, DataType::Int64, &[2], bytes(&[0, 1])));
    graph
        .initializer
        .push(inline_tensor(zero, DataType::Int64, &[], bytes(&[0])));
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(format!("transformers_js_{output}")),
        op_type: Some(op.into()),
        ..Default::default()
    };
    let nodes = [
        node("Shape", &[io::INPUTS_EMBEDS], shape),
        node("Gather", &[shape, axes], batch_seq),
        node("Expand", &[zero, batch_seq], io::TOKEN_TYPE_IDS),
    ];
    graph.node.splice(0..0, nodes);
}

/// Writes `preprocessor_config.json` (the image processor transformers.js builds, with `processor_class`) and
/// `processor_config.json` (`image_seq_length`, the image tokens per image) from the export's own settings, each
/// only when the checkpoint did not bring one (the hub's Gemma 3 files carry both keys).
pub(super) fn write_processor_files(dir: &Path, vision: &VisionSection) -> Result<(), ExportError> {
    let mut files_to_write = vec![(
        "processor_config.json",
        serde_json::json!({
            "image_seq_length": vision.mm_tokens_per_image,
            "processor_class": PROCESSOR_CLASS,
        }),
    )];
    if let Some(c) = vision.preprocess.as_ref().and_then(|p| p.config.as_ref()) {
        files_to_write.push((
            "preprocessor_config.json",
            serde_json::json!({
                "image_processor_type": "Gemma3ImageProcessor",
                "processor_class": PROCESSOR_CLASS,
                "do_convert_rgb": true,
                "do_resize": true,
                "size": {"height": c.height, "width": c.width},
                "resample": 2,
                "do_rescale": true,
                "rescale_factor": c.rescale_factor,
                "do_normalize": c.do_normalize,
                "image_mean": c.image_mean,
                "image_std": c.image_std,
                "do_pan_and_scan": c.do_pan_and_scan,
                "pan_and_scan_min_crop_size": c.pan_and_scan_min_crop_size,
                "pan_and_scan_max_num_crops": c.pan_and_scan_max_num_crops,
                "pan_and_scan_min_ratio_to_activate": c.pan_and_scan_min_ratio_to_activate,
            }),
        ));
    }
    for (name, json) in files_to_write {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        let text = serde_json::to_string_pretty(&json).expect("json") + "\n";
        fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, ValueInfoProto};

    #[test]
    fn token_type_ids_become_zeros_computed_in_the_graph() {
        let input = |name: &str| ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let mut proto = ModelProto {
            graph: Some(GraphProto {
                input: vec![input(io::INPUTS_EMBEDS), input(io::TOKEN_TYPE_IDS)],
                ..Default::default()
            }),
            ..Default::default()
        };
        text_token_types(&mut proto);
        let graph = proto.graph.as_ref().unwrap();
        let names: Vec<_> = graph
            .input
            .iter()
            .filter_map(|i| i.name.as_deref())
            .collect();
        assert_eq!(names, [io::INPUTS_EMBEDS]);
        let ops: Vec<_> = graph
            .node
            .iter()
            .filter_map(|n| n.op_type.as_deref())
            .collect();
        assert_eq!(ops, ["Shape", "Gather", "Expand"]);
        assert_eq!(graph.node[2].output, [io::TOKEN_TYPE_IDS]);
        // A graph without the input is left as it is.
        let before = proto.clone();
        text_token_types(&mut proto);
        assert_eq!(proto, before);
    }
}
