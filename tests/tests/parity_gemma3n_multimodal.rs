//! Gemma 3n image+text and image+audio+text prompts against transformers 5.24's full model
//! (`tests/fixtures/make_gemma3n_vision_fixtures.py`): a `gemma-export` of the tiny three-modality checkpoint,
//! the image rows from its `vision_encoder.onnx`, the clip's from its audio graphs, both written over the soft
//! tokens by `gemma3n_prompt::attachments_embeds`; logits through the prefill and one decode step within 1e-4 of
//! transformers' float32 run and of the same model in float64, at every position. `--nocapture` shows the errors.
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

/// Every logit, every position (text, image and audio tokens, the decode step), against transformers' float32
/// reference and against the same model run in float64 (`<case>.logits_f64`). The fixture is conditioned so that
/// float32 rounding stays far below this (its script checks float32 vs float64 <= 4e-5).
const TOLERANCE: f32 = 1e-4;
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

/// Max |Δ| of the prefill logits at the text, image-token and audio-token positions, and of the decode step's, for
/// `case`, against one reference (`{case}.logits{suffix}`, `{case}.decode.logits{suffix}`).
#[derive(Clone, Copy, Default)]
struct Errors {
    text: f32,
    image: f32,
    /// None where the prompt has no audio tokens.
    audio: Option<f32>,
    decode: f32,
}

impl Errors {
    fn max(&self) -> f32 {
        self.text
            .max(self.image)
            .max(self.audio.unwrap_or(0.0))
            .max(self.decode)
    }

    fn show(&self, what: &str) {
        let audio = self.audio.map_or("-".into(), |a| format!("{a:.1e}"));
        eprintln!(
            "{what}: max |Δlogit| text {:.1e}, image tokens {:.1e}, audio tokens {audio}, decode {:.1e}",
            self.text, self.image, self.decode
        );
    }
}

fn errors(
    logits: &ndarray::Array3<f32>,
    step: &ndarray::Array1<f32>,
    ids: &Array2<i64>,
    r: &Reference,
    case: &str,
    suffix: &str,
) -> Result<Errors> {
    let want = r.f32(&format!("{case}.logits{suffix}"))?;
    let mut e = Errors::default();
    for p in 0..ids.ncols() {
        let d = max_abs_diff(
            logits.slice(s![0, p, ..]).into_dyn(),
            want.slice(s![0, p, ..]).into_dyn(),
        );
        match ids[[0, p]] {
            IMAGE_TOKEN => e.image = e.image.max(d),
            AUDIO_TOKEN => e.audio = Some(e.audio.unwrap_or(0.0).max(d)),
            _ => e.text = e.text.max(d),
        }
    }
    let want = r.f32(&format!("{case}.decode.logits{suffix}"))?;
    e.decode = max_abs_diff(step.view().into_dyn(), want.index_axis(Axis(0), 0));
    Ok(e)
}

/// The prompt of `case` with `images` and `clips` written over its soft tokens, prefilled and decoded one step:
/// the errors against transformers' float32 run and against its float64 run.
fn run_case(
    decoder: &mut Decoder,
    r: &Reference,
    case: &str,
    images: &[Array2<f32>],
    clips: &[Array2<f32>],
) -> Result<(Errors, Errors)> {
    let ids = r.i64_2d(&format!("{case}.input_ids"))?;
    let prompt = attachments_embeds(decoder, ids.view(), images, clips)?;
    let mut cache = decoder.new_cache(1)?;
    let logits = decoder.run_after_cache(prompt.input(), &mut cache, LogitsMode::All, |l| {
        l.to_owned()
    })?;
    let next = r.i64(&format!("{case}.decode.ids"))?;
    let one = Array2::from_elem((1, 1), next[0]);
    let step = decoder.run_after_cache(
        TokenInput::Ids(one.view()),
        &mut cache,
        LogitsMode::Last,
        |l| l.slice(s![0, 0, ..]).to_owned(),
    )?;
    let f32_ref = errors(&logits, &step, &ids, r, case, "")?;
    let f64_ref = errors(&logits, &step, &ids, r, case, "_f64")?;
    Ok((f32_ref, f64_ref))
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

    eprintln!("exported vision encoder vs get_image_features: max |Δ| {err:.1e}");
    // transformers' float32 reference against its float64 run: the rounding this fixture allows.
    for case in ["image_text", "image_audio_text"] {
        let a = r.f32(&format!("{case}.logits"))?;
        let b = r.f32(&format!("{case}.logits_f64"))?;
        eprintln!(
            "{case}: transformers float32 vs float64 max |Δlogit| {:.1e}",
            max_abs_diff(a.view(), b.view())
        );
    }

    // The decoder and the merge on transformers' own image rows.
    let exact = want
        .index_axis(Axis(0), 0)
        .to_owned()
        .into_dimensionality::<ndarray::Ix2>()?;
    let (e, e64) = run_case(
        &mut decoder,
        &r,
        "image_text",
        std::slice::from_ref(&exact),
        &[],
    )?;
    e.show("image_text on transformers' image rows vs float32");
    e64.show("image_text on transformers' image rows vs float64");
    assert!(e.max().max(e64.max()) < TOLERANCE, "on the reference rows");
    // End to end, the export's own encoders.
    let images = std::slice::from_ref(&image);
    let clips = std::slice::from_ref(&clip);
    for (case, clips) in [("image_text", &[][..]), ("image_audio_text", clips)] {
        let (e, e64) = run_case(&mut decoder, &r, case, images, clips)?;
        e.show(&format!("{case} end to end vs float32"));
        e64.show(&format!("{case} end to end vs float64"));
        assert!(e.max() < TOLERANCE, "{case} vs float32: {}", e.max());
        assert!(e64.max() < TOLERANCE, "{case} vs float64: {}", e64.max());
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
