//! Gemma 3n audio against transformers 5.24 (`tests/fixtures/make_gemma3n_audio_fixtures.py`):
//! `preprocess_audio.onnx` against `Gemma3nAudioFeatureExtractor` on clips of several lengths, and
//! `audio_encoder.onnx` against `get_audio_features` + the padding `Gemma3nModel.forward` applies, within 1e-4.

use anyhow::{Context, Result};
use gemma_exporter::gemma3n::audio_encoder::{write_audio_encoder, write_audio_graphs};
use gemma_exporter::gemma3n::audio_preprocess::write_preprocess_audio;
use gemma_models::config::gemma3n_audio::{AudioFeatureConfig, Gemma3nAudioConfig};
use gemma_models::Checkpoint;
use gemma_runtime::audio::AudioEncoder;
use gemma_runtime::ort_env::create_session;
use gemma_runtime::RuntimeOptions;
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{tiny_fixture, Reference};
use ndarray::{ArrayD, IxDyn};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

const CLIPS: [&str; 4] = ["one_second", "odd", "short", "two_seconds"];
/// The features are float32 in the graph and float64 after the FFT in numpy (see `audio_preprocess.rs`); the
/// measured maximum is 8.6e-6.
const FEATURE_TOLERANCE: f32 = 1e-4;
const ENCODER_TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    tiny_fixture("gemma3n-audio-f32")
}

fn reference() -> Result<Reference> {
    Reference::open(&fixture().join("audio_reference.safetensors"))
}

/// A bool reference tensor (the masks), which [`Reference`] does not read.
fn bools(name: &str) -> Result<ArrayD<bool>> {
    let bytes = std::fs::read(fixture().join("audio_reference.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let t = st.tensor(name).with_context(|| name.to_string())?;
    anyhow::ensure!(t.dtype() == safetensors::Dtype::BOOL, "{name}: not bool");
    let v = t.data().iter().map(|&b| b != 0).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(t.shape()), v)?)
}

fn session(path: &Path) -> Result<Session> {
    Ok(create_session(
        path,
        &RuntimeOptions::cpu().with_threads(Some(1)),
    )?)
}

fn preprocess_session(dir: &Path) -> Result<Session> {
    let cfg = AudioFeatureConfig::from_file(&fixture().join("preprocessor_config.json"))?;
    write_preprocess_audio(dir, &cfg)?;
    session(&dir.join("preprocess_audio.onnx"))
}

fn encoder_session(dir: &Path) -> Result<Session> {
    let cfg = Gemma3nAudioConfig::from_file(&fixture().join("config.json"))?;
    let ckpt = Checkpoint::open(&fixture())?;
    write_audio_encoder(&ckpt, &cfg, &dir.join("audio_encoder.onnx"))?;
    session(&dir.join("audio_encoder.onnx"))
}

/// Runs the encoder on features and a mask; returns `audio_features`.
fn encode(s: &mut Session, features: &ArrayD<f32>, mask: &ArrayD<bool>) -> Result<ArrayD<f32>> {
    let out = s.run(ort::inputs![
        "input_features" => TensorRef::from_array_view(features.view())?,
        "input_features_mask" => TensorRef::from_array_view(mask.view())?,
    ])?;
    Ok(out["audio_features"].try_extract_array::<f32>()?.to_owned())
}

#[test]
fn preprocess_audio_matches_the_feature_extractor() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s = preprocess_session(tmp.path())?;
    let r = reference()?;
    let mut worst = 0.0f32;
    for clip in CLIPS {
        let wave = r.f32(&format!("{clip}.waveform"))?;
        let out = s.run(ort::inputs!["waveform" => TensorRef::from_array_view(wave.view())?])?;
        let feats = out["input_features"].try_extract_array::<f32>()?;
        let mask = out["input_features_mask"].try_extract_array::<bool>()?;
        let want = r.f32(&format!("{clip}.input_features"))?;
        assert_eq!(feats.shape(), want.shape(), "{clip}: feature shape");
        assert_eq!(
            mask.view(),
            bools(&format!("{clip}.input_features_mask"))?.view(),
            "{clip}: mask"
        );
        let err = max_abs_diff(feats.view(), want.view());
        println!(
            "{clip}: {:?} features, max |error| {err:.2e}",
            feats.shape()
        );
        worst = worst.max(err);
    }
    println!("preprocess_audio.onnx vs Gemma3nAudioFeatureExtractor: max |error| {worst:.2e}");
    assert!(worst < FEATURE_TOLERANCE, "max error {worst}");
    Ok(())
}

#[test]
fn audio_encoder_matches_transformers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s = encoder_session(tmp.path())?;
    let r = reference()?;
    for name in CLIPS.iter().copied().chain(["batch"]) {
        let feats = r.f32(&format!("{name}.input_features"))?;
        let mask = bools(&format!("{name}.input_features_mask"))?;
        let got = encode(&mut s, &feats, &mask)?;
        let want = r.f32(&format!("{name}.audio_features"))?;
        assert_eq!(got.shape(), want.shape(), "{name}: shape");
        let err = max_abs_diff(got.view(), want.view());
        println!(
            "{name}: audio_features {:?}, max |error| {err:.2e}",
            got.shape()
        );
        assert!(err < ENCODER_TOLERANCE, "{name}: max error {err}");
    }
    Ok(())
}

#[test]
fn the_two_graphs_chain_from_the_waveform() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut pre = preprocess_session(tmp.path())?;
    let mut enc = encoder_session(tmp.path())?;
    let r = reference()?;
    let wave = r.f32("two_seconds.waveform")?;
    let out = pre.run(ort::inputs!["waveform" => TensorRef::from_array_view(wave.view())?])?;
    let feats = out["input_features"].try_extract_array::<f32>()?.to_owned();
    let mask = out["input_features_mask"]
        .try_extract_array::<bool>()?
        .to_owned();
    drop(out);
    let got = encode(&mut enc, &feats, &mask)?;
    let err = max_abs_diff(got.view(), r.f32("two_seconds.audio_features")?.view());
    println!("waveform → audio_features: max |error| {err:.2e}");
    assert!(err < ENCODER_TOLERANCE, "max error {err}");
    Ok(())
}

#[test]
fn the_runtime_encodes_the_wav_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    drop((
        preprocess_session(tmp.path())?,
        encoder_session(tmp.path())?,
    ));
    let options = RuntimeOptions::cpu().with_threads(Some(1));
    let mut enc = AudioEncoder::open(tmp.path(), &options)?;
    assert_eq!((enc.limits.rate, enc.limits.max_samples), (16_000, 480_000));
    let r = reference()?;
    for clip in CLIPS {
        let wav = fixture().join("clips").join(format!("{clip}.wav"));
        let read = enc.read(&wav)?;
        assert!(!read.converted, "{clip}: mono 16 kHz needs no conversion");
        let want_wave = r.f32(&format!("{clip}.waveform"))?;
        assert_eq!(
            read.samples.as_slice(),
            want_wave.as_slice().unwrap(),
            "{clip}: samples"
        );
        let rows = enc.encode_file(&wav)?;
        let want = r.f32(&format!("{clip}.audio_features"))?;
        let want = want.index_axis(ndarray::Axis(0), 0);
        let err = max_abs_diff(rows.view().into_dyn(), want.view());
        println!(
            "{clip}.wav → audio_features {:?}: max |error| {err:.2e}",
            rows.shape()
        );
        assert!(err < ENCODER_TOLERANCE, "{clip}: max error {err}");
    }
    // A folder without the audio graphs: the model takes no audio.
    let msg = AudioEncoder::open(&fixture(), &options)
        .err()
        .context("no audio graphs")?
        .to_string();
    assert!(
        msg.contains("takes no audio") && msg.contains("preprocess_audio.onnx"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn write_audio_graphs_exports_both_graphs_of_a_checkpoint_folder() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let ckpt = Checkpoint::open(&fixture())?;
    let (cfg, features) = write_audio_graphs(&fixture(), &ckpt, tmp.path())?;
    assert_eq!(
        (cfg.input_feat_size, features.feature_size, cfg.soft_tokens),
        (32, 32, 188)
    );
    for file in [
        "preprocess_audio.onnx",
        "audio_encoder.onnx",
        "audio_encoder.onnx_data",
    ] {
        assert!(tmp.path().join(file).is_file(), "{file}");
    }
    let mut enc = AudioEncoder::open(tmp.path(), &RuntimeOptions::cpu().with_threads(Some(1)))?;
    let rows = enc.encode_file(&fixture().join("clips/odd.wav"))?;
    let want = reference()?.f32("odd.audio_features")?;
    let err = max_abs_diff(rows.view().into_dyn(), want.index_axis(ndarray::Axis(0), 0));
    assert!(err < ENCODER_TOLERANCE, "max error {err}");
    Ok(())
}

#[test]
fn gemma_export_writes_the_audio_graphs_and_records_them() -> Result<()> {
    // The default export (cpu graph, so the plain layout; portable ones move the data into onnx/).
    let (_tmp, out) = gemma_tests::export_with_to_temp(&fixture(), |o| o)?;
    let options = RuntimeOptions::cpu().with_threads(Some(1));
    // The runtime reads and validates the manifest.
    let decoder = gemma_runtime::decoder::Decoder::open(&out, &options)?;
    let manifest = decoder.manifest().clone();
    let section = manifest.gemma3n.context("gemma3n section")?;
    assert_eq!(section.towers_not_exported, ["vision"]);
    let audio = section.audio.context("gemma3n.audio")?;
    assert_eq!(
        (audio.preprocess.as_str(), audio.encoder.as_str()),
        ("preprocess_audio.onnx", "audio_encoder.onnx")
    );
    assert_eq!(
        (audio.audio_token_id, audio.boa_token_id, audio.eoa_token_id),
        (385, 252, 253)
    );
    assert_eq!(
        (audio.soft_tokens, audio.sampling_rate, audio.max_samples),
        (188, 16_000, 480_000)
    );
    for file in [
        "preprocess_audio.onnx",
        "audio_encoder.onnx",
        "audio_encoder.onnx_data",
    ] {
        assert!(manifest.files.contains_key(file), "{file} fingerprinted");
    }
    let mut enc = AudioEncoder::open(&out, &options)?;
    let rows = enc.encode_file(&fixture().join("clips/short.wav"))?;
    let want = reference()?.f32("short.audio_features")?;
    let err = max_abs_diff(rows.view().into_dyn(), want.index_axis(ndarray::Axis(0), 0));
    assert!(err < ENCODER_TOLERANCE, "max error {err}");
    Ok(())
}

/// Audio + text prefill on the export against the full model's logits (`audio_prompt_reference.safetensors`):
/// `embed_tokens.onnx`, the "odd" clip's rows over the audio tokens, then the decoder.
#[test]
fn an_audio_prompt_prefills_as_transformers() -> Result<()> {
    audio_prompt_prefills_as_transformers(gemma_exporter::GraphKind::Portable)
}

/// The same on the cpu decoder graph (in-place KV buffers).
#[test]
fn an_audio_prompt_prefills_as_transformers_on_the_cpu_graph() -> Result<()> {
    audio_prompt_prefills_as_transformers(gemma_exporter::GraphKind::Cpu)
}

fn audio_prompt_prefills_as_transformers(graph: gemma_exporter::GraphKind) -> Result<()> {
    let (_tmp, out) = gemma_tests::export_graph_to_temp(&fixture(), graph)?;
    let options = RuntimeOptions::cpu().with_threads(Some(1));
    let mut decoder = gemma_runtime::decoder::Decoder::open(&out, &options)?;
    let audio = decoder.manifest().gemma3n.clone().context("gemma3n")?.audio;
    let token = audio.context("gemma3n.audio")?.audio_token_id;
    let mut enc = AudioEncoder::open(&out, &options)?;
    let clip = enc.encode_file(&fixture().join("clips/odd.wav"))?;
    let r = Reference::open(&fixture().join("audio_prompt_reference.safetensors"))?;
    let ids = r.i64_2d("input_ids")?;
    let prompt = gemma_runtime::gemma3n_audio::prompt_embeds(
        &mut decoder,
        ids.view(),
        token,
        std::slice::from_ref(&clip),
    )?;
    let mut cache = decoder.new_cache(1)?;
    let logits = decoder.run_after_cache(
        prompt.input(),
        &mut cache,
        gemma_runtime::LogitsMode::All,
        |l| l.to_owned(),
    )?;
    let want = r.f32("logits")?;
    let err = max_abs_diff(logits.view().into_dyn(), want.view());
    println!(
        "audio prompt of {} ids ({graph:?} graph): logits max |error| {err:.2e}",
        ids.ncols()
    );
    assert!(err < 1e-4, "max error {err}");
    // The clip matters: without its rows the logits move.
    let (plain, _) = decoder.embed(ids.view())?;
    assert!(max_abs_diff(plain.view().into_dyn(), prompt.embeds.view().into_dyn()) > 0.1);
    // Audio tokens and clip rows must agree.
    let none = gemma_runtime::gemma3n_audio::prompt_embeds(&mut decoder, ids.view(), token, &[]);
    assert!(none
        .err()
        .context("no clips")?
        .to_string()
        .contains("audio tokens"));
    Ok(())
}
