//! Safetensors tensor names of the image path of Gemma3ForConditionalGeneration and PaliGemmaForConditionalGeneration:
//! the SigLIP vision tower, Gemma3MultiModalProjector (semantics §5.1–§5.3) and PaliGemma's one Linear (§8.1).
//!
//! Checkpoints name the tower `vision_tower.vision_model.*` (hub, transformers 4.x) or `vision_tower.*`
//! (transformers 5.x `save_pretrained`); [`VisionNames::detect`] finds which. The projector is
//! `multi_modal_projector.*` in both.
//!
//! The constants are module paths below the tower prefix (`nn.Conv2d`, `nn.Linear` and `nn.LayerNorm` modules hold
//! `.weight` and `.bias`); per-layer modules follow `encoder.layers.{i}.` ([`VisionNames::layer`]).
//!
//! ```
//! use gemma_models::names::vision::{self, VisionNames};
//! let names = VisionNames::new(vision::TOWER_PREFIXES[0]);
//! assert_eq!(names.layer(2, vision::FC1), "vision_tower.vision_model.encoder.layers.2.mlp.fc1");
//! assert_eq!(names.weight(vision::PATCH_EMBEDDING), "vision_tower.vision_model.embeddings.patch_embedding.weight");
//! ```

use crate::checkpoint::Checkpoint;
use crate::config::VisionConfig;
use crate::family::Projector;

/// Vision-tower prefixes, in the order [`VisionNames::detect`] tries them: hub (transformers 4.x), then 5.x.
pub const TOWER_PREFIXES: [&str; 2] = ["vision_tower.vision_model.", "vision_tower."];
/// Prefix of the projector tensors (the same in both forms).
pub const PROJECTOR_PREFIX: &str = "multi_modal_projector.";
/// The projector's RMSNorm gain `[D]`, applied as (1 + w).
pub const PROJECTOR_NORM: &str = "multi_modal_projector.mm_soft_emb_norm.weight";
/// The projection `[D, H_text]`, a bare parameter stored `[in, out]` (not an `nn.Linear`).
pub const PROJECTION: &str = "multi_modal_projector.mm_input_projection_weight";

/// PaliGemmaMultiModalProjector's `nn.Linear` (`[H_text, D]` + bias `[H_text]`).
pub const PROJECTOR_LINEAR: &str = "multi_modal_projector.linear";

/// The patch embedding, a stride-p `nn.Conv2d` (`[D, C, p, p]` + bias).
pub const PATCH_EMBEDDING: &str = "embeddings.patch_embedding";
/// The learned positions, an `nn.Embedding` (`[T, D]`, weight only).
pub const POSITION_EMBEDDING: &str = "embeddings.position_embedding";
/// The LayerNorm after the last layer.
pub const POST_LAYERNORM: &str = "post_layernorm";

/// Modules of one encoder layer, below `encoder.layers.{i}.`: the pre-attention and pre-MLP LayerNorms, the
/// attention (projections in [`attn`]) and the MLP's two linears.
pub const LAYER_NORM1: &str = "layer_norm1";
pub const LAYER_NORM2: &str = "layer_norm2";
pub const SELF_ATTN: &str = "self_attn";
pub const FC1: &str = "mlp.fc1";
pub const FC2: &str = "mlp.fc2";

/// The attention's biased `nn.Linear` projections, below `self_attn.`.
pub mod attn {
    pub const Q_PROJ: &str = "q_proj";
    pub const K_PROJ: &str = "k_proj";
    pub const V_PROJ: &str = "v_proj";
    pub const OUT_PROJ: &str = "out_proj";
    /// All four, in checkpoint order.
    pub const ALL: [&str; 4] = [Q_PROJ, K_PROJ, V_PROJ, OUT_PROJ];
}

/// The vision tensor names of one checkpoint: which tower prefix it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionNames {
    /// `vision_tower.vision_model.` or `vision_tower.`.
    pub tower_prefix: String,
}

impl VisionNames {
    pub fn new(tower_prefix: &str) -> VisionNames {
        VisionNames {
            tower_prefix: tower_prefix.to_string(),
        }
    }

    /// The first of [`TOWER_PREFIXES`] whose patch embedding the checkpoint has; `None` when none has it (the
    /// names looked for are [`VisionNames::probes`]).
    pub fn detect(ckpt: &Checkpoint) -> Option<VisionNames> {
        TOWER_PREFIXES
            .into_iter()
            .map(VisionNames::new)
            .find(|names| ckpt.contains(&names.weight(PATCH_EMBEDDING)))
    }

    /// The tensor names [`VisionNames::detect`] looks for, in order.
    pub fn probes() -> Vec<String> {
        TOWER_PREFIXES
            .into_iter()
            .map(|p| VisionNames::new(p).weight(PATCH_EMBEDDING))
            .collect()
    }

    /// A tower tensor or module: `tower("post_layernorm.weight")`.
    pub fn tower(&self, rest: &str) -> String {
        format!("{}{rest}", self.tower_prefix)
    }

    /// A module of encoder layer `index`: `layer(3, FC1)` is `…encoder.layers.3.mlp.fc1`.
    pub fn layer(&self, index: usize, module: &str) -> String {
        self.tower(&format!("encoder.layers.{index}.{module}"))
    }

    /// The weight of a tower module.
    pub fn weight(&self, module: &str) -> String {
        self.tower(&format!("{module}.weight"))
    }

    /// The bias of a tower module.
    pub fn bias(&self, module: &str) -> String {
        self.tower(&format!("{module}.bias"))
    }

    /// [`PROJECTOR_NORM`].
    pub fn projector_norm(&self) -> &'static str {
        PROJECTOR_NORM
    }

    /// [`PROJECTION`].
    pub fn projection(&self) -> &'static str {
        PROJECTION
    }

    /// Every tensor the vision encoder reads, with its expected shape (`nn.Linear` weights are `[out, in]`).
    pub fn tensors(&self, v: &VisionConfig, text_hidden: usize) -> Vec<(String, Vec<usize>)> {
        let (d, i, c, p) = (
            v.hidden_size,
            v.intermediate_size,
            v.num_channels,
            v.patch_size,
        );
        let mut out = vec![
            (self.weight(PATCH_EMBEDDING), vec![d, c, p, p]),
            (self.bias(PATCH_EMBEDDING), vec![d]),
            (self.weight(POSITION_EMBEDDING), vec![v.num_patches(), d]),
        ];
        // A module with weight and bias: (module path, weight shape, bias length).
        let mut biased = |module: String, weight: Vec<usize>, bias: usize| {
            out.push((format!("{module}.weight"), weight));
            out.push((format!("{module}.bias"), vec![bias]));
        };
        for l in 0..v.num_hidden_layers {
            for norm in [LAYER_NORM1, LAYER_NORM2] {
                biased(self.layer(l, norm), vec![d], d);
            }
            for proj in attn::ALL {
                biased(self.layer(l, &format!("{SELF_ATTN}.{proj}")), vec![d, d], d);
            }
            biased(self.layer(l, FC1), vec![i, d], i);
            biased(self.layer(l, FC2), vec![d, i], d);
        }
        biased(self.tower(POST_LAYERNORM), vec![d], d);
        match v.system.spec().projector {
            Projector::PoolNormProject => {
                out.push((PROJECTOR_NORM.to_string(), vec![d]));
                out.push((PROJECTION.to_string(), vec![d, text_hidden]));
            }
            Projector::Linear => biased(
                PROJECTOR_LINEAR.to_string(),
                vec![text_hidden, d],
                text_hidden,
            ),
        }
        out
    }
}
