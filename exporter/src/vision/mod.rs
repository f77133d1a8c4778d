//! The image path of Gemma3ForConditionalGeneration as ONNX graphs (semantics §5), written beside the text decoder:
//!
//! | file | inputs → outputs |
//! |---|---|
//! | `vision_encoder.onnx` (+ `vision_encoder.onnx_data`) | `pixel_values` f32 `[num_images, 3, S, S]` → `image_features` f32 `[num_images, mm_tokens_per_image, text_hidden]` |
//! | `embed_tokens.onnx` | `input_ids` i64 `[batch, seq]` → `inputs_embeds` f32 `[batch, seq, text_hidden]`, scaled by fp32 sqrt(text_hidden) |
//! | `decoder_model_merged.onnx` | the portable decoder (Optimum I/O) with `inputs_embeds` instead of `input_ids`, plus `token_type_ids` i64 `[batch, seq]` |
//!
//! The encoder's activations are float32 whatever the export precision; int8/int4 exports quantize its matmuls in 8
//! bits, with ONNX Runtime's fused CPU kernels when the text decoder is the cpu graph ([`kernels`] has the table).
//! The two text graphs use the text decoder's weight storage
//! (fp32, fp16/bf16 or block-quantized) and always portable attention, also when `model.onnx` is the CPU graph.
//!
//! How a runtime uses them: encode the images; embed the prompt; overwrite the rows of `<image_soft_token>`
//! (`image_token_id`) with the features in order (masked_scatter order: batch row, then image, then token; no
//! sqrt(hidden) factor); run `decoder_model_merged.onnx` with `token_type_ids` = 1 at those rows of the current
//! chunk and 0 elsewhere. Each maximal run of type-1 tokens is one image block whose tokens attend to each other in
//! both directions, in global and sliding layers alike; cached keys never belong to a block of the current chunk,
//! so **each image must be prefilled whole in one chunk**. Decode steps pass zeros.
//!
//! Weights: the two text graphs reuse `model.onnx_data` (the writer hands back the initializers `model.onnx`
//! already wrote), so text weights are on disk once. The vision tower and projector, used by one graph only, go
//! to their own `vision_encoder.onnx_data`: `model.onnx_data` stays what a text-only export writes, and the file
//! pair follows the transformers.js `<graph>.onnx` + `<graph>.onnx_data` convention.
//!
//! Checkpoints name the tower `vision_tower.vision_model.*` (hub, transformers 4.x) or `vision_tower.*`
//! (transformers 5.x `save_pretrained`); both are accepted ([`VisionNames::detect`], with the other vision tensor
//! names in [`gemma_models::names::vision`]).

pub mod kernels;
pub mod preprocess;
mod projector;
mod siglip;

use crate::builder::GraphBuilder;
use crate::decoder::io::{token_input, DecoderInput, INPUTS_EMBEDS};
use crate::layers::{Ctx, Kernels, LinearKind};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::names::{self, vision::VisionNames};
use gemma_models::{Checkpoint, ModelConfig, VisionConfig};
pub use kernels::VisionKernels;

/// The image graphs' file names (the decoder on embeddings has transformers.js's name).
pub use gemma_models::contract::files::{
    DECODER_WITH_EMBEDS_FILE, EMBED_FILE, ENCODER_DATA_FILE, ENCODER_FILE,
};

/// The vision part of an export: config, tensor names, and the float32 bytes its weights take.
#[derive(Debug, Clone)]
pub struct VisionPlan {
    pub config: VisionConfig,
    pub weights: VisionNames,
    pub weight_bytes: u64,
}

impl VisionPlan {
    /// For a Gemma3ForConditionalGeneration checkpoint: detects the tensor names and checks every vision tensor
    /// (presence, shape, dtype) without writing anything. `None` for text-only models.
    pub fn check(cfg: &ModelConfig, ckpt: &Checkpoint) -> Result<Option<VisionPlan>, ExportError> {
        let Some(config) = cfg.vision_config.clone() else {
            return Ok(None);
        };
        let weights = VisionNames::detect(ckpt).ok_or_else(|| ExportError::VisionTowerMissing {
            dir: ckpt.dir().to_path_buf(),
            tried: VisionNames::probes(),
        })?;
        let required = weights.tensors(&config, cfg.text.hidden_size);
        for (name, shape) in &required {
            ckpt.tensor_with_shape(name, shape)?;
        }
        let weight_bytes = required
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
            .sum();
        Ok(Some(VisionPlan {
            config,
            weights,
            weight_bytes,
        }))
    }
}

/// Builds `vision_encoder.onnx`: `pixel_values` `[num_images, C, S, S]` → `image_features`
/// `[num_images, mm_tokens_per_image, text_hidden]`.
pub fn build_encoder(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    plan: &VisionPlan,
    kernels: &VisionKernels,
) -> Result<(), ExportError> {
    let v = &plan.config;
    let s = v.image_size;
    let pixel_values = g.input(
        "pixel_values",
        DataType::Float,
        &[
            "num_images".into(),
            v.num_channels.into(),
            s.into(),
            s.into(),
        ],
    );
    // The tower's kernels are `kernels`; everything else (the projector) is the portable float32 blocks.
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels: Kernels::PORTABLE,
    };
    let hidden = siglip::tower(&mut cx, &pixel_values, v, &plan.weights, kernels)?;
    let features = projector::project(&mut cx, &hidden, v, &plan.weights, cfg.text.hidden_size)?;
    cx.g.set_scope("");
    cx.g.output(
        &features,
        "image_features",
        DataType::Float,
        &[
            "num_images".into(),
            v.mm_tokens_per_image.into(),
            cfg.text.hidden_size.into(),
        ],
    );
    Ok(())
}

/// Builds `embed_tokens.onnx`: `input_ids` `[batch, seq]` → `inputs_embeds` `[batch, seq, hidden]` =
/// `E[ids] · fp32(sqrt(hidden))` (semantics §1.1), exactly the embedding of `model.onnx`: pass the text decoder's
/// `linear` storage (fp32, fp16/bf16 or block-quantized) and its writer, built first, so that the table is the one
/// `model.onnx` wrote.
///
/// When the image token id is outside the vocabulary, its ids are looked up as 0 first, as transformers does;
/// those rows are overwritten by image features anyway.
pub fn build_embed_tokens(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    linear: LinearKind,
) -> Result<(), ExportError> {
    let h = cfg.text.hidden_size;
    let mut ids = token_input(g, DecoderInput::InputIds, h);
    let kernels = Kernels {
        linear,
        ..Kernels::PORTABLE
    };
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels,
    };
    cx.g.set_scope("/model/embed_tokens");
    if let Some(v) = &cfg.vision_config {
        if v.image_token_id as usize >= cfg.text.vocab_size {
            let image = cx.g.scalar_i64("image_token_id", v.image_token_id as i64);
            let zero = cx.g.scalar_i64("zero", 0);
            let is_image = cx.g.op("Equal", "is_image", &[&ids, &image], &[]);
            ids = cx.g.where_("image_to_pad", &is_image, &zero, &ids);
        }
    }
    let emb = cx.scaled_embedding(&ids, &names::embed_tokens(&cfg.text_prefix), h)?;
    cx.g.set_scope("");
    cx.g.output(
        &emb,
        INPUTS_EMBEDS,
        DataType::Float,
        &["batch_size".into(), "sequence_length".into(), h.into()],
    );
    Ok(())
}
