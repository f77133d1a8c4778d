//! [`AudioEncoder`]: `preprocess_audio.onnx` then `audio_encoder.onnx` of a Gemma 3n export (semantics §13):
//! a waveform `[1, n]` → `input_features` + `input_features_mask` → `audio_features` `[1, S, H]`, the S rows
//! (`audio_soft_tokens_per_image`) that replace the clip's audio tokens in the prompt.
//!
//! The clip limits come from the settings `preprocess_audio.onnx` records in its metadata
//! (`gemma_onnx.preprocess_audio_config`, the feature extractor's `preprocessor_config.json` as exported).

use std::path::{Path, PathBuf};

use gemma_models::config::gemma3n_audio::AudioFeatureConfig;
use ndarray::{Array2, ArrayView2, Axis};
use ort::session::Session;
use ort::value::TensorRef;

use super::wav::{check_length, read_wav, Clip, ClipLimits};
use super::AudioError;
use crate::ort_env::create_session;
use crate::{Error, RuntimeOptions};

/// The graph files in an export folder (the manifest's `gemma3n.audio` names them).
pub use gemma_models::contract::files::{AUDIO_ENCODER_FILE, PREPROCESS_AUDIO_FILE};
/// The metadata key holding the feature extractor settings.
const SETTINGS_KEY: &str = "gemma_onnx.preprocess_audio_config";

/// The two audio sessions of an export.
pub struct AudioEncoder {
    preprocess: Session,
    encoder: Session,
    pub settings: AudioFeatureConfig,
    pub limits: ClipLimits,
}

impl AudioEncoder {
    /// Opens `dir`'s `preprocess_audio.onnx` and `audio_encoder.onnx`.
    pub fn open(dir: &Path, options: &RuntimeOptions) -> Result<AudioEncoder, AudioError> {
        let file = |name: &str| -> Result<PathBuf, AudioError> {
            let path = dir.join(name);
            if !path.is_file() {
                let message =
                    "this export has no audio graphs: the model takes no audio (export a Gemma 3n \
                               checkpoint with an audio tower)"
                        .to_string();
                return Err(AudioError::Export { path, message });
            }
            Ok(path)
        };
        let pre_path = file(PREPROCESS_AUDIO_FILE)?;
        let enc_path = file(AUDIO_ENCODER_FILE)?;
        let preprocess = create_session(&pre_path, options)?;
        let settings = preprocess
            .metadata()
            .ok()
            .and_then(|m| m.custom(SETTINGS_KEY))
            .and_then(|json| serde_json::from_str::<AudioFeatureConfig>(&json).ok())
            .ok_or_else(|| AudioError::Export {
                path: pre_path.clone(),
                message: format!("no readable {SETTINGS_KEY} metadata; re-export the model"),
            })?;
        let limits = ClipLimits {
            rate: settings.sampling_rate as u32,
            min_samples: settings.frame_length + 1,
            max_samples: settings.max_length,
        };
        let encoder = create_session(&enc_path, options)?;
        Ok(AudioEncoder {
            preprocess,
            encoder,
            settings,
            limits,
        })
    }

    /// Reads a WAV file as this model takes it (see [`read_wav`]).
    pub fn read(&self, path: &Path) -> Result<Clip, AudioError> {
        read_wav(path, &self.limits)
    }

    /// Reads WAV bytes as this model takes them (see [`super::wav::read_wav_bytes`]).
    pub fn read_bytes(&self, bytes: &[u8], name: &Path) -> Result<Clip, AudioError> {
        super::wav::read_wav_bytes(bytes, name, &self.limits)
    }

    /// `audio_features` `[S, H]` of a WAV file.
    pub fn encode_file(&mut self, path: &Path) -> Result<Array2<f32>, AudioError> {
        let clip = self.read(path)?;
        self.encode(path, clip.samples)
    }

    /// `audio_features` `[S, H]` of a waveform at the model's rate; `origin` names it in errors.
    pub fn encode(&mut self, origin: &Path, samples: Vec<f32>) -> Result<Array2<f32>, AudioError> {
        let n = samples.len();
        self.encode_padded(origin, samples, n)
    }

    /// [`encode`](Self::encode) of a clip padded with `padding_value` to `padded_len` samples (no fewer than it
    /// has), its padded frames masked: the clip's row of a batch whose longest clip has `padded_len` samples, as the
    /// feature extractor pads the clips of one prompt together (its padding reaches the shorter clips' rows through
    /// the subsampling convolutions, so a clip alone and a clip in a batch differ slightly).
    pub fn encode_padded(
        &mut self,
        origin: &Path,
        samples: Vec<f32>,
        padded_len: usize,
    ) -> Result<Array2<f32>, AudioError> {
        let mut samples = check_length(origin, samples, &self.limits)?;
        let n = samples.len();
        let total = padded_len.clamp(n, self.limits.max_samples.max(n));
        samples.resize(total, self.settings.padding_value as f32);
        let wave = Array2::from_shape_vec((1, total), samples).expect("one row of samples");
        let ort = |what: &str| {
            let context = format!("running {what} on {}", origin.display());
            move |e: ort::Error| AudioError::Runtime(Error::ort(context, e))
        };
        let out = self
            .preprocess
            .run(ort::inputs!["waveform" => TensorRef::from_array_view(wave.view()).map_err(ort(PREPROCESS_AUDIO_FILE))?])
            .map_err(ort(PREPROCESS_AUDIO_FILE))?;
        let features = out["input_features"]
            .try_extract_array::<f32>()
            .map_err(ort(PREPROCESS_AUDIO_FILE))?
            .to_owned();
        let mut mask = out["input_features_mask"]
            .try_extract_array::<bool>()
            .map_err(ort(PREPROCESS_AUDIO_FILE))?
            .to_owned();
        drop(out);
        // Frame i is the clip's while it starts inside it (`attention_mask[::hop_length]`; batch 1, so the flat
        // index is the frame).
        let hop = self.settings.hop_length;
        for (i, m) in mask.iter_mut().enumerate() {
            *m &= i.saturating_mul(hop) < n;
        }
        let out = self
            .encoder
            .run(ort::inputs![
                "input_features" => TensorRef::from_array_view(features.view()).map_err(ort(AUDIO_ENCODER_FILE))?,
                "input_features_mask" => TensorRef::from_array_view(mask.view()).map_err(ort(AUDIO_ENCODER_FILE))?,
            ])
            .map_err(ort(AUDIO_ENCODER_FILE))?;
        let rows = out["audio_features"]
            .try_extract_array::<f32>()
            .map_err(ort(AUDIO_ENCODER_FILE))?;
        let rows: ArrayView2<f32> = rows
            .index_axis_move(Axis(0), 0)
            .into_dimensionality()
            .map_err(|e| AudioError::Export {
                path: PathBuf::from(AUDIO_ENCODER_FILE),
                message: format!("audio_features: {e}"),
            })?;
        Ok(rows.to_owned())
    }
}
