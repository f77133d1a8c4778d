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
    /// int8/int4: the block quantization scheme as `gemma-export --quant-spec` takes it, e.g.
    /// `linear=4a,v=4a,down=4a,emb=4a,block=32,acc=4` (see `gemma_exporter::quant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// int8/int4: checkpoint tensors whose stored GGUF blocks (Q8_0, Q5_0, Q4_0) were copied into their
    /// `MatMulNBits` weight (codes `q + 128`, scales `f32(d)`) rather than re-quantized: those weights are exactly
    /// the source's. Absent when none were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_source_blocks: Vec<String>,
    /// Where the weights came from: "safetensors" (a Hugging Face folder) or "gguf" (a llama.cpp file, config and
    /// tokenizer generated from its metadata). Absent in exports made before 2026-12-03.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_format: Option<String>,
    /// "portable": standard ONNX ops, full KV cache passed in and out. "cpu": the graph of
    /// [`crate::decoder::cpu`]; the `cpu` section says how to drive it.
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
    /// Size and sampled CRC-32 of every graph and external data file (`model.onnx`, `model.onnx_data`, the image
    /// graphs), by file name, so the runtime can refuse a file changed or swapped after the export
    /// ([`crate::fingerprint`]). Absent in exports made before 2026-12; those load unchecked.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files: std::collections::BTreeMap<String, FileFingerprint>,
    /// The export was made with `--allow-nonfinite`: its weights may hold NaN or ±inf. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_nonfinite: bool,
    /// The optional one-element int64 input (`[]` or `[1]`) of the portable graphs (`model.onnx` when `graph` is "portable", and the
    /// image decoder `decoder_model_merged.onnx`): logits for the last K positions only; not fed, it is 0 and every
    /// position gets logits. Absent in exports made before 2026-11-29.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portable_logits_to_keep_input: Option<String>,
    /// How to drive a `"cpu"` graph; absent for portable ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuGraphManifest>,
    /// The image path of Gemma3ForConditionalGeneration exports; absent for text-only models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<VisionManifest>,
    /// The LoRA adapter merged into the weights (`gemma-export --lora`); absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraManifest>,
}

/// The `lora` section: which adapter the weights include, and how strongly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraManifest {
    /// The adapter folder as given on the command line.
    pub path: String,
    /// `r` and `lora_alpha` of its adapter_config.json (modules may differ through rank_pattern / alpha_pattern).
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// `--lora-scale`: multiplies every module's lora_alpha / r.
    pub scale: f64,
    /// How many weight tensors received an update.
    pub merged_modules: usize,
    /// SHA-256 of adapter_model.safetensors.
    pub sha256: String,
}

impl LoraManifest {
    pub fn new(s: &gemma_models::LoraSummary) -> LoraManifest {
        LoraManifest {
            path: s.path.display().to_string(),
            r: s.r,
            lora_alpha: s.lora_alpha,
            use_rslora: s.use_rslora,
            scale: s.scale,
            merged_modules: s.merged.len(),
            sha256: s.sha256.clone(),
        }
    }
}

/// One entry of `files`: see [`crate::fingerprint`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileFingerprint {
    pub size: u64,
    pub sampled_crc32: String,
}

impl FileFingerprint {
    pub fn of(path: &Path) -> Result<FileFingerprint, ExportError> {
        let (size, sampled_crc32) =
            crate::fingerprint::fingerprint(path).map_err(|e| ExportError::io(path, e))?;
        Ok(FileFingerprint {
            size,
            sampled_crc32,
        })
    }
}

/// The `cpu` section: the contract of the CPU-optimized decoder graph ([`crate::decoder::cpu`]) with the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuGraphManifest {
    /// One-element int64 input (`[]` or `[1]`): logits are computed for this many trailing positions only (0 = all positions).
    pub logits_to_keep_input: String,
    /// `past_key_values.{i}.*` and `present.{i}.*` are one preallocated buffer per layer, bound as both input and
    /// output (ONNX Runtime updates it in place); dim 2 is its capacity, not the sequence length.
    pub kv_shared_buffer: bool,
    /// Symbolic name of dim 2 of the global layers' buffers: any capacity ≥ the total sequence length.
    pub global_cache_dim: String,
    /// Symbolic name of dim 2 of the sliding layers' buffers: a capacity ≥ `sliding_window`, managed by ONNX
    /// Runtime (`sliding_window_cache`: rows `[0, L)` hold the last L positions).
    pub sliding_cache_dim: String,
    /// A step with cached context and more than one new token needs batch 1 (`GroupQueryAttention`).
    pub multi_token_steps_need_batch_1: bool,
}

impl CpuGraphManifest {
    /// What this exporter's cpu graph does.
    pub fn current() -> CpuGraphManifest {
        use crate::decoder::{GLOBAL_CACHE_DIM, LOGITS_TO_KEEP, SLIDING_CACHE_DIM};
        CpuGraphManifest {
            logits_to_keep_input: LOGITS_TO_KEEP.into(),
            kv_shared_buffer: true,
            global_cache_dim: GLOBAL_CACHE_DIM.into(),
            sliding_cache_dim: SLIDING_CACHE_DIM.into(),
            multi_token_steps_need_batch_1: true,
        }
    }
}

/// The `vision` section: the image graphs and what a runtime needs to build their inputs (see
/// [`crate::vision`] for how the graphs fit together).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionManifest {
    /// `pixel_values` f32 `[num_images, num_channels, image_size, image_size]` → `image_features` f32
    /// `[num_images, mm_tokens_per_image, hidden_size]`.
    pub encoder: String,
    /// The encoder's external data (the text graphs share `model.onnx_data`).
    pub encoder_data: String,
    /// `input_ids` i64 `[batch, seq]` → `inputs_embeds` f32 `[batch, seq, hidden_size]`, scaled by sqrt(hidden_size).
    pub embed_tokens: String,
    /// The decoder on `inputs_embeds` (image features in place of the image-token rows, unscaled) with
    /// `token_type_ids` i64 `[batch, seq]`: 1 at the image tokens of the current chunk, 0 elsewhere. Each run of 1s
    /// is one image attending to itself in both directions, so an image must be prefilled whole in one chunk.
    pub decoder_with_embeds: String,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub mm_tokens_per_image: usize,
    /// `<start_of_image>`: the placeholder a prompt holds per image, before expansion.
    pub boi_token_id: u32,
    /// `<end_of_image>`.
    pub eoi_token_id: u32,
    /// `<image_soft_token>`: the rows that image features replace, `mm_tokens_per_image` per image.
    pub image_token_id: u32,
    /// `preprocess.onnx` (decoded RGB uint8 `[h, w, 3]` + `do_pan_and_scan` → `pixel_values`, `num_crops`,
    /// `crop_boxes`) and the image-processor settings it bakes in ([`crate::vision::preprocess`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<crate::vision::preprocess::PreprocessManifest>,
}

impl VisionManifest {
    pub fn new(v: &gemma_models::VisionConfig) -> VisionManifest {
        use crate::vision::*;
        VisionManifest {
            encoder: ENCODER_FILE.into(),
            encoder_data: ENCODER_DATA_FILE.into(),
            embed_tokens: EMBED_FILE.into(),
            decoder_with_embeds: DECODER_WITH_EMBEDS_FILE.into(),
            image_size: v.image_size,
            patch_size: v.patch_size,
            num_channels: v.num_channels,
            mm_tokens_per_image: v.mm_tokens_per_image,
            boi_token_id: v.boi_token_id,
            eoi_token_id: v.eoi_token_id,
            image_token_id: v.image_token_id,
            preprocess: None,
        }
    }
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
        if let Some(&id) = eos.iter().find(|&&id| id as usize >= t.vocab_size) {
            return Err(ExportError::Config(gemma_models::ConfigError::Invalid {
                path: if gen_path.is_file() {
                    gen_path
                } else {
                    src.join("config.json")
                },
                field: "eos_token_id".into(),
                expected: format!("a token id below vocab_size ({})", t.vocab_size),
                found: id.to_string(),
            }));
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
            quantization: precision.quant().map(|q| q.spec()),
            kept_source_blocks: Vec::new(),
            source_format: None,
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
            files: Default::default(),
            allow_nonfinite: false,
            portable_logits_to_keep_input: Some(crate::decoder::LOGITS_TO_KEEP.into()),
            cpu: None,
            vision: cfg.vision_config.as_ref().map(VisionManifest::new),
            lora: None,
        })
    }

    /// Fingerprints every `*.onnx` and `*.onnx_data` file of the export folder `dir` into `files`.
    pub fn fingerprint_files(&mut self, dir: &Path) -> Result<(), ExportError> {
        for entry in std::fs::read_dir(dir).map_err(|e| ExportError::io(dir, e))? {
            let entry = entry.map_err(|e| ExportError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".onnx") || name.ends_with(".onnx_data") {
                self.files.insert(name, FileFingerprint::of(&entry.path())?);
            }
        }
        Ok(())
    }

    pub fn write(&self, dir: &Path) -> Result<(), ExportError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        std::fs::write(&path, text + "\n").map_err(|e| ExportError::io(&path, e))
    }
}
