//! `audio_encoder.onnx`: Gemma 3n's audio tower and audio embedder (semantics §13.2–§13.4), float32, standard
//! ONNX ops, in the transformers.js I/O names:
//!
//! ```text
//! input_features [B, T, mels] f32, input_features_mask [B, T] bool (true = a real frame, the extractor's polarity)
//!   SubSampleConvProjection: 2 × (Conv2d, cumulative group norm, ReLU), flatten (freq, channel), linear → [B, T', D]
//!   mask subsampled: frame t' takes the mask of input frame t'·(product of time strides)
//!   conformer blocks ([`super::audio_conformer`]), then every reduction_factor-th frame, padded frames → 0
//!   embed_audio (soft): RMSNorm(gain) → linear to H → RMSNorm (no gain)
//!   padded frames → the embedding of the text vocabulary's last id (an audio token, embedded as a hard token),
//!   then more of those rows up to audio_soft_tokens_per_image, as Gemma3nModel.forward does
//! audio_features [B, S, H] f32: the rows that replace the S audio tokens of each clip
//! ```
//!
//! [`write_audio_encoder`] builds it from a checkpoint into one `.onnx` and its `.onnx_data`.

use std::path::Path;

use indicatif::ProgressBar;
use prost::Message;

use super::audio_conformer::{self as conformer, reshape, Block};
use crate::builder::{model, Attr, GraphBuilder, Value};
use crate::layers::{Ctx, Kernels};
use crate::onnx::{self, DataType};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::config::gemma3n_audio::{AudioFeatureConfig, Gemma3nAudioConfig};
use gemma_models::names::gemma3n_audio as names;
use gemma_models::Checkpoint;

/// The file name in an export folder (the contract's).
pub use gemma_models::contract::files::AUDIO_ENCODER_FILE;

/// Writes `preprocess_audio.onnx` and `audio_encoder.onnx` (+ `audio_encoder.onnx_data`) into `out` for the
/// Gemma 3n checkpoint folder `src` (its `config.json` and feature extractor settings) and its tensors `ckpt`.
pub fn write_audio_graphs(
    src: &Path,
    ckpt: &Checkpoint,
    out: &Path,
) -> Result<(Gemma3nAudioConfig, AudioFeatureConfig), ExportError> {
    let cfg = Gemma3nAudioConfig::from_file(&src.join("config.json"))?;
    let features = AudioFeatureConfig::from_checkpoint_dir(src)?;
    if features.feature_size != cfg.input_feat_size {
        return Err(gemma_models::ConfigError::Invalid {
            path: src.join("preprocessor_config.json"),
            field: "feature_size".into(),
            expected: format!("audio_config.input_feat_size ({})", cfg.input_feat_size),
            found: features.feature_size.to_string(),
        }
        .into());
    }
    super::audio_preprocess::write_preprocess_audio(out, &features)?;
    write_audio_encoder(ckpt, &cfg, &out.join(AUDIO_ENCODER_FILE))?;
    Ok((cfg, features))
}

/// Builds `audio_encoder.onnx` at `path` (weights in `path` + `_data`) from `ckpt`'s audio tensors.
pub fn write_audio_encoder(
    ckpt: &Checkpoint,
    cfg: &Gemma3nAudioConfig,
    path: &Path,
) -> Result<(), ExportError> {
    let data = path.with_extension("onnx_data");
    let mut w = WeightWriter::create(&data, ProgressBar::hidden())?;
    let mut g = GraphBuilder::new();
    build_audio_encoder(&mut g, &mut w, ckpt, cfg)?;
    w.finish()?;
    let proto = model(
        g.finish("gemma3n_audio_encoder"),
        &[("", onnx::OPSET)],
        &[("gemma_onnx.graph", "gemma3n_audio_encoder".into())],
    );
    std::fs::write(path, proto.encode_to_vec()).map_err(|e| ExportError::io(path, e))
}

/// Adds the encoder's inputs, nodes and `audio_features` output to `g`, its weights to `w`.
pub fn build_audio_encoder(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &Gemma3nAudioConfig,
) -> Result<(), ExportError> {
    let m = cfg.input_feat_size;
    let features = g.input(
        "input_features",
        DataType::Float,
        &["batch".into(), "num_frames".into(), m.into()],
    );
    let mask = g.input(
        "input_features_mask",
        DataType::Bool,
        &["batch".into(), "num_frames".into()],
    );
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels: Kernels::PORTABLE,
    };
    cx.g.set_scope("/audio_tower/subsample_conv_projection");
    let x = subsample(&mut cx, &features, cfg)?;
    let valid = subsample_mask(&mut cx, &x, &mask, cfg);
    let mut b = Block::new(&mut cx, &valid, cfg);
    let mut x = x;
    for i in 0..cfg.num_layers {
        cx.g.set_scope(format!("/audio_tower/conformer.{i}"));
        x = b.block(&mut cx, &x, i)?;
    }
    cx.g.set_scope("/audio_tower/reduce");
    let r = cfg.reduction_factor as i64;
    let [zero, end, one, step] = [0, i64::MAX, 1, r].map(|v| cx.g.const_i64("bound", &[v]));
    let x =
        cx.g.op("Slice", "frames", &[&x, &zero, &end, &one, &step], &[]);
    let valid =
        cx.g.op("Slice", "mask", &[&valid, &zero, &end, &one, &step], &[]);
    let last = conformer::last_axis(&mut cx);
    let valid3 = cx.g.unsqueeze("mask_rows", &valid, &last);
    let zero_f = cx.g.scalar_f32("zero", 0.0);
    let x = cx.g.where_("masked_fill", &valid3, &x, &zero_f);

    cx.g.set_scope("/embed_audio");
    let (d, h, eps) = (cfg.hidden_size, cfg.text_hidden_size, cfg.rms_norm_eps);
    let emb = embed_soft(
        &mut cx,
        &x,
        (names::SOFT_NORM, names::PROJECTION),
        (d, h),
        eps,
    )?;
    let proj = param(&mut cx, names::PROJECTION, &[h, d])?;

    // The padding rows: text id vocab_size − 1 through the hard-token path, [1, 1, H].
    cx.g.set_scope("/embed_audio/padding");
    let table = param(&mut cx, names::EMBEDDING, &[cfg.vocab_size, d])?;
    let row = cx.g.const_i64("padding_row", &[cfg.padding_row() as i64]);
    let hard = cx.g.gather("padding_token", &table, &row, 0);
    let hard_norm = param(&mut cx, names::HARD_NORM, &[d])?;
    let hard = conformer::rms(&mut cx, &hard, Some(&hard_norm), eps);
    let hard = conformer::linear(&mut cx, &hard, &proj);
    let pad = conformer::rms(&mut cx, &hard, None, eps);
    let pad = reshape(&mut cx, "padding_row_3d", &pad, &[1, 1, h as i64]);
    let rows = cx.g.where_("padded_frames", &valid3, &emb, &pad);

    // Pad to S rows: max(S − T_red, 0) more padding rows.
    let shape = cx.g.shape("shape", &rows);
    let batch = cx.g.gather("batch", &shape, &zero, 0);
    let t = cx.g.gather("tokens", &shape, &one, 0);
    let s = cx.g.const_i64("soft_tokens", &[cfg.soft_tokens as i64]);
    let extra = cx.g.op("Sub", "extra", &[&s, &t], &[]);
    let extra = cx.g.op("Max", "extra_clamped", &[&extra, &zero], &[]);
    let hv = cx.g.const_i64("hidden", &[h as i64]);
    let extra_shape = cx.g.concat("extra_shape", &[&batch, &extra, &hv], 0);
    let filler = cx.g.op("Expand", "filler", &[&pad, &extra_shape], &[]);
    let out = cx.g.concat("audio_features", &[&rows, &filler], 1);

    cx.g.set_scope("");
    cx.g.output(
        &out,
        "audio_features",
        DataType::Float,
        &["batch".into(), cfg.soft_tokens.into(), h.into()],
    );
    Ok(())
}

/// Gemma3nMultimodalEmbedder on soft tokens `x` `[.., D]` (the audio and the vision embedder alike): RMSNorm with
/// the `soft_norm` gain, the `projection` `[H, D]` to the text width, RMSNorm without gain → `[.., H]`.
pub(super) fn embed_soft(
    cx: &mut Ctx<'_>,
    x: &Value,
    (soft_norm, projection): (&str, &str),
    (d, h): (usize, usize),
    eps: f64,
) -> Result<Value, ExportError> {
    let soft = param(cx, soft_norm, &[d])?;
    let x = conformer::rms(cx, x, Some(&soft), eps);
    let proj = param(cx, projection, &[h, d])?;
    let x = conformer::linear(cx, &x, &proj);
    Ok(conformer::rms(cx, &x, None, eps))
}

/// A checkpoint tensor as an initializer, after checking its shape.
pub(super) fn param(cx: &mut Ctx<'_>, name: &str, shape: &[usize]) -> Result<Value, ExportError> {
    cx.ckpt.tensor_with_shape(name, shape)?;
    cx.weight(name)
}

/// SubSampleConvProjection: `[B, T, mels]` → `[B, T', D]` (semantics §13.2).
fn subsample(
    cx: &mut Ctx<'_>,
    features: &Value,
    cfg: &Gemma3nAudioConfig,
) -> Result<Value, ExportError> {
    let axis1 = cx.g.const_i64("channel_axis", &[1]);
    let mut x = cx.g.unsqueeze("channels", features, &axis1); // [B, 1, T, F]
    let f_out = cfg.sscp_freq_out();
    let mut c_in = 1;
    for i in 0..2 {
        let (c, [kt, kf], [st, sf]) = (
            cfg.sscp_channels[i],
            cfg.sscp_kernels[i],
            cfg.sscp_strides[i],
        );
        let wc = param(cx, &names::sscp(i, names::SSCP_CONV), &[c, c_in, kt, kf])?;
        x = cx.g.op(
            "Conv",
            &format!("conv_{i}"),
            &[&x, &wc],
            &[
                ("kernel_shape", Attr::Ints(vec![kt as i64, kf as i64])),
                ("strides", Attr::Ints(vec![st as i64, sf as i64])),
                // (time, freq) begins, then ends: time is padded only at the end ("reverse causal").
                ("pads", Attr::Ints(vec![0, 1, kt as i64 - 1, 1])),
            ],
        );
        let gain = param(cx, &names::sscp(i, names::SSCP_NORM), &[c])?;
        x = cumulative_group_norm(
            cx,
            &x,
            &gain,
            (c * f_out[i]) as f32,
            cfg.sscp_group_norm_eps,
        );
        x = cx.g.op("Relu", "relu", &[&x], &[]);
        c_in = c;
    }
    let x = cx.g.transpose("time_freq_channel", &x, &[0, 2, 3, 1]);
    let flat = (f_out[1] * c_in) as i64;
    let x = reshape(cx, "flatten", &x, &[0, 0, flat]);
    let w = param(cx, names::INPUT_PROJ, &[cfg.hidden_size, flat as usize])?;
    Ok(conformer::linear(cx, &x, &w))
}

/// Gemma3nAudioCumulativeGroupNorm on `[B, C, T, F]`: at time t, the mean and variance of every (channel,
/// frequency) value of frames 0..=t, where the variance sums squared differences from each frame's own
/// cumulative mean; no mask (every frame counts); then the per-channel gain.
fn cumulative_group_norm(
    cx: &mut Ctx<'_>,
    x: &Value,
    gain: &Value,
    per_frame: f32,
    eps: f64,
) -> Value {
    let axes = cx.g.const_i64("group_axes", &[1, 3]);
    let time = cx.g.scalar_i64("time_axis", 2);
    let keep = [("keepdims", Attr::Int(1))];
    let sum = cx.g.op("ReduceSum", "sum", &[x, &axes], &keep);
    let cum_sum = cx.g.op("CumSum", "cum_sum", &[&sum, &time], &[]);
    let n = cx.g.scalar_f32("elements_per_frame", per_frame);
    let shape = cx.g.shape("stat_shape", &sum);
    let counts = cx.g.op("Expand", "counts", &[&n, &shape], &[]);
    let cum_count = cx.g.op("CumSum", "cum_count", &[&counts, &time], &[]);
    let mean = cx.g.op("Div", "mean", &[&cum_sum, &cum_count], &[]);
    let diff = cx.g.op("Sub", "diff", &[x, &mean], &[]);
    let sq = cx.g.op("Mul", "sq", &[&diff, &diff], &[]);
    let sq_sum = cx.g.op("ReduceSum", "sq_sum", &[&sq, &axes], &keep);
    let cum_sq = cx.g.op("CumSum", "cum_sq", &[&sq_sum, &time], &[]);
    let var = cx.g.op("Div", "var", &[&cum_sq, &cum_count], &[]);
    let e = cx.g.scalar_f32("eps", eps as f32);
    let var = cx.g.op("Add", "var_eps", &[&var, &e], &[]);
    let std = cx.g.op("Sqrt", "std", &[&var], &[]);
    let inv = cx.g.op("Reciprocal", "rsqrt", &[&std], &[]);
    let y = cx.g.op("Mul", "normalized", &[&diff, &inv], &[]);
    let gain_axes = cx.g.const_i64("gain_axes", &[0, 2, 3]);
    let gain = cx.g.unsqueeze("gain", gain, &gain_axes);
    cx.g.op("Mul", "scaled", &[&y, &gain], &[])
}

/// The mask at the subsampled frames: input frame `min(t'·stride, T − 1)` for output frame t'.
fn subsample_mask(cx: &mut Ctx<'_>, x: &Value, mask: &Value, cfg: &Gemma3nAudioConfig) -> Value {
    let stride = (cfg.sscp_strides[0][0] * cfg.sscp_strides[1][0]) as i64;
    let one = cx.g.const_i64("one", &[1]);
    let zero = cx.g.const_i64("zero", &[0]);
    let x_shape = cx.g.shape("sub_shape", x);
    let t_sub = cx.g.gather("t_sub", &x_shape, &one, 0);
    let m_shape = cx.g.shape("mask_shape", mask);
    let t = cx.g.gather("t", &m_shape, &one, 0);
    let last = cx.g.op("Sub", "last_frame", &[&t, &one], &[]);
    let [z, e, s] = [&zero, &t_sub, &one].map(|v| cx.g.squeeze("scalar", v, &zero));
    let idx = cx.g.op("Range", "frames", &[&z, &e, &s], &[]);
    let st = cx.g.scalar_i64("stride", stride);
    let idx = cx.g.op("Mul", "strided", &[&idx, &st], &[]);
    let last = cx.g.squeeze("last_scalar", &last, &zero);
    let idx = cx.g.op("Min", "clamped", &[&idx, &last], &[]);
    cx.g.gather("mask", mask, &idx, 1)
}
