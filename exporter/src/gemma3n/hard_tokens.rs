//! The multimodal "hard" tokens of `embed_tokens.onnx` for Gemma3nForConditionalGeneration (docs/gemma3n-vision.md):
//! ids from `vision_config.vocab_offset` up to `audio_config.vocab_offset` are embedded by `embed_vision`, ids
//! from the audio offset on by `embed_audio`, not by the text table: row `id − offset` of the embedder's table,
//! RMSNorm(hard gain) → linear to H → RMSNorm (no gain), as `Gemma3nModel.forward` does for every `input_ids`.
//! In the released vocabulary that is `<end_of_image>` (262144, the first vision id), `<end_of_audio>` (262272)
//! and the soft-token placeholders (which the encoders' rows then overwrite).

use serde_json::Value as Json;

use super::audio_conformer as conformer;
use super::weight;
use crate::builder::Value;
use crate::layers::Ctx;
use crate::ExportError;
use gemma_models::names::{gemma3n_audio as audio, gemma3n_vision as vision};
use gemma_models::ModelConfig;

/// One tower's hard-token embedder: its id range and tensors.
struct Embedder {
    offset: i64,
    /// Exclusive end of the ids it embeds (`None`: every id from `offset` on).
    end: Option<i64>,
    rows: i64,
    eps: f64,
    table: &'static str,
    hard_norm: &'static str,
    projection: &'static str,
}

fn field(raw: &Json, tower: &str, key: &str) -> Option<f64> {
    raw.get(tower)?.get(key)?.as_f64()
}

/// `emb` (`[.., H]`, the scaled text embedding of `ids`) with the hard multimodal tokens replaced; unchanged for a
/// checkpoint without the embedders (Gemma3nForCausalLM).
pub(super) fn replace(
    cx: &mut Ctx<'_>,
    ids: &Value,
    emb: Value,
    cfg: &ModelConfig,
) -> Result<Value, ExportError> {
    if !(cx.ckpt.contains(vision::EMBEDDING) && cx.ckpt.contains(audio::EMBEDDING)) {
        return Ok(emb);
    }
    let raw = &cfg.raw;
    let get = |tower: &str, key: &str, default: f64| field(raw, tower, key).unwrap_or(default);
    let audio_offset = get("audio_config", "vocab_offset", 262_272.0) as i64;
    let towers = [
        Embedder {
            offset: get("vision_config", "vocab_offset", 262_144.0) as i64,
            end: Some(audio_offset),
            rows: get("vision_config", "vocab_size", 128.0) as i64,
            eps: get("vision_config", "rms_norm_eps", 1e-6),
            table: vision::EMBEDDING,
            hard_norm: vision::HARD_NORM,
            projection: vision::PROJECTION,
        },
        Embedder {
            offset: audio_offset,
            end: None,
            rows: get("audio_config", "vocab_size", 128.0) as i64,
            eps: get("audio_config", "rms_norm_eps", 1e-6),
            table: audio::EMBEDDING,
            hard_norm: audio::HARD_NORM,
            projection: audio::PROJECTION,
        },
    ];
    let mut emb = emb;
    for (label, e) in ["vision", "audio"].iter().zip(towers) {
        cx.g.set_scope(format!("/model/embed_{label}"));
        let off = cx.g.scalar_i64("vocab_offset", e.offset);
        let mut mask = cx.g.op("GreaterOrEqual", "from_offset", &[ids, &off], &[]);
        if let Some(end) = e.end {
            let end = cx.g.scalar_i64("vocab_end", end);
            let below = cx.g.op("Less", "below_end", &[ids, &end], &[]);
            mask = cx.g.op("And", "hard_token", &[&mask, &below], &[]);
        }
        let local = cx.g.op("Sub", "row", &[ids, &off], &[]);
        let dummy = cx.g.scalar_i64("dummy_row", e.rows - 1);
        let row = cx.g.where_("row_or_dummy", &mask, &local, &dummy);
        let table = weight(cx, e.table)?;
        let x = cx.g.gather("hard_embedding", &table, &row, 0);
        let gain = weight(cx, e.hard_norm)?;
        let x = conformer::rms(cx, &x, Some(&gain), e.eps);
        let proj = weight(cx, e.projection)?;
        let x = conformer::linear(cx, &x, &proj);
        let x = conformer::rms(cx, &x, None, e.eps);
        let last = conformer::last_axis(cx);
        let mask = cx.g.unsqueeze("mask_rows", &mask, &last);
        emb = cx.g.where_("merged", &mask, &x, &emb);
    }
    Ok(emb)
}
