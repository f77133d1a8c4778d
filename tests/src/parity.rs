//! The one parity driver of the text fixtures (Gemma 1, 2 and 3 alike): a [`Parity`] row names a source (a tiny
//! fixture or any checkpoint with a fixture's `reference.safetensors`), the decoder graph and precision it is
//! exported with, and the tolerance; [`Parity::prefill_then_decode`] and [`Parity::left_padded_batch`] export it,
//! run it through ONNX Runtime with the runtime's decoder and KV cache, and compare every real position with
//! transformers fp32 eager logits. [`parity_table!`](crate::parity_table) turns a table of rows into one named
//! test per row.

use crate::{export_precision_to_temp, max_abs_diff_row, tiny_fixture, Reference, FP32_TOLERANCE};
use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::manifest::GraphKind as RuntimeGraph;
use gemma_runtime::{Decoder, LogitsMode, RuntimeOptions};
use ndarray::{concatenate, s, Array2, Array3, Axis};
use std::path::{Path, PathBuf};

/// Two intra-op threads: the test machines are small and several test binaries run at once.
pub fn parity_runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

/// One named test per row: `name: expression;`, each row a `#[test]` of its own.
///
/// ```text
/// parity_table! {
///     mqa_f32_hf5_prefill_and_decode: Parity::portable("mqa-f32-hf5").prefill_then_decode(7);
/// }
/// ```
#[macro_export]
macro_rules! parity_table {
    ($($(#[$meta:meta])* $name:ident: $row:expr;)*) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                $row;
            }
        )*
    };
}

/// One row of a parity table.
#[derive(Clone, Debug)]
pub struct Parity {
    /// Names the row in failure messages.
    pub name: String,
    /// What is exported: a checkpoint folder or a GGUF file.
    pub src: PathBuf,
    /// The folder holding the `reference.safetensors` it is compared with.
    pub reference: PathBuf,
    pub graph: GraphKind,
    pub precision: Precision,
    /// The largest |Δlogit| allowed at any position.
    pub tolerance: f32,
}

impl Parity {
    /// Tiny fixture `fixture`, fp32, the portable graph, within [`FP32_TOLERANCE`].
    pub fn portable(fixture: &str) -> Parity {
        let dir = tiny_fixture(fixture);
        Parity::source(fixture, &dir, &dir)
    }

    /// Tiny fixture `fixture`, fp32, the CPU-optimized graph, within [`FP32_TOLERANCE`].
    pub fn cpu(fixture: &str) -> Parity {
        Parity {
            name: format!("{fixture} (cpu graph)"),
            graph: GraphKind::Cpu,
            ..Parity::portable(fixture)
        }
    }

    /// Any export source `src` (a checkpoint folder or a GGUF file) against the `reference.safetensors` in
    /// `reference`; fp32, the portable graph, within [`FP32_TOLERANCE`].
    pub fn source(name: &str, src: &Path, reference: &Path) -> Parity {
        Parity {
            name: name.to_string(),
            src: src.to_path_buf(),
            reference: reference.to_path_buf(),
            graph: GraphKind::Portable,
            precision: Precision::Fp32,
            tolerance: FP32_TOLERANCE,
        }
    }

    /// Exports the row into a temporary folder and opens it; the reference with it.
    pub fn open(&self) -> (tempfile::TempDir, Decoder, Reference) {
        let reference = Reference::load(&self.reference).unwrap();
        let (tmp, out) = export_precision_to_temp(&self.src, self.precision, self.graph).unwrap();
        let decoder = Decoder::open(&out, &parity_runtime()).unwrap();
        let graph = match self.graph {
            GraphKind::Cpu => RuntimeGraph::Cpu,
            GraphKind::Portable => RuntimeGraph::Portable,
        };
        assert_eq!(decoder.graph_kind(), graph, "{}", self.name);
        (tmp, decoder, reference)
    }

    /// Asserts one logits row within the tolerance; returns its |Δ|.
    fn check(
        &self,
        got: &Array3<f32>,
        g: (usize, usize),
        want: &Array3<f32>,
        w: (usize, usize),
        what: &str,
    ) -> f32 {
        let d = max_abs_diff_row(got.view(), g, want.view(), w);
        assert!(
            d <= self.tolerance,
            "{}: {what} differs from transformers by {d}",
            self.name
        );
        d
    }

    /// Prefill the first `prefill` tokens of `prefill.input_ids`, then decode the rest one token at a time: every
    /// position's logits match transformers' full forward pass. Where the model has a sliding window, the prompt
    /// must be longer than it (so the window is exercised). Returns the largest |Δlogit| seen.
    pub fn prefill_then_decode(&self, prefill: usize) -> f32 {
        let (_tmp, mut decoder, reference) = self.open();
        let ids = reference.i64_2d("prefill.input_ids").unwrap();
        let expected = reference.f32_3d("prefill.logits").unwrap();
        let total = ids.ncols();
        if let Some(window) = decoder.manifest().sliding_window {
            assert!(
                total > window + 2,
                "{}: the prompt ({total}) must be longer than the window ({window})",
                self.name
            );
        }

        let mut cache = decoder.new_cache(1).unwrap();
        let mut worst = 0f32;
        let mut start = 0;
        while start < total {
            let end = if start == 0 { prefill } else { start + 1 };
            let step_ids = ids.slice(s![.., start..end]).to_owned();
            let mask = Array2::<i64>::ones((1, end));
            let pos = Array2::from_shape_fn((1, end - start), |(_, j)| (start + j) as i64);
            let logits = decoder
                .forward(step_ids.view(), mask.view(), pos.view(), &mut cache)
                .unwrap();
            for j in 0..end - start {
                let what = format!("position {}", start + j);
                let d = self.check(&logits, (0, j), &expected, (0, start + j), &what);
                worst = worst.max(d);
            }
            start = end;
        }
        assert_eq!(cache.len(), total);
        eprintln!(
            "{}: prefill {prefill} + {} decode steps, max |Δlogit| = {worst:e}",
            self.name,
            total - prefill
        );
        worst
    }

    /// Batch of 2, the second row left-padded: real positions match transformers, and so do the decode steps of
    /// `batch.next_ids` (with the cpu graph asking for the last position only, as generation does). Returns the
    /// largest |Δlogit| seen.
    pub fn left_padded_batch(&self) -> f32 {
        let (_tmp, mut decoder, reference) = self.open();
        let ids = reference.i64_2d("batch.input_ids").unwrap();
        let mask = reference.i64_2d("batch.attention_mask").unwrap();
        let pos = reference.i64_2d("batch.position_ids").unwrap();
        let expected = reference.f32_3d("batch.logits").unwrap();
        let next_ids = reference.i64_2d("batch.next_ids").unwrap();
        let next_expected = reference.f32_3d("batch.next_logits").unwrap();
        let vocab = next_expected.dim().2;
        assert!(
            mask.iter().any(|&m| m == 0),
            "{}: the batch reference must contain padding",
            self.name
        );

        let mut cache = decoder.new_cache(2).unwrap();
        let logits = decoder
            .forward(ids.view(), mask.view(), pos.view(), &mut cache)
            .unwrap();
        let mut worst = 0f32;
        let mut compared = 0;
        for b in 0..2 {
            for j in 0..ids.ncols() {
                if mask[[b, j]] == 1 {
                    let what = format!("row {b} position {j}");
                    let d = self.check(&logits, (b, j), &expected, (b, j), &what);
                    worst = worst.max(d);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, mask.iter().filter(|&&m| m == 1).count());

        let mut mask = mask;
        let mut last_pos: Vec<i64> = (0..2).map(|b| pos[[b, pos.ncols() - 1]]).collect();
        for t in 0..next_ids.ncols() {
            mask = concatenate![Axis(1), mask, Array2::<i64>::ones((2, 1))];
            let step = next_ids.slice(s![.., t..t + 1]).to_owned();
            last_pos.iter_mut().for_each(|p| *p += 1);
            let step_pos = Array2::from_shape_fn((2, 1), |(b, _)| last_pos[b]);
            let (ids, mask, pos) = (step.view(), mask.view(), step_pos.view());
            let logits = match self.graph {
                GraphKind::Cpu => decoder.step(ids, mask, pos, &mut cache, LogitsMode::Last),
                GraphKind::Portable => decoder.forward(ids, mask, pos, &mut cache),
            }
            .unwrap();
            assert_eq!(logits.dim(), (2, 1, vocab), "{}", self.name);
            for b in 0..2 {
                let what = format!("decode step {t} row {b}");
                let d = self.check(&logits, (b, 0), &next_expected, (b, t), &what);
                worst = worst.max(d);
            }
        }
        eprintln!(
            "{}: batch 2 with left padding + {} decode steps, max |Δlogit| = {worst:e}",
            self.name,
            next_ids.ncols()
        );
        worst
    }
}

/// Every position's logits of one unpadded prompt `ids` `[1, n]` in one forward pass through the export in `dir`.
pub fn prompt_logits(dir: &Path, ids: &Array2<i64>) -> Array3<f32> {
    let mut decoder = Decoder::open(dir, &parity_runtime()).unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let n = ids.ncols();
    let mask = Array2::<i64>::ones((1, n));
    let pos = Array2::from_shape_fn((1, n), |(_, j)| j as i64);
    decoder
        .forward(ids.view(), mask.view(), pos.view(), &mut cache)
        .unwrap()
}

/// [`Parity::prefill_then_decode`] for any export source `src` (a checkpoint folder or a GGUF file) against the
/// `reference.safetensors` in `reference_dir`; `name` names it in messages.
pub fn prefill_then_decode_from(
    src: &Path,
    reference_dir: &Path,
    name: &str,
    prefill: usize,
) -> f32 {
    Parity::source(name, src, reference_dir).prefill_then_decode(prefill)
}
