//! `gemma-onnx.json`: what the runtime needs to know about an export folder, beyond the graphs themselves.

use crate::export::Precision;
use crate::ExportError;
use gemma_models::{LayerType, ModelConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST_FILE: &str = "gemma-onnx.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub family: String,
    pub architecture: String,
    pub precision: String,
    /// "portable": standard ONNX ops, full KV cache passed in and out.
    pub graph: String,
    pub decoder: String,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub sliding_window: Option<usize>,
    pub layer_types: Vec<String>,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    /// config.json's and generation_config.json's EOS ids together.
    pub eos_token_ids: Vec<u32>,
    pub kv_dtype: String,
    pub logits_dtype: String,
    pub exporter_version: String,
}

impl Manifest {
    pub fn new(
        cfg: &ModelConfig,
        src: &Path,
        precision: Precision,
        decoder: &str,
    ) -> Result<Manifest, ExportError> {
        let t = &cfg.text;
        let mut eos = cfg.eos_token_ids.clone();
        let gen_path = src.join("generation_config.json");
        if gen_path.is_file() {
            let text =
                std::fs::read_to_string(&gen_path).map_err(|e| ExportError::io(&gen_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ExportError::Json {
                    path: gen_path.clone(),
                    source,
                })?;
            match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => eos.extend(n.as_u64().map(|x| x as u32)),
                Some(serde_json::Value::Array(a)) => {
                    eos.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
                }
                _ => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        eos.retain(|id| seen.insert(*id));
        let family = match t.family {
            gemma_models::Family::Gemma => "gemma",
            gemma_models::Family::Gemma2 => "gemma2",
            gemma_models::Family::Gemma3 => "gemma3",
        };
        Ok(Manifest {
            format: "gemma-onnx".into(),
            format_version: 1,
            family: family.into(),
            architecture: cfg.architecture.clone(),
            precision: precision.name().into(),
            graph: "portable".into(),
            decoder: decoder.into(),
            num_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            num_kv_heads: t.num_key_value_heads,
            head_dim: t.head_dim,
            hidden_size: t.hidden_size,
            vocab_size: t.vocab_size,
            sliding_window: t.sliding_window,
            layer_types: t
                .layer_types
                .iter()
                .map(|l| match l {
                    LayerType::Sliding => "sliding_attention".to_string(),
                    LayerType::Full => "full_attention".to_string(),
                })
                .collect(),
            max_position_embeddings: t.max_position_embeddings,
            bos_token_id: cfg.bos_token_id,
            pad_token_id: cfg.pad_token_id,
            eos_token_ids: eos,
            kv_dtype: "float32".into(),
            logits_dtype: "float32".into(),
            exporter_version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), ExportError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        std::fs::write(&path, text + "\n").map_err(|e| ExportError::io(&path, e))
    }
}
