//! PaliGemma 1 and 2 exports against transformers 5.24 fp32 eager (`tests/fixtures/make_paligemma_fixtures.py`):
//! tiny random checkpoints at two image sizes each, two images each:
//! - `preprocess.onnx` (SigLIP's PIL processor: bicubic resize, rescale, normalize) equals `pixel_values`;
//! - `vision_encoder.onnx` (SigLIP + the Linear projector) equals `image_features`;
//! - the prefill logits with the prefix-LM mask (`token_type_ids` 0 on image + prompt), positions from 1, and the
//!   greedy decode steps (`token_type_ids` 1) match within 1e-4, with the same greedy ids;
//! - `token_type_ids` 1 everywhere gives transformers' causal-mask logits, far from the prefix-LM ones: the test can
//!   tell the two masks apart;
//! - a checkpoint without its processor files is refused, naming the file.

use anyhow::Result;
use gemma_tests::vision::{load_rgb, max_abs_diff, ImageModel};
use gemma_tests::*;
use ndarray::{s, Array2, Array3, Array4, Axis};
use ort::session::Session;
use ort::value::Tensor;
use std::path::PathBuf;

const FIXTURES: [&str; 4] = ["pg1-s32", "pg1-s48", "pg2-s32", "pg2-s48"];
const IMAGES: [&str; 2] = ["landscape-480x640.png", "tiny-20x30.png"];
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join("paligemma").join(name)
}

fn preprocess(session: &mut Session, image: &Array3<u8>) -> Result<Array4<f32>> {
    let inputs = ort::inputs![
        "image" => Tensor::from_array(image.clone())?,
        "do_pan_and_scan" => Tensor::from_array(ndarray::arr0(false))?,
    ];
    let out = session.run(inputs)?;
    Ok(out["pixel_values"]
        .try_extract_array::<f32>()?
        .into_dimensionality()?
        .to_owned())
}

#[test]
fn paligemma_matches_transformers() -> Result<()> {
    for name in FIXTURES {
        let src = fixture(name);
        let reference = Reference::open(&src.join("reference.safetensors"))?;
        let (_tmp, out) = export_to_temp(&src)?;
        let opts = gemma_runtime::RuntimeOptions::cpu().with_threads(Some(2));
        let mut pre = gemma_runtime::ort_env::create_session(&out.join("preprocess.onnx"), &opts)?;
        let mut model = ImageModel::open(&out)?;
        assert_eq!(model.first_position, 1);
        for (k, file) in IMAGES.iter().enumerate() {
            let what = format!("{name} image {k}");
            let image = load_rgb(&fixtures_dir().join("images").join(file))?;
            let pv_ref = reference.f32_4d(&format!("pixel_values_{k}"))?;
            let pv = preprocess(&mut pre, &image)?;
            let d = max_abs_diff(pv.view(), pv_ref.view());
            assert!(d <= 1e-6, "{what}: pixel_values differ by {d}");

            let features = model.encode(pv_ref.view())?;
            let f_ref = reference.f32_3d(&format!("image_features_{k}"))?;
            let d = max_abs_diff(features.view(), f_ref.view());
            assert!(d <= TOL, "{what}: image features differ by {d}");

            let ids = reference.i64_2d(&format!("input_ids_{k}"))?;
            let tti = reference.i64_2d(&format!("token_type_ids_{k}"))?;
            let embeds = model.embed_with_images(ids.view(), f_ref.view())?;
            let mut cache = model.new_cache(1);
            let logits = model.step(embeds.view(), tti.view(), &mut cache)?;
            let prefix_ref = reference.f32_3d(&format!("prefix_logits_{k}"))?;
            let d = max_abs_diff(logits.view(), prefix_ref.view());
            assert!(d <= TOL, "{what}: prefix logits differ by {d}");

            // Causal: token_type_ids 1 everywhere (no prefix block).
            let ones = Array2::<i64>::ones(tti.dim());
            let causal = model.step(embeds.view(), ones.view(), &mut model.new_cache(1))?;
            let causal_ref = reference.f32_3d(&format!("causal_logits_{k}"))?;
            let d = max_abs_diff(causal.view(), causal_ref.view());
            assert!(d <= TOL, "{what}: causal logits differ by {d}");
            let moved = max_abs_diff(causal.view(), prefix_ref.view());
            assert!(
                moved > 1e-2,
                "{what}: the causal mask moves the logits by {moved} only"
            );

            // Greedy decode steps.
            let greedy = reference.i64_2d(&format!("greedy_ids_{k}"))?;
            let steps = reference.f32(&format!("step_logits_{k}"))?;
            let mut last = logits.slice(s![0, -1, ..]).to_owned();
            for (i, &id) in greedy.row(0).iter().enumerate() {
                let d = max_abs_diff(
                    last.view(),
                    steps.index_axis(Axis(0), i).into_dimensionality()?,
                );
                assert!(d <= TOL, "{what}: step {i} logits differ by {d}");
                let argmax = last
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (j, &v)| if v > b.1 { (j, v) } else { b })
                    .0;
                assert_eq!(argmax as i64, id, "{what}: greedy id {i}");
                let next = Array2::from_elem((1, 1), id);
                let e = model.embed(next.view())?;
                let step = model.step(e.view(), Array2::ones((1, 1)).view(), &mut cache)?;
                last = step.slice(s![0, -1, ..]).to_owned();
            }
        }
    }
    Ok(())
}

#[test]
fn paligemma_without_processor_files_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("pg");
    std::fs::create_dir(&src)?;
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("pg1-s32").join(f), src.join(f))?;
    }
    let err = export_to_temp(&src).expect_err("export without processor files");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("preprocessor_config.json") && msg.contains("processor_config.json"),
        "{msg}"
    );
    Ok(())
}
