//! Gemma 3n image+text and image+audio+text prompts against transformers 5.24's full model
//! (`tests/fixtures/make_gemma3n_vision_fixtures.py`): a `gemma-export` of the tiny three-modality checkpoint,
//! the image rows from its `vision_encoder.onnx`, the clip's from its audio graphs, both written over the soft
//! tokens by `gemma3n_prompt::attachments_embeds`; logits through the prefill and one decode step within 1e-4.
//! Also `preprocess.onnx` against the image processor, and the export's manifest and files.

use anyhow::{Context, Result};
use gemma_runtime::audio::AudioEncoder;
use gemma_runtime::decoder::Decoder;
use gemma_runtime::gemma3n_prompt::{attachments_embeds, Gemma3nImageEncoder};
use gemma_runtime::ort_env::create_session;
use gemma_runtime::vision::graphs::Preprocessor;
use gemma_runtime::{LogitsMode, RuntimeOptions, TokenInput};
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{export_to_temp, tiny_fixture, Reference};
use ndarray::{s, Array2, Axis, Ix3};
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;
/// The logits at the image tokens themselves, with the exported encoder's rows (8.9e-6 from transformers'):
/// the decoder amplifies that float32 noise to ~1.7e-4 there, and nowhere else (measured; see the test).
const SOFT_TOKEN_TOLERANCE: f32 = 5e-4;
const IMAGE_TOKEN: i64 = 257;
const AUDIO_TOKEN: i64 = 265;

fn fixture() -> PathBuf {
    tiny_fixture("gemma3n-f32")
}

fn reference() -> Result<Reference> {
    Reference::open(&fixture().join("vision_reference.safetensors"))
}

fn options() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(1))
}

/// The export's `vision_encoder.onnx` on the reference `pixel_values`: the image's `[soft_tokens, H]` rows.
fn image_rows(out: &Path, r: &Reference) -> Result<Array2<f32>> {
    let mut s = create_session(&out.join("vision_encoder.onnx"), &options())?;
    let pixels = r.f32("pixel_values")?;
    let o = s.run(ort::inputs!["pixel_values" => TensorRef::from_array_view(pixels.view())?])?;
    let f = o["image_features"]
        .try_extract_array::<f32>()?
        .into_dimensionality::<Ix3>()?;
    Ok(f.index_axis(Axis(0), 0).to_owned())
}

/// Max |Δ| of the prefill logits at the text positions and at the soft-token (image/audio) positions, and of the
/// decode step's, for `case`.
struct Errors {
    text: f32,
    soft: f32,
    decode: f32,
}

fn run_case(
    decoder: &mut Decoder,
    r: &Reference,
    case: &str,
    images: &[Array2<f32>],
    clips: &[Array2<f32>],
) -> Result<Errors> {
    let ids = r.i64_2d(&format!("{case}.input_ids"))?;
    let prompt = attachments_embeds(decoder, ids.view(), images, clips)?;
    let mut cache = decoder.new_cache(1)?;
    let logits = decoder.run_after_cache(prompt.input(), &mut cache, LogitsMode::All, |l| {
        l.to_owned()
    })?;
    let want = r.f32(&format!("{case}.logits"))?;
    let (mut text, mut soft) = (0.0f32, 0.0f32);
    for p in 0..ids.ncols() {
        let d = max_abs_diff(
            logits.slice(s![0, p, ..]).into_dyn(),
            want.slice(s![0, p, ..]).into_dyn(),
        );
        match ids[[0, p]] {
            IMAGE_TOKEN | AUDIO_TOKEN => soft = soft.max(d),
            _ => text = text.max(d),
        }
    }
    let next = r.i64(&format!("{case}.decode.ids"))?;
    let one = Array2::from_elem((1, 1), next[0]);
    let step = decoder.run_after_cache(
        TokenInput::Ids(one.view()),
        &mut cache,
        LogitsMode::Last,
        |l| l.slice(s![0, 0, ..]).to_owned(),
    )?;
    let want = r.f32(&format!("{case}.decode.logits"))?;
    let decode = max_abs_diff(step.view().into_dyn(), want.index_axis(Axis(0), 0));
    println!(
        "{case}: {} ids, prefill max |Δ| {text:.2e} at text positions, {soft:.2e} at soft tokens; \
         decode step {decode:.2e}",
        ids.ncols()
    );
    Ok(Errors { text, soft, decode })
}

#[test]
fn image_and_audio_prompts_match_transformers() -> Result<()> {
    let (_tmp, out) = export_to_temp(&fixture())?;
    let r = reference()?;
    let mut decoder = Decoder::open(&out, &options())?;
    let section = decoder
        .manifest()
        .gemma3n
        .clone()
        .context("gemma3n section")?;
    let vision = section.vision.clone().context("gemma3n.vision")?;
    assert_eq!(
        (vision.image_token_id, vision.soft_tokens, vision.image_size),
        (257, 9, 96)
    );
    assert_eq!((vision.boi_token_id, vision.eoi_token_id), (254, 256));
    assert!(section.audio.is_some() && section.towers_not_exported.is_empty());

    let image = image_rows(&out, &r)?;
    let want = r.f32("image_features")?;
    let err = max_abs_diff(image.view().into_dyn(), want.index_axis(Axis(0), 0));
    assert!(err < TOLERANCE, "exported vision encoder: {err}");
    let clip = AudioEncoder::open(&out, &options())?.encode_file(&fixture().join("clip.wav"))?;

    // The decoder and the merge on transformers' own image rows: exact everywhere.
    let exact = want
        .index_axis(Axis(0), 0)
        .to_owned()
        .into_dimensionality::<ndarray::Ix2>()?;
    let e = run_case(
        &mut decoder,
        &r,
        "image_text",
        std::slice::from_ref(&exact),
        &[],
    )?;
    assert!(
        e.text.max(e.soft).max(e.decode) < TOLERANCE,
        "on the reference rows"
    );
    // End to end, the export's own encoders.
    let images = std::slice::from_ref(&image);
    let clips = std::slice::from_ref(&clip);
    for (case, clips) in [("image_text", &[][..]), ("image_audio_text", clips)] {
        let e = run_case(&mut decoder, &r, case, images, clips)?;
        assert!(
            e.text < TOLERANCE && e.decode < TOLERANCE,
            "{case}: {} {}",
            e.text,
            e.decode
        );
        assert!(e.soft < SOFT_TOKEN_TOLERANCE, "{case}: {}", e.soft);
    }

    // The image matters, and soft tokens and rows must agree.
    let ids = r.i64_2d("image_text.input_ids")?;
    let (plain, _) = decoder.embed(ids.view())?;
    let prompt = attachments_embeds(&mut decoder, ids.view(), images, &[])?;
    assert!(max_abs_diff(plain.view().into_dyn(), prompt.embeds.view().into_dyn()) > 0.1);
    let two = [image.clone(), image.clone()];
    let e = attachments_embeds(&mut decoder, ids.view(), &two, &[])
        .err()
        .context("2 images")?;
    assert!(e.to_string().contains("image tokens"), "{e}");
    Ok(())
}

/// The hard multimodal tokens: `<end_of_image>` (the first vision id) is embedded by `embed_vision`, as
/// transformers does, not by the text table: without that the prefill would be off at and after it.
#[test]
fn end_of_image_is_a_hard_vision_token() -> Result<()> {
    let (_tmp, out) = export_to_temp(&fixture())?;
    let mut embed = create_session(&out.join("embed_tokens.onnx"), &options())?;
    let ids = ndarray::arr2(&[[2i64, 256, 264, 100]]);
    let o = embed.run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids)?])?;
    let e = o["inputs_embeds"].try_extract_array::<f32>()?.to_owned();
    let ckpt = gemma_models::Checkpoint::open(&fixture())?;
    let table = ckpt
        .tensor("model.language_model.embed_tokens.weight")?
        .to_f32_vec();
    let h = 64;
    let scale = (h as f32).sqrt();
    for (pos, id, text) in [
        (0, 2, true),
        (1, 256, false),
        (2, 264, false),
        (3, 100, true),
    ] {
        let row: Vec<f32> = table[id * h..(id + 1) * h]
            .iter()
            .map(|v| v * scale)
            .collect();
        let got = e.slice(s![0, pos, ..]);
        let d = got
            .iter()
            .zip(&row)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert_eq!(d < 1e-5, text, "id {id}: |Δ| to the text row {d}");
        if !text {
            // The post-projection norm has no gain: unit RMS.
            let rms = (got.iter().map(|v| v * v).sum::<f32>() / h as f32).sqrt();
            assert!((rms - 1.0).abs() < 1e-3, "id {id}: rms {rms}");
        }
    }
    Ok(())
}

#[test]
fn preprocess_matches_the_image_processor() -> Result<()> {
    let (_tmp, out) = export_to_temp(&fixture())?;
    let r = reference()?;
    let img = image::open(fixture().join("image.png"))?.to_rgb8();
    let mut pre = Preprocessor::open(&out.join("preprocess.onnx"), &options())?;
    let got = pre.run(&img, false)?.pixel_values.into_dyn();
    let pil = max_abs_diff(got.view(), r.f32("pixel_values_pil")?.view());
    let tv = max_abs_diff(got.view(), r.f32("pixel_values")?.view());
    println!(
        "preprocess.onnx vs SiglipImageProcessorPil {pil:.2e}, vs the torchvision backend {tv:.2e}"
    );
    assert!(pil < 1e-6, "{pil}");
    // The runtime's encoder: preprocess then vision_encoder, the rows of one image.
    let mut enc = Gemma3nImageEncoder::open(&out, &options())?;
    assert_eq!(enc.encode(&img)?.dim(), (9, 64));
    Ok(())
}
