//! MatFormer slicing of Gemma 3n (docs/gemma3n.md, "MatFormer"): reading an E4B checkpoint as one of the smaller
//! models nested in it (E2B and the "mix-n-match" sizes between), as Google's MatFormer Lab slices it.
//!
//! A slice skips whole decoder layers and truncates each kept layer's MLP to its first `ffn` intermediate units:
//! * [`Spec`]: what to slice, parsed from `--matformer` (a preset name such as `E2B`, or `skip=20-24,ffn=8192`);
//! * [`Plan`]: the spec checked against a config: the kept layers, their MLP widths, the sliced `config.json`
//!   ([`Plan::slice_config`]) and the tensor renames and selections ([`Plan::apply`]) that make a
//!   [`Checkpoint`] read as the sliced model, lazily (nothing is copied; see
//!   [`Selection`](crate::checkpoint::Selection)).

// Selections are lists of ranges, often of one (not a mistaken vec![a..b] for a vec of a..b).
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::config::TextConfig;
use crate::error::CheckpointError;
use crate::names::{self, gemma3n as n3, suffix};

/// The MatFormer Lab's preset slices of Gemma 3n E4B (35 layers, MLP width 16384): name, skipped layers, and the
/// MLP width of each kept layer as (kept-layer index → width) exceptions to a base width.
const PRESETS: &[Preset] = &[
    Preset {
        name: "E2B",
        skip: 20..25,
        base: 8192,
        wide: &[],
    },
    Preset {
        name: "E1.96B",
        skip: 20..25,
        base: 8192,
        wide: &[4],
    },
    Preset {
        name: "E2.54B",
        skip: 0..0,
        base: 8192,
        wide: &[4, 20, 21, 22, 23, 24],
    },
];

/// The layer count and MLP width of the checkpoint the presets slice (Gemma 3n E4B).
const E4B_LAYERS: usize = 35;
const E4B_FFN: usize = 16_384;

/// The most layers a spec may name (the config's own limit is checked by the plan).
const MAX_SPEC_LAYERS: usize = 1 << 16;

struct Preset {
    name: &'static str,
    skip: Range<usize>,
    base: usize,
    /// Kept layers (new indices) that keep E4B's full width.
    wide: &'static [usize],
}

/// Why a `--matformer` spec cannot slice this model. The messages are about the spec (the caller names the
/// argument).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatformerError {
    #[error("unknown preset {0:?}; presets: {presets}, or give skip=…,ffn=… (e.g. skip=20-24,ffn=8192)", presets = preset_names())]
    UnknownPreset(String),
    #[error("{0}")]
    Syntax(String),
    #[error("only Gemma 3n checkpoints can be sliced; this one is {0}")]
    NotGemma3n(String),
    #[error("preset {preset} slices Gemma 3n E4B ({E4B_LAYERS} layers, MLP width {E4B_FFN}); this checkpoint has {layers} layers of width up to {ffn}: give skip=…,ffn=… instead")]
    PresetNeedsE4B {
        preset: String,
        layers: usize,
        ffn: usize,
    },
    #[error("layer {layer} is out of range: the checkpoint has layers 0 to {last}")]
    LayerOutOfRange { layer: usize, last: usize },
    #[error("skipping every layer leaves no model")]
    NothingLeft,
    #[error("layer {layer} cannot be skipped: it computes the keys and values that layer {shared} (kept) reuses (KV sharing)")]
    KvSource { layer: usize, shared: usize },
    #[error("ffn lists {given} widths, but {kept} layers are kept: give one width for all or one per kept layer")]
    FfnCount { given: usize, kept: usize },
    #[error("ffn {size} for kept layer {layer} (layer {original} of the checkpoint) is larger than its MLP width {max}")]
    FfnTooLarge {
        size: usize,
        layer: usize,
        original: usize,
        max: usize,
    },
}

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The MLP widths of the kept layers.
#[derive(Debug, Clone, PartialEq)]
pub enum Ffn {
    /// The checkpoint's own widths.
    Keep,
    /// One width for every kept layer.
    All(usize),
    /// One width per kept layer, in order.
    PerLayer(Vec<usize>),
}

/// What to slice: parsed from `--matformer`, not yet checked against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The preset's name, when the spec is one.
    pub preset: Option<&'static str>,
    /// Layers of the checkpoint to skip, sorted, without duplicates.
    pub skip: Vec<usize>,
    pub ffn: Ffn,
}

impl Spec {
    /// Parses a preset name (case-insensitive: `E2B`, `E1.96B`, `E2.54B`) or `key=value` parts separated by
    /// commas: `skip=` layers (numbers and ranges `a-b`, both ends included) and `ffn=` widths (one for all kept
    /// layers, or one per kept layer; `w*n` repeats `w` n times). A part without `=` continues the list of the
    /// part before it: `skip=3,7,ffn=8192*4,16384,8192*25`. `:` separates list items too.
    pub fn parse(s: &str) -> Result<Spec, MatformerError> {
        let s = s.trim();
        if let Some(p) = PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(s)) {
            let kept = E4B_LAYERS - p.skip.len();
            let widths = (0..kept)
                .map(|i| if p.wide.contains(&i) { E4B_FFN } else { p.base })
                .collect();
            return Ok(Spec {
                preset: Some(p.name),
                skip: p.skip.clone().collect(),
                ffn: Ffn::PerLayer(widths),
            });
        }
        if !s.contains('=') {
            return Err(MatformerError::UnknownPreset(s.to_string()));
        }
        let syntax = |m: String| MatformerError::Syntax(m);
        let (mut skip, mut ffn): (Option<Vec<usize>>, Option<Vec<usize>>) = (None, None);
        let mut key = "";
        for part in s.split([',', ':']).map(str::trim) {
            let item = match part.split_once('=') {
                Some((k, v)) => {
                    key = k.trim();
                    let list = match key {
                        "skip" => &mut skip,
                        "ffn" => &mut ffn,
                        _ => {
                            return Err(syntax(format!(
                                "unknown key {key:?}: the keys are skip and ffn"
                            )))
                        }
                    };
                    if list.replace(Vec::new()).is_some() {
                        return Err(syntax(format!("{key} is given twice")));
                    }
                    v.trim()
                }
                None if key.is_empty() => {
                    return Err(syntax(format!("{part:?} has no key (skip= or ffn=)")))
                }
                None => part,
            };
            let number = |t: &str| -> Result<usize, MatformerError> {
                t.trim()
                    .parse()
                    .map_err(|_| syntax(format!("{key}: {t:?} is not a non-negative integer")))
            };
            // Layer numbers and repeat counts beyond any model's layer count are refused before a list is built.
            let layers = |n: usize| match n <= MAX_SPEC_LAYERS {
                true => Ok(n),
                false => Err(syntax(format!(
                    "{key}: {n} is more layers than any model has"
                ))),
            };
            let list = if key == "skip" { &mut skip } else { &mut ffn };
            let list = list.as_mut().expect("set when the key was read");
            if key == "skip" {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (number(a)?, layers(number(b)?)?);
                        if a > b {
                            return Err(syntax(format!("skip: the range {item} is empty")));
                        }
                        list.extend(a..=b);
                    }
                    None => list.push(number(item)?),
                }
            } else {
                let (w, n) = match item.split_once('*') {
                    Some((w, n)) => (number(w)?, layers(number(n)?)?),
                    None => (number(item)?, 1),
                };
                if w == 0 {
                    return Err(syntax("ffn: widths must be positive".into()));
                }
                list.extend(std::iter::repeat_n(w, n));
            }
        }
        let mut skip = skip.unwrap_or_default();
        skip.sort_unstable();
        skip.dedup();
        let ffn = match ffn {
            None => Ffn::Keep,
            Some(w) if w.is_empty() => return Err(syntax("ffn: no width given".into())),
            Some(w) if w.len() == 1 => Ffn::All(w[0]),
            Some(w) => Ffn::PerLayer(w),
        };
        Ok(Spec {
            preset: None,
            skip,
            ffn,
        })
    }
}

/// A [`Spec`] checked against a Gemma 3n text config.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The checkpoint's layers that stay, in order (new layer `j` is old layer `kept[j]`).
    pub kept: Vec<usize>,
    /// The MLP width of each kept layer.
    pub ffn: Vec<usize>,
    /// The checkpoint's layer count.
    pub source_layers: usize,
    /// `num_kv_shared_layers` of the sliced model: the kept layers among the checkpoint's shared ones.
    pub kv_shared_layers: usize,
    /// The spec in canonical form (`skip=20-24,ffn=8192*30`), or the preset's name, for the manifest.
    pub label: String,
}

impl Plan {
    /// Checks `spec` against `text`: a Gemma 3n config whose layers, KV sharing and MLP widths allow the slice.
    pub fn new(spec: &Spec, text: &TextConfig) -> Result<Plan, MatformerError> {
        let Some(g) = &text.gemma3n else {
            return Err(MatformerError::NotGemma3n(format!("{:?}", text.family)));
        };
        let n = text.num_hidden_layers;
        if let Some(preset) = spec.preset {
            let narrowest = g.intermediate_sizes.iter().copied().min().unwrap_or(0);
            if n != E4B_LAYERS || narrowest < E4B_FFN {
                return Err(MatformerError::PresetNeedsE4B {
                    preset: preset.to_string(),
                    layers: n,
                    ffn: g.intermediate_sizes.iter().copied().max().unwrap_or(0),
                });
            }
        }
        if let Some(&layer) = spec.skip.iter().find(|&&l| l >= n) {
            return Err(MatformerError::LayerOutOfRange { layer, last: n - 1 });
        }
        let kept: Vec<usize> = (0..n).filter(|l| !spec.skip.contains(l)).collect();
        if kept.is_empty() {
            return Err(MatformerError::NothingLeft);
        }
        // A kept shared layer needs the layer whose keys and values it reads.
        for &l in &kept {
            let source = g.kv_source(&text.layer_types, l);
            if spec.skip.contains(&source) {
                return Err(MatformerError::KvSource {
                    layer: source,
                    shared: l,
                });
            }
        }
        let first_shared = n - g.num_kv_shared_layers;
        let kv_shared_layers = kept.iter().filter(|&&l| l >= first_shared).count();
        if kv_shared_layers == kept.len() {
            // Only reachable when every non-shared layer is skipped, and then a source is too (checked above).
            return Err(MatformerError::NothingLeft);
        }
        let ffn = match &spec.ffn {
            Ffn::Keep => kept.iter().map(|&l| g.intermediate_sizes[l]).collect(),
            Ffn::All(w) => vec![*w; kept.len()],
            Ffn::PerLayer(w) if w.len() == kept.len() => w.clone(),
            Ffn::PerLayer(w) => {
                return Err(MatformerError::FfnCount {
                    given: w.len(),
                    kept: kept.len(),
                })
            }
        };
        for (j, (&size, &l)) in ffn.iter().zip(&kept).enumerate() {
            let max = g.intermediate_sizes[l];
            if size > max {
                return Err(MatformerError::FfnTooLarge {
                    size,
                    layer: j,
                    original: l,
                    max,
                });
            }
        }
        let label = match spec.preset {
            Some(p) => p.to_string(),
            None if spec.skip.is_empty() => format!("ffn={}", runs(&ffn)),
            None => format!("skip={},ffn={}", ranges(&spec.skip), runs(&ffn)),
        };
        Ok(Plan {
            kept,
            ffn,
            source_layers: n,
            kv_shared_layers,
            label,
        })
    }

    /// The sliced model's `config.json`: the checkpoint's (`config`, the whole file) with the text config's
    /// `num_hidden_layers`, `intermediate_size` (one per layer), `layer_types` and `activation_sparsity_pattern` (the
    /// kept layers' entries) and `num_kv_shared_layers` (the kept shared layers) replaced.
    pub fn slice_config(&self, config: &Value, text: &TextConfig) -> Value {
        let mut out = config.clone();
        let g = text.gemma3n.as_ref().expect("Plan::new checked Gemma 3n");
        let t = match out.get_mut("text_config") {
            Some(t) if t.is_object() => t,
            _ => &mut out,
        };
        let obj = t.as_object_mut().expect("an object");
        let layer_types: Vec<&str> = self
            .kept
            .iter()
            .map(|&l| text.layer_types[l].name())
            .collect();
        let sparsity: Vec<f64> = self
            .kept
            .iter()
            .map(|&l| g.activation_sparsity[l])
            .collect();
        obj.insert("num_hidden_layers".into(), json!(self.kept.len()));
        obj.insert("intermediate_size".into(), json!(self.ffn));
        obj.insert("layer_types".into(), json!(layer_types));
        obj.insert("activation_sparsity_pattern".into(), json!(sparsity));
        obj.insert("num_kv_shared_layers".into(), json!(self.kv_shared_layers));
        out
    }

    /// Makes `ckpt` read as the sliced model: the skipped layers' tensors are dropped and the kept ones renumbered;
    /// each kept layer's `gate_proj`/`up_proj` keep their first `ffn` rows and `down_proj` its first `ffn` columns;
    /// `embed_tokens_per_layer` keeps the column blocks and `per_layer_model_projection` the row blocks of the
    /// kept layers (`hidden_size_per_layer_input` wide). `text` is the checkpoint's (unsliced) text config.
    pub fn apply(
        &self,
        ckpt: &mut Checkpoint,
        text: &TextConfig,
        prefix: &str,
    ) -> Result<(), CheckpointError> {
        let g = text.gemma3n.as_ref().expect("Plan::new checked Gemma 3n");
        let layers = format!("{prefix}layers.");
        let new_index = |old: usize| self.kept.iter().position(|&k| k == old);
        ckpt.rename(|name| {
            let Some(rest) = name.strip_prefix(&layers) else {
                return Some(name.to_string());
            };
            let Some((index, tail)) = rest.split_once('.') else {
                return Some(name.to_string());
            };
            match index.parse::<usize>() {
                Ok(old) => new_index(old).map(|new| format!("{layers}{new}.{tail}")),
                Err(_) => Some(name.to_string()),
            }
        })?;
        for (j, (&l, &w)) in self.kept.iter().zip(&self.ffn).enumerate() {
            if w < g.intermediate_sizes[l] {
                let cut = Some(vec![0..w]);
                ckpt.select(
                    &names::layer(prefix, j, suffix::GATE_PROJ),
                    cut.clone(),
                    None,
                )?;
                ckpt.select(&names::layer(prefix, j, suffix::UP_PROJ), cut.clone(), None)?;
                ckpt.select(&names::layer(prefix, j, suffix::DOWN_PROJ), None, cut)?;
            }
        }
        if self.kept.len() < self.source_layers {
            let blocks = self.layer_blocks(g.hidden_size_per_layer_input);
            ckpt.select(
                &n3::embed_tokens_per_layer(prefix),
                None,
                Some(blocks.clone()),
            )?;
            ckpt.select(&n3::per_layer_model_projection(prefix), Some(blocks), None)?;
        }
        Ok(())
    }

    /// The index ranges of the kept layers' blocks in a `[num_hidden_layers · width]` axis, adjacent ones merged.
    fn layer_blocks(&self, width: usize) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        for &l in &self.kept {
            let r = l * width..(l + 1) * width;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }
}

/// `20-24` / `3,7-9`.
fn ranges(v: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// `8192*4,16384,8192*25`.
fn runs(v: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let j = v[i..].iter().take_while(|&&w| w == v[i]).count();
        parts.push(if j == 1 {
            v[i].to_string()
        } else {
            format!("{}*{j}", v[i])
        });
        i += j;
    }
    parts.join(",")
}

#[cfg(test)]
#[path = "matformer_tests.rs"]
mod tests;
