//! Gemma 3n: its audio graphs (`preprocess_audio.onnx`, `audio_encoder.onnx`).

mod audio_conformer;
pub mod audio_encoder;
pub mod audio_preprocess;
