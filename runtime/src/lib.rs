//! gemma-runtime: runs gemma-onnx export folders (written by `gemma-export`) through ONNX Runtime.
//!
//! - [`ort_env`] finds and loads `libonnxruntime`, picks execution providers, creates sessions.
//! - [`manifest`] reads `gemma-onnx.json`.
//! - [`decoder`] and [`kv_cache`] run one forward pass of a decoder graph (on token ids, or on embeddings for the
//!   image path), with its KV cache: [`Decoder::run`] is the one step function.
//! - [`sampling`], [`tokenizer`] and [`chat_template`] choose the next token, map text ↔ tokens, render chat templates;
//!   [`model_text`] holds an export's tokenizer, chat template and stop tokens together.
//! - [`generate`] and [`perplexity`] do text generation and teacher-forced scoring; [`fim`] builds CodeGemma
//!   fill-in-the-middle prompts; [`conversation`] holds a multi-turn chat over one KV cache, with images on
//!   multimodal exports.
//! - [`vision`] runs the image graphs of Gemma 3 multimodal exports: image decoding, `preprocess.onnx`, the
//!   encoder, the processor's prompt expansion, generation from embeddings (`gemma-vision`).
//! - [`bench`] measures prefill/decode speed, time to first token, peak RSS and KV-cache bytes (`gemma bench`);
//!   [`resident`] keeps the weight files' mapped pages from staying resident after loading.
//!
//! ```no_run
//! use gemma_runtime::{GenerateOptions, Generator, RuntimeOptions};
//! let mut gen = Generator::open("gemma-3-270m-onnx", &RuntimeOptions::default())?;
//! let out = gen.generate("The capital of France is", &GenerateOptions::default(), |t| print!("{t}"))?;
//! println!("\n{} tokens", out.token_ids.len());
//! # Ok::<(), gemma_runtime::Error>(())
//! ```

pub mod alloc_budget;
pub mod attachments;
pub mod audio;
pub mod bench;
pub mod chat_template;
pub mod conversation;
pub mod decoder;
pub mod ep_support;
pub mod error;
pub mod fim;
/// Entry points of the fuzz targets (`tests/fuzz`); the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gemma3n_audio;
pub mod gemma3n_prompt;
pub use gemma_models::fingerprint;
pub mod generate;
pub mod integrity;
pub mod kv_cache;
pub mod manifest;
pub mod model_text;
pub mod ort_env;
pub mod perplexity;
pub mod resident;
pub mod sampling;
pub mod serve;
pub mod tokenizer;
pub mod vision;

pub use chat_template::{ChatTemplate, Message};
pub use conversation::{ChatModel, ChatOptions, Conversation, Media, Turn, TurnReport};
pub use decoder::{
    position_ids_from_mask, single_sequence_inputs, Decoder, LogitsMode, Step, TokenInput,
};
pub use error::{Error, Result};
pub use generate::{GenerateOptions, GenerationOutput, Generator, StopReason};
pub use kv_cache::KvCache;
pub use manifest::Manifest;
pub use model_text::ModelText;
pub use ort_env::{ExecutionProvider, RuntimeOptions};
pub use perplexity::{perplexity, score_tokens, score_tokens_chunked, PerplexityResult};
pub use sampling::{Sampler, SamplingConfig};
pub use tokenizer::{TextStream, Tokenizer};
pub use vision::{VisionGenerator, VisionOptions, VisionOutput};

/// Test support shared by the unit tests of this crate.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A folder with the Gemma 3 tokenizer files (`tokenizer.json`, `tokenizer_config.json` with the chat template):
    /// the real 270M test model that `scripts/test` builds and sets in `$GEMMA3_270M_DIR`.
    pub(crate) fn gemma3_tokenizer_dir() -> PathBuf {
        std::env::var_os("GEMMA3_270M_DIR").map(PathBuf::from).unwrap_or_else(|| {
            panic!("GEMMA3_270M_DIR is not set: run the tests through scripts/test, which builds the real Gemma 3 270M")
        })
    }
}
