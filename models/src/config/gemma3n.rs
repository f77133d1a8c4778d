//! The fields of `Gemma3nTextConfig` that no other Gemma has (semantics §12): per-layer intermediate sizes,
//! activation sparsity, AltUp, Laurel, per-layer inputs and KV sharing, with transformers 5.24's defaults and
//! checks, and our sanity limits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{describe, Fields};
use super::text::limits;
use super::LayerType;
use crate::error::ConfigError;

/// At most this many AltUp streams (the released models have 4).
pub const MAX_ALTUP_INPUTS: usize = 64;

/// What Gemma 3n's decoder reads beyond [`TextConfig`](super::TextConfig).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma3nText {
    /// The MLP width of each layer (`intermediate_size`, one number for all layers or a list).
    pub intermediate_sizes: Vec<usize>,
    /// `activation_sparsity_pattern`: the target sparsity `s` of each layer's Gaussian top-k (0: dense).
    pub activation_sparsity: Vec<f64>,
    /// `altup_num_inputs`: the number of AltUp streams.
    pub altup_num_inputs: usize,
    /// `altup_active_idx`: the stream the layer computes on.
    pub altup_active_idx: usize,
    /// `altup_correct_scale`: whether the corrected active stream is scaled by `correct_output_scale` before the
    /// per-layer input gate.
    pub altup_correct_scale: bool,
    /// `laurel_rank`: the inner width of the Laurel block.
    pub laurel_rank: usize,
    /// `hidden_size_per_layer_input`: the width P of each layer's per-layer input.
    pub hidden_size_per_layer_input: usize,
    /// `vocab_size_per_layer_input`: rows of `embed_tokens_per_layer`; other ids look up row 0.
    pub vocab_size_per_layer_input: usize,
    /// `num_kv_shared_layers`: the last layers, which reuse the keys and values of an earlier layer.
    pub num_kv_shared_layers: usize,
}

impl Gemma3nText {
    /// The layer whose keys and values layer `l` attends to: itself, or for one of the last
    /// `num_kv_shared_layers` layers, the last earlier layer of the same type that computes its own (transformers'
    /// `kv_sharing_modes`; checked to exist by [`parse`]).
    pub fn kv_source(&self, layer_types: &[LayerType], l: usize) -> usize {
        let first_shared = layer_types.len() - self.num_kv_shared_layers;
        if l < first_shared {
            return l;
        }
        (0..first_shared)
            .rev()
            .find(|&i| layer_types[i] == layer_types[l])
            .expect("parse checked that every shared layer type has a producer")
    }

    /// The number of layers that compute keys and values (the first ones; the graph's KV inputs).
    pub fn kv_layers(&self, num_hidden_layers: usize) -> usize {
        num_hidden_layers - self.num_kv_shared_layers
    }
}

/// The per-layer intermediate sizes: one number for all layers or one per layer; the largest is returned too,
/// for [`TextConfig::intermediate_size`](super::TextConfig::intermediate_size).
pub(super) fn intermediate_sizes(
    t: &Fields<'_>,
    n: usize,
) -> Result<(usize, Vec<usize>), ConfigError> {
    const KEY: &str = "intermediate_size";
    let sizes = match t.value(KEY) {
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(t.invalid(
                    KEY,
                    format!("one number for all layers or {n} (num_hidden_layers) numbers"),
                    format!("{} numbers", items.len()),
                ));
            }
            let mut sizes = Vec::with_capacity(n);
            for item in items {
                match item.as_u64().and_then(|v| usize::try_from(v).ok()) {
                    Some(v) if v > 0 => sizes.push(t.at_most(KEY, v, limits::INTERMEDIATE)?),
                    _ => return Err(t.invalid(KEY, "positive integers", describe(item))),
                }
            }
            sizes
        }
        _ => vec![t.bounded(KEY, Some(16_384), limits::INTERMEDIATE)?; n],
    };
    let max = sizes.iter().copied().max().unwrap_or(0);
    Ok((max, sizes))
}

/// Parses the Gemma 3n fields of the text config `t` for `layer_types` (one per layer).
pub(super) fn parse(
    t: &Fields<'_>,
    layer_types: &[LayerType],
    intermediate_sizes: Vec<usize>,
) -> Result<Gemma3nText, ConfigError> {
    let n = layer_types.len();
    let altup_num_inputs = t.bounded("altup_num_inputs", Some(4), MAX_ALTUP_INPUTS)?;
    let altup_active_idx = t.usize("altup_active_idx")?.unwrap_or(0);
    if altup_active_idx >= altup_num_inputs {
        return Err(t.invalid(
            "altup_active_idx",
            format!("less than altup_num_inputs ({altup_num_inputs})"),
            altup_active_idx.to_string(),
        ));
    }
    let num_kv_shared_layers = t.usize("num_kv_shared_layers")?.unwrap_or(15);
    if num_kv_shared_layers >= n {
        return Err(t.invalid(
            "num_kv_shared_layers",
            format!("less than num_hidden_layers ({n})"),
            num_kv_shared_layers.to_string(),
        ));
    }
    // transformers refuses a shared layer whose type no earlier layer computes (kv_sharing_modes).
    let first_shared = n - num_kv_shared_layers;
    if let Some(l) =
        (first_shared..n).find(|&l| !layer_types[..first_shared].contains(&layer_types[l]))
    {
        return Err(t.invalid(
            "num_kv_shared_layers",
            format!(
                "a value that leaves a {} layer before the shared ones (layer {l} has no layer to share with)",
                layer_types[l].name()
            ),
            num_kv_shared_layers.to_string(),
        ));
    }
    Ok(Gemma3nText {
        activation_sparsity: activation_sparsity(t, n)?,
        intermediate_sizes,
        altup_num_inputs,
        altup_active_idx,
        altup_correct_scale: t.bool("altup_correct_scale")?.unwrap_or(true),
        laurel_rank: t.bounded("laurel_rank", Some(64), limits::HIDDEN)?,
        hidden_size_per_layer_input: t.bounded(
            "hidden_size_per_layer_input",
            Some(256),
            limits::HIDDEN,
        )?,
        vocab_size_per_layer_input: t.bounded(
            "vocab_size_per_layer_input",
            Some(262_144),
            limits::VOCAB,
        )?,
        num_kv_shared_layers,
    })
}

/// `activation_sparsity_pattern`: one value in `[0, 1)` per layer; absent or `null`: 0.95 on the first 10 layers
/// when there are more than 10, else dense (transformers' default).
fn activation_sparsity(t: &Fields<'_>, n: usize) -> Result<Vec<f64>, ConfigError> {
    const KEY: &str = "activation_sparsity_pattern";
    let items = match t.value(KEY) {
        None | Some(Value::Null) => {
            let sparse = if n > 10 { 10 } else { 0 };
            return Ok((0..n)
                .map(|i| if i < sparse { 0.95 } else { 0.0 })
                .collect());
        }
        Some(Value::Array(items)) if items.len() == n => items,
        Some(v) => {
            return Err(t.invalid(
                KEY,
                format!("a list of {n} numbers (one per layer)"),
                describe(v),
            ))
        }
    };
    items
        .iter()
        .map(|v| match v.as_f64() {
            // The cut-off is mean + std·Φ⁻¹(s): finite only for s in (0, 1); 0 means no sparsity.
            Some(s) if (0.0..1.0).contains(&s) => Ok(s),
            _ => Err(t.invalid(KEY, "numbers in [0, 1)", describe(v))),
        })
        .collect()
}
