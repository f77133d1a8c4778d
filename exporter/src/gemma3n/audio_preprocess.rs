//! `preprocess_audio.onnx`: `Gemma3nAudioFeatureExtractor` as a graph (semantics §13.1).
//!
//! ```text
//! waveform [1, n] float32, mono, at the extractor's sampling rate
//!   × input_scale_factor, cut to max_length, padded (padding_value, 0) to P = ⌈n / 128⌉·128
//!   frames f = 0..F, F = ⌊(P − (L+1)) / hop⌋ + 1 (0 when P < L+1): samples f·hop .. f·hop + L
//!   HTK pre-emphasis (L+1 samples → L): y0 = x0·(1−p), yi = xi − p·x(i−1)
//!   × periodic Hann window (L), |rfft| with n = fft_length as MatMuls with cos/sin tables
//!   @ mel filter bank (triangular, HTK mel scale, no norm), log(max(·, mel_floor)), (· − mean) / stddev
//! input_features [1, F, mels] float32, input_features_mask [1, F] bool: frame f is valid iff f·hop < n
//! ```
//!
//! The tables are computed in float64 and stored as float32; the maths in the graph is float32, where numpy does
//! the mel product, the log and the normalization in float64: the features differ by about 1e-5 (the test states
//! the maximum).

use std::f64::consts::PI;
use std::path::Path;

use prost::Message;

use crate::builder::{model, Dim, GraphBuilder};
use crate::onnx::{self, DataType};
use crate::ExportError;
use gemma_models::config::gemma3n_audio::AudioFeatureConfig;

/// The file name in an export folder (the contract's).
pub use gemma_models::contract::files::PREPROCESS_AUDIO_FILE;

/// Builds the feature extraction model for `cfg`.
pub fn build_preprocess_audio(cfg: &AudioFeatureConfig) -> onnx::ModelProto {
    let mut g = GraphBuilder::new();
    g.set_scope("/preprocess_audio");
    let wave = g.input(
        "waveform",
        DataType::Float,
        &[1i64.into(), "num_samples".into()],
    );
    let (len, hop) = (cfg.frame_length as i64, cfg.hop_length as i64);
    let mut x = wave;
    if cfg.input_scale_factor != 1.0 {
        let s = g.scalar_f32("input_scale_factor", cfg.input_scale_factor as f32);
        x = g.op("Mul", "scale", &[&x, &s], &[]);
    }
    let max = cfg.max_length as i64;
    let [zero, one, big] = [0, 1, max].map(|v| g.const_i64("bound", &[v]));
    x = g.slice("truncate", &x, [&zero, &big, &one]);

    // n, the padded length P and the frame count F, as int64 [1] tensors.
    let shape = g.shape("shape", &x);
    let n = g.gather("num_samples", &shape, &one, 0);
    let multiple = g.const_i64("multiple", &[cfg.pad_to_multiple_of as i64]);
    let m1 = g.const_i64("multiple_minus_one", &[cfg.pad_to_multiple_of as i64 - 1]);
    let up = g.op("Add", "round_up", &[&n, &m1], &[]);
    let blocks = g.op("Div", "blocks", &[&up, &multiple], &[]);
    let padded_len = g.op("Mul", "padded_len", &[&blocks, &multiple], &[]);
    let pad_right = g.op("Sub", "pad_right", &[&padded_len, &n], &[]);
    let zeros3 = g.const_i64("zeros3", &[0, 0, 0]);
    let pads = g.concat("pads", &[&zeros3, &pad_right], 0);
    let fill = g.scalar_f32("padding_value", cfg.padding_value as f32);
    let x = g.op("Pad", "pad", &[&x, &pads, &fill], &[]);
    // F = max(P − (L+1) + hop, 0) / hop: integer division of a non-negative number.
    let span = g.const_i64("hop_minus_span", &[hop - (len + 1)]);
    let hop_v = g.const_i64("hop", &[hop]);
    let f = g.op("Add", "frames_num", &[&padded_len, &span], &[]);
    let f = g.op("Max", "frames_clamped", &[&f, &zero], &[]);
    let frames = g.op("Div", "frames", &[&f, &hop_v], &[]);

    // starts[f] = f·hop; frame f = x[starts[f] .. starts[f] + L + 1].
    let end = g.op("Mul", "starts_end", &[&frames, &hop_v], &[]);
    let [s0, e, h] = [&zero, &end, &hop_v].map(|v| g.squeeze("scalar", v, &zero));
    let starts = g.op("Range", "starts", &[&s0, &e, &h], &[]);
    let offsets: Vec<i64> = (0..=len).collect();
    let offsets = g.const_i64("offsets", &offsets);
    let starts_col = g.unsqueeze("starts_col", &starts, &one);
    let idx = g.op("Add", "indices", &[&starts_col, &offsets], &[]);
    let raw = g.gather("frames", &x, &idx, 1); // [1, F, L+1]

    let p = cfg.preemphasis;
    let axis = g.const_i64("last", &[2]);
    let cut = |g: &mut GraphBuilder, label: &str, from: i64, to: i64| {
        let (a, b) = (g.const_i64("from", &[from]), g.const_i64("to", &[to]));
        g.slice(label, &raw, [&a, &b, &axis])
    };
    let frames = if p == 0.0 {
        cut(&mut g, "frames", 0, len)
    } else {
        let pv = g.scalar_f32("preemphasis", p as f32);
        let (cur, prev) = if cfg.preemphasis_htk_flavor {
            (
                cut(&mut g, "current", 1, len),
                cut(&mut g, "previous", 0, len - 1),
            )
        } else {
            (
                cut(&mut g, "current", 1, len + 1),
                cut(&mut g, "previous", 0, len),
            )
        };
        let scaled = g.op("Mul", "p_prev", &[&pv, &prev], &[]);
        let rest = g.op("Sub", "preemphasis", &[&cur, &scaled], &[]);
        if cfg.preemphasis_htk_flavor {
            let first = cut(&mut g, "first", 0, 1);
            let k = g.scalar_f32("one_minus_p", (1.0 - p) as f32);
            let first = g.op("Mul", "first_scaled", &[&first, &k], &[]);
            g.concat("preemphasized", &[&first, &rest], 2)
        } else {
            rest
        }
    };
    let window = g.const_f32("/const/hann_window", &[len], &hann(cfg.frame_length));
    let frames = g.op("Mul", "window", &[&frames, &window], &[]);

    let bins = cfg.fft_length / 2 + 1;
    let (cos, sin) = dft_tables(cfg.frame_length, cfg.fft_length);
    let dims = [len, bins as i64];
    let cos = g.const_f32("/const/dft_cos", &dims, &cos);
    let sin = g.const_f32("/const/dft_sin", &dims, &sin);
    let re = g.op("MatMul", "dft_re", &[&frames, &cos], &[]);
    let im = g.op("MatMul", "dft_im", &[&frames, &sin], &[]);
    let re2 = g.op("Mul", "re2", &[&re, &re], &[]);
    let im2 = g.op("Mul", "im2", &[&im, &im], &[]);
    let power = g.op("Add", "power", &[&re2, &im2], &[]);
    let magnitude = g.op("Sqrt", "magnitude", &[&power], &[]);
    let fb = mel_filters(cfg);
    let fb = g.const_f32(
        "/const/mel_filters",
        &[bins as i64, cfg.feature_size as i64],
        &fb,
    );
    let mel = g.op("MatMul", "mel", &[&magnitude, &fb], &[]);
    let floor = g.scalar_f32("mel_floor", cfg.mel_floor as f32);
    let mel = g.op("Max", "floor", &[&mel, &floor], &[]);
    let mut feats = g.op("Log", "log", &[&mel], &[]);
    let m = cfg.feature_size as i64;
    if let Some(mean) = &cfg.per_bin_mean {
        let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let mean = g.const_f32("/const/per_bin_mean", &[m], &mean);
        feats = g.op("Sub", "minus_mean", &[&feats, &mean], &[]);
    }
    if let Some(std) = &cfg.per_bin_stddev {
        let std: Vec<f32> = std.iter().map(|&v| v as f32).collect();
        let std = g.const_f32("/const/per_bin_stddev", &[m], &std);
        feats = g.op("Div", "over_stddev", &[&feats, &std], &[]);
    }
    let n_scalar = g.squeeze("n_scalar", &n, &zero);
    let valid = g.op("Less", "valid", &[&starts, &n_scalar], &[]);
    let mask = g.unsqueeze("mask", &valid, &zero);

    g.set_scope("");
    let frames_dim: Dim = "num_frames".into();
    g.output(
        &feats,
        "input_features",
        DataType::Float,
        &[1i64.into(), frames_dim.clone(), m.into()],
    );
    g.output(
        &mask,
        "input_features_mask",
        DataType::Bool,
        &[1i64.into(), frames_dim],
    );
    let settings = serde_json::to_string(cfg).expect("config serializes");
    model(
        g.finish("gemma3n_audio_preprocess"),
        &[("", onnx::OPSET)],
        &[
            ("gemma_onnx.graph", "gemma3n_audio_preprocess".into()),
            ("gemma_onnx.preprocess_audio_config", settings),
        ],
    )
}

/// Writes [`PREPROCESS_AUDIO_FILE`] into `dir`.
pub fn write_preprocess_audio(dir: &Path, cfg: &AudioFeatureConfig) -> Result<(), ExportError> {
    let path = dir.join(PREPROCESS_AUDIO_FILE);
    let bytes = build_preprocess_audio(cfg).encode_to_vec();
    std::fs::write(&path, bytes).map_err(|e| ExportError::io(&path, e))
}

/// The periodic Hann window in float32, in numpy's order of operations:
/// `0.5 · (1 − cos(f32(2π) · i / L))`.
fn hann(len: usize) -> Vec<f32> {
    let two_pi = (2.0 * PI) as f32;
    (0..len)
        .map(|i| 0.5 * (1.0 - (two_pi * i as f32 / len as f32).cos()))
        .collect()
}

/// `cos` and `sin` of `2π·k·t / n_fft` for t < frame_length (the rest of the FFT input is zero padding) and
/// k ≤ n_fft / 2, row t, column k; the angle is reduced mod n_fft exactly before the float64 trigonometry.
fn dft_tables(frame: usize, n_fft: usize) -> (Vec<f32>, Vec<f32>) {
    let bins = n_fft / 2 + 1;
    let mut cos = Vec::with_capacity(frame * bins);
    let mut sin = Vec::with_capacity(frame * bins);
    for t in 0..frame {
        for k in 0..bins {
            let a = 2.0 * PI * ((t * k) % n_fft) as f64 / n_fft as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// transformers' `create_fb_matrix(n_fft/2 + 1, f_min, f_max, mels, rate, n_fft, norm=None)`, `[bins, mels]`:
/// triangles between consecutive points of an even HTK-mel grid (`2595·log10(1 + f/700)`).
fn mel_filters(cfg: &AudioFeatureConfig) -> Vec<f32> {
    let (bins, mels) = (cfg.fft_length / 2 + 1, cfg.feature_size);
    let mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let (m_min, m_max) = (mel(cfg.min_frequency), mel(cfg.max_frequency));
    let step = (m_max - m_min) / (mels + 1) as f64;
    let f_pts: Vec<f64> = (0..mels + 2)
        .map(|i| {
            let m = if i == mels + 1 {
                m_max
            } else {
                m_min + step * i as f64
            };
            700.0 * (10f64.powf(m / 2595.0) - 1.0)
        })
        .collect();
    let hz_per_bin = (cfg.sampling_rate as f64 / cfg.fft_length as f64) as f32;
    let mut fb = Vec::with_capacity(bins * mels);
    for k in 0..bins {
        let freq = (k as f32 * hz_per_bin) as f64;
        for j in 0..mels {
            let down = (freq - f_pts[j]) / (f_pts[j + 1] - f_pts[j]);
            let up = (f_pts[j + 2] - freq) / (f_pts[j + 2] - f_pts[j + 1]);
            fb.push(down.min(up).max(0.0) as f32);
        }
    }
    fb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_the_expected_shapes_and_values() {
        let (cos, sin) = dft_tables(4, 8);
        assert_eq!(cos.len(), 4 * 5);
        assert_eq!((cos[0], sin[0]), (1.0, 0.0));
        assert!((cos[5 + 2] - 0.0).abs() < 1e-7 && (sin[5 + 2] - 1.0).abs() < 1e-7);
        let w = hann(512);
        assert_eq!(w[0], 0.0);
        assert!((w[256] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn mel_filters_are_triangles_that_peak_at_one() {
        let cfg = AudioFeatureConfig::from_json_str("{}", "p.json".as_ref()).unwrap();
        let fb = mel_filters(&cfg);
        assert_eq!(fb.len(), 513 * 128);
        let max = fb.iter().cloned().fold(0.0f32, f32::max);
        assert!(max <= 1.0 && max > 0.9, "{max}");
        assert!(fb.iter().all(|&v| v >= 0.0));
        assert_eq!(fb[0], 0.0); // 0 Hz is below 125 Hz
    }

    #[test]
    fn the_graph_declares_the_transformers_js_names() {
        let cfg = AudioFeatureConfig::from_json_str("{}", "p.json".as_ref()).unwrap();
        let g = build_preprocess_audio(&cfg).graph.unwrap();
        let names = |v: &[onnx::ValueInfoProto]| -> Vec<String> {
            v.iter().map(|i| i.name.clone().unwrap()).collect()
        };
        assert_eq!(names(&g.input), ["waveform"]);
        assert_eq!(names(&g.output), ["input_features", "input_features_mask"]);
    }
}
