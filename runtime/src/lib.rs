//! gemma-runtime: runs gemma-onnx export folders (written by `gemma-export`) through ONNX Runtime.
//!
//! - [`ort_env`] finds and loads `libonnxruntime`, picks execution providers, creates sessions.
//! - [`manifest`] reads `gemma-onnx.json`.
//! - [`decoder`] and [`kv_cache`] run one forward pass of the decoder graph, with its KV cache.
//! - [`sampling`], [`tokenizer`] and [`chat`] choose the next token, map text ↔ tokens, render chat templates.
//! - [`generate`] and [`perplexity`] do text generation and teacher-forced scoring.
//!
//! ```no_run
//! use gemma_runtime::{GenerateOptions, Generator, RuntimeOptions};
//! let mut gen = Generator::open("gemma-3-270m-onnx", &RuntimeOptions::default())?;
//! let out = gen.generate("The capital of France is", &GenerateOptions::default(), |t| print!("{t}"))?;
//! println!("\n{} tokens", out.token_ids.len());
//! # Ok::<(), gemma_runtime::Error>(())
//! ```

pub mod chat;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod manifest;
pub mod ort_env;
pub mod perplexity;
pub mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use decoder::{position_ids_from_mask, single_sequence_inputs, Decoder, LogitsMode};
pub use error::{Error, Result};
pub use generate::{GenerateOptions, GenerationOutput, Generator, StopReason};
pub use kv_cache::KvCache;
pub use manifest::Manifest;
pub use ort_env::{ExecutionProvider, RuntimeOptions};
pub use perplexity::{perplexity, score_tokens, PerplexityResult};
pub use sampling::{Sampler, SamplingConfig};
pub use tokenizer::{TextStream, Tokenizer};
