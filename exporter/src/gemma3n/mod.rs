//! Gemma 3n's text decoder as ONNX graphs (semantics §12), in the onnx-community / transformers.js layout:
//!
//! | file | inputs → outputs |
//! |---|---|
//! | `embed_tokens.onnx` | `input_ids` i64 `[batch, seq]` → `inputs_embeds` f32 `[batch, seq, H]` (scaled by fp32 sqrt(H)), `per_layer_inputs` f32 `[batch, seq, L, P]` (the per-layer embedding scaled by fp32 sqrt(P), unprojected) |
//! | `decoder_model_merged.onnx` | `inputs_embeds`, `per_layer_inputs`, `attention_mask` i64 `[batch, total]`, `position_ids` i64 `[batch, seq]`, (cpu: `num_logits_to_keep`), `past_key_values.{i}.key/value` → `logits` f32 `[batch, seq, V]`, `present.{i}.key/value` |
//!
//! Only the first `L − num_kv_shared_layers` layers have a KV cache (`i` below that); the last layers attend to
//! the present keys and values of the last earlier layer of their type, as transformers' `shared_kv_states` do.
//! Both graphs read their weights from `model.onnx_data`, stored at the export's precision (fp32, fp16/bf16, or
//! int8/int4 through `MatMulNBits`/`GatherBlockQuantized`) except the tiny AltUp router and coefficients and the
//! norms, always float32.
//!
//! Two decoder kinds, as for Gemma 1–3 (`--graph`): **portable** (standard ONNX ops; the KV cache is
//! `Concat(past, new)`), and **cpu**, the default (`cpu.rs`: ONNX Runtime's `GroupQueryAttention` on KV buffers
//! updated in place, `RotaryEmbedding`, and the required input `num_logits_to_keep`, which keeps the last positions'
//! AltUp streams before the unembedding, the final norm and the lm_head). The cpu graph's KV dims name
//! `global_cache` / `sliding_cache` capacities like Gemma 3's; the embedding graph is the same for both.
//!
//! The pieces: [`altup`] (the streams, predict/correct, the final unembedding), [`ple`] (per-layer inputs),
//! `decode.rs` (the layer loop and the head), `layer.rs` (one decoder layer: Laurel, attention with KV sharing, the
//! sparse GeGLU MLP), `cpu.rs` (the cpu graph's attention); `options.rs` (the export options refused, the manifest
//! section, the warnings).
//!
//! The audio graphs (`preprocess_audio.onnx`, `audio_encoder.onnx`, semantics §13) are `audio_preprocess.rs`,
//! `audio_encoder.rs`, `audio_conformer.rs` and `audio_attention.rs`.

mod altup;
mod audio_conformer;
pub mod audio_encoder;
pub mod audio_preprocess;
mod cpu;
mod decode;
mod hard_tokens;
mod layer;
mod options;
mod ple;
mod vision_blocks;
pub mod vision_encoder;

pub use audio_encoder::write_audio_graphs;
pub use options::{
    audio_section, check, exports_audio, exports_vision, fill_manifest, vision_section, warnings,
};
pub use vision_encoder::write_vision_graphs;

use crate::builder::{Attr, GraphBuilder, Value};
use crate::decoder::io::{
    past_key, past_value, ATTENTION_MASK, GLOBAL_CACHE_DIM, INPUTS_EMBEDS, LOGITS_TO_KEEP,
    PAST_SEQUENCE, POSITION_IDS, SLIDING_CACHE_DIM, TOTAL_SEQUENCE,
};
use crate::decoder::portable::masks;
use crate::decoder::{DecoderInput, Inputs, Text};
use crate::layers::{Ctx, Kernels, LinearKind};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::contract::{window_sized_kv, GraphKind};
use gemma_models::names::{self, gemma3n as n3};
use gemma_models::{Checkpoint, Gemma3nText, LayerType, ModelConfig, TextConfig};

pub use gemma_models::contract::files::{DECODER_WITH_EMBEDS_FILE, EMBED_FILE};

/// What the builders of this module return.
type Result<T, E = ExportError> = std::result::Result<T, E>;
/// The per-layer inputs of both graphs.
pub use gemma_models::contract::io::PER_LAYER_INPUTS;

const BATCH: &str = "batch_size";
const SEQUENCE: &str = "sequence_length";

/// The Gemma 3n fields of a Gemma 3n text config.
fn n3_of(t: &TextConfig) -> &Gemma3nText {
    t.gemma3n
        .as_ref()
        .expect("gemma3n graphs are built for Gemma 3n configs only")
}

/// `(H, P, L)`: the hidden size, the per-layer input width and the number of layers.
fn sizes(t: &TextConfig) -> (usize, usize, usize) {
    let p = n3_of(t).hidden_size_per_layer_input;
    (t.hidden_size, p, t.num_hidden_layers)
}

/// `x · Wᵀ` with `W` kept in float32 whatever the export's precision: the AltUp router and coefficients, tiny
/// (`[K, H]`, `[K·K, K]`, `[K, K]`) and amplified through every stream.
fn linear_f32(cx: &mut Ctx<'_>, x: &Value, name: &str) -> Result<Value> {
    let kernels = std::mem::replace(&mut cx.kernels, Kernels::PORTABLE);
    let y = cx.linear(x, name);
    cx.kernels = kernels;
    y
}

/// A checkpoint tensor as a float32 initializer, as stored (written on first use).
fn weight(cx: &mut Ctx<'_>, name: &str) -> Result<Value, ExportError> {
    if let Some(v) = cx.g.existing(name) {
        return Ok(v);
    }
    let view = cx.ckpt.tensor(name)?;
    let t = cx.w.f32_from_checkpoint(cx.ckpt, name, &view, None)?;
    Ok(cx.g.initializer(t))
}

/// Gemma 3n's RMSNorm over the last axis: `x · (mean(x²) + eps)^-0.5`, times the weight **as is** (not `1 + w`),
/// or nothing for the v-norm (`with_scale=False`).
fn rms_norm(
    cx: &mut Ctx<'_>,
    x: &Value,
    weight_name: Option<&str>,
    eps: f64,
) -> Result<Value, ExportError> {
    let gain = weight_name.map(|n| weight(cx, n)).transpose()?;
    let g = &mut *cx.g;
    let sq = g.op("Mul", "norm/sq", &[x, x], &[]);
    let axes = g.const_i64("axes_last", &[-1]);
    let keep = [("keepdims", Attr::Int(1))];
    let mean = g.op("ReduceMean", "norm/mean", &[&sq, &axes], &keep);
    let eps = g.scalar_f32("rms_eps", eps as f32);
    let var = g.op("Add", "norm/add_eps", &[&mean, &eps], &[]);
    let minus_half = g.scalar_f32("minus_half", -0.5);
    let inv = g.op("Pow", "norm/rsqrt", &[&var, &minus_half], &[]);
    let y = g.op("Mul", "norm/scale", &[x, &inv], &[]);
    Ok(match gain {
        Some(w) => g.op("Mul", "norm/gain", &[&y, &w], &[]),
        None => y,
    })
}

/// Builds the two graphs of a Gemma 3n export: `decoder_model_merged.onnx` (of kind `graph`) into `decoder`, then
/// `embed_tokens.onnx` into `embed`, with `linear` storage, streaming the weights through `w` (the embedding table is
/// written once, for the tied lm_head, and referenced by the embedding graph).
pub fn build(
    (decoder, embed): (&mut GraphBuilder, &mut GraphBuilder),
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    (linear, graph): (LinearKind, GraphKind),
) -> Result<()> {
    let kernels = Kernels {
        linear,
        ..Kernels::PORTABLE
    };
    let mut cx = Ctx {
        g: decoder,
        w,
        ckpt,
        kernels,
    };
    build_decoder(&mut cx, cfg, graph == GraphKind::Cpu)?;
    cx.g = embed;
    build_embed_tokens(&mut cx, cfg)
}

/// `embed_tokens.onnx`: `input_ids` → `inputs_embeds`, `per_layer_inputs` (semantics §12.1).
fn build_embed_tokens(cx: &mut Ctx<'_>, cfg: &ModelConfig) -> Result<()> {
    let (t, prefix) = (&cfg.text, cfg.text_prefix.as_str());
    let (h, p, layers) = sizes(t);
    let n = n3_of(t);
    let ids = crate::decoder::io::token_input(cx.g, DecoderInput::InputIds, h);
    cx.g.set_scope("/model/embed_tokens");
    let emb = cx.scaled_embedding(&ids, &names::embed_tokens(prefix), h)?;
    let emb = hard_tokens::replace(cx, &ids, emb, cfg)?;

    cx.g.set_scope("/model/embed_tokens_per_layer");
    // Ids outside the per-layer table look up row 0 (get_per_layer_inputs).
    let g = &mut *cx.g;
    let zero = g.scalar_i64("zero", 0);
    let rows = g.scalar_i64("per_layer_vocab", n.vocab_size_per_layer_input as i64);
    let ge0 = g.op("GreaterOrEqual", "non_negative", &[&ids, &zero], &[]);
    let lt = g.op("Less", "in_table", &[&ids, &rows], &[]);
    let inside = g.op("And", "valid", &[&ge0, &lt], &[]);
    let pl_ids = g.where_("ids_or_zero", &inside, &ids, &zero);
    let pl = cx.embedding(&pl_ids, &n3::embed_tokens_per_layer(prefix))?;
    let g = &mut *cx.g;
    let scale = g.scalar_f32("per_layer_embed_scale", (p as f64).sqrt() as f32);
    let pl = g.op("Mul", "scale", &[&pl, &scale], &[]);
    let ids_shape = g.shape("ids_shape", &ids);
    let tail = g.const_i64("layers_width", &[layers as i64, p as i64]);
    let shape = g.concat("per_layer_shape", &[&ids_shape, &tail], 0);
    let pl = g.reshape("per_layer_4d", &pl, &shape);

    g.set_scope("");
    let emb_dims = [BATCH.into(), SEQUENCE.into(), h.into()];
    g.output(&emb, INPUTS_EMBEDS, DataType::Float, &emb_dims);
    let pl_dims = [BATCH.into(), SEQUENCE.into(), layers.into(), p.into()];
    g.output(&pl, PER_LAYER_INPUTS, DataType::Float, &pl_dims);
    Ok(())
}

/// What every layer's attention shares: RoPE tables and the additive mask of each layer type in use (portable), or
/// the cpu graph's lengths, bias and RoPE tables.
pub(crate) struct Tables {
    pub batch_seq: Value,
    pub global: Option<crate::attention::LayerTables>,
    pub local: Option<crate::attention::LayerTables>,
    pub cpu: Option<crate::decoder::cpu::shared::Shared>,
}

/// `decoder_model_merged.onnx` (semantics §12.2–§12.7), portable or, with `cpu`, on ONNX Runtime's in-place KV
/// buffers with logits for the last `num_logits_to_keep` positions (0: all).
fn build_decoder(cx: &mut Ctx<'_>, cfg: &ModelConfig, cpu: bool) -> Result<()> {
    let g = &mut *cx.g;
    let tx = Text::of(cfg);
    let t = &tx.t;
    let (h, p, layers) = sizes(t);
    let (nkv, hd, kv_layers) = (
        t.num_key_value_heads,
        t.head_dim,
        n3_of(t).kv_layers(layers),
    );

    let embeds = crate::decoder::io::token_input(
        g,
        DecoderInput::InputsEmbeds {
            with_token_type_ids: false,
        },
        h,
    );
    let pl_dims = [BATCH.into(), SEQUENCE.into(), layers.into(), p.into()];
    let per_layer = g.input(PER_LAYER_INPUTS, DataType::Float, &pl_dims);
    let mask = g.input(
        ATTENTION_MASK,
        DataType::Int64,
        &[BATCH.into(), TOTAL_SEQUENCE.into()],
    );
    let pos = g.input(
        POSITION_IDS,
        DataType::Int64,
        &[BATCH.into(), SEQUENCE.into()],
    );
    let keep = cpu.then(|| g.input_any_rank(LOGITS_TO_KEEP, DataType::Int64));
    // The length axis of layer `l`'s KV input or output: the cpu graph's buffers are a capacity.
    let kv_len = |l: usize, present: bool| match (cpu, present) {
        (true, _) if window_sized_kv(&t.layer_types, kv_layers, l) => SLIDING_CACHE_DIM,
        (true, _) => GLOBAL_CACHE_DIM,
        (false, false) => PAST_SEQUENCE,
        (false, true) => TOTAL_SEQUENCE,
    };
    let kv_dims = |len: &str| [BATCH.into(), nkv.into(), len.into(), hd.into()];
    let past: Vec<(Value, Value)> = (0..kv_layers)
        .map(|l| {
            let dims = kv_dims(kv_len(l, false));
            let k = g.input(&past_key(l), DataType::Float, &dims);
            let v = g.input(&past_value(l), DataType::Float, &dims);
            (k, v)
        })
        .collect();

    g.set_scope("/model");
    if let Some(keep) = &keep {
        let inputs = Inputs {
            kind: DecoderInput::InputsEmbeds {
                with_token_type_ids: false,
            },
            tokens: embeds.clone(),
            attention_mask: mask.clone(),
            position_ids: pos.clone(),
            token_type_ids: None,
            keep: keep.clone(),
            past: past.clone(),
        };
        let shared = crate::decoder::cpu::shared::values(g, t, &inputs);
        let tables = Tables {
            batch_seq: shared.batch_seq.clone(),
            global: None,
            local: None,
            cpu: Some(shared),
        };
        return decode::decode(cx, &tx, (&embeds, &per_layer), &tables, (&past, Some(keep)));
    }
    let batch_seq = g.shape_range("batch_seq", &embeds, None, 2);
    let mut tables = |ty: LayerType| {
        t.layer_types.contains(&ty).then(|| {
            let (label, window) = match ty {
                LayerType::Full => ("global", None),
                LayerType::Sliding => ("local", t.sliding_window),
            };
            let (cos, sin) = masks::rope_tables(g, &pos, label, t.rope(ty), hd);
            let mask = masks::attention_mask(g, (&embeds, &mask), window, None, false, label);
            crate::attention::LayerTables { cos, sin, mask }
        })
    };
    let (global, local) = (tables(LayerType::Full), tables(LayerType::Sliding));
    let tables = Tables {
        batch_seq,
        global,
        local,
        cpu: None,
    };
    decode::decode(cx, &tx, (&embeds, &per_layer), &tables, (&past, None))
}
