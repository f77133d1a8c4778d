//! The audio side of Gemma3nForConditionalGeneration (semantics §13): the USM Conformer encoder (`audio_config`),
//! the top-level audio fields (`audio_soft_tokens_per_image`, the audio token ids) and the feature extractor's
//! `preprocessor_config.json` (`Gemma3nAudioFeatureExtractor`, in `gemma3n_audio_features.rs`).
//!
//! Defaults are transformers 5.24's `Gemma3nAudioConfig`, `Gemma3nConfig` and `Gemma3nAudioFeatureExtractor`
//! ones, applied where a key is absent. Every size is checked against a sanity limit before a graph is sized from
//! it.
//!
//! ```
//! # use gemma_models::config::gemma3n_audio::Gemma3nAudioConfig;
//! let json = r#"{"model_type": "gemma3n", "text_config": {"hidden_size": 2048, "vocab_size": 262400},
//!   "audio_config": {"hidden_size": 1536}}"#;
//! let a = Gemma3nAudioConfig::from_json_str(json, "config.json".as_ref())?;
//! assert_eq!((a.head_dim(), a.context_size(), a.soft_tokens), (192, 24, 188));
//! # Ok::<(), gemma_models::ConfigError>(())
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{describe, Fields};
use crate::error::ConfigError;

/// Sanity limits (the released E2B/E4B: 128 mels, 1536 wide, 12 layers, 8 heads, chunk 12, context 13/0).
const MAX_WIDTH: usize = 65_536;
const MAX_LAYERS: usize = 256;
const MAX_HEADS: usize = 256;
const MAX_CONTEXT: usize = 4096;
const MAX_KERNEL: usize = 64;
const MAX_STRIDE: usize = 16;
const MAX_MELS: usize = 1024;
const MAX_TOKENS: usize = 65_536;

/// The Conformer audio encoder and its embedder, with the text sizes the embedder projects into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma3nAudioConfig {
    /// Mel bins of `input_features` (`input_feat_size`, 128).
    pub input_feat_size: usize,
    /// Width D of the Conformer (1536).
    pub hidden_size: usize,
    /// Epsilon of the light-conv norms and of the embedder's norms (the other norms use 1e-6).
    pub rms_norm_eps: f64,
    /// `gradient_clipping`: the clamp bound applied around every Conformer sub-block (1e10).
    pub gradient_clipping: f64,
    /// Query block W of the chunked local attention (12).
    pub chunk_size: usize,
    /// `conf_attention_context_left` (13): keys reach `left - 1` frames back.
    pub context_left: usize,
    /// `conf_attention_context_right` (0): keys reach this many frames ahead.
    pub context_right: usize,
    /// `conf_attention_logit_cap` (50): `cap · tanh(logits / cap)`.
    pub logit_cap: f64,
    pub num_heads: usize,
    pub num_layers: usize,
    /// Kernel of the causal depthwise convolution of the light-conv block (5).
    pub conv_kernel_size: usize,
    /// Output stride over the Conformer's frames (`conf_reduction_factor`, 4).
    pub reduction_factor: usize,
    /// `conf_residual_weight` (0.5): the weight of each feed-forward half.
    pub residual_weight: f64,
    /// Output channels of the two subsampling convolutions ((128, 32)).
    pub sscp_channels: [usize; 2],
    pub sscp_group_norm_eps: f64,
    /// (time, frequency) kernels of the two subsampling convolutions ((3, 3) each).
    pub sscp_kernels: [[usize; 2]; 2],
    /// (time, frequency) strides ((2, 2) each).
    pub sscp_strides: [[usize; 2]; 2],
    /// Rows of the embedder's hard-token table (`vocab_size`, 128).
    pub vocab_size: usize,
    /// First audio token id of the text vocabulary (`vocab_offset`, 262272).
    pub vocab_offset: usize,
    /// `text_config.hidden_size`: the width of `audio_features`.
    pub text_hidden_size: usize,
    /// `text_config.vocab_size`: its last id is the audio padding token (embedding row `vocab_size - 1 - offset`).
    pub text_vocab_size: usize,
    /// `audio_soft_tokens_per_image` (188): audio tokens per clip in the prompt, the rows of `audio_features`.
    pub soft_tokens: usize,
    pub boa_token_id: u32,
    pub eoa_token_id: u32,
    pub audio_token_id: u32,
}

impl Gemma3nAudioConfig {
    /// Reads `config.json` (a Gemma3nForConditionalGeneration's) and parses its audio fields.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json_str(&read(path)?, path)
    }

    /// Parses the audio fields of config JSON; `origin` is only used in messages.
    pub fn from_json_str(s: &str, origin: &Path) -> Result<Self, ConfigError> {
        let map = object(s, origin)?;
        parse(&Fields::new(&map, origin, ""))
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Frames a query block looks back: `context_left - 1` (semantics §13.3).
    pub fn max_past(&self) -> usize {
        self.context_left.saturating_sub(1)
    }

    /// Keys per query block: `chunk + max_past + context_right`.
    pub fn context_size(&self) -> usize {
        self.chunk_size + self.max_past() + self.context_right
    }

    /// Frequency bins after each subsampling convolution (padded by 1 on both sides).
    pub fn sscp_freq_out(&self) -> [usize; 2] {
        let f0 = (self.input_feat_size + 2 - self.sscp_kernels[0][1]) / self.sscp_strides[0][1] + 1;
        let f1 = (f0 + 2 - self.sscp_kernels[1][1]) / self.sscp_strides[1][1] + 1;
        [f0, f1]
    }

    /// Embedding row of the padding token (the text vocabulary's last id).
    pub fn padding_row(&self) -> usize {
        self.text_vocab_size - 1 - self.vocab_offset
    }
}

pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    crate::files::read_regular_to_string(path, crate::files::MAX_JSON_BYTES).map_err(|source| {
        ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

pub(super) fn object(s: &str, origin: &Path) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(ConfigError::Json {
            path: origin.to_path_buf(),
            detail: format!("the top level must be an object, found {}", describe(&v)),
        }),
        Err(e) => Err(ConfigError::Json {
            path: origin.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

fn parse(top: &Fields<'_>) -> Result<Gemma3nAudioConfig, ConfigError> {
    let empty = Map::new();
    let a = top
        .object("audio_config")?
        .unwrap_or_else(|| Fields::new(&empty, top.origin(), "audio_config."));
    let t = top
        .object("text_config")?
        .unwrap_or_else(|| Fields::new(&empty, top.origin(), "text_config."));
    if let Some(mt) = a.str("model_type")? {
        if mt != "gemma3n_audio" {
            return Err(a.invalid("model_type", "\"gemma3n_audio\"", format!("{mt:?}")));
        }
    }
    let hidden_size = a.bounded("hidden_size", Some(1536), MAX_WIDTH)?;
    let num_heads = a.bounded("conf_num_attention_heads", Some(8), MAX_HEADS)?;
    if hidden_size % num_heads != 0 {
        return Err(a.invalid(
            "conf_num_attention_heads",
            format!("a divisor of audio_config.hidden_size ({hidden_size})"),
            num_heads.to_string(),
        ));
    }
    let context_left = a.bounded("conf_attention_context_left", Some(13), MAX_CONTEXT)?;
    let context_right = match a.usize("conf_attention_context_right")? {
        Some(n) => a.at_most("conf_attention_context_right", n, MAX_CONTEXT)?,
        None => 0,
    };
    let channels = a.pair("sscp_conv_channel_size", [128, 32], MAX_WIDTH)?;
    let kernels = a.pairs("sscp_conv_kernel_size", [[3, 3], [3, 3]], MAX_KERNEL)?;
    let strides = a.pairs("sscp_conv_stride_size", [[2, 2], [2, 2]], MAX_STRIDE)?;
    let text_vocab_size = t.bounded("vocab_size", Some(262_400), 1 << 22)?;
    let vocab_size = a.bounded("vocab_size", Some(128), MAX_TOKENS)?;
    let vocab_offset = match a.usize("vocab_offset")? {
        Some(n) => n,
        None => 262_272,
    };
    if !(vocab_offset < text_vocab_size && text_vocab_size <= vocab_offset + vocab_size) {
        return Err(a.invalid(
            "vocab_offset",
            format!(
                "an offset such that text_config.vocab_size - 1 ({}) is an audio token id \
                 (offset ≤ id < offset + audio_config.vocab_size {vocab_size})",
                text_vocab_size - 1
            ),
            vocab_offset.to_string(),
        ));
    }
    let cfg = Gemma3nAudioConfig {
        input_feat_size: a.bounded("input_feat_size", Some(128), MAX_MELS)?,
        hidden_size,
        rms_norm_eps: a.positive_f64("rms_norm_eps", Some(1e-6))?,
        gradient_clipping: a.positive_f64("gradient_clipping", Some(1e10))?,
        chunk_size: a.bounded("conf_attention_chunk_size", Some(12), MAX_CONTEXT)?,
        context_left,
        context_right,
        logit_cap: a.positive_f64("conf_attention_logit_cap", Some(50.0))?,
        num_heads,
        num_layers: a.bounded("conf_num_hidden_layers", Some(12), MAX_LAYERS)?,
        conv_kernel_size: a.bounded("conf_conv_kernel_size", Some(5), MAX_KERNEL)?,
        reduction_factor: a.bounded("conf_reduction_factor", Some(4), MAX_STRIDE)?,
        residual_weight: a.positive_f64("conf_residual_weight", Some(0.5))?,
        sscp_channels: channels,
        sscp_group_norm_eps: a.positive_f64("sscp_conv_group_norm_eps", Some(1e-3))?,
        sscp_kernels: kernels,
        sscp_strides: strides,
        vocab_size,
        vocab_offset,
        text_hidden_size: t.bounded("hidden_size", Some(2048), MAX_WIDTH)?,
        text_vocab_size,
        soft_tokens: top.bounded("audio_soft_tokens_per_image", Some(188), MAX_TOKENS)?,
        boa_token_id: id(top, "boa_token_id", 256_000)?,
        eoa_token_id: id(top, "eoa_token_id", 262_272)?,
        audio_token_id: id(top, "audio_token_id", 262_273)?,
    };
    // The frequency axis must survive both convolutions (kernel ≤ padded width).
    let f0 = cfg.input_feat_size + 2;
    if f0 < cfg.sscp_kernels[0][1] || (f0 - kernels[0][1]) / strides[0][1] + 3 < kernels[1][1] {
        return Err(a.invalid(
            "input_feat_size",
            "enough mel bins for the subsampling convolutions' frequency kernels",
            cfg.input_feat_size.to_string(),
        ));
    }
    Ok(cfg)
}

pub(super) fn id(top: &Fields<'_>, key: &str, default: u32) -> Result<u32, ConfigError> {
    match top.token_ids(key)? {
        None => Ok(default),
        Some(ids) if ids.len() == 1 => Ok(ids[0]),
        Some(ids) => Err(top.invalid(key, "a single token id", format!("{ids:?}"))),
    }
}

impl Fields<'_> {
    /// A `[a, b]` list of positive integers at most `max`.
    fn pair(&self, key: &str, default: [usize; 2], max: usize) -> Result<[usize; 2], ConfigError> {
        let Some(v) = self.value(key) else {
            return Ok(default);
        };
        let items: Option<Vec<usize>> = v.as_array().and_then(|items| {
            items
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|n| n as usize)
                        .filter(|n| (1..=max).contains(n))
                })
                .collect()
        });
        match items.as_deref() {
            Some(&[a, b]) => Ok([a, b]),
            _ => Err(self.invalid(
                key,
                format!("two positive integers, each at most {max}"),
                describe(v),
            )),
        }
    }

    /// A `[[a, b], [c, d]]` list of two pairs.
    fn pairs(
        &self,
        key: &str,
        default: [[usize; 2]; 2],
        max: usize,
    ) -> Result<[[usize; 2]; 2], ConfigError> {
        let Some(v) = self.value(key) else {
            return Ok(default);
        };
        let bad = || {
            self.invalid(
                key,
                format!("two [time, frequency] pairs of positive integers at most {max}"),
                describe(v),
            )
        };
        let rows = v.as_array().filter(|r| r.len() == 2).ok_or_else(bad)?;
        let mut out = [[0; 2]; 2];
        for (o, row) in out.iter_mut().zip(rows) {
            let r = row.as_array().filter(|r| r.len() == 2).ok_or_else(bad)?;
            for (x, n) in o.iter_mut().zip(r) {
                *x = n
                    .as_u64()
                    .map(|n| n as usize)
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(bad)?;
            }
        }
        Ok(out)
    }
}

#[path = "gemma3n_audio_features.rs"]
mod features;
pub use features::AudioFeatureConfig;

#[cfg(test)]
#[path = "gemma3n_audio_tests.rs"]
mod tests;
