//! `preprocess.onnx`: Gemma 3's image processor (`Gemma3ImageProcessorPil`, semantics §6) as one ONNX graph, so that
//! every runtime feeds the encoder the same pixels as transformers.
//!
//! | input | |
//! |---|---|
//! | `image` uint8 `[height, width, 3]` | a decoded RGB image of any size ≥ 1×1 (alpha composited on white and grey expanded to RGB beforehand, the processor's `convert_rgb`) |
//! | `do_pan_and_scan` bool `[]` | whether to add Pan & Scan crops; the processor's default is the config's `do_pan_and_scan` (False for the released models), recorded in the model metadata |
//!
//! | output | |
//! |---|---|
//! | `pixel_values` float32 `[1 + num_crops, 3, S_h, S_w]` | the full image, then the Pan & Scan crops in row-major order, each resized, rescaled and normalised |
//! | `num_crops` int64 `[]` | 0 when Pan & Scan is off or does not apply; the processor's text expansion needs it |
//! | `crop_boxes` int64 `[1 + num_crops, 4]` | `(y0, x0, y1, x1)` of each output image in the input (the first is the whole image) |
//!
//! The numbers are those of the PIL backend, which transformers uses when torchvision is absent: Pillow's
//! bilinear resize reproduced bit for bit ([`resample`]), then `float32(float64(u8) · rescale_factor)` and
//! `(x − mean) / std` in float32. The Pan & Scan geometry (§6.3) uses exact integer arithmetic (equal to
//! Python's float `floor`/`ceil` for any image below 2⁵² pixels a side) and the activation ratio compares in
//! float64 as Python does, so crop counts and boxes match exactly; min crop size, max crops and activation ratio
//! are constants from the processor config.
//!
//! Dynamic crop count: one `Loop` over the boxes `[full image, crop 1, …]` resizes each and stacks them (its
//! scan output), so the full image and the crops share one subgraph and the Loop always runs at least once (a
//! zero-trip Loop's scan output has no known shape). Inside, the resize is an `If` (Pillow's pass order) around
//! two passes, each an `If` (skipped when the size does not change) around two small Loops over the filter taps.
//! Standard ops only, opset 21; an empty image is the caller's to refuse.

mod config;
mod ops;
mod resample;

pub use config::{
    gemma3n_from_dir, PreprocessConfig, ReadPreprocessConfig, PREPROCESSOR_CONFIG_FILE,
    PROCESSOR_CONFIG_FILE,
};

use crate::builder::{model, Attr, Dim, GraphBuilder, Value};
use crate::onnx::{self, DataType};
use crate::ExportError;
use ops::{at, counted_loop, f32t, f64s, i64s, unsqueeze};
use prost::Message;
use std::path::Path;

/// The file name in an export folder.
pub use gemma_models::contract::files::PREPROCESS_FILE;

/// Builds the preprocessing model for `cfg`.
pub fn build_preprocess_graph(cfg: &PreprocessConfig) -> onnx::ModelProto {
    let mut g = GraphBuilder::new();
    g.set_scope("/preprocess");
    let image = g.input(
        "image",
        DataType::Uint8,
        &["height".into(), "width".into(), 3i64.into()],
    );
    let do_pas = g.input("do_pan_and_scan", DataType::Bool, &[]);

    let shape = g.op("Shape", "shape", &[&image], &[]);
    let (i0, i1) = (i64s(&mut g, "idx0", 0), i64s(&mut g, "idx1", 1));
    let h = at(&mut g, "height", &shape, &i0, 0);
    let w = at(&mut g, "width", &shape, &i1, 0);
    let (num_crops, boxes) = pan_and_scan_boxes(&mut g, cfg, &h, &w, &do_pas);

    let one = i64s(&mut g, "one", 1);
    let trips = g.op("Add", "num_images", &[&num_crops, &one], &[]);
    let (sh, sw) = (cfg.height as i64, cfg.width as i64);
    let image_dims = vec![Dim::Fixed(3), Dim::Fixed(sh), Dim::Fixed(sw)];
    let scope = "/preprocess/images";
    let outs = counted_loop(
        &mut g,
        "images",
        scope,
        &trips,
        &[],
        &[(DataType::Float, image_dims)],
        |b, i, _| vec![one_image(b, scope, cfg, &image, &boxes, i)],
    );

    g.set_scope("");
    let n: Dim = "num_images".into();
    g.output(
        &outs[0],
        "pixel_values",
        DataType::Float,
        &[n.clone(), 3i64.into(), sh.into(), sw.into()],
    );
    g.output(&num_crops, "num_crops", DataType::Int64, &[]);
    g.output(&boxes, "crop_boxes", DataType::Int64, &[n, 4i64.into()]);
    let settings = serde_json::to_string(cfg).expect("config serializes");
    model(
        g.finish("gemma3_preprocess"),
        &[("", onnx::OPSET)],
        &[
            ("gemma_onnx.graph", "gemma3_image_preprocess".into()),
            ("gemma_onnx.preprocess_config", settings),
        ],
    )
}

/// Writes [`PREPROCESS_FILE`] into `dir`.
pub fn write_preprocess(dir: &Path, cfg: &PreprocessConfig) -> Result<(), ExportError> {
    let path = dir.join(PREPROCESS_FILE);
    let bytes = build_preprocess_graph(cfg).encode_to_vec();
    std::fs::write(&path, bytes).map_err(|e| ExportError::io(&path, e))
}

/// The crop count and the boxes `[1 + n, 4]` (full image first) of `Gemma3ImageProcessorPil.pan_and_scan`
/// (semantics §6.3) for an `h × w` image, or no crops when `do_pas` is false.
fn pan_and_scan_boxes(
    g: &mut GraphBuilder,
    cfg: &PreprocessConfig,
    h: &Value,
    w: &Value,
    do_pas: &Value,
) -> (Value, Value) {
    let prev = g.set_scope("/preprocess/pan_and_scan");
    let c = |g: &mut GraphBuilder, label: &str, v: usize| i64s(g, label, v as i64);
    let (zero, one, two) = (c(g, "zero", 0), c(g, "one", 1), c(g, "two", 2));
    let min_crop = c(g, "min_crop_size", cfg.pan_and_scan_min_crop_size);
    let max_crops = c(g, "max_num_crops", cfg.pan_and_scan_max_num_crops);
    let min_ratio = f64s(
        g,
        "min_ratio_to_activate",
        cfg.pan_and_scan_min_ratio_to_activate,
    );

    // Landscape (w ≥ h) crops along the width, portrait along the height: `long` is that side.
    let portrait = g.op("Less", "portrait", &[w, h], &[]);
    let landscape = g.op("Not", "landscape", &[&portrait], &[]);
    let long = g.op("Where", "long_side", &[&landscape, w, h], &[]);
    let short = g.op("Where", "short_side", &[&landscape, h, w], &[]);
    let short = g.op("Max", "short_side_nonzero", &[&short, &one], &[]);
    // `long / short < min_ratio` in float64, as Python compares.
    let long_d = g.cast("long_f64", &long, DataType::Double);
    let short_d = g.cast("short_f64", &short, DataType::Double);
    let ratio = g.op("Div", "aspect_ratio", &[&long_d, &short_d], &[]);
    let too_square = g.op("Less", "too_square", &[&ratio, &min_ratio], &[]);
    // n = ⌊long/short + ½⌋ = ⌊(2·long + short) / (2·short)⌋, then min(⌊long/min_crop⌋, n), clamped to [2, max].
    let long2 = g.op("Mul", "long_x2", &[&long, &two], &[]);
    let num = g.op("Add", "rounding_num", &[&long2, &short], &[]);
    let den = g.op("Mul", "rounding_den", &[&short, &two], &[]);
    let n = g.op("Div", "crops_by_ratio", &[&num, &den], &[]);
    let by_size = g.op("Div", "crops_by_size", &[&long, &min_crop], &[]);
    let n = g.op("Min", "crops_fit", &[&n, &by_size], &[]);
    let n = g.op("Max", "crops_at_least_2", &[&n, &two], &[]);
    let n = g.op("Min", "crops", &[&n, &max_crops], &[]);
    // Crop side along `long`: ⌈long / n⌉; across it the whole short side (one crop).
    let n_minus_1 = g.op("Sub", "crops_minus_1", &[&n, &one], &[]);
    let up = g.op("Add", "ceil_num", &[&long, &n_minus_1], &[]);
    let crop_long = g.op("Div", "crop_long", &[&up, &n], &[]);
    let smallest = g.op("Min", "crop_smallest_side", &[&crop_long, &short], &[]);
    let too_small = g.op("Less", "crop_too_small", &[&smallest, &min_crop], &[]);
    let blocked = g.op("Or", "not_applicable", &[&too_square, &too_small], &[]);
    let applies = g.op("Not", "applies", &[&blocked], &[]);
    let enabled = g.op("And", "enabled", &[do_pas, &applies], &[]);
    let num_crops = g.op("Where", "num_crops", &[&enabled, &n, &zero], &[]);

    // Crop i spans [i·crop_long, min((i+1)·crop_long, long)) along `long` (Python slices truncate the last).
    let i = g.op("Range", "crop_index", &[&zero, &num_crops, &one], &[]);
    let start = g.op("Mul", "start", &[&i, &crop_long], &[]);
    let end = g.op("Add", "end_untruncated", &[&start, &crop_long], &[]);
    let end = g.op("Min", "end", &[&end, &long], &[]);
    let y0 = g.op("Where", "y0", &[&landscape, &zero, &start], &[]);
    let x0 = g.op("Where", "x0", &[&landscape, &start, &zero], &[]);
    let y1 = g.op("Where", "y1", &[&landscape, h, &end], &[]);
    let x1 = g.op("Where", "x1", &[&landscape, &end, w], &[]);
    let cols: Vec<Value> = [("y0", &y0), ("x0", &x0), ("y1", &y1), ("x1", &x1)]
        .iter()
        .map(|(l, v)| unsqueeze(g, &format!("{l}_col"), v, 1))
        .collect();
    let crops = g.op(
        "Concat",
        "crop_boxes",
        &cols.iter().collect::<Vec<_>>(),
        &[("axis", Attr::Int(1))],
    );
    let full: Vec<Value> = [
        ("full_y0", &zero),
        ("full_x0", &zero),
        ("full_y1", h),
        ("full_x1", w),
    ]
    .iter()
    .map(|(l, v)| unsqueeze(g, l, v, 0))
    .collect();
    let full = g.op(
        "Concat",
        "full_box",
        &full.iter().collect::<Vec<_>>(),
        &[("axis", Attr::Int(0))],
    );
    let full = unsqueeze(g, "full_box_row", &full, 0);
    let boxes = g.op(
        "Concat",
        "boxes",
        &[&full, &crops],
        &[("axis", Attr::Int(0))],
    );
    g.set_scope(prev);
    (num_crops, boxes)
}

/// Body of the image loop: box `i` of `image`, resized, as normalised float32 CHW.
fn one_image(
    b: &mut GraphBuilder,
    scope: &str,
    cfg: &PreprocessConfig,
    image: &Value,
    boxes: &Value,
    i: &Value,
) -> Value {
    let bx = at(b, "box", boxes, i, 0);
    let (s0, s2, s4) = (
        ops::i64v(b, "s0", &[0]),
        ops::i64v(b, "s2", &[2]),
        ops::i64v(b, "s4", &[4]),
    );
    let starts = b.op("Slice", "starts", &[&bx, &s0, &s2], &[]);
    let ends = b.op("Slice", "ends", &[&bx, &s2, &s4], &[]);
    let axes = ops::i64v(b, "hw_axes", &[0, 1]);
    let crop = b.op("Slice", "crop", &[image, &starts, &ends, &axes], &[]);
    let filter = resample::Filter::from_pil(cfg.resample);
    let size = (cfg.height, cfg.width);
    let chw = resample::resize(b, &format!("{scope}/resize"), &crop, size, filter);
    // The PIL backend: float64(u8) · rescale_factor, cast to float32, then (x − mean) / std in float32.
    let x = b.cast("to_f64", &chw, DataType::Double);
    let factor = f64s(b, "rescale_factor", cfg.rescale_factor);
    let x = b.op("Mul", "rescale", &[&x, &factor], &[]);
    let x = b.cast("to_f32", &x, DataType::Float);
    if !cfg.do_normalize {
        return x;
    }
    let mean: Vec<f32> = cfg.image_mean.iter().map(|&m| m as f32).collect();
    let std: Vec<f32> = cfg.image_std.iter().map(|&s| s as f32).collect();
    let mean = f32t(b, "image_mean", &[3, 1, 1], &mean);
    let std = f32t(b, "image_std", &[3, 1, 1], &std);
    let x = b.op("Sub", "center", &[&x, &mean], &[]);
    b.op("Div", "normalize", &[&x, &std], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// ONNX wants single static assignment across nested graphs: no value defined twice, in any subgraph.
    fn defined(g: &onnx::GraphProto, seen: &mut HashSet<String>, dupes: &mut Vec<String>) {
        let names = g
            .input
            .iter()
            .filter_map(|i| i.name.clone())
            .chain(g.initializer.iter().filter_map(|t| t.name.clone()))
            .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()));
        for name in names {
            if !seen.insert(name.clone()) {
                dupes.push(name);
            }
        }
        for n in &g.node {
            for a in &n.attribute {
                if let Some(sub) = &a.g {
                    defined(sub, seen, dupes);
                }
            }
        }
    }

    #[test]
    fn names_are_unique_across_subgraphs() {
        let model = build_preprocess_graph(&PreprocessConfig::gemma3_defaults(896));
        let graph = model.graph.as_ref().unwrap();
        let (mut seen, mut dupes) = (HashSet::new(), Vec::new());
        defined(graph, &mut seen, &mut dupes);
        assert!(dupes.is_empty(), "defined more than once: {dupes:?}");
        let inputs: Vec<_> = graph.input.iter().filter_map(|i| i.name.clone()).collect();
        let outputs: Vec<_> = graph.output.iter().filter_map(|o| o.name.clone()).collect();
        assert_eq!(inputs, ["image", "do_pan_and_scan"]);
        assert_eq!(outputs, ["pixel_values", "num_crops", "crop_boxes"]);
        // Small enough to embed anywhere: the constants are per-output-pixel tables.
        assert!(model.encode_to_vec().len() < 200_000);
    }
}
