//! Gemma 3n vision against transformers 5.24 + timm 1.0.31 (`tests/fixtures/make_gemma3n_vision_fixtures.py`):
//! `vision_encoder.onnx` (MobileNetV5, MSFA, embed_vision) against `get_image_features` within 1e-4, and each part
//! the fixture turns off (attention, layer scale, the MSFA's fusion, its pooling) moves the features far more.

use anyhow::Result;
use gemma_exporter::gemma3n::vision_encoder::write_vision_encoder;
use gemma_models::config::gemma3n_vision::Gemma3nVisionConfig;
use gemma_models::Checkpoint;
use gemma_runtime::ort_env::create_session;
use gemma_runtime::RuntimeOptions;
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{tiny_fixture, Reference};
use ndarray::ArrayD;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;
/// The fixture's image side (its processor's `size`).
const IMAGE: usize = 96;

fn fixture() -> PathBuf {
    tiny_fixture("gemma3n-f32")
}

fn reference() -> Result<Reference> {
    Reference::open(&fixture().join("vision_reference.safetensors"))
}

fn encoder_session(dir: &Path) -> Result<Session> {
    let cfg = Gemma3nVisionConfig::from_file(&fixture().join("config.json"))?;
    let ckpt = Checkpoint::open(&fixture())?;
    let path = dir.join("vision_encoder.onnx");
    write_vision_encoder(&ckpt, &cfg, IMAGE, &path)?;
    Ok(create_session(
        &path,
        &RuntimeOptions::cpu().with_threads(Some(1)),
    )?)
}

fn encode(s: &mut Session, pixels: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let out = s.run(ort::inputs!["pixel_values" => TensorRef::from_array_view(pixels.view())?])?;
    Ok(out["image_features"].try_extract_array::<f32>()?.to_owned())
}

#[test]
fn vision_encoder_matches_get_image_features() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s = encoder_session(tmp.path())?;
    let r = reference()?;
    let pixels = r.f32("pixel_values")?;
    let got = encode(&mut s, &pixels)?;
    let want = r.f32("image_features")?;
    assert_eq!(got.shape(), want.shape());
    let err = max_abs_diff(got.view(), want.view());
    println!("vision_encoder max |Δ| = {err:.2e}");
    assert!(err < TOLERANCE, "image features differ by {err}");

    for part in ["attention", "layer_scale", "msfa_fusion", "pool"] {
        let off = r.f32(&format!("off.{part}.image_features"))?;
        let moved = max_abs_diff(off.view(), want.view());
        println!("{part} off moves the features by {moved:.3}");
        assert!(moved > 100.0 * TOLERANCE, "{part}: {moved}");
        assert!(max_abs_diff(got.view(), off.view()) > 100.0 * TOLERANCE);
    }

    // A batch of two (the image and its negative) gives each image's own features.
    let neg = pixels.mapv(|v| 1.0 - v);
    let batch = ndarray::concatenate(ndarray::Axis(0), &[pixels.view(), neg.view()])?;
    let both = encode(&mut s, &batch)?;
    let first = both.index_axis(ndarray::Axis(0), 0).to_owned().into_dyn();
    let alone = got.index_axis(ndarray::Axis(0), 0).to_owned().into_dyn();
    let batched = max_abs_diff(first.view(), alone.view());
    println!("batch of two: first image within {batched:.2e} of alone");
    assert!(batched < TOLERANCE);
    let second = both.index_axis(ndarray::Axis(0), 1).to_owned().into_dyn();
    assert!(max_abs_diff(second.view(), alone.view()) > 1e-2);
    Ok(())
}
