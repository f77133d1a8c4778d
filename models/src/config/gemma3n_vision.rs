//! The vision side of Gemma3nForConditionalGeneration (docs/gemma3n-vision.md): the timm MobileNetV5 encoder
//! (`vision_config`: `architecture` `mobilenetv5_300m_enc`, optional `model_args`), its embedder and the top-level
//! image fields (`vision_soft_tokens_per_image`, the image token ids).
//!
//! The block list is what timm builds: `model_args.block_args` (timm's decoded form: stages of block objects)
//! when the config has it, else timm 1.0's `mobilenetv5_300m_enc` architecture. Only what the weights cannot say is
//! kept here: each block's kind, stride, and for attention its heads, key/value width and key/value stride; the
//! channels and kernel sizes are read from the tensors' shapes by the exporter.
//!
//! ```
//! # use gemma_models::config::gemma3n_vision::{Gemma3nVisionConfig, BlockKind};
//! let json = r#"{"model_type": "gemma3n", "text_config": {"hidden_size": 2048}, "vision_config": {}}"#;
//! let v = Gemma3nVisionConfig::from_json_str(json, "config.json".as_ref())?;
//! assert_eq!(v.stages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 5, 37, 39]);
//! assert_eq!(v.stages[2][9].kind, BlockKind::Attention { heads: 12, key_dim: 64, value_dim: 64, kv_stride: 2 });
//! assert_eq!((v.soft_tokens, v.msfa_output_resolution, v.image_token_id), (256, 16, 262_145));
//! # Ok::<(), gemma_models::ConfigError>(())
//! ```

use std::path::Path;

use serde_json::{Map, Value};

use super::fields::{describe, Fields};
use super::gemma3n_audio::{id, object, read};
use crate::error::ConfigError;

const MAX_WIDTH: usize = 65_536;
const MAX_TOKENS: usize = 65_536;
const MAX_HEADS: usize = 256;
const MAX_STRIDE: usize = 8;
const MAX_BLOCKS: usize = 1024;

/// What a block of the tower is (timm's `block_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `er`: EdgeResidual (full conv expansion, pointwise projection).
    EdgeResidual,
    /// `uir`: UniversalInvertedResidual (optional depthwise start/mid/end around a pointwise FFN, layer scale).
    InvertedResidual,
    /// `mqa`: MobileAttention with MultiQueryAttention2d (one key and value head, optional key/value stride).
    Attention {
        heads: usize,
        key_dim: usize,
        value_dim: usize,
        kv_stride: usize,
    },
}

/// One block: its kind and its stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub kind: BlockKind,
    pub stride: usize,
}

/// The MobileNetV5 encoder, the multi-scale fusion adapter and the vision embedder.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3nVisionConfig {
    /// The tower's output width (`vision_config.hidden_size`, 2048: the MSFA's output channels).
    pub hidden_size: usize,
    /// Epsilon of the embedder's norms (`vision_config.rms_norm_eps`); the tower's own norms use 1e-6.
    pub rms_norm_eps: f64,
    /// The blocks, stage by stage.
    pub stages: Vec<Vec<BlockSpec>>,
    /// Side of the MSFA's square output (16): `soft_tokens` = its square.
    pub msfa_output_resolution: usize,
    /// `text_config.hidden_size`: the width of `image_features`.
    pub text_hidden_size: usize,
    /// `vision_soft_tokens_per_image` (256).
    pub soft_tokens: usize,
    pub image_token_id: u32,
    pub boi_token_id: u32,
    pub eoi_token_id: u32,
}

impl Gemma3nVisionConfig {
    /// Reads `config.json` (a Gemma3nForConditionalGeneration's) and parses its vision fields.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json_str(&read(path)?, path)
    }

    /// Parses the vision fields of config JSON; `origin` is only used in messages.
    pub fn from_json_str(s: &str, origin: &Path) -> Result<Self, ConfigError> {
        let map = object(s, origin)?;
        parse(&Fields::new(&map, origin, ""))
    }
}

/// timm 1.0's `mobilenetv5_300m_enc` stages (`_gen_mobilenet_v5`), as `(block string, repeats)`.
const MOBILENETV5_300M: [&[(&str, usize)]; 4] = [
    &[("er_k3_s2_e4_c128", 1), ("er_k3_s1_e4_c128", 2)],
    &[
        ("uir_a3_k5_s2_e6_c256", 1),
        ("uir_a5_k0_s1_e4_c256", 1),
        ("uir_a3_k0_s1_e4_c256", 1),
        ("uir_a5_k0_s1_e4_c256", 1),
        ("uir_a3_k0_s1_e4_c256", 1),
    ],
    &[
        ("uir_a5_k5_s2_e6_c640", 1),
        ("uir_a5_k0_s1_e4_c640", 7),
        ("uir_a0_k0_s1_e1_c640", 1),
        ("mqa_k3_h12_v2_s1_d64_c640|uir_a0_k0_s1_e2_c640", 14),
    ],
    &[
        ("uir_a5_k5_s2_e6_c1280", 1),
        ("mqa_k3_h16_s1_d96_c1280|uir_a0_k0_s1_e2_c1280", 19),
    ],
];

/// One timm block string (`mqa_k3_h12_v2_s1_d64_c640`): the kind and stride; `None` if malformed.
fn decode(s: &str) -> Option<BlockSpec> {
    let mut parts = s.split('_');
    let ty = parts.next()?;
    let (mut stride, mut heads, mut kv, mut dim) = (1, 1, 1, 0);
    for p in parts {
        let (k, v) = p.split_at(1);
        let v: usize = v.parse().ok()?;
        match k {
            "s" => stride = v,
            "h" => heads = v,
            "v" => kv = v,
            "d" => dim = v,
            _ => {}
        }
    }
    let kind = match ty {
        "er" => BlockKind::EdgeResidual,
        "uir" => BlockKind::InvertedResidual,
        "mqa" => BlockKind::Attention {
            heads,
            key_dim: dim,
            value_dim: dim,
            kv_stride: kv,
        },
        _ => return None,
    };
    Some(BlockSpec { kind, stride })
}

fn default_stages() -> Vec<Vec<BlockSpec>> {
    MOBILENETV5_300M
        .iter()
        .map(|stage| {
            let mut out = Vec::new();
            for (s, n) in stage.iter() {
                for _ in 0..*n {
                    out.extend(
                        s.split('|')
                            .map(|b| decode(b).expect("the built-in table is valid")),
                    );
                }
            }
            out
        })
        .collect()
}

/// `model_args.block_args`: stages of timm block objects.
fn block_args(v: &Fields<'_>, key: &str) -> Result<Vec<Vec<BlockSpec>>, ConfigError> {
    let bad = |found: &Value| {
        v.invalid(
            key,
            "a list of stages, each a list of timm block objects",
            describe(found),
        )
    };
    let stages = v.value(key).expect("checked by the caller");
    let Value::Array(stages) = stages else {
        return Err(bad(stages));
    };
    let mut out = Vec::new();
    let mut total = 0;
    for stage in stages {
        let Value::Array(blocks) = stage else {
            return Err(bad(stage));
        };
        let mut specs = Vec::new();
        for b in blocks {
            let Value::Object(m) = b else {
                return Err(bad(b));
            };
            specs.push(block_object(&Fields::new(
                m,
                v.origin(),
                v.path_of(key) + "[].",
            ))?);
            total += 1;
        }
        out.push(specs);
    }
    if out.len() < 2 || out.iter().any(Vec::is_empty) || total > MAX_BLOCKS {
        return Err(v.invalid(
            key,
            format!("2 or more non-empty stages, at most {MAX_BLOCKS} blocks"),
            "other",
        ));
    }
    Ok(out)
}

fn block_object(b: &Fields<'_>) -> Result<BlockSpec, ConfigError> {
    let stride = b.bounded("stride", Some(1), MAX_STRIDE)?;
    if b.f64("se_ratio")?.is_some_and(|r| r != 0.0) {
        return Err(b.invalid(
            "se_ratio",
            "0 (no squeeze-excite: MobileNetV5 has none)",
            "other",
        ));
    }
    if b.bool("noskip")? == Some(true) {
        return Err(b.invalid("noskip", "false (as in MobileNetV5)", "true"));
    }
    let kind = match b.str("block_type")? {
        Some("er") => BlockKind::EdgeResidual,
        Some("uir") => BlockKind::InvertedResidual,
        Some("mqa") => {
            let key_dim = b.bounded("key_dim", None, MAX_WIDTH)?;
            BlockKind::Attention {
                heads: b.bounded("num_heads", None, MAX_HEADS)?,
                key_dim,
                value_dim: b.bounded("value_dim", Some(key_dim), MAX_WIDTH)?,
                kv_stride: b.bounded("kv_stride", Some(1), MAX_STRIDE)?,
            }
        }
        other => {
            return Err(b.invalid(
                "block_type",
                "\"er\", \"uir\" or \"mqa\"",
                format!("{other:?}"),
            ))
        }
    };
    Ok(BlockSpec { kind, stride })
}

fn parse(top: &Fields<'_>) -> Result<Gemma3nVisionConfig, ConfigError> {
    let empty = Map::new();
    let v = top
        .object("vision_config")?
        .unwrap_or_else(|| Fields::new(&empty, top.origin(), "vision_config."));
    let t = top
        .object("text_config")?
        .unwrap_or_else(|| Fields::new(&empty, top.origin(), "text_config."));
    let arch = v.str("architecture")?.unwrap_or("mobilenetv5_300m_enc");
    if arch != "mobilenetv5_300m_enc" {
        return Err(v.invalid(
            "architecture",
            "\"mobilenetv5_300m_enc\"",
            format!("{arch:?}"),
        ));
    }
    let (mut stages, mut resolution) = (default_stages(), 16);
    let args = match v.value("model_args") {
        None | Some(Value::Null) => None,
        Some(_) => v.object("model_args")?,
    };
    if let Some(a) = args {
        for key in a.map().keys() {
            match key.as_str() {
                "block_args" => stages = block_args(&a, key)?,
                "msfa_output_resolution" => resolution = a.bounded(key, None, 4096)?,
                // The stem's width is read from its weights.
                "stem_size" => {}
                _ => {
                    return Err(a.invalid(
                        key,
                        "only block_args, stem_size or msfa_output_resolution (timm keywords the export knows)",
                        "present",
                    ))
                }
            }
        }
    }
    let cfg = Gemma3nVisionConfig {
        hidden_size: v.bounded("hidden_size", Some(2048), MAX_WIDTH)?,
        rms_norm_eps: v.positive_f64("rms_norm_eps", Some(1e-6))?,
        stages,
        msfa_output_resolution: resolution,
        text_hidden_size: t.bounded("hidden_size", Some(2048), MAX_WIDTH)?,
        soft_tokens: top.bounded("vision_soft_tokens_per_image", Some(256), MAX_TOKENS)?,
        image_token_id: id(top, "image_token_id", 262_145)?,
        boi_token_id: id(top, "boi_token_id", 255_999)?,
        eoi_token_id: id(top, "eoi_token_id", 262_144)?,
    };
    if cfg.soft_tokens != resolution * resolution {
        return Err(top.invalid(
            "vision_soft_tokens_per_image",
            format!("the square of the MSFA's output resolution ({resolution})"),
            cfg.soft_tokens.to_string(),
        ));
    }
    Ok(cfg)
}
