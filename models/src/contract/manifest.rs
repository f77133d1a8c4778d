//! `gemma-onnx.json`: what a runtime needs to know about an export folder beyond the graphs themselves. The field
//! order is the order written; optional fields are absent when empty, and default when read from older exports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::classifier::ClassifierSection;
use super::vision::VisionSection;
use super::{Family, LayerType};

/// The manifest. Unknown fields are ignored when reading, so additions stay readable by older runtimes within one
/// `format_version` (see [`super`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always [`super::FORMAT`].
    pub format: String,
    /// [`super::format_version_for`] the family when written; absent (version 1) in the oldest exports.
    #[serde(default = "version_1")]
    pub format_version: u32,
    pub family: Family,
    /// The checkpoint's class, e.g. `Gemma3ForCausalLM`.
    pub architecture: String,
    pub precision: Precision,
    /// int8/int4: the block quantization scheme as `gemma-export --quant-spec` takes it, e.g.
    /// `linear=4a,v=4a,down=4a,emb=4a,block=32,acc=4`.
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
    /// Which text decoder graph `decoder` is; a `cpu` one comes with the [`CpuSection`].
    pub graph: GraphKind,
    /// File name of the text decoder graph, relative to the folder ([`super::files::DECODER_FILE`]).
    pub decoder: String,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// The window of the sliding layers; `null` when the model has none.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// The attention type of each layer (`sliding_attention` / `full_attention`).
    #[serde(default)]
    pub layer_types: Vec<LayerType>,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// config.json's and generation_config.json's EOS ids together.
    pub eos_token_ids: Vec<u32>,
    pub kv_dtype: DType,
    pub logits_dtype: DType,
    /// The gemma-export version that wrote the folder.
    #[serde(default)]
    pub exporter_version: String,
    /// Size and sampled CRC-32 of every graph and external data file, by file name, so a runtime can refuse a file
    /// changed or swapped after the export ([`crate::fingerprint`]). Absent in exports made before 2026-12; those
    /// load unchecked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileFingerprint>,
    /// The export was made with `--allow-nonfinite`: its weights may hold NaN or ±inf. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_nonfinite: bool,
    /// The optional one-element int64 input (`[]` or `[1]`) of the portable graphs (`decoder` when `graph` is
    /// `portable`, and the image decoder `decoder_model_merged.onnx`): logits for the last K positions only; not
    /// fed, it is 0 and every position gets logits. Absent in exports made before 2026-11-29.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portable_logits_to_keep_input: Option<String>,
    /// How to drive a `cpu` graph; absent for portable ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSection>,
    /// The image path of Gemma3ForConditionalGeneration exports; absent for text-only models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<VisionSection>,
    /// The answer tokens, policies and prompt template of a classifier export (ShieldGemma 2); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierSection>,
    /// The LoRA adapter merged into the weights (`gemma-export --lora`); absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSection>,
    /// The MatFormer slice this export is of its checkpoint (`gemma-export --matformer`); absent when the whole
    /// model was exported. The export's config.json and every field above describe the sliced model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matformer: Option<MatformerSection>,
    /// Gemma 3n exports: the embedding graph and the KV layers of the decoder on embeddings; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemma3n: Option<super::Gemma3nSection>,
}

impl Manifest {
    /// The layers with a KV cache: the decoder's `past_key_values.{i}` for `i` below this. Every layer, except in
    /// Gemma 3n exports, whose last layers reuse earlier layers' keys and values.
    pub fn kv_layers(&self) -> usize {
        self.gemma3n
            .as_ref()
            .map_or(self.num_layers, |n| n.kv_layers)
    }

    /// Whether a cpu graph keeps layer `l`'s keys and values in a window-sized buffer that ONNX Runtime evicts:
    /// every sliding layer, except the sources of Gemma 3n's KV-shared layers ([`super::window_sized_kv`]).
    pub fn window_sized_kv(&self, l: usize) -> bool {
        super::window_sized_kv(&self.layer_types, self.kv_layers(), l)
    }
}

fn version_1() -> u32 {
    1
}

/// Which text decoder graph an export holds (manifest `graph`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    /// Standard ONNX ops (plus ONNX Runtime's quantized-weight ops at int8/int4); the whole KV cache goes in and
    /// comes out each step.
    Portable,
    /// ONNX Runtime's CPU-optimized graph: in-place KV buffers, window-sized sliding caches, last-position logits,
    /// fused contrib ops. gemma-export's default.
    #[default]
    Cpu,
}

impl GraphKind {
    /// The manifest value: `portable` or `cpu`.
    pub fn name(&self) -> &'static str {
        match self {
            GraphKind::Portable => "portable",
            GraphKind::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for GraphKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the weights are stored (manifest `precision`); the graphs compute in float32 at every precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
    /// Block-quantized (`quantization` says how).
    Int8,
    /// Block-quantized (`quantization` says how).
    Int4,
}

impl Precision {
    /// The manifest value, as `gemma-export --precision` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Element type of the KV cache or the logits in the graph (`kv_dtype`, `logits_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
}

/// The `cpu` section: the contract of the CPU-optimized decoder graph with the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuSection {
    /// One-element int64 input (`[]` or `[1]`): logits are computed for this many trailing positions only (0 =
    /// all positions).
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
    #[serde(default)]
    pub multi_token_steps_need_batch_1: bool,
}

impl CpuSection {
    /// What gemma-export's cpu graph does.
    pub fn current() -> CpuSection {
        use super::io::{GLOBAL_CACHE_DIM, LOGITS_TO_KEEP, SLIDING_CACHE_DIM};
        CpuSection {
            logits_to_keep_input: LOGITS_TO_KEEP.into(),
            kv_shared_buffer: true,
            global_cache_dim: GLOBAL_CACHE_DIM.into(),
            sliding_cache_dim: SLIDING_CACHE_DIM.into(),
            multi_token_steps_need_batch_1: true,
        }
    }
}

/// One entry of `files`: see [`crate::fingerprint`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileFingerprint {
    pub size: u64,
    /// 8 lowercase hex digits.
    pub sampled_crc32: String,
}

impl FileFingerprint {
    /// The fingerprint of the file at `path` as it is now.
    pub fn of(path: &std::path::Path) -> std::io::Result<FileFingerprint> {
        let (size, sampled_crc32) = crate::fingerprint::fingerprint(path)?;
        Ok(FileFingerprint {
            size,
            sampled_crc32,
        })
    }
}

/// The `matformer` section: which layers and MLP widths of the checkpoint the export keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatformerSection {
    /// `--matformer` in canonical form: a preset name (`E2B`) or `skip=…,ffn=…`.
    pub spec: String,
    /// The checkpoint's layer count.
    pub source_layers: usize,
    /// The checkpoint's layers the export keeps, in order (the export's layer `i` is the checkpoint's `kept_layers[i]`).
    pub kept_layers: Vec<usize>,
    /// The MLP width of each kept layer (the first units of the checkpoint's).
    pub ffn: Vec<usize>,
}

impl MatformerSection {
    /// The section for `plan`.
    pub fn new(plan: &crate::matformer::Plan) -> MatformerSection {
        MatformerSection {
            spec: plan.label.clone(),
            source_layers: plan.source_layers,
            kept_layers: plan.kept.clone(),
            ffn: plan.ffn.clone(),
        }
    }
}

/// The `lora` section: which adapter the weights include, and how strongly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraSection {
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

impl LoraSection {
    /// The section for the adapter merged as `summary` says.
    pub fn new(summary: &crate::LoraSummary) -> LoraSection {
        LoraSection {
            path: summary.path.display().to_string(),
            r: summary.r,
            lora_alpha: summary.lora_alpha,
            use_rslora: summary.use_rslora,
            scale: summary.scale,
            merged_modules: summary.merged.len(),
            sha256: summary.sha256.clone(),
        }
    }
}
