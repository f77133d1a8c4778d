//! The text decoder graph of Gemma 1, 2 and 3 (semantics §1–§4): scaled embedding, N decoder layers with a KV
//! cache, final norm, tied lm_head and the optional final soft-cap.
//!
//! One builder, [`build`], writes every decoder graph: it declares the inputs ([`io`]), runs the one layer loop with
//! the family wiring (`decoder/layer.rs`: Gemma 1's pre-norm layer, Gemma 2/3's sandwich norms, QK-norm, soft-caps,
//! sliding and global layers) and ends with the head (`decoder/head.rs`). A [`Backend`] chooses the ops:
//!
//! - [`portable::Portable`]: standard ONNX ops (`--graph portable`, and the decoder on `inputs_embeds` of the image
//!   path); Optimum's I/O, the KV cache is `Concat(past, new)`.
//! - [`cpu::OrtCpu`]: ONNX Runtime's CPU contrib ops (`--graph cpu`): `GroupQueryAttention` on KV buffers updated in
//!   place, `SkipSimplifiedLayerNormalization`, `RotaryEmbedding`.
//!
//! The linear layers' storage (fp32, fp16/bf16, int8/int4) is the caller's [`LinearKind`], the same for every
//! backend. A new backend (e.g. GPU graphs) is one new file implementing [`Backend`], plus its [`GraphKind`] in
//! `export.rs`.
//!
//! [`GraphKind`]: crate::GraphKind

use crate::builder::GraphBuilder;
use crate::layers::{Ctx, Kernels, LinearKind};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::{names, Checkpoint, ModelConfig};

mod backend;
pub mod cpu;
pub(crate) mod head;
pub mod io;
mod layer;
pub mod portable;

pub use backend::{Backend, Begun, Residual, Text};
pub use io::{DecoderInput, Inputs, GLOBAL_CACHE_DIM, LOGITS_TO_KEEP, SLIDING_CACHE_DIM};

/// Every tensor the decoder reads, with its expected shape. Checked before anything is written.
pub fn required_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    names::text_tensors(&cfg.text, &cfg.text_prefix)
}

/// Bytes the decoder's weights take in float32 (for the progress bar).
pub fn weight_bytes(cfg: &ModelConfig) -> u64 {
    required_tensors(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
        .sum()
}

/// Builds the decoder graph `backend` was made for, on `input`, with `linear` storage, streaming its weights
/// through `w`. Weights already in `w` (from an earlier graph of the same export) are referenced, not written again.
pub fn build(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    linear: LinearKind,
    input: DecoderInput,
    backend: &mut dyn Backend,
) -> Result<(), ExportError> {
    backend.check(input)?;
    let text = backend.text().clone();
    let inputs = io::declare_inputs(g, &text.t, input, backend);
    let norm = backend.norm_kind();
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels: Kernels { linear, norm },
    };
    let begun = backend.begin(&mut cx, &inputs)?;
    let mut stream = Residual {
        x: begun.x,
        pending: None,
    };
    let mut presents = Vec::with_capacity(inputs.past.len());
    for l in 0..inputs.past.len() {
        presents.push(layer::layer(&mut cx, backend, &text, l, &mut stream)?);
    }
    let keep = (&inputs.keep, &begun.batch_seq);
    let logits = head::logits(&mut cx, backend, &text, stream, keep)?;
    io::declare_outputs(cx.g, &text.t, backend, &logits, &presents);
    Ok(())
}
