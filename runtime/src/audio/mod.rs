//! Audio for Gemma 3n exports (semantics §13):
//!
//! - [`wav`]: WAV files → a mono waveform at the model's rate. 16-bit PCM and 32-bit float are read as they are
//!   (PCM / 32768, as Python readers scale it); several channels are averaged and other rates resampled to
//!   16 kHz (rubato's FFT resampler), which no longer matches a Python pipeline sample for sample. Non-WAV files,
//!   empty clips, clips too short for one frame and clips longer than the feature extractor takes (30 s) are
//!   refused with errors that name the file.
//! - [`encoder`]: [`AudioEncoder`], the sessions of `preprocess_audio.onnx` and `audio_encoder.onnx`: a
//!   waveform → the `audio_soft_tokens_per_image` rows that replace a clip's audio tokens in the prompt.
//!
//! ```no_run
//! use gemma_runtime::audio::AudioEncoder;
//! use gemma_runtime::RuntimeOptions;
//! let mut enc = AudioEncoder::open("gemma-3n-e2b-onnx".as_ref(), &RuntimeOptions::default())?;
//! let rows = enc.encode_file("speech.wav".as_ref())?;
//! println!("{} audio rows of width {}", rows.nrows(), rows.ncols());
//! # Ok::<(), gemma_runtime::audio::AudioError>(())
//! ```

pub mod encoder;
pub mod wav;

pub use encoder::AudioEncoder;
pub use wav::{read_wav, Clip, ClipLimits};

use std::path::PathBuf;

/// What can go wrong with an audio file or the audio graphs.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: not a WAV audio file ({reason}); give a .wav file (16-bit PCM or 32-bit float)", .path.display())]
    NotAudio { path: PathBuf, reason: String },
    #[error("{}: {format} is not supported; convert it to 16-bit PCM or 32-bit float WAV", .path.display())]
    Unsupported { path: PathBuf, format: String },
    #[error("{}: the clip is empty", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: the clip is {samples} samples at {rate} Hz, shorter than one {min_samples}-sample frame", .path.display())]
    TooShort {
        path: PathBuf,
        samples: usize,
        rate: u32,
        min_samples: usize,
    },
    #[error("{}: the clip is {seconds:.2} s long; the model takes at most {max_seconds:.2} s: cut it into shorter clips", .path.display())]
    TooLong {
        path: PathBuf,
        seconds: f64,
        max_seconds: f64,
    },
    #[error("{}: resampling from {from} Hz to {to} Hz failed: {reason}", .path.display())]
    Resample {
        path: PathBuf,
        from: u32,
        to: u32,
        reason: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The export has no audio graphs or they are not what this runtime expects.
    #[error("{}: {message}", .path.display())]
    Export { path: PathBuf, message: String },
    #[error(transparent)]
    Runtime(#[from] crate::Error),
}
