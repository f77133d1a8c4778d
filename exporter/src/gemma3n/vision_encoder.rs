//! `vision_encoder.onnx`: Gemma 3n's vision tower and vision embedder (docs/gemma3n-vision.md), float32, standard
//! ONNX ops, in the transformers.js I/O names:
//!
//! ```text
//! pixel_values [B, 3, S, S] f32 (the image processor's output, S = its size)
//!   stem: Conv2d 3×3/2 "same" + bias, RmsNorm2d, GELU(tanh)
//!   stages of edge-residual / universal-inverted-residual / multi-query attention blocks (`vision_blocks.rs`)
//!   MSFA: the last two stages' outputs, the smaller upsampled (nearest) to the larger, concatenated on channels,
//!         FFN (1×1 conv + RmsNorm2d + GELU, 1×1 conv + RmsNorm2d), avg-pooled to r×r, RmsNorm2d → [B, D, r, r]
//!   get_image_features: [B, r·r, D] (row-major pixels), times fp32 √D
//!   embed_vision (soft): RMSNorm(gain) → linear to H → RMSNorm (no gain)
//! image_features [B, r·r, H] f32: the rows that replace the r·r image tokens of each image
//! ```

use std::path::Path;

use indicatif::ProgressBar;
use prost::Message;

use super::audio_conformer::reshape;
use super::audio_encoder::param;
use super::vision_blocks::{self as blocks, shape_of};
use crate::builder::{model, Attr, GraphBuilder, Value};
use crate::layers::{Ctx, Kernels};
use crate::onnx::{self, DataType};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::config::gemma3n_vision::Gemma3nVisionConfig;
use gemma_models::contract::files::ENCODER_FILE;
use gemma_models::contract::io::{IMAGE_FEATURES, PIXEL_VALUES};
use gemma_models::names::gemma3n_vision as names;
use gemma_models::Checkpoint;

use crate::vision::preprocess::{gemma3n_from_dir, write_preprocess, PreprocessConfig};

/// The released checkpoints' image side (their `preprocessor_config.json`), used when the file gives none.
const DEFAULT_IMAGE_SIZE: usize = 768;

/// Writes `preprocess.onnx` and `vision_encoder.onnx` (+ `vision_encoder.onnx_data`) into `out` for the Gemma 3n
/// checkpoint folder `src` (its `config.json` and image processor settings) and its tensors `ckpt`. The image
/// processor (SiglipImageProcessor: a resize to its `size`, rescale, optional normalize) is Gemma 3's
/// `preprocess.onnx` without Pan & Scan; its size must be square.
pub fn write_vision_graphs(
    src: &Path,
    ckpt: &Checkpoint,
    out: &Path,
) -> Result<(Gemma3nVisionConfig, PreprocessConfig), ExportError> {
    let cfg = Gemma3nVisionConfig::from_file(&src.join("config.json"))?;
    let pre = gemma3n_from_dir(src, DEFAULT_IMAGE_SIZE)?;
    if pre.height != pre.width || pre.do_pan_and_scan {
        return Err(ExportError::ProcessorConfig {
            path: src.join(pre.source.as_deref().unwrap_or_default().split('#').next().unwrap_or("")),
            reason: format!(
                "Gemma 3n's image processor must resize to a square without Pan & Scan, found {}x{}{}",
                pre.height,
                pre.width,
                if pre.do_pan_and_scan { " with Pan & Scan" } else { "" }
            ),
        });
    }
    write_preprocess(out, &pre)?;
    write_vision_encoder(ckpt, &cfg, pre.height, &out.join(ENCODER_FILE))?;
    Ok((cfg, pre))
}

/// Builds `vision_encoder.onnx` at `path` (weights in `path` + `_data`) for `image_size`² inputs.
pub fn write_vision_encoder(
    ckpt: &Checkpoint,
    cfg: &Gemma3nVisionConfig,
    image_size: usize,
    path: &Path,
) -> Result<(), ExportError> {
    let data = path.with_extension("onnx_data");
    let mut w = WeightWriter::create(&data, ProgressBar::hidden())?;
    let mut g = GraphBuilder::new();
    build_vision_encoder(&mut g, &mut w, ckpt, cfg, image_size)?;
    w.finish()?;
    let proto = model(
        g.finish("gemma3n_vision_encoder"),
        &[("", onnx::OPSET)],
        &[("gemma_onnx.graph", "gemma3n_vision_encoder".into())],
    );
    std::fs::write(path, proto.encode_to_vec()).map_err(|e| ExportError::io(path, e))
}

/// Adds the encoder's input, nodes and `image_features` output to `g`, its weights to `w`.
pub fn build_vision_encoder(
    g: &mut GraphBuilder,
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    cfg: &Gemma3nVisionConfig,
    image_size: usize,
) -> Result<(), ExportError> {
    let pixels = g.input(
        PIXEL_VALUES,
        DataType::Float,
        &[
            "batch".into(),
            3usize.into(),
            image_size.into(),
            image_size.into(),
        ],
    );
    let mut cx = Ctx {
        g,
        w,
        ckpt,
        kernels: Kernels::PORTABLE,
    };
    cx.g.set_scope("/vision_tower/conv_stem");
    let bias = shape_of(&cx, names::STEM_BIAS)?;
    let bias = param(&mut cx, names::STEM_BIAS, &bias)?;
    let (x, stem) = blocks::conv(&mut cx, &pixels, names::STEM_CONV, 2, Some(&bias))?;
    let x = blocks::rms2d(&mut cx, &x, names::STEM_NORM, stem)?;
    let mut x = blocks::gelu(&mut cx, &x);
    let (mut chs, mut side) = (stem, image_size.div_ceil(2));
    // (value, channels, side) at the end of each stage.
    let mut ends = Vec::new();
    for (s, stage) in cfg.stages.iter().enumerate() {
        for (i, spec) in stage.iter().enumerate() {
            cx.g.set_scope(format!("/vision_tower/blocks.{s}.{i}"));
            let prefix = names::block(s, i, "");
            (x, chs) = blocks::block(&mut cx, &x, &prefix, spec, chs)?;
            side = side.div_ceil(spec.stride);
        }
        ends.push((x.clone(), chs, side));
    }
    cx.g.set_scope("/vision_tower/msfa");
    let inputs = &ends[ends.len() - 2..];
    let x = msfa(&mut cx, inputs, cfg)?;

    cx.g.set_scope("/get_image_features");
    let (d, h, r) = (
        cfg.hidden_size,
        cfg.text_hidden_size,
        cfg.msfa_output_resolution,
    );
    let x = reshape(&mut cx, "flatten", &x, &[0, d as i64, (r * r) as i64]);
    let x = cx.g.transpose("tokens", &x, &[0, 2, 1]);
    let root = cx.g.scalar_f32("sqrt_hidden", (d as f64).sqrt() as f32);
    let x = cx.g.op("Mul", "scaled", &[&x, &root], &[]);

    cx.g.set_scope("/embed_vision");
    let out = super::audio_encoder::embed_soft(
        &mut cx,
        &x,
        (names::SOFT_NORM, names::PROJECTION),
        (d, h),
        cfg.rms_norm_eps,
    )?;
    cx.g.set_scope("");
    cx.g.output(
        &out,
        IMAGE_FEATURES,
        DataType::Float,
        &["batch".into(), cfg.soft_tokens.into(), h.into()],
    );
    Ok(())
}

/// MobileNetV5MultiScaleFusionAdapter on the last two stages' `(value, channels, side)`.
fn msfa(
    cx: &mut Ctx<'_>,
    inputs: &[(Value, usize, usize)],
    cfg: &Gemma3nVisionConfig,
) -> Result<Value, ExportError> {
    let high = inputs[0].2;
    let mut parts = Vec::new();
    for (x, _, side) in inputs {
        if *side < high {
            // F.interpolate(size=high, mode="nearest"): source pixel floor(dst · in / out).
            let shape = cx.g.shape("shape", x);
            let two = cx.g.const_i64("batch_channels", &[0, 1]);
            let bc = cx.g.gather("bc", &shape, &two, 0);
            let hw =
                cx.g.const_i64("high_resolution", &[high as i64, high as i64]);
            let sizes = cx.g.concat("sizes", &[&bc, &hw], 0);
            let none = Value(String::new());
            let attrs = [
                ("mode", Attr::Str("nearest".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::Str("asymmetric".into()),
                ),
                ("nearest_mode", Attr::Str("floor".into())),
            ];
            parts.push(cx.g.op("Resize", "upsample", &[x, &none, &none, &sizes], &attrs));
        } else {
            parts.push(x.clone());
        }
    }
    let refs: Vec<&Value> = parts.iter().collect();
    let x = cx.g.concat("channels", &refs, 1);
    let x = blocks::conv_norm_act(cx, &x, names::MSFA_EXP, 1, true)?;
    let x = blocks::conv_norm_act(cx, &x, names::MSFA_PROJ, 1, false)?;
    let r = cfg.msfa_output_resolution;
    let x = if high == r {
        x
    } else if high % r == 0 {
        let k = (high / r) as i64;
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![k, k])),
        ];
        cx.g.op("AveragePool", "pool", &[&x], &attrs)
    } else {
        return Err(ExportError::Unsupported(format!(
            "MSFA: a {high}×{high} map resized to {r}×{r} (bilinear) is not supported; \
             only avg pooling by a whole factor, as in the released models (48 → 16)"
        )));
    };
    let d = shape_of(cx, names::MSFA_NORM)?;
    if d != [cfg.hidden_size] {
        return Err(ExportError::Unsupported(format!(
            "{}: {d:?}, expected [vision_config.hidden_size = {}]",
            names::MSFA_NORM,
            cfg.hidden_size
        )));
    }
    blocks::rms2d(cx, &x, names::MSFA_NORM, cfg.hidden_size)
}
