//! gemma-exporter: builds ONNX graphs of Hugging Face Gemma checkpoints directly in Rust (no PyTorch), streaming
//! the weights from memory-mapped safetensors into the ONNX external data file.
//!
//! - [`builder`]: a small ONNX graph builder; [`onnx`]: the protobuf messages.
//! - [`weights`]: the external data writer.
//! - [`layers`], [`attention`]: Gemma's blocks (norm, linear, RoPE, masks, attention, MLP) with swappable kernels.
//! - [`decoder`]: the text decoder of Gemma 1, 2 and 3.
//! - [`export`]: the whole pipeline with atomic output; [`manifest`]: `gemma-onnx.json`.

pub mod attention;
pub mod builder;
pub mod decoder;
mod error;
pub mod export;
pub mod layers;
pub mod manifest;
pub mod onnx;
pub mod weights;

pub use error::ExportError;
pub use export::{export, ExportOptions, ExportReport, Precision};
pub use manifest::{Manifest, MANIFEST_FILE};
