//! WAV files → the mono float32 waveform `preprocess_audio.onnx` takes (semantics §13.1).
//!
//! hound parses the container; 16-bit PCM becomes `s / 32768` and 32-bit float is taken as is, as Python
//! readers (soundfile, torchaudio, librosa) give them, so a mono clip at the model's rate reaches the graph
//! exactly as transformers sees it. Other layouts are converted: channels are averaged, and another rate is
//! resampled by rubato's FFT resampler (band-limited, delay trimmed). Converted audio is close to, not identical
//! with, what a Python pipeline (librosa, torchaudio) would resample, so its features differ slightly.

use std::io::BufReader;
use std::path::Path;

use rubato::audioadapter_buffers::owned::InterleavedOwned;
use rubato::{Fft, FixedSync, Resampler};

use super::AudioError;

/// Channels a file may have (7.1 surround at most): bounds what a 30 s clip can allocate.
const MAX_CHANNELS: u16 = 8;

/// What the model takes: its rate and the shortest and longest clips in samples at that rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipLimits {
    pub rate: u32,
    /// One analysis frame (`frame_length + 1` samples): shorter clips give no features.
    pub min_samples: usize,
    /// The feature extractor's `max_length` (480000 = 30 s at 16 kHz).
    pub max_samples: usize,
}

/// A waveform at the model's rate, and whether it had to be converted.
#[derive(Debug, Clone)]
pub struct Clip {
    pub samples: Vec<f32>,
    pub source_rate: u32,
    pub source_channels: u16,
    /// The file was not mono at the model's rate: it was mixed down and/or resampled.
    pub converted: bool,
}

/// Reads a WAV file into a mono clip at `limits.rate`, refusing what the model cannot take.
pub fn read_wav(path: &Path, limits: &ClipLimits) -> Result<Clip, AudioError> {
    let file = gemma_models::files::open_regular(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_wav(BufReader::new(file), path, limits)
}

/// [`read_wav`] of WAV bytes already in memory (`gemma serve`'s `input_audio` parts); `name` only names them in
/// errors.
pub fn read_wav_bytes(bytes: &[u8], name: &Path, limits: &ClipLimits) -> Result<Clip, AudioError> {
    decode_wav(std::io::Cursor::new(bytes), name, limits)
}

/// The WAV read from `input` (named `path` in errors) as [`read_wav`] describes.
fn decode_wav<R: std::io::Read>(
    input: R,
    path: &Path,
    limits: &ClipLimits,
) -> Result<Clip, AudioError> {
    let not_audio = |e: hound::Error| match e {
        hound::Error::IoError(source) => AudioError::Io {
            path: path.to_path_buf(),
            source,
        },
        hound::Error::Unsupported => AudioError::Unsupported {
            path: path.to_path_buf(),
            format: "this WAV encoding".into(),
        },
        e => AudioError::NotAudio {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    };
    let mut reader = hound::WavReader::new(input).map_err(not_audio)?;
    let spec = reader.spec();
    let format = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) | (hound::SampleFormat::Float, 32) => None,
        (f, bits) => Some(format!("{bits}-bit {f:?} WAV")),
    };
    if let Some(format) = format {
        return Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            format,
        });
    }
    if spec.channels == 0 || spec.channels > MAX_CHANNELS || spec.sample_rate == 0 {
        return Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            format: format!(
                "a WAV of {} channels at {} Hz",
                spec.channels, spec.sample_rate
            ),
        });
    }
    // Refuse long clips from the header, before reading (or allocating) anything.
    let frames = reader.duration() as usize;
    let seconds = frames as f64 / spec.sample_rate as f64;
    let max_seconds = limits.max_samples as f64 / limits.rate as f64;
    if seconds > max_seconds {
        return Err(AudioError::TooLong {
            path: path.to_path_buf(),
            seconds,
            max_seconds,
        });
    }
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i16>()
            .map(|s| s.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
    }
    .map_err(not_audio)?;
    let channels = spec.channels as usize;
    let mono: Vec<f32> = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect()
    };
    let converted = channels != 1 || spec.sample_rate != limits.rate;
    let samples = if spec.sample_rate == limits.rate {
        mono
    } else {
        resample(path, mono, spec.sample_rate, limits.rate)?
    };
    let samples = check_length(path, samples, limits)?;
    Ok(Clip {
        samples,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
        converted,
    })
}

/// Refuses a waveform that is empty, shorter than one frame or longer than the model takes.
pub fn check_length(
    path: &Path,
    samples: Vec<f32>,
    limits: &ClipLimits,
) -> Result<Vec<f32>, AudioError> {
    let path = path.to_path_buf();
    if samples.is_empty() {
        return Err(AudioError::Empty { path });
    }
    if samples.len() < limits.min_samples {
        let (samples, rate, min_samples) = (samples.len(), limits.rate, limits.min_samples);
        return Err(AudioError::TooShort {
            path,
            samples,
            rate,
            min_samples,
        });
    }
    if samples.len() > limits.max_samples {
        let seconds = samples.len() as f64 / limits.rate as f64;
        let max_seconds = limits.max_samples as f64 / limits.rate as f64;
        return Err(AudioError::TooLong {
            path,
            seconds,
            max_seconds,
        });
    }
    Ok(samples)
}

fn resample(path: &Path, mono: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    let err = |reason: String| AudioError::Resample {
        path: path.to_path_buf(),
        from,
        to,
        reason,
    };
    let n = mono.len();
    let input = InterleavedOwned::new_from(mono, 1, n).map_err(|e| err(e.to_string()))?;
    let mut fft = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| err(e.to_string()))?;
    let out = fft
        .process_all(&input, n, None)
        .map_err(|e| err(e.to_string()))?;
    Ok(out.take_data())
}

#[cfg(test)]
#[path = "wav_tests.rs"]
mod tests;
