//! What a Gemma model is, as far as an exporter needs to know: typed configs (transformers 4.x and 5.x keys, class
//! defaults applied), safetensors checkpoint reading, and the tensor names of each generation.
//!
//! * [`family`]: the table of what differs between Gemma generations ([`Family::spec`]).
//! * [`config`]: [`ModelConfig`] / [`TextConfig`] from `config.json` for Gemma 1, 2 and 3 (text and multimodal).
//! * [`checkpoint`]: [`Checkpoint`], memory-mapped and validated safetensors (single file or sharded), with
//!   [`TensorView::read_f32`] for streaming conversion.
//! * [`matformer`]: Gemma 3n MatFormer slicing: reading an E4B checkpoint as a nested smaller model (E2B, …).
//! * [`lora`]: merging a PEFT LoRA adapter into a [`Checkpoint`] as it is read (W + s·B·A).
//! * [`gguf`]: GGUF files (llama.cpp) as a source: container, config from metadata, weights, vocabulary.
//! * [`names`]: the tensor names of the text decoder for a given prefix, and of the vision tower
//!   ([`names::vision`]).
//! * [`contract`]: the export contract: `gemma-onnx.json` ([`contract::Manifest`]), the file names and the graphs'
//!   tensor names, shared by the exporter (which writes it) and the runtime (which reads it).
//! * [`error`]: [`ConfigError`] and [`CheckpointError`]; every message names the file concerned.
//!
//! Section numbers `semantics §N` refer to docs/semantics.md.

pub mod checkpoint;
pub mod config;
pub mod contract;
pub mod error;
pub mod family;
pub mod files;
pub mod fingerprint;
/// Entry points of the fuzz targets (`tests/fuzz`); the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gguf;
pub mod lora;
pub mod matformer;
pub mod names;
/// Checkpoint writers for tests (GGUF, safetensors); the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use checkpoint::{Checkpoint, DType, LowRank, ReadAdjust, TensorView};
pub use config::{
    ClassifierConfig, Family, Gemma3nText, LayerType, ModelConfig, RopeParams, TextConfig,
    VisionConfig,
};
pub use error::{CheckpointError, ConfigError};
pub use family::FamilySpec;
pub use lora::{LoraError, LoraSummary};
