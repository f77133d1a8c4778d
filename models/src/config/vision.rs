//! The image side of Gemma3ForConditionalGeneration and PaliGemmaForConditionalGeneration: the SigLIP vision tower
//! (`vision_config`) and the multimodal fields of the top level (`mm_tokens_per_image`, the image token ids).
//! Spec §5, §8, §10.
//!
//! Tower defaults are the class's ([`VisionSpec::tower`](crate::family::VisionSpec)): for Gemma 3 those of
//! transformers' `SiglipVisionConfig` (SigLIP-base: 768 wide, 12 layers, 224 px, patch 16), for PaliGemma
//! `PaliGemmaConfig`'s So400m-like ones; the rest are `Gemma3Config`'s (256 soft tokens, boi 255999, eoi 256000,
//! image token 262144), applied only where a key is absent, as transformers does. Released Gemma 3 configs spell
//! out the So400m values (1152, 27 layers, 896 px, patch 14), so the SigLIP-base defaults only matter for
//! hand-written configs.
//!
//! ```
//! # use gemma_models::ModelConfig;
//! let json = r#"{"model_type": "gemma3", "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
//!   "num_hidden_layers": 34}, "vision_config": {"hidden_size": 1152, "image_size": 896, "patch_size": 14,
//!   "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}}"#;
//! let cfg = ModelConfig::from_json_str(json, "config.json".as_ref())?;
//! let v = cfg.vision_config.unwrap();
//! assert_eq!((v.patches_per_side(), v.tokens_per_side(), v.pool_kernel()), (64, 16, 4));
//! # Ok::<(), gemma_models::ConfigError>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{describe, Fields};
use crate::error::ConfigError;
use crate::family::{Projector, VisionSystem};

/// SigLIP vision tower and projector sizes, with the image token ids of the text side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Width of the SigLIP residual stream (1152 for So400m).
    pub hidden_size: usize,
    /// Width of the SigLIP MLP (4304 for So400m).
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Input channels of `pixel_values` (3).
    pub num_channels: usize,
    /// Side S of the square input image in pixels (896 for Gemma 3).
    pub image_size: usize,
    /// Side of one square patch, also the stride of the patch convolution (14).
    pub patch_size: usize,
    /// Epsilon of the SigLIP LayerNorms and of the projector's RMSNorm (`mm_soft_emb_norm`).
    pub layer_norm_eps: f64,
    /// Soft tokens per image after average pooling (256): a square number.
    pub mm_tokens_per_image: usize,
    /// `<start_of_image>` (`boi_token_index`).
    pub boi_token_id: u32,
    /// `<end_of_image>` (`eoi_token_index`).
    pub eoi_token_id: u32,
    /// `<image_soft_token>` (`image_token_index`): the placeholders that image features replace.
    pub image_token_id: u32,
    /// How features are projected and attended to (the class's [`VisionSystem`]).
    #[serde(default, skip_serializing_if = "VisionSystem::is_default")]
    pub system: VisionSystem,
}

/// Gemma 3's class defaults, applied to absent keys: `SiglipVisionConfig`'s (SigLIP-base patch16-224) for the
/// channels and LayerNorm epsilon, `Gemma3Config`'s for the soft tokens and the image token ids. (Its tower sizes,
/// the same as Gemma 3's [`VisionSpec::tower`](crate::family::VisionSpec), are not read: [`parse`] takes those from
/// the class's entry.)
const DEFAULTS: VisionConfig = VisionConfig {
    hidden_size: 768,
    intermediate_size: 3072,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    num_channels: 3,
    image_size: 224,
    patch_size: 16,
    layer_norm_eps: 1e-6,
    mm_tokens_per_image: 256,
    boi_token_id: 255_999,
    eoi_token_id: 256_000,
    image_token_id: 262_144,
    system: VisionSystem::Gemma3,
};
/// Sanity limits (SigLIP in Gemma 3: 3 channels, 896 px, 256 tokens per image).
const MAX_CHANNELS: usize = 16;
const MAX_IMAGE_SIZE: usize = 16_384;
const MAX_MM_TOKENS: usize = 65_536;

impl VisionConfig {
    /// Per-head width of SigLIP attention (`hidden_size / num_attention_heads`, 72 for So400m).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Patches along one side of the image (`image_size / patch_size`, 64 for Gemma 3).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image (4096 for Gemma 3): the length of SigLIP's sequence and of its position table.
    pub fn num_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Soft tokens along one side of the pooled grid (`sqrt(mm_tokens_per_image)`, 16 for Gemma 3).
    pub fn tokens_per_side(&self) -> usize {
        integer_sqrt(self.mm_tokens_per_image).unwrap_or(0)
    }

    /// Kernel and stride of the projector's average pooling (`patches_per_side / tokens_per_side`, 4 for Gemma 3).
    pub fn pool_kernel(&self) -> usize {
        self.patches_per_side() / self.tokens_per_side().max(1)
    }
}

fn integer_sqrt(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// Parses `vision_config` (absent → the class's tower defaults) and the multimodal fields of `top`.
///
/// PaliGemma (semantics §8.1) has one feature per patch (`mm_tokens_per_image` = patches, no pooling) and no
/// `<start_of_image>`/`<end_of_image>`: both ids are its `<image>` token, the prompt's placeholder itself.
pub(super) fn parse(top: &Fields<'_>, system: VisionSystem) -> Result<VisionConfig, ConfigError> {
    let spec = system.spec();
    let empty = Map::new();
    let given = top.object("vision_config")?;
    // A `vision_config` object takes SiglipVisionConfig's defaults key by key; only an absent one is the class's
    // whole default tower (transformers' `sub_configs_defaults`).
    let tower = match given {
        Some(_) => &VisionSystem::Gemma3.spec().tower,
        None => &spec.tower,
    };
    let v = given.unwrap_or_else(|| Fields::new(&empty, top.origin(), "vision_config."));
    if let Some(mt) = v.str("model_type")? {
        if mt != "siglip_vision_model" {
            return Err(v.invalid("model_type", "\"siglip_vision_model\"", format!("{mt:?}")));
        }
    }
    if let Some(act) = v.value("hidden_act") {
        if act.as_str() != Some("gelu_pytorch_tanh") {
            return Err(ConfigError::UnsupportedActivation {
                path: v.origin().to_path_buf(),
                field: v.path_of("hidden_act"),
                found: act.as_str().map_or_else(|| describe(act), str::to_string),
                supported: "gelu_pytorch_tanh".into(),
            });
        }
    }

    use super::text::limits;
    let hidden_size = v.bounded("hidden_size", Some(tower.hidden_size), limits::HIDDEN)?;
    let intermediate_size = v.bounded(
        "intermediate_size",
        Some(tower.intermediate_size),
        limits::INTERMEDIATE,
    )?;
    let num_hidden_layers = v.bounded(
        "num_hidden_layers",
        Some(tower.num_hidden_layers),
        limits::LAYERS,
    )?;
    let num_attention_heads = v.bounded(
        "num_attention_heads",
        Some(tower.num_attention_heads),
        limits::HEADS,
    )?;
    let num_channels = v.bounded("num_channels", Some(DEFAULTS.num_channels), MAX_CHANNELS)?;
    let image_size = v.at_most(
        "image_size",
        square_size(&v, "image_size", tower.image_size)?,
        MAX_IMAGE_SIZE,
    )?;
    let patch_size = square_size(&v, "patch_size", tower.patch_size)?;
    let layer_norm_eps = v.positive_f64("layer_norm_eps", Some(DEFAULTS.layer_norm_eps))?;
    let mm_tokens_per_image = match spec.projector {
        Projector::PoolNormProject => top.bounded(
            "mm_tokens_per_image",
            Some(DEFAULTS.mm_tokens_per_image),
            MAX_MM_TOKENS,
        )?,
        Projector::Linear => {
            let p = image_size / patch_size.max(1);
            v.at_most("image_size", p * p, MAX_MM_TOKENS)?
        }
    };

    if hidden_size % num_attention_heads != 0 {
        return Err(v.invalid(
            "num_attention_heads",
            format!("a divisor of vision_config.hidden_size ({hidden_size})"),
            num_attention_heads.to_string(),
        ));
    }
    if image_size % patch_size != 0 {
        return Err(v.invalid(
            "patch_size",
            format!("a divisor of vision_config.image_size ({image_size})"),
            patch_size.to_string(),
        ));
    }
    let per_side = image_size / patch_size;
    // The projector average-pools the per_side × per_side patch grid down to sqrt(mm_tokens) × sqrt(mm_tokens).
    match integer_sqrt(mm_tokens_per_image) {
        Some(t) if per_side % t == 0 => {}
        _ => {
            return Err(top.invalid(
                "mm_tokens_per_image",
                format!(
                    "a square k² with k dividing the {per_side} patches per side \
                     (vision_config.image_size {image_size} / patch_size {patch_size})"
                ),
                mm_tokens_per_image.to_string(),
            ))
        }
    }

    let image_token_id = token_id(
        top,
        "image_token_index",
        "image_token_id",
        spec.image_token_default,
    )?;
    let (boi_token_id, eoi_token_id) = match spec.projector {
        Projector::Linear => (image_token_id, image_token_id),
        Projector::PoolNormProject => (
            token_id(
                top,
                "boi_token_index",
                "boi_token_id",
                DEFAULTS.boi_token_id,
            )?,
            token_id(
                top,
                "eoi_token_index",
                "eoi_token_id",
                DEFAULTS.eoi_token_id,
            )?,
        ),
    };
    Ok(VisionConfig {
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_channels,
        image_size,
        patch_size,
        layer_norm_eps,
        mm_tokens_per_image,
        boi_token_id,
        eoi_token_id,
        image_token_id,
        system,
    })
}

/// `image_size` / `patch_size`: an integer, or a `[height, width]` pair that must be square (transformers accepts
/// pairs, but Gemma 3's projector assumes a square grid).
fn square_size(v: &Fields<'_>, key: &str, default: usize) -> Result<usize, ConfigError> {
    match v.value(key) {
        Some(Value::Array(items)) => {
            let dims: Vec<Option<u64>> = items.iter().map(Value::as_u64).collect();
            match dims.as_slice() {
                [Some(h), Some(w)] if h == w && *h > 0 => Ok(*h as usize),
                _ => Err(v.invalid(
                    key,
                    "a positive integer or a square [height, width] pair",
                    describe(v.value(key).expect("present")),
                )),
            }
        }
        _ => v.positive(key, Some(default)),
    }
}

/// A single token id under `key` (the 4.x name, which 5.x still writes) or `alias`, else `default`.
fn token_id(top: &Fields<'_>, key: &str, alias: &str, default: u32) -> Result<u32, ConfigError> {
    let (used, ids) = match top.token_ids(key)? {
        Some(ids) => (key, Some(ids)),
        None => (alias, top.token_ids(alias)?),
    };
    match ids {
        None => Ok(default),
        Some(ids) if ids.len() == 1 => Ok(ids[0]),
        Some(ids) => Err(top.invalid(used, "a single token id", format!("{ids:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use crate::{ConfigError, ModelConfig, VisionConfig};

    const ORIGIN: &str = "/models/gemma-3-4b/config.json";

    fn parse(v: &Value) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_json_str(&v.to_string(), Path::new(ORIGIN))
    }

    /// google/gemma-3-4b-it's multimodal fields (semantics §10).
    fn gemma3_4b() -> Value {
        json!({
            "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
            "eoi_token_index": 256000, "image_token_index": 262144, "mm_tokens_per_image": 256,
            "model_type": "gemma3",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                            "num_hidden_layers": 34, "sliding_window": 1024},
            "vision_config": {
                "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                "patch_size": 14, "vision_use_head": false
            }
        })
    }

    fn set(mut v: Value, path: &[&str], value: Option<Value>) -> Value {
        let (key, parents) = path.split_last().unwrap();
        let mut obj = &mut v;
        for p in parents {
            obj = &mut obj[*p];
        }
        let map = obj.as_object_mut().unwrap();
        match value {
            Some(x) => map.insert(key.to_string(), x),
            None => map.remove(*key),
        };
        v
    }

    fn err(v: &Value) -> String {
        let msg = parse(v).expect_err("config should be refused").to_string();
        assert!(
            msg.contains(ORIGIN),
            "message does not name the file: {msg}"
        );
        msg
    }

    /// (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads).
    fn tower_sizes(v: &VisionConfig) -> (usize, usize, usize, usize) {
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads,
        )
    }

    #[test]
    fn gemma3_4b_vision_values_and_derived_sizes() {
        let v = parse(&gemma3_4b()).unwrap().vision_config.unwrap();
        assert_eq!(tower_sizes(&v), (1152, 4304, 27, 16));
        assert_eq!((v.num_channels, v.image_size, v.patch_size), (3, 896, 14));
        assert_eq!(v.layer_norm_eps, 1e-6);
        assert_eq!(v.mm_tokens_per_image, 256);
        assert_eq!(
            (v.boi_token_id, v.eoi_token_id, v.image_token_id),
            (255_999, 256_000, 262_144)
        );
        assert_eq!(v.head_dim(), 72);
        assert_eq!((v.patches_per_side(), v.num_patches()), (64, 4096));
        assert_eq!((v.tokens_per_side(), v.pool_kernel()), (16, 4));
    }

    /// google/paligemma2-3b-pt-448's multimodal fields, abridged (text sizes of the tiny fixture).
    fn paligemma2() -> Value {
        json!({
            "architectures": ["PaliGemmaForConditionalGeneration"], "image_token_index": 257152,
            "model_type": "paligemma", "projection_dim": 2304, "hidden_size": 2048,
            "text_config": {"hidden_size": 48, "intermediate_size": 96, "model_type": "gemma2",
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "vocab_size": 257216, "final_logit_softcapping": 30.0,
                            "use_bidirectional_attention": true, "num_image_tokens": 1024},
            "vision_config": {"image_size": 448, "model_type": "siglip_vision_model", "num_image_tokens": 1024,
                              "projection_dim": 2304, "projector_hidden_act": "gelu_fast", "vision_use_head": false}
        })
    }

    #[test]
    fn paligemma_takes_its_family_from_text_config_and_its_tower_defaults() {
        use crate::family::VisionSystem;
        use crate::Family;
        let cfg = parse(&paligemma2()).unwrap();
        assert_eq!(cfg.text.family, Family::Gemma2);
        assert_eq!(cfg.text.final_logit_softcapping, Some(30.0));
        assert_eq!(cfg.text_prefix, "language_model.model.");
        let v = cfg.vision_config.unwrap();
        assert_eq!(v.system, VisionSystem::PaliGemma);
        // A vision_config object without the sizes takes SigLIP-base's (transformers too); released configs list them.
        assert_eq!(tower_sizes(&v), (768, 3072, 12, 12));
        assert_eq!(
            (v.image_size, v.patch_size, v.mm_tokens_per_image),
            (448, 16, 784)
        );
        assert_eq!(
            (v.pool_kernel(), v.image_token_id, v.boi_token_id),
            (1, 257_152, 257_152)
        );
        let absent = parse(&set(paligemma2(), &["vision_config"], None)).unwrap();
        let v = absent.vision_config.unwrap();
        assert_eq!(tower_sizes(&v), (1152, 4096, 27, 16));
        assert_eq!(
            (v.image_size, v.patch_size, v.mm_tokens_per_image),
            (224, 14, 256)
        );

        let v1 = set(
            paligemma2(),
            &["text_config", "model_type"],
            Some(json!("gemma")),
        );
        let v1 = set(v1, &["text_config", "final_logit_softcapping"], None);
        assert_eq!(parse(&v1).unwrap().text.family, Family::Gemma);
        let bad = set(
            paligemma2(),
            &["text_config", "model_type"],
            Some(json!("gemma3_text")),
        );
        assert!(err(&bad).contains("expected \"gemma\" or \"gemma2\""));
        // Gemma 3's class still refuses bidirectional attention.
        let g3 = set(
            gemma3_4b(),
            &["text_config", "use_bidirectional_attention"],
            Some(json!(true)),
        );
        assert!(err(&g3).contains("use_bidirectional_attention"));
    }

    #[test]
    fn text_only_models_have_no_vision_config() {
        let v = json!({"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "vocab_size": 300});
        assert!(parse(&v).unwrap().vision_config.is_none());
    }

    #[test]
    fn absent_fields_take_siglip_and_gemma3_class_defaults() {
        // SigLIP-base is 224 px / patch 16 = 14 patches per side, so 256 soft tokens (16 per side) cannot be
        // pooled from it: transformers would fail too. 196 = 14² pools with kernel 1.
        let mut v = set(gemma3_4b(), &["vision_config"], None);
        for key in ["boi_token_index", "eoi_token_index", "image_token_index"] {
            v = set(v, &[key], None);
        }
        let msg = err(&v);
        assert!(
            msg.contains("`mm_tokens_per_image`") && msg.contains("14 patches per side"),
            "{msg}"
        );
        let v = set(v, &["mm_tokens_per_image"], Some(json!(196)));
        let c = parse(&v).unwrap().vision_config.unwrap();
        assert_eq!(tower_sizes(&c), (768, 3072, 12, 12));
        assert_eq!((c.image_size, c.patch_size, c.num_channels), (224, 16, 3));
        assert_eq!((c.tokens_per_side(), c.pool_kernel()), (14, 1));
        assert_eq!(
            (c.boi_token_id, c.eoi_token_id, c.image_token_id),
            (255_999, 256_000, 262_144)
        );
    }

    #[test]
    fn token_ids_accept_the_id_aliases_and_square_pairs() {
        let mut v = set(gemma3_4b(), &["image_token_index"], None);
        v = set(v, &["image_token_id"], Some(json!(7)));
        v = set(v, &["vision_config", "image_size"], Some(json!([896, 896])));
        let c = parse(&v).unwrap().vision_config.unwrap();
        assert_eq!((c.image_token_id, c.image_size), (7, 896));
    }

    #[test]
    fn invalid_vision_fields_are_named() {
        let cases: Vec<(Value, &str)> = vec![
            (
                set(gemma3_4b(), &["vision_config", "patch_size"], Some(json!(15))),
                "field `vision_config.patch_size`: expected a divisor of vision_config.image_size (896)",
            ),
            (
                set(gemma3_4b(), &["vision_config", "num_attention_heads"], Some(json!(5))),
                "field `vision_config.num_attention_heads`: expected a divisor of vision_config.hidden_size (1152)",
            ),
            (
                set(gemma3_4b(), &["mm_tokens_per_image"], Some(json!(250))),
                "field `mm_tokens_per_image`: expected a square",
            ),
            (
                set(gemma3_4b(), &["mm_tokens_per_image"], Some(json!(9))),
                "field `mm_tokens_per_image`: expected a square k² with k dividing the 64 patches per side",
            ),
            (
                set(gemma3_4b(), &["vision_config", "image_size"], Some(json!([896, 448]))),
                "field `vision_config.image_size`: expected a positive integer or a square",
            ),
            (
                set(gemma3_4b(), &["vision_config", "image_size"], Some(json!(0))),
                "field `vision_config.image_size`: expected a positive integer, found 0",
            ),
            (
                set(gemma3_4b(), &["vision_config", "model_type"], Some(json!("clip_vision_model"))),
                "field `vision_config.model_type`: expected \"siglip_vision_model\"",
            ),
            (
                set(gemma3_4b(), &["vision_config", "hidden_act"], Some(json!("gelu"))),
                "field `vision_config.hidden_act`: unsupported activation \"gelu\"",
            ),
            (
                set(gemma3_4b(), &["vision_config"], Some(json!(3))),
                "field `vision_config`: expected an object",
            ),
            (
                set(gemma3_4b(), &["boi_token_index"], Some(json!([1, 2]))),
                "field `boi_token_index`: expected a single token id",
            ),
            (
                set(gemma3_4b(), &["vision_config", "layer_norm_eps"], Some(json!(-1.0))),
                "field `vision_config.layer_norm_eps`: expected a positive number",
            ),
        ];
        for (v, want) in cases {
            let msg = err(&v);
            assert!(msg.contains(want), "expected {want:?} in: {msg}");
        }
    }
}
