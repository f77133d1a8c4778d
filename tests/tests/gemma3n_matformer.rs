//! `gemma-export --matformer` against transformers 5.24 (fp32 eager), on the tiny Gemma 3n of
//! `fixtures/make_gemma3n_matformer_fixtures.py` (8 layers `S S S F S S S F`, MLP width 128, the last 3 sharing the
//! keys and values of layers 4 and 3, sparsity on layers 0–2), sliced two ways as the MatFormer Lab slices E4B and
//! run in transformers:
//!
//! * `skip=1,5,ffn=64,32,128,64,64,96`: a sparse layer and a KV-shared one skipped, per-layer MLP widths;
//! * `ffn=48`: every layer, each MLP cut to 48 units.
//!
//! Each slice, exported with the cpu and the portable graph and run by the runtime, gives transformers' logits
//! within 1e-4 through the prefill and four cached decode steps, and its greedy ids; the manifest describes the
//! sliced model. int8 and int4 exports of a slice run (int8 within 0.5 of transformers, whose logits have std 1.7).
//!
//! The `E2B` preset, on a checkpoint shaped like E4B where slicing looks (35 layers, MLP width 16384, 15 shared;
//! hidden 8), exports exactly the model of the same slice made by hand and written as a 30-layer checkpoint with
//! the released E2B's config: equal logits. The presets' parsing and the E2B config are unit tests of
//! `gemma_models::matformer`, the CLI's refusals are in `exporter/tests/matformer_cli.rs`.

use gemma_exporter::GraphKind;
use gemma_models::matformer::Spec;
use gemma_runtime::{Decoder, LogitsMode, TokenInput};
use gemma_tests::vision::max_abs_diff;
use gemma_tests::{export_with_to_temp, parity_runtime, tiny_fixture, Reference, FP32_TOLERANCE};
use ndarray::{s, Array1, Array2, ArrayView1, Axis};

const FIXTURE: &str = "gemma3n-matformer-f32";

/// (reference name, --matformer, layers, KV layers, kept layers, MLP widths)
type Slice = (
    &'static str,
    &'static str,
    usize,
    usize,
    &'static [usize],
    &'static [usize],
);

const SLICES: [Slice; 2] = [
    (
        "skip",
        "skip=1,5,ffn=64,32,128,64,64,96",
        6,
        4,
        &[0, 2, 3, 4, 6, 7],
        &[64, 32, 128, 64, 64, 96],
    ),
    ("ffn", "ffn=48", 8, 5, &[0, 1, 2, 3, 4, 5, 6, 7], &[48; 8]),
];

fn argmax(row: ArrayView1<f32>) -> i64 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}

#[test]
fn slices_match_transformers_on_both_graphs() {
    let r = Reference::load(&tiny_fixture(FIXTURE)).unwrap();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    for (name, spec, layers, kv_layers, kept, ffn) in SLICES {
        let want_prefill = r.f32_3d(&format!("{name}.prefill.logits")).unwrap();
        let want_steps: Array2<f32> = r
            .f32(&format!("{name}.decode.logits"))
            .unwrap()
            .into_dimensionality()
            .unwrap();
        let want_ids: Vec<i64> = r
            .i64(&format!("{name}.decode.ids"))
            .unwrap()
            .iter()
            .copied()
            .collect();
        for graph in [GraphKind::Cpu, GraphKind::Portable] {
            let spec = Spec::parse(spec).unwrap();
            let (_tmp, out) = export_with_to_temp(&tiny_fixture(FIXTURE), |o| {
                o.graph(graph).matformer(Some(spec))
            })
            .unwrap();
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                    .unwrap();
            // A portable export's config.json nests the text config for transformers.js.
            let text = config.get("text_config").unwrap_or(&config);
            assert_eq!(text["num_hidden_layers"], layers, "{name} {graph:?}");
            assert_eq!(
                text["intermediate_size"],
                serde_json::json!(ffn),
                "{name} {graph:?}"
            );
            let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
            let m = decoder.manifest();
            assert_eq!((m.num_layers, m.kv_layers()), (layers, kv_layers), "{name}");
            let section = m.matformer.clone().unwrap();
            assert_eq!(
                (&section.kept_layers[..], &section.ffn[..]),
                (kept, ffn),
                "{name}"
            );

            let mut cache = decoder.new_cache(1).unwrap();
            let prefill = decoder
                .run_after_cache(
                    TokenInput::Ids(ids.view()),
                    &mut cache,
                    LogitsMode::All,
                    |l| l.to_owned(),
                )
                .unwrap();
            let d = max_abs_diff(prefill.view(), want_prefill.view());
            eprintln!("{name} {graph:?}: prefill max |Δlogit| = {d:.2e}");
            assert!(
                d <= FP32_TOLERANCE,
                "{name} {graph:?}: prefill logits differ by {d}"
            );
            let last = prefill.index_axis(Axis(1), prefill.dim().1 - 1);
            let mut greedy = vec![argmax(last.row(0))];
            for (t, &id) in want_ids.iter().enumerate() {
                let one = Array2::from_elem((1, 1), id);
                let row: Array1<f32> = decoder
                    .run_after_cache(
                        TokenInput::Ids(one.view()),
                        &mut cache,
                        LogitsMode::Last,
                        |l| l.slice(s![0, 0, ..]).to_owned(),
                    )
                    .unwrap();
                let d = max_abs_diff(row.view(), want_steps.index_axis(Axis(0), t));
                eprintln!("{name} {graph:?}: decode step {t} max |Δlogit| = {d:.2e}");
                assert!(
                    d <= FP32_TOLERANCE,
                    "{name} {graph:?}: decode step {t} differs by {d}"
                );
                greedy.push(argmax(row.view()));
            }
            assert_eq!(
                greedy[..want_ids.len()],
                want_ids[..],
                "{name} {graph:?}: greedy ids"
            );
        }
    }
}

#[test]
fn the_unsliced_model_is_not_what_the_slices_give() {
    // The references differ from the whole model's by far more than the tolerance, so the parity above says
    // something about the slicing.
    let r = Reference::load(&tiny_fixture(FIXTURE)).unwrap();
    let source = r.f32_3d("source.prefill.logits").unwrap();
    for (name, ..) in SLICES {
        let d = max_abs_diff(
            source.view(),
            r.f32_3d(&format!("{name}.prefill.logits")).unwrap().view(),
        );
        assert!(d > 100.0 * FP32_TOLERANCE, "{name}: {d}");
    }
}

/// A Gemma3nForCausalLM config shaped like E4B where slicing looks (35 layers, four sliding then one full, MLP
/// width 16384, the last 15 sharing, sparsity on the first 10), tiny elsewhere (hidden 8, one head).
fn e4b_shaped_config(layers: usize, ffn: usize, shared: usize) -> serde_json::Value {
    let types: Vec<&str> = (0..layers)
        .map(|i| {
            if i % 5 == 4 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    let sparsity: Vec<f64> = (0..layers)
        .map(|i| if i < 10 { 0.95 } else { 0.0 })
        .collect();
    serde_json::json!({
        "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text",
        "num_hidden_layers": layers, "intermediate_size": vec![ffn; layers], "layer_types": types,
        "num_kv_shared_layers": shared, "activation_sparsity_pattern": sparsity,
        "hidden_size": 8, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8,
        "vocab_size": 16, "vocab_size_per_layer_input": 16, "hidden_size_per_layer_input": 2, "laurel_rank": 2,
        "sliding_window": 4, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "final_logit_softcapping": 30.0,
        "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1, "tie_word_embeddings": true,
    })
}

/// Deterministic weights in about ±1/√fan-in (norm gains around 1).
fn weights(name: &str, shape: &[usize], seed: &mut u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let scale = 1.0 / (*shape.last().unwrap() as f32).sqrt();
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            if shape.len() == 1 && !name.contains("correct_output_scale") {
                1.0 + 0.3 * u
            } else {
                2.0 * u * scale
            }
        })
        .collect()
}

/// The E2B preset on an E4B-shaped checkpoint exports the same model as the same slice made by hand (an
/// independent copy of the Lab's tensor loop, written as an ordinary 30-layer checkpoint): equal logits.
#[test]
fn e2b_preset_on_an_e4b_shaped_checkpoint_is_the_hand_sliced_checkpoint() {
    use gemma_models::names::{self, gemma3n as n3};
    let tmp = tempfile::tempdir().unwrap();
    let (e4b_dir, e2b_dir) = (tmp.path().join("e4b"), tmp.path().join("e2b"));
    let e4b_json = e4b_shaped_config(35, 16_384, 15);
    let e4b = gemma_models::ModelConfig::from_json_str(&e4b_json.to_string(), &e4b_dir).unwrap();
    let mut seed = 7;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        names::gemma3n::text_tensors(&e4b.text, "model.")
            .into_iter()
            .map(|(name, shape)| {
                let w = weights(&name, &shape, &mut seed);
                (name, shape, w)
            })
            .collect();
    let write =
        |dir: &std::path::Path, json: &serde_json::Value, t: &[(String, Vec<usize>, Vec<f32>)]| {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
            let t: Vec<_> = t
                .iter()
                .map(|(n, s, v)| gemma_tests::f32_tensor(n, s, v))
                .collect();
            gemma_tests::write_safetensors(&dir.join("model.safetensors"), &t);
        };
    write(&e4b_dir, &e4b_json, &tensors);

    // By hand: layers 20-24 dropped, the others renumbered, MLPs cut to 8192, the per-layer blocks (P = 2) kept.
    let kept: Vec<usize> = (0..35).filter(|l| !(20..25).contains(l)).collect();
    let (p, w) = (2, 8192);
    let sliced: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .filter_map(|(name, shape, v)| {
            if let Some(rest) = name.strip_prefix("model.layers.") {
                let (i, tail) = rest.split_once('.').unwrap();
                let new = kept
                    .iter()
                    .position(|&k| k == i.parse::<usize>().unwrap())?;
                let name = format!("model.layers.{new}.{tail}");
                return Some(match tail {
                    "mlp.gate_proj.weight" | "mlp.up_proj.weight" => {
                        (name, vec![w, shape[1]], v[..w * shape[1]].to_vec())
                    }
                    "mlp.down_proj.weight" => {
                        let rows = v.chunks(shape[1]).flat_map(|r| r[..w].to_vec()).collect();
                        (name, vec![shape[0], w], rows)
                    }
                    _ => (name, shape.clone(), v.clone()),
                });
            }
            let blocks = |row: &[f32]| -> Vec<f32> {
                kept.iter()
                    .flat_map(|&l| row[l * p..(l + 1) * p].to_vec())
                    .collect()
            };
            Some(if name == &n3::embed_tokens_per_layer("model.") {
                let rows = v.chunks(shape[1]).flat_map(blocks).collect();
                (name.clone(), vec![shape[0], 30 * p], rows)
            } else if name == &n3::per_layer_model_projection("model.") {
                let rows = kept
                    .iter()
                    .flat_map(|&l| v[l * p * shape[1]..(l + 1) * p * shape[1]].to_vec())
                    .collect();
                (name.clone(), vec![30 * p, shape[1]], rows)
            } else {
                (name.clone(), shape.clone(), v.clone())
            })
        })
        .collect();
    // The released E2B's config: 30 layers of width 8192, the last 10 sharing.
    write(&e2b_dir, &e4b_shaped_config(30, 8192, 10), &sliced);

    let ids = Array2::from_shape_vec((1, 7), vec![2, 5, 9, 3, 14, 7, 11]).unwrap();
    let logits = |src: &std::path::Path, spec: Option<Spec>| {
        let (_tmp, out) =
            export_with_to_temp(src, |o| o.graph(GraphKind::Cpu).matformer(spec)).unwrap();
        let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
        assert_eq!(
            (
                decoder.manifest().num_layers,
                decoder.manifest().kv_layers()
            ),
            (30, 20)
        );
        let mut cache = decoder.new_cache(1).unwrap();
        decoder
            .run_after_cache(
                TokenInput::Ids(ids.view()),
                &mut cache,
                LogitsMode::All,
                |l| l.to_owned(),
            )
            .unwrap()
    };
    let preset = logits(&e4b_dir, Some(Spec::parse("E2B").unwrap()));
    let by_hand = logits(&e2b_dir, None);
    assert!(preset.iter().all(|v| v.is_finite()) && preset.iter().any(|&v| v != preset[[0, 0, 0]]));
    let d = max_abs_diff(preset.view(), by_hand.view());
    eprintln!("E2B preset vs hand-sliced checkpoint: max |Δlogit| = {d:.2e}");
    assert_eq!(
        d, 0.0,
        "the same weights and config must give the same logits"
    );
}

/// Quantized exports read the slices through the same selections (row by row): int8 stays close to transformers'
/// sliced model, int4 runs.
#[test]
fn quantized_slices_stay_close() {
    let r = Reference::load(&tiny_fixture(FIXTURE)).unwrap();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let want = r.f32_3d("skip.prefill.logits").unwrap();
    for (precision, bound) in [
        (gemma_exporter::Precision::INT8, 1.5),
        (gemma_exporter::Precision::INT4, f32::INFINITY),
    ] {
        let spec = Spec::parse(SLICES[0].1).unwrap();
        let (_tmp, out) = export_with_to_temp(&tiny_fixture(FIXTURE), |o| {
            o.precision(precision).matformer(Some(spec))
        })
        .unwrap();
        let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
        let mut cache = decoder.new_cache(1).unwrap();
        let got = decoder
            .run_after_cache(
                TokenInput::Ids(ids.view()),
                &mut cache,
                LogitsMode::All,
                |l| l.to_owned(),
            )
            .unwrap();
        let d = max_abs_diff(got.view(), want.view());
        eprintln!("skip {}: prefill max |Δlogit| = {d:.3}", precision.name());
        assert!(
            got.iter().all(|v| v.is_finite()) && d <= bound,
            "{}: {d}",
            precision.name()
        );
    }
}
