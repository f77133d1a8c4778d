//! `Gemma3nAudioFeatureExtractor`'s settings (`preprocessor_config.json`, semantics §13.1): what
//! `preprocess_audio.onnx` computes and what clip lengths the runtime accepts.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{object, read, MAX_MELS};
use crate::config::fields::{describe, Fields};
use crate::error::ConfigError;

const MAX_SAMPLE_RATE: usize = 192_000;
const MAX_FRAME: usize = 1 << 16;

/// `Gemma3nAudioFeatureExtractor`'s settings (`preprocessor_config.json`), with the derived frame sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFeatureConfig {
    /// Mel bins (`feature_size`, 128).
    pub feature_size: usize,
    pub sampling_rate: usize,
    /// `round(sampling_rate · frame_length_ms / 1000)` samples (512).
    pub frame_length: usize,
    /// `round(sampling_rate · hop_length_ms / 1000)` samples (160).
    pub hop_length: usize,
    /// Next power of two ≥ frame_length, doubled with `fft_overdrive` (1024).
    pub fft_length: usize,
    pub min_frequency: f64,
    pub max_frequency: f64,
    /// Pre-emphasis coefficient (0.97; 0 = none).
    pub preemphasis: f64,
    pub preemphasis_htk_flavor: bool,
    pub input_scale_factor: f64,
    pub mel_floor: f64,
    /// Per-bin normalization, `feature_size` values each, when present.
    pub per_bin_mean: Option<Vec<f64>>,
    pub per_bin_stddev: Option<Vec<f64>>,
    /// The value clips are padded with (`padding_value`, 0).
    pub padding_value: f64,
    /// Clips are padded to a multiple of this many samples (the `__call__` default, 128).
    pub pad_to_multiple_of: usize,
    /// The longest clip in samples (the `__call__` default `max_length`, 480000 = 30 s at 16 kHz); longer ones
    /// are truncated by transformers, refused by the runtime.
    pub max_length: usize,
}

impl AudioFeatureConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json_str(&read(path)?, path)
    }

    /// The settings of a checkpoint folder: `preprocessor_config.json` (flat, as the Hub's Gemma 3n folders and
    /// `Gemma3nAudioFeatureExtractor.save_pretrained` write it), else the `feature_extractor` object of
    /// `processor_config.json` (transformers 5.x `Gemma3nProcessor.save_pretrained`), else the class defaults.
    pub fn from_checkpoint_dir(dir: &Path) -> Result<Self, ConfigError> {
        let flat = dir.join("preprocessor_config.json");
        if flat.is_file() {
            return Self::from_file(&flat);
        }
        let nested = dir.join("processor_config.json");
        if nested.is_file() {
            let map = object(&read(&nested)?, &nested)?;
            if let Some(Value::Object(fe)) = map.get("feature_extractor") {
                return Self::from_map(fe, &nested);
            }
        }
        Self::from_map(&Map::new(), &flat)
    }

    pub fn from_json_str(s: &str, origin: &Path) -> Result<Self, ConfigError> {
        Self::from_map(&object(s, origin)?, origin)
    }

    fn from_map(map: &Map<String, Value>, origin: &Path) -> Result<Self, ConfigError> {
        let f = Fields::new(map, origin, "");
        if let Some(t) = f.str("feature_extractor_type")? {
            if t != "Gemma3nAudioFeatureExtractor" {
                return Err(f.invalid(
                    "feature_extractor_type",
                    "\"Gemma3nAudioFeatureExtractor\"",
                    format!("{t:?}"),
                ));
            }
        }
        if f.f64("dither")?.unwrap_or(0.0) != 0.0 {
            return Err(f.invalid(
                "dither",
                "0 (dither adds random noise: not reproducible)",
                "a non-zero value",
            ));
        }
        let feature_size = f.bounded("feature_size", Some(128), MAX_MELS)?;
        let sampling_rate = f.bounded("sampling_rate", Some(16_000), MAX_SAMPLE_RATE)?;
        let ms = |key: &str, default: f64| -> Result<usize, ConfigError> {
            let v = f.positive_f64(key, Some(default))?;
            let n = (sampling_rate as f64 * v / 1000.0).round() as usize;
            if n == 0 || n > MAX_FRAME {
                return Err(f.invalid(
                    key,
                    format!("a length of 1 to {MAX_FRAME} samples"),
                    v.to_string(),
                ));
            }
            Ok(n)
        };
        let frame_length = ms("frame_length_ms", 32.0)?;
        let hop_length = ms("hop_length_ms", 10.0)?;
        let mut fft_length = frame_length.next_power_of_two();
        if f.bool("fft_overdrive")?.unwrap_or(true) {
            fft_length *= 2;
        }
        let bins = |key: &str| -> Result<Option<Vec<f64>>, ConfigError> {
            let Some(v) = f.value(key) else {
                return Ok(None);
            };
            let mut out = Vec::new();
            flatten(v, &mut out);
            if out.len() != feature_size || out.iter().any(|x| !x.is_finite()) {
                return Err(f.invalid(
                    key,
                    format!("{feature_size} finite numbers (one per mel bin)"),
                    describe(v),
                ));
            }
            Ok(Some(out))
        };
        let per_bin_stddev = bins("per_bin_stddev")?;
        if per_bin_stddev.as_ref().is_some_and(|s| s.contains(&0.0)) {
            return Err(f.invalid("per_bin_stddev", "non-zero values", "a zero"));
        }
        let preemphasis = f.f64("preemphasis")?.unwrap_or(0.97);
        if !(0.0..1.0).contains(&preemphasis) {
            return Err(f.invalid("preemphasis", "a number in [0, 1)", preemphasis.to_string()));
        }
        let min_frequency = f.f64("min_frequency")?.unwrap_or(125.0);
        let max_frequency = f.positive_f64("max_frequency", Some(7600.0))?;
        if !(0.0 <= min_frequency && min_frequency < max_frequency) {
            return Err(f.invalid(
                "min_frequency",
                format!("a number in [0, max_frequency {max_frequency})"),
                min_frequency.to_string(),
            ));
        }
        Ok(AudioFeatureConfig {
            feature_size,
            sampling_rate,
            frame_length,
            hop_length,
            fft_length,
            min_frequency,
            max_frequency,
            preemphasis,
            preemphasis_htk_flavor: f.bool("preemphasis_htk_flavor")?.unwrap_or(true),
            input_scale_factor: f.positive_f64("input_scale_factor", Some(1.0))?,
            mel_floor: f.positive_f64("mel_floor", Some(1e-5))?,
            per_bin_mean: bins("per_bin_mean")?,
            per_bin_stddev,
            padding_value: f.f64("padding_value")?.unwrap_or(0.0),
            pad_to_multiple_of: 128,
            max_length: 480_000,
        })
    }
}

/// The numbers of a possibly nested JSON list, in order (transformers saves the per-bin values as `[1, 1, n]`).
fn flatten(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        x => out.push(x.as_f64().unwrap_or(f64::NAN)),
    }
}
