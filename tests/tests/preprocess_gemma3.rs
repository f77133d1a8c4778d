//! `preprocess.onnx` against transformers' Gemma 3 image processor (`Gemma3ImageProcessorPil`, the backend
//! AutoImageProcessor picks without torchvision): the committed test images of `fixtures/images` (portrait,
//! landscape, aspect ratio exactly 1.2, too small to crop, 4 crops, tiny), Pan & Scan on and off, at 32×32 and,
//! for the landscape image, at the production 896×896. Same crop count, same boxes, pixel values within 0.02 and,
//! since the graph reproduces Pillow's integer arithmetic, no value off by even one input step (measured: 0).
//!
//! References: `make_fixtures.py preprocess` (see its `run_preprocess`).

use anyhow::{bail, ensure, Context, Result};
use gemma_exporter::onnx;
use gemma_exporter::vision::preprocess::{
    build_preprocess_graph, write_preprocess, PreprocessConfig, ReadPreprocessConfig,
};
use gemma_runtime::{ort_env, RuntimeOptions};
use gemma_tests::vision::load_rgb;
use gemma_tests::{fixtures_dir, Reference};
use ndarray::{s, Array2, Array3, Array4, ArrayView4};
use ort::session::Session;
use ort::value::Tensor;
use std::path::PathBuf;

/// The committed images (see `PREPROCESS_IMAGES` in the fixture script).
const IMAGES: &[&str] = &[
    "landscape-480x640",
    "portrait-1000x300",
    "ratio-1.2-500x600",
    "too-small-200x600",
    "four-crops-300x1500",
    "tiny-20x30",
];
/// The size of the small references.
const SMALL: usize = 32;
/// The issue's tolerance on normalised pixel values.
const TOLERANCE: f32 = 0.02;
/// One step of the uint8 input after normalisation with mean/std 0.5: 2/255.
const LSB: f32 = 2.0 / 255.0;

fn images_dir() -> PathBuf {
    fixtures_dir().join("images")
}

/// `preprocess.onnx` for `cfg`, written to a temp folder and loaded through the runtime's session setup.
struct Graph {
    _dir: tempfile::TempDir,
    session: Session,
}

impl Graph {
    fn new(cfg: &PreprocessConfig) -> Result<Graph> {
        let dir = tempfile::tempdir()?;
        write_preprocess(dir.path(), cfg)?;
        let opts = RuntimeOptions::cpu().with_threads(Some(2));
        let session = ort_env::create_session(&dir.path().join("preprocess.onnx"), &opts)?;
        Ok(Graph { _dir: dir, session })
    }

    /// `(pixel_values, num_crops, crop_boxes)`.
    fn run(
        &mut self,
        image: &Array3<u8>,
        pan_and_scan: bool,
    ) -> Result<(Array4<f32>, i64, Array2<i64>)> {
        let inputs = ort::inputs![
            "image" => Tensor::from_array(image.clone())?,
            "do_pan_and_scan" => Tensor::from_array(((), vec![pan_and_scan]))?,
        ];
        let out = self.session.run(inputs)?;
        let pv = out["pixel_values"]
            .try_extract_array::<f32>()?
            .into_dimensionality()?
            .to_owned();
        let n = out["num_crops"].try_extract_array::<i64>()?;
        ensure!(
            n.ndim() == 0,
            "num_crops must be a scalar, got shape {:?}",
            n.shape()
        );
        let n = n.iter().copied().next().context("num_crops is empty")?;
        let boxes = out["crop_boxes"]
            .try_extract_array::<i64>()?
            .into_dimensionality()?
            .to_owned();
        Ok((pv, n, boxes))
    }
}

/// Largest |Δ| and the number of values that differ by at least one input step.
fn compare(got: ArrayView4<f32>, want: ArrayView4<f32>) -> Result<(f32, usize)> {
    ensure!(
        got.shape() == want.shape(),
        "shape {:?} != reference {:?}",
        got.shape(),
        want.shape()
    );
    let mut worst = 0f32;
    let mut off_by_lsb = 0;
    for (a, b) in got.iter().zip(want.iter()) {
        let d = (a - b).abs();
        ensure!(d.is_finite(), "non-finite pixel value {a} (reference {b})");
        worst = worst.max(d);
        off_by_lsb += (d >= 0.5 * LSB) as usize;
    }
    Ok((worst, off_by_lsb))
}

/// `images/preprocess-reference.safetensors`: per image `{image}.pixel_values`, `.num_crops` and `.crop_boxes`.
struct ImageReference(Reference);

impl ImageReference {
    fn load() -> Result<ImageReference> {
        let path = images_dir().join("preprocess-reference.safetensors");
        Ok(ImageReference(Reference::open(&path)?))
    }

    fn pixel_values(&self, image: &str) -> Result<Array4<f32>> {
        self.0.f32_4d(&format!("{image}.pixel_values"))
    }

    fn num_crops(&self, image: &str) -> Result<i64> {
        let v = self.0.i64(&format!("{image}.num_crops"))?;
        v.iter().next().copied().context("empty num_crops")
    }

    fn boxes(&self, image: &str) -> Result<Array2<i64>> {
        self.0.i64_2d(&format!("{image}.crop_boxes"))
    }

    /// The generator line, which holds the processor class and its settings.
    fn generator(&self) -> Result<String> {
        self.0.metadata("generator")
    }
}

/// The config the references were made with, read the way an export reads a checkpoint folder: a hub-style
/// preprocessor_config.json whose Pan & Scan fields are null (processor defaults).
fn small_config() -> Result<PreprocessConfig> {
    let dir = tempfile::tempdir()?;
    let json = format!(
        r#"{{"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
            "size": {{"height": {SMALL}, "width": {SMALL}}}, "resample": 2, "do_resize": true,
            "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": null,
            "do_pan_and_scan": null, "pan_and_scan_min_crop_size": null, "pan_and_scan_max_num_crops": null,
            "pan_and_scan_min_ratio_to_activate": null, "image_seq_length": 256}}"#
    );
    std::fs::write(dir.path().join("preprocessor_config.json"), json)?;
    Ok(PreprocessConfig::from_dir(dir.path(), 896)?)
}

#[test]
fn matches_transformers_on_every_test_image() -> Result<()> {
    let reference = ImageReference::load()?;
    let generator = reference.generator()?;
    ensure!(
        generator.contains("Gemma3ImageProcessorPil"),
        "references must come from the PIL backend: {generator}"
    );
    let cfg = small_config()?;
    assert_eq!(
        (cfg.height, cfg.width, cfg.pan_and_scan_min_crop_size),
        (SMALL, SMALL, 256)
    );
    let mut graph = Graph::new(&cfg)?;
    let mut worst = 0f32;
    let mut crops_seen = Vec::new();
    for name in IMAGES {
        let image = load_rgb(&images_dir().join(format!("{name}.png")))?;
        let want = reference.pixel_values(name)?;
        let want_crops = reference.num_crops(name)?;
        let want_boxes = reference.boxes(name)?;
        for pan_and_scan in [false, true] {
            let (pv, n, boxes) = graph.run(&image, pan_and_scan)?;
            // With Pan & Scan off the processor returns exactly the full image, the first of the `on` output
            // (the fixture script checks that).
            let (want_n, images) = if pan_and_scan {
                (want_crops, want.len_of(ndarray::Axis(0)))
            } else {
                (0, 1)
            };
            assert_eq!(n, want_n, "{name}, pan&scan {pan_and_scan}: crop count");
            assert_eq!(
                boxes,
                want_boxes.slice(s![..images, ..]),
                "{name}, pan&scan {pan_and_scan}: crop boxes (y0, x0, y1, x1)"
            );
            let (max, lsb) = compare(pv.view(), want.slice(s![..images, .., .., ..]))?;
            eprintln!(
                "{name:>20} pan&scan {pan_and_scan:<5}: {} image(s), max |Δ| = {max:e}, {lsb} of {} values off by ≥ 1 LSB",
                images,
                pv.len()
            );
            assert!(
                max <= TOLERANCE,
                "{name}, pan&scan {pan_and_scan}: max |Δ| {max} > {TOLERANCE}"
            );
            // Stricter than the issue asks: the graph reproduces Pillow's integer arithmetic, so any differing
            // pixel is a regression (e.g. a switch to ONNX Resize, which is up to 18 LSB off).
            assert_eq!(
                lsb, 0,
                "{name}, pan&scan {pan_and_scan}: values off by ≥ 1 LSB"
            );
            worst = worst.max(max);
        }
        crops_seen.push(want_crops);
    }
    // The set covers no crops, 2, 3 and the maximum 4.
    for n in [0, 2, 3, 4] {
        assert!(
            crops_seen.contains(&n),
            "no test image with {n} crops: {crops_seen:?}"
        );
    }
    eprintln!("worst max |Δ| over all images: {worst:e}");
    Ok(())
}

#[test]
fn matches_transformers_at_896() -> Result<()> {
    let cfg = PreprocessConfig::gemma3_defaults(896);
    let mut graph = Graph::new(&cfg)?;
    let image = load_rgb(&images_dir().join("landscape-480x640.png"))?;
    // The reference is stored as the uint8 image whose PIL-backend normalisation gives transformers' float32
    // pixel values bit for bit (checked by the fixture script): float32(float64(u) / 255), then (x − 0.5) / 0.5.
    let u8_ref = load_rgb(&images_dir().join("preprocess-reference-896.png"))?;
    let want = u8_ref
        .permuted_axes([2, 0, 1])
        .mapv(|u| ((u as f64 * (1.0 / 255.0)) as f32 - 0.5) / 0.5)
        .insert_axis(ndarray::Axis(0));
    let (pv, n, boxes) = graph.run(&image, false)?;
    assert_eq!((n, boxes.row(0).to_vec()), (0, vec![0, 0, 480, 640]));
    let (max, lsb) = compare(pv.view(), want.view())?;
    eprintln!(
        "landscape-480x640 at 896: max |Δ| = {max:e}, {lsb} of {} values off by ≥ 1 LSB",
        pv.len()
    );
    assert!(max <= TOLERANCE, "max |Δ| {max} > {TOLERANCE}");
    assert_eq!(lsb, 0, "values off by ≥ 1 LSB at 896");

    // With Pan & Scan: the full image again, then two 480×320 crops.
    let (pv, n, boxes) = graph.run(&image, true)?;
    assert_eq!(n, 2);
    assert_eq!(
        boxes,
        ndarray::arr2(&[[0, 0, 480, 640], [0, 0, 480, 320], [0, 320, 480, 640]])
    );
    assert_eq!(pv.shape(), &[3, 3, 896, 896]);
    let (max, _) = compare(pv.slice(s![..1, .., .., ..]), want.view())?;
    assert!(max <= TOLERANCE, "pan&scan full image: max |Δ| {max}");
    Ok(())
}

/// The crop counts and sizes of semantics §6.3's table (min crop 256, max 4, ratio 1.2), plus degenerate shapes.
#[test]
fn pan_and_scan_geometry_follows_the_spec_table() -> Result<()> {
    let mut graph = Graph::new(&PreprocessConfig::gemma3_defaults(8))?;
    // (h, w) → boxes of the crops as (y0, x0, y1, x1)
    type Case = ((usize, usize), &'static [[i64; 4]]);
    let cases: &[Case] = &[
        ((480, 640), &[[0, 0, 480, 320], [0, 320, 480, 640]]),
        ((500, 600), &[[0, 0, 500, 300], [0, 300, 500, 600]]),
        (
            (300, 1000),
            &[[0, 0, 300, 334], [0, 334, 300, 668], [0, 668, 300, 1000]],
        ),
        (
            (300, 1500),
            &[
                [0, 0, 300, 375],
                [0, 375, 300, 750],
                [0, 750, 300, 1125],
                [0, 1125, 300, 1500],
            ],
        ),
        (
            (1000, 300),
            &[[0, 0, 334, 300], [334, 0, 668, 300], [668, 0, 1000, 300]],
        ),
        ((200, 600), &[]),
        (
            (512, 2048),
            &[
                [0, 0, 512, 512],
                [0, 512, 512, 1024],
                [0, 1024, 512, 1536],
                [0, 1536, 512, 2048],
            ],
        ),
        ((499, 598), &[]), // ratio 1.198: below 1.2
        ((600, 600), &[]), // square
        ((1, 1), &[]),
        ((1, 2000), &[]), // ratio 2000 but crops 1 px tall
    ];
    for &((h, w), crops) in cases {
        let image = Array3::<u8>::from_shape_fn((h, w, 3), |(y, x, c)| {
            ((y * 7 + x * 3 + c * 50) % 256) as u8
        });
        let (pv, n, boxes) = graph.run(&image, true)?;
        let mut want = vec![[0, 0, h as i64, w as i64]];
        want.extend_from_slice(crops);
        let got: Vec<[i64; 4]> = boxes
            .rows()
            .into_iter()
            .map(|r| [r[0], r[1], r[2], r[3]])
            .collect();
        assert_eq!((n as usize, &got), (crops.len(), &want), "{h}×{w}");
        assert_eq!(pv.shape(), &[1 + crops.len(), 3, 8, 8], "{h}×{w}");
        assert!(
            pv.iter().all(|v| (-1.0..=1.0).contains(v)),
            "{h}×{w}: values outside [-1, 1]"
        );
        // Off: the full image only.
        let (off, n_off, _) = graph.run(&image, false)?;
        assert_eq!((n_off, off.shape()[0]), (0, 1), "{h}×{w}");
        assert_eq!(
            off.slice(s![0, .., .., ..]),
            pv.slice(s![0, .., .., ..]),
            "{h}×{w}: full image"
        );
    }
    Ok(())
}

/// Standard ONNX only, opset ≤ 21, with the settings recorded in the metadata.
#[test]
fn graph_is_portable_onnx() -> Result<()> {
    let cfg = PreprocessConfig::gemma3_defaults(896);
    let model = build_preprocess_graph(&cfg);
    let opsets: Vec<(String, i64)> = model
        .opset_import
        .iter()
        .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
        .collect();
    assert_eq!(opsets, vec![(String::new(), 21)]);
    fn walk(g: &onnx::GraphProto, ops: &mut Vec<String>) -> Result<()> {
        for n in &g.node {
            if let Some(d) = n.domain.as_deref().filter(|d| !d.is_empty()) {
                bail!("node {:?} is in domain {d}", n.name);
            }
            ops.push(n.op_type.clone().unwrap_or_default());
            for a in &n.attribute {
                if let Some(sub) = &a.g {
                    walk(sub, ops)?;
                }
            }
        }
        Ok(())
    }
    let mut ops = Vec::new();
    walk(model.graph.as_ref().context("no graph")?, &mut ops)?;
    for op in ["Loop", "If", "Gather"] {
        assert!(ops.iter().any(|o| o == op), "no {op}");
    }
    assert!(
        !ops.iter().any(|o| o == "Resize"),
        "ONNX Resize does not match Pillow"
    );
    let meta: Vec<_> = model
        .metadata_props
        .iter()
        .filter_map(|p| p.value.clone())
        .collect();
    assert!(
        meta.iter()
            .any(|v| v.contains("\"pan_and_scan_min_crop_size\":256")),
        "{meta:?}"
    );
    Ok(())
}

/// A copy of the tiny ConditionalGeneration fixture (hub tensor names, 56 px tower) with `preprocessor`
/// written as its preprocessor_config.json.
fn checkpoint_with_preprocessor(preprocessor: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let src = gemma_tests::tiny_fixture("cg-mqa-bf16-hubnames");
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    std::fs::write(dir.join("preprocessor_config.json"), preprocessor)?;
    Ok((tmp, dir))
}

/// `gemma-export` writes preprocess.onnx for a Gemma3ForConditionalGeneration checkpoint, with its processor
/// settings, records it in the manifest, and refuses a processor whose size the encoder cannot take.
#[test]
fn export_writes_preprocess_onnx() -> Result<()> {
    let (_tmp, src) = checkpoint_with_preprocessor(
        r#"{"image_processor_type": "Gemma3ImageProcessor", "size": {"height": 56, "width": 56},
            "do_pan_and_scan": true, "pan_and_scan_min_crop_size": 16}"#,
    )?;
    let (_out_tmp, out) = gemma_tests::export_to_temp(&src)?;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json"))?)?;
    let pre = &manifest["vision"]["preprocess"];
    assert_eq!(pre["file"], "preprocess.onnx");
    assert_eq!(pre["config"]["height"], 56);
    assert_eq!(pre["config"]["do_pan_and_scan"], true);
    assert_eq!(pre["config"]["pan_and_scan_min_crop_size"], 16);
    assert_eq!(pre["config"]["source"], "preprocessor_config.json");

    let opts = RuntimeOptions::cpu().with_threads(Some(2));
    let mut session = ort_env::create_session(&out.join("preprocess.onnx"), &opts)?;
    let image = Array3::<u8>::from_shape_fn((40, 100, 3), |(y, x, c)| (y + 2 * x + 40 * c) as u8);
    let outputs = session.run(ort::inputs![
        "image" => Tensor::from_array(image)?,
        "do_pan_and_scan" => Tensor::from_array(((), vec![true]))?,
    ])?;
    // 40×100 with min crop 16: ⌊100/40 + ½⌋ = 3 crops of 40×34 (the last 32 wide).
    let pv = outputs["pixel_values"].try_extract_array::<f32>()?;
    assert_eq!(pv.shape(), &[4, 3, 56, 56]);
    let boxes = outputs["crop_boxes"].try_extract_array::<i64>()?;
    assert_eq!(boxes.slice(s![3, ..]).to_vec(), vec![0, 68, 40, 100]);

    // A processor size the tower cannot take is refused before anything is written.
    let (_tmp, src) = checkpoint_with_preprocessor(r#"{"size": {"height": 64, "width": 64}}"#)?;
    let out = src.parent().unwrap().join("onnx");
    let err = gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(&src, &out).graph(gemma_exporter::GraphKind::Portable),
    )
    .expect_err("size 64 must be refused for a 56 px tower");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("preprocessor_config.json") && msg.contains("56x56"),
        "{msg}"
    );
    assert!(!out.exists());
    Ok(())
}
