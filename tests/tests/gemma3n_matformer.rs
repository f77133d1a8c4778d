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
//! sliced model. The presets (E2B, …) need a real E4B; their parsing and checks are unit tests of
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
