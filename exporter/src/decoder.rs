//! The text decoder graph of Gemma 1, 2 and 3 (semantics §1–§4): scaled embedding, N decoder layers with a KV cache,
//! final norm, tied lm_head and the optional final soft-cap.
//!
//! I/O follows Hugging Face Optimum / transformers.js: `input_ids`, `attention_mask`, `position_ids`,
//! `past_key_values.{i}.key|value` → `logits`, `present.{i}.key|value`.
//!
//! The same graph with [`DecoderInput::InputsEmbeds`] takes `inputs_embeds` (embedded and scaled outside, image
//! features scattered in; see [`crate::vision`]) instead of `input_ids`, plus `token_type_ids` for Gemma 3's
//! bidirectional image blocks: transformers.js's `decoder_model_merged.onnx`.

use crate::attention::{AttentionInputs, AttentionSpec};
use crate::builder::{Attr, Dim, GraphBuilder, Value};
use crate::layers::{attention_mask_with_blocks, image_blocks, rope_tables, Ctx, Kernels};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::{names, Checkpoint, LayerType, ModelConfig, TextConfig};

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

/// What the decoder graph takes as its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderInput {
    /// `input_ids` int64 `[batch, seq]`, embedded and scaled inside the graph (`model.onnx`).
    InputIds,
    /// `inputs_embeds` float32 `[batch, seq, hidden]`, already scaled by sqrt(hidden) (`embed_tokens.onnx`) with
    /// image features in place of the `<image_soft_token>` rows (`decoder_model_merged.onnx`). With
    /// `with_token_type_ids`, an int64 `[batch, seq]` input `token_type_ids` (1 at image soft tokens of this chunk)
    /// makes each image's tokens attend to each other in both directions (semantics §5.5).
    InputsEmbeds { with_token_type_ids: bool },
}

/// Builds the decoder graph on `input_ids`, streaming its weights through `w`.
pub fn build(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    kernels: Kernels,
) -> Result<(), ExportError> {
    build_with_input(g, w, ckpt, cfg, kernels, DecoderInput::InputIds)
}

/// Builds the decoder graph with the given token input. Weights already in `w` (from an earlier graph of the same
/// export) are referenced, not written again.
pub fn build_with_input(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    kernels: Kernels,
    input: DecoderInput,
) -> Result<(), ExportError> {
    let t: &TextConfig = &cfg.text;
    let p = cfg.text_prefix.as_str();
    let (h, hd, nkv) = (t.hidden_size, t.head_dim, t.num_key_value_heads);

    let tokens = match input {
        DecoderInput::InputIds => g.input(
            "input_ids",
            DataType::Int64,
            &["batch_size".into(), "sequence_length".into()],
        ),
        DecoderInput::InputsEmbeds { .. } => g.input(
            "inputs_embeds",
            DataType::Float,
            &["batch_size".into(), "sequence_length".into(), h.into()],
        ),
    };
    let attention_mask_in = g.input(
        "attention_mask",
        DataType::Int64,
        &["batch_size".into(), "total_sequence_length".into()],
    );
    let position_ids = g.input(
        "position_ids",
        DataType::Int64,
        &["batch_size".into(), "sequence_length".into()],
    );
    let token_type_ids = match input {
        DecoderInput::InputsEmbeds {
            with_token_type_ids: true,
        } => Some(g.input(
            "token_type_ids",
            DataType::Int64,
            &["batch_size".into(), "sequence_length".into()],
        )),
        _ => None,
    };
    let keep = g.input_i64_with_default(LOGITS_TO_KEEP, 0);
    let kv_dims: Vec<Dim> = vec![
        "batch_size".into(),
        nkv.into(),
        "past_sequence_length".into(),
        hd.into(),
    ];
    let mut past = Vec::new();
    for l in 0..t.num_hidden_layers {
        let k = g.input(
            &format!("past_key_values.{l}.key"),
            DataType::Float,
            &kv_dims,
        );
        let v = g.input(
            &format!("past_key_values.{l}.value"),
            DataType::Float,
            &kv_dims,
        );
        past.push((k, v));
    }

    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels,
    };

    // Scaled embedding (semantics §1.1), flattened to the [N, H] residual stream.
    cx.g.set_scope("/model/embed_tokens");
    let embed_name = names::embed_tokens(p);
    let mut x = match input {
        // fp32/fp16/bf16 Gather, or the block-quantized lookup sharing the lm_head's bytes.
        DecoderInput::InputIds => {
            let emb = cx.scaled_embedding(&tokens, &embed_name, h)?;
            cx.flatten_rows(&emb, h)
        }
        DecoderInput::InputsEmbeds { .. } => cx.flatten_rows(&tokens, h),
    };

    cx.g.set_scope("/model");
    // [B, S]: the shape of input_ids, or the first two dims of inputs_embeds.
    let batch_seq = match input {
        DecoderInput::InputIds => cx.g.op("Shape", "batch_seq", &[&tokens], &[]),
        DecoderInput::InputsEmbeds { .. } => {
            cx.g.op("Shape", "batch_seq", &[&tokens], &[("end", Attr::Int(2))])
        }
    };
    let blocks = token_type_ids.as_ref().map(|tt| image_blocks(cx.g, tt));
    let uses = |ty: LayerType| t.layer_types.contains(&ty);
    let full = uses(LayerType::Full).then(|| {
        let rope = rope_tables(
            cx.g,
            &position_ids,
            "global",
            t.rope_full.theta,
            t.rope_full.linear_factor,
            hd,
        );
        let mask = attention_mask_with_blocks(
            cx.g,
            &tokens,
            &attention_mask_in,
            None,
            blocks.as_ref(),
            "global",
        );
        (rope, mask)
    });
    let sliding = uses(LayerType::Sliding).then(|| {
        let rope = rope_tables(
            cx.g,
            &position_ids,
            "local",
            t.rope_sliding.theta,
            t.rope_sliding.linear_factor,
            hd,
        );
        let mask = attention_mask_with_blocks(
            cx.g,
            &tokens,
            &attention_mask_in,
            t.sliding_window,
            blocks.as_ref(),
            "local",
        );
        (rope, mask)
    });

    let scaling = t.attention_scale();
    let eps = t.rms_norm_eps;
    let mut presents = Vec::new();
    for (l, (past_k, past_v)) in past.iter().enumerate() {
        cx.g.set_scope(format!("/model/layers.{l}"));
        let n = |s: &str| names::layer(p, l, s);
        let ((cos, sin), mask) = match t.layer_types[l] {
            LayerType::Full => full.as_ref(),
            LayerType::Sliding => sliding.as_ref(),
        }
        .expect("tables exist for every layer type in use");
        let spec = AttentionSpec {
            num_heads: t.num_attention_heads,
            num_kv_heads: nkv,
            head_dim: hd,
            scaling,
            softcap: t.attn_logit_softcapping,
            rms_norm_eps: eps,
            q_proj: n("self_attn.q_proj.weight"),
            k_proj: n("self_attn.k_proj.weight"),
            v_proj: n("self_attn.v_proj.weight"),
            o_proj: n("self_attn.o_proj.weight"),
            q_norm: t.has_qk_norm().then(|| n("self_attn.q_norm.weight")),
            k_norm: t.has_qk_norm().then(|| n("self_attn.k_norm.weight")),
        };
        let io = AttentionInputs {
            batch_seq: &batch_seq,
            cos,
            sin,
            mask,
            past_key: past_k,
            past_value: past_v,
        };

        let normed = cx.rms_norm(&x, &n("input_layernorm.weight"), eps)?;
        let attn = cx.self_attention(&normed, &spec, &io)?;
        let (gate, up, down) = (
            n("mlp.gate_proj.weight"),
            n("mlp.up_proj.weight"),
            n("mlp.down_proj.weight"),
        );
        x = if !t.has_sandwich_norms() {
            // Gemma 1: pre-norm only; `post_attention_layernorm` is the pre-MLP norm (semantics §2.1).
            let x1 = cx.g.op("Add", "residual_attn", &[&x, &attn.hidden], &[]);
            let m = cx.rms_norm(&x1, &n("post_attention_layernorm.weight"), eps)?;
            let m = cx.geglu_mlp(&m, &gate, &up, &down)?;
            cx.g.op("Add", "residual_mlp", &[&x1, &m], &[])
        } else {
            // Gemma 2/3: sandwich norms (semantics §3.1).
            let a = cx.rms_norm(&attn.hidden, &n("post_attention_layernorm.weight"), eps)?;
            let x1 = cx.g.op("Add", "residual_attn", &[&x, &a], &[]);
            let m = cx.rms_norm(&x1, &n("pre_feedforward_layernorm.weight"), eps)?;
            let m = cx.geglu_mlp(&m, &gate, &up, &down)?;
            let m = cx.rms_norm(&m, &n("post_feedforward_layernorm.weight"), eps)?;
            cx.g.op("Add", "residual_mlp", &[&x1, &m], &[])
        };
        presents.push((attn.present_key, attn.present_value));
    }

    // Keep the last `num_logits_to_keep` positions (default 0: all of them, what Optimum-style consumers expect),
    // then the final norm, lm_head (tied: the embedding matrix, stored once), optional soft-cap.
    cx.g.set_scope("/model/norm");
    let x_kept = keep_last_positions(cx.g, &x, &keep, &batch_seq, h, "residual");
    let xn = cx.rms_norm(&x_kept, &names::final_norm(p), eps)?;
    let logits = cx.lm_head(&xn, t, p)?;

    let g = cx.g;
    g.set_scope("");
    g.output(
        &logits,
        "logits",
        DataType::Float,
        &[
            "batch_size".into(),
            "kept_sequence_length".into(),
            t.vocab_size.into(),
        ],
    );
    let present_dims: Vec<Dim> = vec![
        "batch_size".into(),
        nkv.into(),
        "total_sequence_length".into(),
        hd.into(),
    ];
    for (l, (k, v)) in presents.iter().enumerate() {
        g.output(
            k,
            &format!("present.{l}.key"),
            DataType::Float,
            &present_dims,
        );
        g.output(
            v,
            &format!("present.{l}.value"),
            DataType::Float,
            &present_dims,
        );
    }
    Ok(())
}

/// The optional one-element int64 input of the portable graph: logits for the last K positions only (0, its
/// default: every position). Shape `[]` or `[1]` (ONNX Runtime GenAI feeds `[1]`); the graph declares no shape for
/// it. The cpu graph has the same input, without a default ([`crate::decoder_cpu::LOGITS_TO_KEEP`]).
pub use gemma_models::contract::io::LOGITS_TO_KEEP;

/// The last `keep` positions (all when `keep` is 0) of a flattened `[B·S, H]` stream `x`, as `[B, K, H]`; `label`
/// names the nodes.
pub fn keep_last_positions(
    g: &mut GraphBuilder,
    x: &Value,
    keep: &Value,
    batch_seq: &Value,
    hidden: usize,
    label: &str,
) -> Value {
    let hidden_dim = g.const_i64("hidden_dim", &[hidden as i64]);
    let shape3 = g.op(
        "Concat",
        "hidden_3d",
        &[batch_seq, &hidden_dim],
        &[("axis", Attr::Int(0))],
    );
    let axes_1 = g.const_i64("axes_1", &[1]);
    // `keep` may be a scalar or `[1]`: Reshape to `[1]` serves both (Unsqueeze would make `[1, 1]` of the latter,
    // which Slice rejects).
    let shape_1 = g.const_i64("shape_1", &[1]);
    let keep_1d = g.op("Reshape", "keep_1d", &[keep, &shape_1], &[]);
    // Slice start −K keeps the last K rows; −0 = 0 keeps them all.
    let start = g.op("Neg", "keep_start", &[&keep_1d], &[]);
    let end = g.const_i64("slice_to_end", &[i64::MAX]);
    let x3 = g.op("Reshape", &format!("{label}_3d"), &[x, &shape3], &[]);
    g.op(
        "Slice",
        &format!("{label}_kept"),
        &[&x3, &start, &end, &axes_1],
        &[],
    )
}
