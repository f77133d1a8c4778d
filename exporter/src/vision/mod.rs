//! The image path of Gemma3ForConditionalGeneration as ONNX graphs (semantics §5), written beside the text decoder:
//!
//! | file | inputs → outputs |
//! |---|---|
//! | `vision_encoder.onnx` (+ `vision_encoder.onnx_data`) | `pixel_values` f32 `[num_images, 3, S, S]` → `image_features` f32 `[num_images, mm_tokens_per_image, text_hidden]` |
//! | `embed_tokens.onnx` | `input_ids` i64 `[batch, seq]` → `inputs_embeds` f32 `[batch, seq, text_hidden]`, scaled by fp32 sqrt(text_hidden) |
//! | `decoder_model_merged.onnx` | the portable decoder (Optimum I/O) with `inputs_embeds` instead of `input_ids`, plus `token_type_ids` i64 `[batch, seq]` |
//!
//! The encoder is float32 whatever the export precision. The two text graphs use the text decoder's weight storage
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
//! (transformers 5.x `save_pretrained`); both are accepted ([`VisionWeights::detect`]).

pub mod preprocess;
mod projector;
mod siglip;

use crate::builder::GraphBuilder;
use crate::decoder::io::{token_input, DecoderInput, INPUTS_EMBEDS};
use crate::layers::{Ctx, Kernels, LinearKind};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::{names, Checkpoint, ModelConfig, VisionConfig};

/// SigLIP + projector: `pixel_values` → `image_features`.
pub const ENCODER_FILE: &str = "vision_encoder.onnx";
/// External data of [`ENCODER_FILE`].
pub const ENCODER_DATA_FILE: &str = "vision_encoder.onnx_data";
/// `input_ids` → scaled `inputs_embeds`.
pub const EMBED_FILE: &str = "embed_tokens.onnx";
/// The decoder on `inputs_embeds` + `token_type_ids` (transformers.js's name).
pub const DECODER_WITH_EMBEDS_FILE: &str = "decoder_model_merged.onnx";

/// Vision-tower prefixes, in the order they are tried: hub (transformers 4.x), then transformers 5.x.
pub const TOWER_PREFIXES: [&str; 2] = ["vision_tower.vision_model.", "vision_tower."];
/// Prefix of the projector tensors (the same in both forms).
pub const PROJECTOR_PREFIX: &str = "multi_modal_projector.";

/// The vision tensor names of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionWeights {
    /// `vision_tower.vision_model.` or `vision_tower.`.
    pub tower_prefix: String,
    /// `multi_modal_projector.mm_soft_emb_norm.weight` `[D]`, a (1 + w) RMSNorm.
    pub projector_norm: String,
    /// `multi_modal_projector.mm_input_projection_weight` `[D, H_text]`.
    pub projection: String,
}

impl VisionWeights {
    /// Finds which tower prefix the checkpoint uses (by its patch embedding).
    pub fn detect(ckpt: &Checkpoint) -> Result<VisionWeights, ExportError> {
        let probe = "embeddings.patch_embedding.weight";
        let prefix = TOWER_PREFIXES
            .iter()
            .find(|p| ckpt.contains(&format!("{p}{probe}")))
            .ok_or_else(|| ExportError::VisionTowerMissing {
                dir: ckpt.dir().to_path_buf(),
                tried: TOWER_PREFIXES
                    .iter()
                    .map(|p| format!("{p}{probe}"))
                    .collect(),
            })?;
        Ok(VisionWeights {
            tower_prefix: prefix.to_string(),
            projector_norm: format!("{PROJECTOR_PREFIX}mm_soft_emb_norm.weight"),
            projection: format!("{PROJECTOR_PREFIX}mm_input_projection_weight"),
        })
    }

    /// A tower tensor name: `tower("post_layernorm.weight")`.
    pub fn tower(&self, rest: &str) -> String {
        format!("{}{rest}", self.tower_prefix)
    }

    /// Every tensor the encoder reads, with its expected shape (`nn.Linear` weights are `[out, in]`).
    pub fn required(&self, v: &VisionConfig, text_hidden: usize) -> Vec<(String, Vec<usize>)> {
        let (d, i, c, p) = (
            v.hidden_size,
            v.intermediate_size,
            v.num_channels,
            v.patch_size,
        );
        let mut out = vec![
            (
                self.tower("embeddings.patch_embedding.weight"),
                vec![d, c, p, p],
            ),
            (self.tower("embeddings.patch_embedding.bias"), vec![d]),
            (
                self.tower("embeddings.position_embedding.weight"),
                vec![v.num_patches(), d],
            ),
        ];
        for l in 0..v.num_hidden_layers {
            let n = |s: &str| self.tower(&format!("encoder.layers.{l}.{s}"));
            for norm in ["layer_norm1", "layer_norm2"] {
                out.push((n(&format!("{norm}.weight")), vec![d]));
                out.push((n(&format!("{norm}.bias")), vec![d]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                out.push((n(&format!("self_attn.{proj}.weight")), vec![d, d]));
                out.push((n(&format!("self_attn.{proj}.bias")), vec![d]));
            }
            out.push((n("mlp.fc1.weight"), vec![i, d]));
            out.push((n("mlp.fc1.bias"), vec![i]));
            out.push((n("mlp.fc2.weight"), vec![d, i]));
            out.push((n("mlp.fc2.bias"), vec![d]));
        }
        out.push((self.tower("post_layernorm.weight"), vec![d]));
        out.push((self.tower("post_layernorm.bias"), vec![d]));
        out.push((self.projector_norm.clone(), vec![d]));
        out.push((self.projection.clone(), vec![d, text_hidden]));
        out
    }
}

/// The vision part of an export: config, tensor names, and the float32 bytes its weights take.
#[derive(Debug, Clone)]
pub struct VisionPlan {
    pub config: VisionConfig,
    pub weights: VisionWeights,
    pub weight_bytes: u64,
}

impl VisionPlan {
    /// For a Gemma3ForConditionalGeneration checkpoint: detects the tensor names and checks every vision tensor
    /// (presence, shape, dtype) without writing anything. `None` for text-only models.
    pub fn check(cfg: &ModelConfig, ckpt: &Checkpoint) -> Result<Option<VisionPlan>, ExportError> {
        let Some(config) = cfg.vision_config.clone() else {
            return Ok(None);
        };
        let weights = VisionWeights::detect(ckpt)?;
        let required = weights.required(&config, cfg.text.hidden_size);
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
    // Vision blocks are always the portable float32 ones, whatever the text decoder uses.
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels: Kernels::PORTABLE,
    };
    let hidden = siglip::tower(&mut cx, &pixel_values, v, &plan.weights)?;
    let features = projector::project(&mut cx, &hidden, v, &plan.weights)?;
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
