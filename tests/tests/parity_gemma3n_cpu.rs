//! Gemma 3n's cpu decoder graph (`gemma-export --graph cpu`, the default) against transformers 5.24 (fp32 eager), on
//! the tiny Gemma3nForCausalLM of `parity_gemma3n.rs` (6 layers `S S F S S F`, the last 2 sharing the KV of layers 3
//! and 2, window 4 under a 10-token prompt):
//!
//! * `GroupQueryAttention` on in-place KV buffers for the 4 KV layers only; the shared layers read their source's
//!   buffers. Layers 0–1 keep window-sized buffers that ONNX Runtime evicts; layer 3, a sliding source, keeps all.
//! * prefill then cached decode steps, one-token steps, chunked prefill and a left-padded batch: every position
//!   within 1e-4 of transformers, the greedy ids transformers';
//! * last-position logits (`num_logits_to_keep = 1`) equal the last row of all of them;
//! * int8 and int4 run and stay close (figures printed).
//!
//! The greedy ids through `gemma generate` (a default, hence cpu, export) are checked in
//! `runtime/tests/gemma3n_cli.rs`, audio + text on the cpu graph in `gemma3n_audio.rs`.

use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::manifest::GraphKind as RuntimeGraph;
use gemma_runtime::{position_ids_from_mask, Decoder, LogitsMode, Step, TokenInput};
use gemma_tests::{
    export_precision_to_temp, max_abs_diff_row, parity_runtime, tiny_fixture, Reference,
    FP32_TOLERANCE,
};
use ndarray::{concatenate, s, Array2, Array3, Axis};
use std::path::Path;

const FIXTURE: &str = "gemma3n-text-f32";

fn reference() -> Reference {
    Reference::load(&tiny_fixture(FIXTURE)).unwrap()
}

/// The fixture exported at `precision` with the cpu graph, opened (checked to be a cpu graph).
fn open_cpu(precision: Precision) -> (tempfile::TempDir, Decoder) {
    let (tmp, out) =
        export_precision_to_temp(&tiny_fixture(FIXTURE), precision, GraphKind::Cpu).unwrap();
    let decoder = open(&out);
    (tmp, decoder)
}

fn open(out: &Path) -> Decoder {
    let decoder = Decoder::open(out, &parity_runtime()).unwrap();
    let m = decoder.manifest();
    assert_eq!(m.graph, RuntimeGraph::Cpu);
    assert_eq!(m.kv_layers(), 4, "layers 4 and 5 share");
    let window_sized: Vec<bool> = (0..4).map(|l| m.window_sized_kv(l)).collect();
    assert_eq!(
        window_sized,
        [true, true, false, false],
        "layer 3 is a source"
    );
    decoder
}

/// Feeds the prompt in steps of the given sizes (batch 1): the logits of every position `[1, 10, V]`.
fn run_steps(decoder: &mut Decoder, steps: &[usize]) -> Array3<f32> {
    let ids = reference().i64_2d("prefill.input_ids").unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let mut rows = Vec::new();
    let mut start = 0;
    for &n in steps {
        let chunk = ids.slice(s![.., start..start + n]).to_owned();
        let logits = decoder
            .run_after_cache(
                TokenInput::Ids(chunk.view()),
                &mut cache,
                LogitsMode::All,
                |l| l.to_owned(),
            )
            .unwrap();
        rows.push(logits);
        start += n;
    }
    assert_eq!(cache.len(), ids.ncols());
    // Window-sized layers hold at most their capacity, the others every position.
    assert!(cache.resident_len(0) < ids.ncols());
    assert_eq!(cache.resident_len(3), ids.ncols());
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    concatenate(Axis(1), &views).unwrap()
}

/// Largest |Δ| of `got` from transformers' prefill logits, position by position.
fn prefill_error(got: &Array3<f32>) -> f32 {
    let want = reference().f32_3d("prefill.logits").unwrap();
    (0..want.dim().1)
        .map(|j| max_abs_diff_row(got.view(), (0, j), want.view(), (0, j)))
        .fold(0.0, f32::max)
}

/// Prefill, then the reference's decode ids one at a time (last-position logits): the decode logits and greedy ids.
fn prefill_then_decode(decoder: &mut Decoder) -> (Array3<f32>, Vec<ndarray::Array1<f32>>) {
    let r = reference();
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let run = |d: &mut Decoder, c: &mut _, ids: &Array2<i64>, mode| {
        d.run_after_cache(TokenInput::Ids(ids.view()), c, mode, |l| l.to_owned())
            .unwrap()
    };
    let prefill = run(decoder, &mut cache, &ids, LogitsMode::All);
    let last = run_last_equals_all(decoder, &ids);
    let d = max_abs_diff_row(prefill.view(), (0, 9), last.view(), (0, 0));
    assert_eq!(d, 0.0, "last-position logits are the last row of all");
    let steps = r
        .i64("decode.ids")
        .unwrap()
        .iter()
        .map(|&id| {
            let one = Array2::from_elem((1, 1), id);
            run(decoder, &mut cache, &one, LogitsMode::Last).slice_move(s![0, 0, ..])
        })
        .collect();
    (prefill, steps)
}

/// The prompt's logits with `num_logits_to_keep = 1` on a fresh cache: `[1, 1, V]`.
fn run_last_equals_all(decoder: &mut Decoder, ids: &Array2<i64>) -> Array3<f32> {
    let mut cache = decoder.new_cache(1).unwrap();
    decoder
        .run_after_cache(
            TokenInput::Ids(ids.view()),
            &mut cache,
            LogitsMode::Last,
            |l| l.to_owned(),
        )
        .unwrap()
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

#[test]
fn prefill_and_decode_match_transformers_with_its_greedy_ids() {
    let r = reference();
    let (_tmp, mut decoder) = open_cpu(Precision::Fp32);
    let (prefill, steps) = prefill_then_decode(&mut decoder);
    let d = prefill_error(&prefill);
    eprintln!("cpu prefill: max |Δlogit| = {d:.2e}");
    assert!(d <= FP32_TOLERANCE, "prefill logits differ by {d}");
    let want = r.f32("decode.logits").unwrap();
    let want: Array2<f32> = want.into_dimensionality().unwrap();
    let mut greedy = vec![argmax(prefill.slice(s![0, 9, ..]))];
    for (t, row) in steps.iter().enumerate() {
        let d = row
            .iter()
            .zip(want.row(t))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("cpu decode step {t}: max |Δlogit| = {d:.2e}");
        assert!(d <= FP32_TOLERANCE, "decode step {t} differs by {d}");
        greedy.push(argmax(row.view()));
    }
    let ids: Vec<i64> = r.i64("decode.ids").unwrap().iter().copied().collect();
    assert_eq!(greedy[..ids.len()], ids[..]);
}

/// One token per step (past the window at step 5, through evictions) and chunked prefill (multi-token steps on a
/// cached context).
#[test]
fn one_token_steps_and_chunked_prefill_match_transformers() {
    let (_tmp, mut decoder) = open_cpu(Precision::Fp32);
    for steps in [&[1; 10][..], &[3, 4, 2, 1], &[6, 4]] {
        let d = prefill_error(&run_steps(&mut decoder, steps));
        eprintln!("cpu steps {steps:?}: max |Δlogit| = {d:.2e}");
        assert!(d <= FP32_TOLERANCE, "steps {steps:?}: {d}");
    }
}

/// A batch of the prompt and its first 7 tokens left-padded by 3: every real position matches transformers, and
/// so does the first row's next decode step.
#[test]
fn left_padded_batch_matches_transformers() {
    let r = reference();
    let (_tmp, mut decoder) = open_cpu(Precision::Fp32);
    let ids = r.i64_2d("prefill.input_ids").unwrap();
    let mut batch = Array2::<i64>::zeros((2, 10));
    batch.row_mut(0).assign(&ids.row(0));
    batch.slice_mut(s![1, 3..]).assign(&ids.slice(s![0, ..7]));
    let mut mask = Array2::<i64>::ones((2, 10));
    mask.slice_mut(s![1, ..3]).fill(0);
    let pos = position_ids_from_mask(mask.view());
    let mut cache = decoder.new_cache(2).unwrap();
    let step = Step {
        tokens: TokenInput::Ids(batch.view()),
        attention_mask: mask.view(),
        position_ids: pos.view(),
        logits: LogitsMode::All,
    };
    let logits = decoder.run(&step, &mut cache, |l| l.to_owned()).unwrap();
    let want = r.f32_3d("prefill.logits").unwrap();
    let mut worst = 0f32;
    for j in 0..10 {
        worst = worst.max(max_abs_diff_row(logits.view(), (0, j), want.view(), (0, j)));
    }
    for j in 3..10 {
        worst = worst.max(max_abs_diff_row(
            logits.view(),
            (1, j),
            want.view(),
            (0, j - 3),
        ));
    }
    let next = r.i64("decode.ids").unwrap()[0];
    let one = Array2::from_elem((2, 1), next);
    let mask = concatenate(Axis(1), &[mask.view(), Array2::ones((2, 1)).view()]).unwrap();
    let pos = Array2::from_shape_vec((2, 1), vec![10, 7]).unwrap();
    let step = Step {
        tokens: TokenInput::Ids(one.view()),
        attention_mask: mask.view(),
        position_ids: pos.view(),
        logits: LogitsMode::Last,
    };
    let row = decoder
        .run(&step, &mut cache, |l| l.slice(s![0, 0, ..]).to_owned())
        .unwrap();
    let want = r.f32("decode.logits").unwrap();
    let want = want.index_axis(Axis(0), 0);
    let d = row
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("cpu left-padded batch: max |Δlogit| = {worst:.2e}, decode {d:.2e}");
    assert!(worst.max(d) <= FP32_TOLERANCE, "{worst} {d}");
}

/// int8 and int4 cpu exports run; int8 stays within the portable int8 bound of `parity_gemma3n.rs` and keeps the
/// greedy ids (logits of this random model have std 1.8; AltUp's router and coefficients stay fp32).
#[test]
fn quantized_cpu_exports_run_and_stay_close() {
    let r = reference();
    let ids: Vec<i64> = r.i64("decode.ids").unwrap().iter().copied().collect();
    for (precision, bound, greedy) in [
        (Precision::INT8, 1.5, true),
        (Precision::INT4, f32::INFINITY, false),
    ] {
        let (_tmp, mut decoder) = open_cpu(precision);
        let (prefill, steps) = prefill_then_decode(&mut decoder);
        let d = prefill_error(&prefill);
        eprintln!("cpu {}: prefill max |Δlogit| = {d:.3}", precision.name());
        assert!(d <= bound && prefill.iter().all(|v| v.is_finite()), "{d}");
        if greedy {
            let mut got = vec![argmax(prefill.slice(s![0, 9, ..]))];
            got.extend(steps.iter().map(|s| argmax(s.view())));
            assert_eq!(got[..ids.len()], ids[..], "{}", precision.name());
        }
    }
}
