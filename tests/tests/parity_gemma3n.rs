//! Gemma 3n's text decoder against transformers 5.24 (fp32 eager), on the tiny random Gemma3nForCausalLM of
//! `fixtures/make_gemma3n_fixtures.py` (AltUp with 4 streams, Laurel, per-layer inputs, KV sharing of the last 2
//! of 6 layers, sparsity on layers 0 and 1, a sliding window of 4 under a 10-token prompt, a final soft-cap):
//!
//! * `embed_tokens.onnx` gives transformers' `inputs_embeds` and `per_layer_inputs`;
//! * the runtime's decoder (embed_tokens.onnx, then decoder_model_merged.onnx) gives its logits within 1e-4
//!   through the prefill and four cached decode steps, whose greedy ids are transformers';
//! * each feature provably matters: the export matches the full model within 1e-4, and each "feature off"
//!   reference of the fixture (sparsity, Laurel, PLE, AltUp, KV sharing, soft-cap) is more than 100× that away.
//!
//! * fp16, bf16 and int8 exports stay close (bounds below) and keep the greedy ids; int4 runs;
//! * the same weights as a Gemma3nForConditionalGeneration checkpoint (`model.language_model.*`, towers beside)
//!   export the same text decoder, with a note that the towers are not exported.
//!
//! The greedy ids through `gemma generate` are checked in `runtime/tests/gemma3n_cli.rs`.

use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::ort_env::create_session;
use gemma_runtime::{Decoder, LogitsMode, RuntimeOptions};
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{
    export_precision_to_temp, export_to_temp, f32_tensor, parity_runtime, read_safetensors,
    tiny_fixture, write_safetensors, Reference, FP32_TOLERANCE,
};
use ndarray::{s, Array2, Array3, Axis};
use ort::value::TensorRef;
use std::path::Path;

const FIXTURE: &str = "gemma3n-text-f32";
const FEATURES: [&str; 6] = [
    "sparsity",
    "laurel",
    "ple",
    "altup",
    "kv_sharing",
    "softcap",
];

fn reference() -> Reference {
    Reference::load(&tiny_fixture(FIXTURE)).unwrap()
}

/// The prefill logits `[1, L, V]` of the export through the runtime's decoder, and the logits `[T, V]` of the
/// cached decode steps that feed `decode.ids`.
fn runtime_logits() -> (Array3<f32>, Vec<ndarray::Array1<f32>>) {
    let (_tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    logits_of(&out)
}

/// [`runtime_logits`] of the export in `out`.
fn logits_of(out: &Path) -> (Array3<f32>, Vec<ndarray::Array1<f32>>) {
    let r = reference();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let mut decoder = Decoder::open(out, &parity_runtime()).unwrap();
    let manifest = decoder.manifest();
    assert_eq!(manifest.kv_layers(), 4, "layers 4 and 5 share");
    assert_eq!(
        manifest.format_version, 2,
        "the family gemma3n is format_version 2"
    );
    assert_eq!(manifest.decoder, "decoder_model_merged.onnx");
    let mut cache = decoder.new_cache(1).unwrap();
    let all = LogitsMode::All;
    let prefill = decoder
        .run_after_cache(
            gemma_runtime::TokenInput::Ids(ids.view()),
            &mut cache,
            all,
            |l| l.to_owned(),
        )
        .unwrap();
    let mut steps = Vec::new();
    for &id in r.i64("decode.ids").unwrap().iter() {
        let one = Array2::from_elem((1, 1), id);
        let input = gemma_runtime::TokenInput::Ids(one.view());
        let last = LogitsMode::Last;
        let row = decoder
            .run_after_cache(input, &mut cache, last, |l| {
                l.slice(s![0, 0, ..]).to_owned()
            })
            .unwrap();
        steps.push(row);
    }
    (prefill, steps)
}

#[test]
fn embed_tokens_gives_the_embeddings_and_per_layer_inputs() {
    let r = reference();
    let (_tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    let options = RuntimeOptions::cpu().with_threads(Some(2));
    let mut embed = create_session(&out.join("embed_tokens.onnx"), &options).unwrap();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let outputs = embed
        .run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids).unwrap()])
        .unwrap();
    for name in ["inputs_embeds", "per_layer_inputs"] {
        let got = outputs[name].try_extract_array::<f32>().unwrap();
        let want = r.f32(&format!("prefill.{name}")).unwrap();
        let d = max_abs_diff(got.view(), want.view());
        assert!(d <= 1e-6, "{name} differs from transformers by {d}");
    }
}

#[test]
fn prefill_and_decode_match_transformers_with_its_greedy_ids() {
    let r = reference();
    let (prefill, steps) = runtime_logits();
    let want = r.f32_3d("prefill.logits").unwrap();
    let d = max_abs_diff(prefill.view(), want.view());
    eprintln!("prefill: max |Δlogit| = {d:.2e}");
    assert!(d <= FP32_TOLERANCE, "prefill logits differ by {d}");

    let want: ndarray::Array2<f32> = r
        .f32("decode.logits")
        .unwrap()
        .into_dimensionality()
        .unwrap();
    let ids = r.i64("decode.ids").unwrap();
    let mut greedy = vec![argmax(
        prefill.index_axis(Axis(1), prefill.dim().1 - 1).row(0),
    )];
    for (t, row) in steps.iter().enumerate() {
        let d = max_abs_diff(row.view(), want.index_axis(Axis(0), t));
        eprintln!("decode step {t}: max |Δlogit| = {d:.2e}");
        assert!(d <= FP32_TOLERANCE, "decode step {t} differs by {d}");
        greedy.push(argmax(row.view()));
    }
    assert_eq!(
        greedy[..ids.len()],
        ids.iter().copied().collect::<Vec<_>>()[..]
    );
}

#[test]
fn each_feature_moves_the_logits() {
    let r = reference();
    let (prefill, _) = runtime_logits();
    let full = max_abs_diff(prefill.view(), r.f32_3d("prefill.logits").unwrap().view());
    assert!(full <= FP32_TOLERANCE);
    for feature in FEATURES {
        let off = r.f32_3d(&format!("off.{feature}.logits")).unwrap();
        let d = max_abs_diff(prefill.view(), off.view());
        eprintln!("{feature} off: max |Δlogit| = {d:.3}");
        assert!(
            d > 100.0 * FP32_TOLERANCE,
            "the export is as close to the model without {feature} ({d}) as to the model"
        );
    }
}

#[test]
fn other_precisions_stay_close_and_keep_the_greedy_ids() {
    let r = reference();
    let want = r.f32_3d("prefill.logits").unwrap();
    let ids = r.i64("decode.ids").unwrap();
    // Logits of this random model have std 1.8; the AltUp router and coefficients stay fp32 at every precision.
    for (precision, bound, greedy) in [
        (Precision::Fp16, 0.1, true),
        (Precision::Bf16, 0.5, true),
        (Precision::INT8, 1.5, true),
        (Precision::INT4, f32::INFINITY, false),
    ] {
        let src = tiny_fixture(FIXTURE);
        let (_tmp, out) = export_precision_to_temp(&src, precision, GraphKind::Portable).unwrap();
        let (prefill, steps) = logits_of(&out);
        let d = max_abs_diff(prefill.view(), want.view());
        eprintln!("{}: prefill max |Δlogit| = {d:.3}", precision.name());
        assert!(
            d <= bound && prefill.iter().all(|v| v.is_finite()),
            "{}: {d}",
            precision.name()
        );
        if greedy {
            let last = prefill.index_axis(Axis(1), prefill.dim().1 - 1);
            let mut got = vec![argmax(last.row(0))];
            got.extend(steps.iter().map(|s| argmax(s.view())));
            assert_eq!(
                got[..ids.len()],
                ids.iter().copied().collect::<Vec<_>>()[..],
                "{}",
                precision.name()
            );
        }
    }
}

#[test]
fn conditional_generation_checkpoint_exports_its_text_decoder() {
    let src = tiny_fixture(FIXTURE);
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cg");
    std::fs::create_dir(&cg).unwrap();
    // Google's checkpoints keep k/v weights in the KV-shared layers (transformers ignores them) and the towers.
    let mut tensors: Vec<_> = read_safetensors(&src.join("model.safetensors"))
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            let name = name.replacen("model.", "model.language_model.", 1);
            (name, dtype, shape, bytes)
        })
        .collect();
    for l in [4, 5] {
        let name = format!("model.language_model.layers.{l}.self_attn.k_proj.weight");
        tensors.push(f32_tensor(&name, &[32, 64], &[0.5; 32 * 64]));
    }
    tensors.push(f32_tensor(
        "model.vision_tower.timm_model.conv_stem.conv.weight",
        &[2],
        &[1.0, 2.0],
    ));
    tensors.push(f32_tensor(
        "model.audio_tower.subsample_conv_projection.weight",
        &[2],
        &[1.0, 2.0],
    ));
    write_safetensors(&cg.join("model.safetensors"), &tensors);
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n",
        "text_config": text, "vision_config": {"model_type": "gemma3n_vision"},
        "audio_config": {"model_type": "gemma3n_audio"},
    });
    std::fs::write(cg.join("config.json"), config.to_string()).unwrap();

    let (_out_tmp, out) = export_to_temp(&cg).unwrap();
    let (prefill, _) = logits_of(&out);
    let want = reference().f32_3d("prefill.logits").unwrap();
    let d = max_abs_diff(prefill.view(), want.view());
    assert!(d <= FP32_TOLERANCE, "prefill logits differ by {d}");
    let manifest = Decoder::open(&out, &parity_runtime())
        .unwrap()
        .manifest()
        .clone();
    let section = manifest.gemma3n.unwrap();
    assert_eq!(section.towers_not_exported, ["vision", "audio"]);
    assert_eq!(manifest.architecture, "Gemma3nForConditionalGeneration");
}

fn argmax(row: ndarray::ArrayView1<f32>) -> i64 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}
