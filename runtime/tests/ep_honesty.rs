//! `--ep cuda|tensorrt|coreml` never silently runs part of an export on the CPU (issue 15 item 5,
//! docs/reliability.md "Execution providers"): [`gemma_runtime::ep_support::check`] on tiny exports of every graph
//! kind, for every provider, and the CLI's errors and `--allow-fallback`. Only a CPU-only ONNX Runtime is needed:
//! the check reads the graph, not the provider.

mod common;

use std::path::Path;

use common::*;
use gemma_exporter::{ExportOptions, GraphKind, Precision};
use gemma_runtime::ep_support::{check, EpSupportError, UnsupportedOp};
use gemma_runtime::ExecutionProvider;

/// A tiny Gemma 2 export with `graph` and `precision`.
fn export_with(graph: GraphKind, precision: Precision) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    gemma_exporter::export(
        &ExportOptions::new(fixtures().join("tiny").join(FIXTURE), out_dir(&tmp))
            .graph(graph)
            .precision(precision),
    )
    .unwrap();
    tmp
}

/// The unsupported ops `check` names for the export's `model.onnx`, or none.
fn refused(dir: &Path, ep: ExecutionProvider) -> Vec<UnsupportedOp> {
    match check(&dir.join("model.onnx"), ep) {
        Ok(()) => Vec::new(),
        Err(EpSupportError::Unsupported { ops, provider, .. }) => {
            assert_eq!(provider, ep);
            ops
        }
        Err(e) => panic!("{e}"),
    }
}

fn op_types(ops: &[UnsupportedOp]) -> Vec<&str> {
    ops.iter().map(|o| o.op_type.as_str()).collect()
}

#[test]
fn the_cpu_graph_runs_only_on_the_cpu() {
    let tmp = export_with(GraphKind::Cpu, Precision::Fp32);
    let dir = out_dir(&tmp);
    assert!(refused(&dir, ExecutionProvider::Cpu).is_empty());

    // CUDA has every contrib op but GroupQueryAttention in float32 (the cpu graph's activations).
    let cuda = refused(&dir, ExecutionProvider::Cuda);
    assert_eq!(op_types(&cuda), ["GroupQueryAttention"], "{cuda:?}");
    let gqa = &cuda[0];
    assert_eq!(gqa.domain, "com.microsoft");
    assert_eq!(gqa.count, 4, "one per layer of the 4-layer fixture");
    assert!(!gqa.first_nodes.is_empty() && gqa.first_nodes.len() <= 3);
    assert!(gqa.why.contains("float16"), "{}", gqa.why);

    // TensorRT (without the cuda feature) and CoreML run no contrib op.
    for ep in [ExecutionProvider::TensorRt, ExecutionProvider::CoreMl] {
        let ops = refused(&dir, ep);
        let types = op_types(&ops);
        for op in [
            "GroupQueryAttention",
            "RotaryEmbedding",
            "SkipSimplifiedLayerNormalization",
        ] {
            assert!(types.contains(&op), "{ep}: {types:?}");
        }
    }
}

#[test]
fn the_message_names_the_nodes_and_the_export_to_make() {
    let tmp = export_with(GraphKind::Cpu, Precision::Fp32);
    let err = check(&out_dir(&tmp).join("model.onnx"), ExecutionProvider::CoreMl)
        .unwrap_err()
        .to_string();
    for part in [
        "--ep coreml",
        "com.microsoft GroupQueryAttention ×4",
        "--graph portable --precision fp16",
        "--allow-fallback",
    ] {
        assert!(err.contains(part), "{part:?} missing from:\n{err}");
    }
}

#[test]
fn the_portable_graph_passes_every_provider() {
    for precision in [Precision::Fp32, Precision::Fp16] {
        let tmp = export_with(GraphKind::Portable, precision);
        for ep in ExecutionProvider::ALL {
            let ops = refused(&out_dir(&tmp), ep);
            assert!(ops.is_empty(), "{precision:?} on {ep}: {ops:?}");
        }
    }
}

#[test]
fn quantized_exports_need_contrib_ops_and_say_so() {
    let tmp = export_with(GraphKind::Portable, Precision::INT4);
    let dir = out_dir(&tmp);
    assert!(
        refused(&dir, ExecutionProvider::Cuda).is_empty(),
        "CUDA has MatMulNBits and GatherBlockQuantized"
    );
    let ops = refused(&dir, ExecutionProvider::TensorRt);
    assert!(op_types(&ops).contains(&"MatMulNBits"), "{ops:?}");
    let err = check(&dir.join("model.onnx"), ExecutionProvider::TensorRt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("int8/int4"), "{err}");
}

#[test]
fn a_file_that_is_not_onnx_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.onnx");
    std::fs::write(&path, b"\xff\xff\xff").unwrap();
    let err = check(&path, ExecutionProvider::Cuda).unwrap_err();
    assert!(matches!(err, EpSupportError::Unreadable { .. }), "{err}");
    assert!(
        check(&path, ExecutionProvider::Cpu).is_ok(),
        "the CPU needs no check"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cli_ep_cuda_on_a_cpu_only_build_names_the_provider() {
    let tmp = export_with(GraphKind::Cpu, Precision::Fp32);
    let d = out_dir(&tmp);
    for extra in [&[][..], &["--allow-fallback"][..]] {
        let mut args = vec![
            "generate",
            "-m",
            d.to_str().unwrap(),
            "-p",
            "w5",
            "--ep",
            "cuda",
        ];
        args.extend_from_slice(extra);
        let o = gemma(&args, None);
        let err = failure(&o);
        assert!(err.contains("cuda"), "{err}");
        assert!(
            !err.contains("unexpected argument"),
            "--allow-fallback is accepted: {err}"
        );
    }
}

#[test]
fn cli_documents_allow_fallback() {
    for sub in ["generate", "chat", "perplexity", "bench"] {
        let o = gemma(&[sub, "--help"], None);
        let help = stdout(success(&o));
        assert!(help.contains("--allow-fallback"), "{sub}: {help}");
    }
}
