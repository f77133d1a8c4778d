//! Every graph the exporter writes passes the ONNX checker's full check (`onnx.checker.check_model(path,
//! full_check=True)`: each node against its operator schema at the imported opset, then strict shape inference),
//! run by the pinned `onnx` package through `tests/stacks/onnx_check.py`.
//!
//! Covered: the text decoder of Gemma 1, 2 and 3 as `--graph cpu` and `--graph portable` at every precision, and a
//! Gemma 3 vision export (its `vision_encoder.onnx`, `embed_tokens.onnx`, `decoder_model_merged.onnx`,
//! `preprocess.onnx` and `model.onnx`), a Gemma 3n export with its image and audio graphs, each with the copies of
//! the transformers.js layout in `onnx/` where the
//! export has them (portable, but bf16), plus the real Gemma 3 270M's cpu graph. The opsets are checked too: the
//! portable graphs stay at opset 21 for older runtimes; the cpu graph imports 23 for `RMSNormalization`.
//!
//! The harness runs in the venv that `scripts/setup-stacks` creates; `scripts/test` exports its python as
//! `GEMMA_STACKS_PYTHON` ([`stacks_python`]).

use gemma_exporter::{export, ExportOptions, GraphKind, Precision};
use gemma_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One checked file, as `onnx_check.py` prints it.
#[derive(serde::Deserialize, Debug)]
struct Checked {
    file: PathBuf,
    opsets: BTreeMap<String, i64>,
    ok: bool,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct Report {
    onnx: String,
    checked: Vec<Checked>,
}

/// Runs the full check on every `*.onnx` of `folders`; panics with each failure's message.
fn check_all(folders: &[&Path]) -> Vec<Checked> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/onnx_check.py");
    let python = stacks_python();
    let out = Command::new(&python)
        .arg(&script)
        .args(folders)
        .output()
        .unwrap_or_else(|e| panic!("running {} {}: {e}", python.display(), script.display()));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "onnx_check.py printed no report ({e}; {}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed: Vec<String> = report
        .checked
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{}: {}",
                c.file.display(),
                c.error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "onnx {} full check failed on {} file(s):\n{}",
        report.onnx,
        failed.len(),
        failed.join("\n")
    );
    eprintln!(
        "onnx {}: {} graphs pass the full check",
        report.onnx,
        report.checked.len()
    );
    report.checked
}

fn file_name(c: &Checked) -> &str {
    c.file.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

const PRECISIONS: [Precision; 5] = [
    Precision::Fp32,
    Precision::Fp16,
    Precision::Bf16,
    Precision::INT8,
    Precision::INT4,
];

/// Exports `fixture` as both graphs at every precision and checks them all in one run of the harness.
fn check_fixture(fixture: &str) -> Vec<(GraphKind, Vec<Checked>)> {
    let mut exports = Vec::new();
    for graph in [GraphKind::Cpu, GraphKind::Portable] {
        for p in PRECISIONS {
            exports.push((
                graph,
                export_precision_to_temp(&tiny_fixture(fixture), p, graph).unwrap(),
            ));
        }
    }
    let folders: Vec<&Path> = exports.iter().map(|(_, (_, out))| out.as_path()).collect();
    let mut checked = check_all(&folders);
    exports
        .iter()
        .map(|(graph, (_, out))| {
            let (mut mine, rest): (Vec<Checked>, _) = checked
                .drain(..)
                .partition(|c: &Checked| c.file.starts_with(out));
            checked = rest;
            // Paths relative to the export folder: `model.onnx`, `onnx/model_q4.onnx`.
            for c in &mut mine {
                c.file = c.file.strip_prefix(out).unwrap_or(&c.file).to_path_buf();
            }
            (*graph, mine)
        })
        .collect()
}

/// The decoder (`model.onnx`) imports opset 23 in the cpu graph (`RMSNormalization`) and 21 in the portable one.
fn assert_decoder_opsets(fixture: &str, results: &[(GraphKind, Vec<Checked>)]) {
    for (graph, files) in results {
        let decoder = files
            .iter()
            .find(|c| file_name(c) == "model.onnx")
            .unwrap_or_else(|| panic!("{fixture}: no model.onnx checked"));
        let want = match graph {
            GraphKind::Cpu => 23,
            GraphKind::Portable => 21,
        };
        assert_eq!(
            decoder.opsets.get("ai.onnx"),
            Some(&want),
            "{fixture} {graph:?}: {decoder:?}"
        );
    }
}

#[test]
fn gemma3_text_graphs_pass_the_full_check() {
    let results = check_fixture("mqa-f32-hf5");
    assert_decoder_opsets("mqa-f32-hf5", &results);
}

#[test]
fn gemma1_and_gemma2_graphs_pass_the_full_check() {
    for fixture in ["gemma1-mha-f16-hf5", "gemma2-gqa-bf16-sharded-hf4"] {
        let results = check_fixture(fixture);
        assert_decoder_opsets(fixture, &results);
    }
}

/// Every file of a vision export: the image graphs stay at opset 21 whatever the text decoder's graph.
#[test]
fn vision_export_graphs_pass_the_full_check() {
    let fixture = "cg-mqa-bf16-sharded-hf4";
    let results = check_fixture(fixture);
    assert_decoder_opsets(fixture, &results);
    for (graph, files) in &results {
        let top = files.iter().filter(|c| c.file.components().count() == 1);
        let mut names: Vec<&str> = top.map(file_name).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "decoder_model_merged.onnx",
                "embed_tokens.onnx",
                "model.onnx",
                "preprocess.onnx",
                "vision_encoder.onnx"
            ],
            "{graph:?}"
        );
        for c in files.iter().filter(|c| file_name(c) != "model.onnx") {
            assert_eq!(c.opsets.get("ai.onnx"), Some(&21), "{c:?}");
        }
    }
}

/// Every graph of a Gemma 3n export with all three towers, both decoder graphs, every precision.
#[test]
fn gemma3n_graphs_pass_the_full_check() {
    let results = check_fixture("gemma3n-f32");
    for (graph, files) in &results {
        let top = files.iter().filter(|c| c.file.components().count() == 1);
        let mut names: Vec<&str> = top.map(file_name).collect();
        names.sort_unstable();
        names.dedup();
        for want in [
            "audio_encoder.onnx",
            "decoder_model_merged.onnx",
            "embed_tokens.onnx",
            "preprocess.onnx",
            "preprocess_audio.onnx",
            "vision_encoder.onnx",
        ] {
            assert!(
                names.contains(&want),
                "{graph:?}: {want} not checked: {names:?}"
            );
        }
    }
}

/// The real Gemma 3 270M's cpu graph (the default export) at fp32 and int4.
#[test]
fn real_270m_cpu_graph_passes_the_full_check() {
    let gguf = gemma3_270m_gguf().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for p in [Precision::Fp32, Precision::INT4] {
        let out = tmp.path().join(p.name());
        export(&ExportOptions::new(&gguf, &out).precision(p)).unwrap();
        folders.push(out);
    }
    let folders: Vec<&Path> = folders.iter().map(PathBuf::as_path).collect();
    let checked = check_all(&folders);
    assert_eq!(checked.len(), 2);
    assert!(checked.iter().all(|c| c.opsets.get("ai.onnx") == Some(&23)));
}
