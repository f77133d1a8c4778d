//! gemma-exporter: builds ONNX graphs of Hugging Face Gemma checkpoints directly in Rust (no PyTorch), streaming
//! the weights from memory-mapped safetensors into the ONNX external data file.
//!
//! - [`builder`]: a small ONNX graph builder with typed op helpers; [`ops`]: ONNX Runtime's contrib ops, one file
//!   each; [`onnx`]: the protobuf messages.
//! - [`weights`]: the external data writer.
//! - [`layers`], [`attention`]: Gemma's blocks (norm, linear, embedding, RoPE, attention, MLP, lm_head).
//! - [`decoder`]: the text decoder of Gemma 1, 2 and 3: one builder over a backend, portable (standard ops) or
//!   ONNX Runtime's CPU contrib ops (in-place KV cache, last-position logits, fused ops).
//! - [`vision`]: Gemma 3's SigLIP encoder + projector, the embedding graph and the decoder on `inputs_embeds`.
//! - [`gemma3n`]: Gemma 3n's text decoder (AltUp, Laurel, per-layer inputs, KV sharing, sparsity) as
//!   `embed_tokens.onnx` + `decoder_model_merged.onnx`.
//! - [`quant`]: int8/int4 block quantization (`MatMulNBits`, `GatherBlockQuantized`); [`half`]: fp16/bf16 storage.
//! - [`gguf`]: GGUF files as a source (config, tokenizer and generation config generated from the metadata).
//! - [`export`]: the whole pipeline; [`output`]: the output folder (checks, temporary folder, atomic swap, clean-up
//!   after interrupted exports); [`manifest`]: `gemma-onnx.json`; [`genai`]: `genai_config.json` for ONNX Runtime
//!   GenAI; [`transformers_js`]: the `onnx/` folder and config keys that make a portable export a transformers.js
//!   model folder.
//! - [`matformer`]: `--matformer`, a MatFormer slice of a Gemma 3n checkpoint (E2B from E4B, …).
//! - [`source`]: what SRC names (a local path or a Hub id); [`hub`]: Hugging Face Hub downloads into its cache.
//! - [`triton`]: a Triton Inference Server model repository for an export (`--triton REPO`).

pub mod attention;
pub mod builder;
pub mod classifier;
pub mod decoder;
mod error;
pub mod export;
pub use gemma_models::fingerprint;
pub mod finite;
pub mod gemma3n;
pub mod genai;
pub mod gguf;
pub mod half;
pub mod hub;
pub mod layers;
pub mod manifest;
pub mod matformer;
pub mod onnx;
pub mod ops;
pub mod output;
pub mod quant;
pub mod source;
pub mod transformers_js;
pub mod triton;
pub mod vision;
pub mod weights;

pub use error::ExportError;
pub use export::{export, ExportOptions, ExportReport, GraphKind, LoraOptions, Precision};
pub use gemma_models::contract::{files::MANIFEST_FILE, Manifest};
pub use quant::QuantConfig;
pub use triton::TritonOptions;
