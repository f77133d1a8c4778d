//! `genai_config.json`: the file with which ONNX Runtime GenAI (`onnxruntime-genai`, verified with 0.18.0) loads a
//! `--graph cpu` export folder as it is (`og.Model(folder)`).
//!
//! What the config says, and why:
//! - `model.type`: the decoder-only type GenAI knows for the family: `gemma`, `gemma2`, `gemma3_text` (also for the
//!   text decoder of a Gemma 3 vision export; GenAI's `gemma3` type expects its own vision graphs).
//! - The decoder's input and output names are those of [`crate::decoder::cpu`]. GenAI finds `num_logits_to_keep` by
//!   name and feeds it as int64 `[1]` holding 0 (all positions), which the graph accepts.
//! - `search.past_present_share_buffer`: the graph updates each layer's KV buffer in place, so GenAI binds one
//!   buffer as both `past_key_values.i.*` and `present.i.*`, `max_length` rows long for global layers.
//! - `decoder.sliding_window`: sliding layers keep a window-sized cache that `GroupQueryAttention`
//!   (`sliding_window_cache = 1`) evicts itself. GenAI's per-layer windowed cache (`layers`) allocates such
//!   buffers, `window + cache_slack` rows, for those layers only; `slide_inputs` and `slide_key_value_cache` are
//!   off, since those make GenAI chunk the prompt and crop the cache itself, for graphs that do not evict.
//!   `cache_slack` is our runtime's ([`sliding_slack`]) rather than GenAI's CPU default of 16: the capacity decides
//!   which rows are resident, hence the order of the attention sums, and on the real Gemma 3 270M int4 that
//!   rounding difference (amplified by the int8 activations of `MatMulNBits`) flipped a near-tie after 88 tokens.
//!   With the same capacity GenAI's greedy ids equal `gemma generate`'s.
//! - `eos_token_id`: the manifest's EOS ids (config.json and generation_config.json) plus `<end_of_turn>` when the
//!   tokenizer has it, so chat replies stop at the end of the turn as `gemma chat` does.
//! - `search.max_length`: GenAI refuses a `max_length` above `context_length` and allocates the global layers'
//!   buffers at `max_length`, so it is `context_length` capped at [`DEFAULT_MAX_LENGTH`]; users raise it per
//!   generator with `set_search_options(max_length=…)`.
//! - `search`: greedy by default (`do_sample: false`), like `gemma generate --temperature 0`.

use crate::ExportError;
use gemma_models::contract::GraphKind;
use gemma_models::contract::{files, io, Manifest};
use gemma_models::{Family, LayerType, ModelConfig};
use serde_json::json;
use std::path::Path;

/// The file GenAI reads from a model folder.
pub use gemma_models::contract::files::GENAI_CONFIG_FILE;

/// The largest `search.max_length` written by default: the global layers' KV buffers are allocated at this length
/// per generator, so the full context of a large model would reserve gigabytes before the first token.
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// Rows a sliding layer's buffer holds beyond the window: the same as `gemma_runtime::kv_cache::sliding_capacity`
/// (the runtime crate is not a dependency of the exporter; `tests/tests/stack_genai.rs` checks they agree). At
/// least 1, since GenAI reads 0 as "its default".
pub fn sliding_slack(window: usize) -> usize {
    (window / 4).clamp(1, 128)
}

/// GenAI's `model.type` for a family's text decoder (the family table's `genai_model_type`).
pub fn model_type(family: Family) -> &'static str {
    family.spec().genai_model_type
}

/// The `genai_config.json` of a cpu-graph export described by `manifest`; `dir` is the export folder (its
/// `tokenizer.json`, when present, supplies the `<end_of_turn>` id).
pub fn config(
    cfg: &ModelConfig,
    manifest: &Manifest,
    dir: &Path,
) -> Result<serde_json::Value, ExportError> {
    let mut eos = manifest.eos_token_ids.clone();
    if let Some(id) = end_of_turn_id(dir)? {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    let context_length = manifest.max_position_embeddings;
    let max_length = context_length.min(DEFAULT_MAX_LENGTH);
    let mut decoder = json!({
        "session_options": { "log_id": "onnxruntime-genai", "provider_options": [] },
        "filename": manifest.decoder,
        "head_size": manifest.head_dim,
        "hidden_size": manifest.hidden_size,
        "num_attention_heads": manifest.num_attention_heads,
        "num_hidden_layers": manifest.num_layers,
        "num_key_value_heads": manifest.num_kv_heads,
        // GenAI's keys, our tensor names (`%d` is the layer).
        "inputs": {
            "input_ids": io::INPUT_IDS,
            "attention_mask": io::ATTENTION_MASK,
            "position_ids": io::POSITION_IDS,
            "past_key_names": format!("{}%d.key", io::PAST_PREFIX),
            "past_value_names": format!("{}%d.value", io::PAST_PREFIX),
        },
        "outputs": {
            "logits": io::LOGITS,
            "present_key_names": format!("{}%d.key", io::PRESENT_PREFIX),
            "present_value_names": format!("{}%d.value", io::PRESENT_PREFIX),
        },
    });
    let sliding: Vec<usize> = manifest
        .layer_types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == LayerType::Sliding)
        .map(|(i, _)| i)
        .collect();
    if let (Some(window), false) = (manifest.sliding_window, sliding.is_empty()) {
        decoder["sliding_window"] = json!({
            "window_size": window,
            "slide_key_value_cache": false,
            "slide_inputs": false,
            "layers": sliding,
            "cache_slack": sliding_slack(window),
        });
    }
    Ok(json!({
        "model": {
            "type": model_type(cfg.text.family),
            "bos_token_id": manifest.bos_token_id,
            "pad_token_id": manifest.pad_token_id,
            "eos_token_id": eos,
            "vocab_size": manifest.vocab_size,
            "context_length": context_length,
            "decoder": decoder,
        },
        "search": {
            "do_sample": false,
            "early_stopping": true,
            "length_penalty": 1.0,
            "max_length": max_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": true,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }))
}

/// Writes [`config`] to `dir/genai_config.json` for a cpu-graph export; does nothing for a portable one (GenAI
/// needs the in-place KV buffers and `GroupQueryAttention` of the cpu graph).
pub fn write(
    graph: GraphKind,
    cfg: &ModelConfig,
    manifest: &Manifest,
    dir: &Path,
) -> Result<(), ExportError> {
    if graph != GraphKind::Cpu {
        return Ok(());
    }
    let value = config(cfg, manifest, dir)?;
    let path = dir.join(GENAI_CONFIG_FILE);
    let text = serde_json::to_string_pretty(&value).expect("json");
    std::fs::write(&path, text + "\n").map_err(|e| ExportError::io(&path, e))
}

/// The id of `<end_of_turn>` in `dir/tokenizer.json`'s added tokens, if the folder has that file and token.
fn end_of_turn_id(dir: &Path) -> Result<Option<u32>, ExportError> {
    let path = dir.join(files::TOKENIZER_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct Tokenizer {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ExportError::io(&path, e))?;
    let tok: Tokenizer =
        serde_json::from_str(&text).map_err(|source| ExportError::Json { path, source })?;
    Ok(tok
        .added_tokens
        .iter()
        .find(|t| t.content == "<end_of_turn>")
        .map(|t| t.id))
}
