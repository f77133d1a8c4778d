//! `--precision fp16` and `bf16`: weights stored in 16 bits and cast to fp32 in the graph, everything else fp32.
//! Every tiny fixture (Gemma 1, 2, 3; bf16, f16 and f32 checkpoints) is exported, its prompt prefilled and then
//! decoded one token at a time, and every position's logits are compared with transformers fp32 eager.
//!
//! Tolerance. Only the weights change, by one rounding each, of relative size below `u` = 2⁻¹¹ (fp16) or 2⁻⁸
//! (bf16). A bf16 checkpoint is exactly representable in both (8-bit significand; the fixtures' values are far
//! inside fp16's range) and an f16 one in fp16, so those exports must match within the fp32 tolerance, 1e-4.
//! Otherwise every weight is perturbed by up to `u` relative and the errors add up through the layers: measured
//! worst cases are 2.8·u·max|logit| (fp16 of the f32 fixture: 7.9e-3 with logits up to 5.9) and 2.5·u·max|logit|
//! (bf16 of the f32 and f16 fixtures: 5.8e-2 and 4.7e-2). The bound asserted is `1e-4 + 6·u·max|logit|`, about
//! twice the worst case: loose enough for rounding luck, tight enough to catch a wrong cast, scale or layout (those
//! move logits by O(1)).
//!
//! Overflow. Gemma's activations exceed fp16's range (semantics §9.2); these exports keep them fp32, so the fp16 export
//! of a bf16 checkpoint must give finite logits identical (within 1e-4) to fp32.

use gemma_exporter::{GraphKind, Precision};
use gemma_runtime::Decoder;
use gemma_tests::*;
use ndarray::{s, Array2};

fn relative_unit(p: Precision) -> f32 {
    match p {
        Precision::Fp16 => 2f32.powi(-11),
        Precision::Bf16 => 2f32.powi(-8),
        _ => unreachable!(),
    }
}

/// The checkpoint's weight dtype, from its config.
fn stored_dtype(fixture: &str) -> String {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_fixture(fixture).join("config.json")).unwrap(),
    )
    .unwrap();
    cfg.get("torch_dtype")
        .or_else(|| cfg.get("dtype"))
        .and_then(|v| v.as_str())
        .unwrap_or("float32")
        .to_string()
}

/// Prefills 4 tokens, then decodes the rest of the reference prompt one by one; returns max |Δlogit| against
/// transformers and the largest |logit| of the reference.
fn max_error(fixture: &str, precision: Precision, graph: GraphKind) -> (f32, f32) {
    let dir = tiny_fixture(fixture);
    let reference = Reference::load(&dir).unwrap();
    let ids = reference.i64_2d("prefill.input_ids").unwrap();
    let expected = reference.f32_3d("prefill.logits").unwrap();
    let (_tmp, out) = export_precision_to_temp(&dir, precision, graph).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["precision"], precision.name());
    let mut decoder = Decoder::open(&out, &parity_runtime()).unwrap();
    let mut cache = decoder.new_cache(1).unwrap();
    let total = ids.ncols();
    let (mut worst, mut start) = (0f32, 0);
    while start < total {
        let end = if start == 0 { 4.min(total) } else { start + 1 };
        let mask = Array2::<i64>::ones((1, end));
        let pos = Array2::from_shape_fn((1, end - start), |(_, j)| (start + j) as i64);
        let step = ids.slice(s![.., start..end]).to_owned();
        let logits = decoder
            .forward(step.view(), mask.view(), pos.view(), &mut cache)
            .unwrap();
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{fixture} {}: non-finite logits",
            precision.name()
        );
        for j in 0..end - start {
            let d = max_abs_diff_row(logits.view(), (0, j), expected.view(), (0, start + j));
            worst = worst.max(d);
        }
        start = end;
    }
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    (worst, scale)
}

fn check(fixture: &str, precision: Precision, graph: GraphKind) {
    let (worst, scale) = max_error(fixture, precision, graph);
    let dtype = stored_dtype(fixture);
    // Exact when the storage type holds every checkpoint value: bf16 in both, f16 in fp16.
    let exact = dtype == "bfloat16" || (dtype == "float16" && precision == Precision::Fp16);
    let tol = if exact {
        FP32_TOLERANCE
    } else {
        FP32_TOLERANCE + 6.0 * relative_unit(precision) * scale
    };
    eprintln!(
        "{fixture} ({dtype}) {} {graph:?}: max |Δlogit| {worst:.2e} (max |logit| {scale:.2}, tolerance {tol:.2e})",
        precision.name()
    );
    assert!(
        worst <= tol,
        "{fixture} ({dtype}) {}: max |Δlogit| {worst} > {tol}",
        precision.name()
    );
}

#[test]
fn fp16_matches_transformers_on_every_fixture() {
    for f in TINY_FIXTURES.iter().chain(FAMILY_FIXTURES) {
        check(f, Precision::Fp16, GraphKind::Portable);
    }
}

#[test]
fn bf16_matches_transformers_on_every_fixture() {
    for f in TINY_FIXTURES.iter().chain(FAMILY_FIXTURES) {
        check(f, Precision::Bf16, GraphKind::Portable);
    }
}

/// The CPU-optimized Gemma 3 graph with 16-bit weights (including the fp16 export of a bf16 checkpoint, which
/// would overflow if any activation were fp16).
#[test]
fn half_precisions_in_the_cpu_graph() {
    for f in TINY_FIXTURES {
        check(f, Precision::Fp16, GraphKind::Cpu);
        check(f, Precision::Bf16, GraphKind::Cpu);
    }
}

/// What is stored: every projection and the (tied) embedding as 16-bit floats, once; the folded norm gains stay
/// fp32 (semantics §1.2: rounding `1 + w` loses precision).
#[test]
fn weights_are_stored_in_16_bits_and_norms_in_fp32() {
    use gemma_exporter::onnx::{DataType, ModelProto};
    use prost::Message;
    let dir = tiny_fixture("mqa-f32-hf5");
    for (p, dt) in [
        (Precision::Fp16, DataType::Float16),
        (Precision::Bf16, DataType::Bfloat16),
    ] {
        let (_tmp, out) = export_precision_to_temp(&dir, p, GraphKind::Portable).unwrap();
        let model = ModelProto::decode(&*std::fs::read(out.join("model.onnx")).unwrap()).unwrap();
        let graph = model.graph.unwrap();
        let (mut weights, mut gains) = (0, 0);
        for t in &graph.initializer {
            let name = t.name.as_deref().unwrap_or("");
            if name.ends_with("proj.weight") || name.ends_with("embed_tokens.weight") {
                assert_eq!(t.data_type, Some(dt as i32), "{name}");
                weights += 1;
            } else if name.ends_with("_plus_one") {
                assert_eq!(t.data_type, Some(DataType::Float as i32), "{name}");
                gains += 1;
            }
        }
        // The tied lm_head reads the table through views (initializers over byte ranges of the table's own
        // external data), never a second copy of it.
        let range = |t: &gemma_exporter::onnx::TensorProto| -> (String, u64, u64) {
            let field = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key.as_deref() == Some(k))
                    .and_then(|e| e.value.clone())
                    .unwrap_or_default()
            };
            let offset = field("offset").parse().unwrap();
            (
                field("location"),
                offset,
                offset + field("length").parse::<u64>().unwrap(),
            )
        };
        let named = |pred: &dyn Fn(&str) -> bool| -> Vec<&gemma_exporter::onnx::TensorProto> {
            graph
                .initializer
                .iter()
                .filter(|t| pred(t.name.as_deref().unwrap_or("")))
                .collect()
        };
        let tables = named(&|n| n.ends_with("embed_tokens.weight"));
        assert_eq!(tables.len(), 1, "the tied embedding is stored once");
        let (file, start, end) = range(tables[0]);
        let views = named(&|n| n.contains("embed_tokens.weight/lm_head_rows"));
        assert!(!views.is_empty(), "the tied lm_head reads the table");
        for v in views {
            let (f, s, e) = range(v);
            assert!(
                f == file && start <= s && e <= end,
                "{:?} is not a view of the table",
                v.name
            );
        }
        // 7 projections per layer plus the embedding; 4 or 6 norms per layer plus the final one.
        assert!(
            weights >= 8 && gains >= 5,
            "{weights} weights, {gains} gains"
        );
        eprintln!(
            "{}: {weights} 16-bit weights, {gains} fp32 norm gains",
            p.name()
        );
    }
}
