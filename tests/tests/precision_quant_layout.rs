//! The packed bytes of the int8/int4 exports mean to ONNX Runtime exactly what they mean to the exporter.
//!
//! A random matrix is written as a one-tensor checkpoint, quantized through the exporter's own linear and embedding
//! kernels (`MatMulNBits`, `GatherBlockQuantized` on an aliased view of the same bytes) into a two-output graph, and
//! run by ONNX Runtime. The expected outputs are computed independently here: every block re-quantized with the
//! public rounder and dequantized as `scale · (code − zero)`. With `accuracy_level` 0 (fp32 activations) the MatMul
//! must agree to float rounding and the lookup exactly, for 4 and 8 bits, symmetric and asymmetric, and an input
//! width that is not a multiple of the block (padded last block). The lookup's view must be the lm_head's bytes, not
//! a copy, and weights stacked into one `MatMulNBits` (q/k/v, gate/up) must give what each gives alone.

use gemma_exporter::builder::{model, Dim, GraphBuilder};
use gemma_exporter::layers::{Ctx, Kernels, LinearKind};
use gemma_exporter::onnx::{DataType, ModelProto, TensorProto};
use gemma_exporter::quant::rounding::{dequantize, quantize_block, Rounding};
use gemma_exporter::quant::{QuantConfig, TensorScheme};
use gemma_exporter::weights::WeightWriter;
use gemma_models::testing::{f32_tensor, write_safetensors};
use gemma_models::Checkpoint;
use gemma_runtime::{ort_env, RuntimeOptions};
use ndarray::{Array1, Array2};
use ort::value::Tensor;
use prost::Message;

const NAME: &str = "model.embed_tokens.weight";

/// Deterministic values with a heavy tail, like trained weights.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            0.05 * u + 0.4 * u * u * u * if s & 1 == 0 { 1.0 } else { -1.0 }
        })
        .collect()
}

struct Case {
    bits: u8,
    symmetric: bool,
    rows: usize,
    k: usize,
    block: usize,
}

fn external_range(t: &TensorProto) -> Option<(String, String)> {
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    Some((get("offset")?, get("length")?))
}

fn run(case: &Case) {
    let Case {
        bits,
        symmetric,
        rows,
        k,
        block,
    } = *case;
    let label = format!(
        "{bits}-bit {} K={k} block {block}",
        if symmetric { "sym" } else { "asym" }
    );
    let tmp = tempfile::tempdir().unwrap();
    let w = values(rows * k, (bits as u64) * 31 + k as u64);
    write_safetensors(
        &tmp.path().join("model.safetensors"),
        &[f32_tensor(NAME, &[rows, k], &w)],
    );
    let ckpt = Checkpoint::open(tmp.path()).unwrap();

    let scheme = TensorScheme::new(bits, symmetric, Rounding::Search);
    let mut cfg = QuantConfig::uniform(scheme);
    cfg.block_size = block;
    cfg.accuracy_level = 0;
    cfg.activation_aware = false;
    let out_dir = tmp.path().join("onnx");
    std::fs::create_dir(&out_dir).unwrap();
    let mut writer = WeightWriter::create(
        &out_dir.join("model.onnx_data"),
        indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let mut g = GraphBuilder::new();
    let x = g.input("x", DataType::Float, &["m".into(), Dim::from(k)]);
    let ids = g.input("ids", DataType::Int64, &["t".into()]);
    let mut cx = Ctx {
        g: &mut g,
        w: &mut writer,
        ckpt: &ckpt,
        kernels: Kernels {
            linear: LinearKind::MatMulNBits(cfg),
            ..Kernels::PORTABLE
        },
    };
    let e = cx.embedding(&ids, NAME).unwrap();
    let y = cx.linear(&x, NAME).unwrap();
    // The same weight twice, stacked into one MatMulNBits and split back: both halves must equal `y`.
    let stacked = cx.linears(&x, &[NAME, NAME], "stacked.weight").unwrap();
    g.output(&y, "y", DataType::Float, &["m".into(), Dim::from(rows)]);
    g.output(
        &stacked[0],
        "y0",
        DataType::Float,
        &["m".into(), Dim::from(rows)],
    );
    g.output(
        &stacked[1],
        "y1",
        DataType::Float,
        &["m".into(), Dim::from(rows)],
    );
    g.output(&e, "e", DataType::Float, &["t".into(), Dim::from(k)]);
    writer.finish().unwrap();
    let proto = model(
        g.finish("layout"),
        &[("", gemma_exporter::onnx::OPSET), ("com.microsoft", 1)],
        &[],
    );
    let model_path = out_dir.join("model.onnx");
    std::fs::write(&model_path, proto.encode_to_vec()).unwrap();

    // The lookup's view and the MatMul's weight are one byte range of the data file.
    let decoded = ModelProto::decode(&*std::fs::read(&model_path).unwrap()).unwrap();
    let inits = decoded.graph.unwrap().initializer;
    let b = inits
        .iter()
        .find(|t| t.name.as_deref() == Some(&format!("{NAME}_Q{bits}")))
        .expect("packed weight");
    let rows_view = inits
        .iter()
        .find(|t| t.name.as_deref() == Some(&format!("{NAME}_Q{bits}_rows")))
        .expect("lookup view");
    let blocks = k.div_ceil(block);
    assert_eq!(
        b.dims,
        vec![
            rows as i64,
            blocks as i64,
            (block * bits as usize / 8) as i64
        ]
    );
    assert_eq!(
        rows_view.dims,
        vec![rows as i64, (blocks * block * bits as usize / 8) as i64]
    );
    let range = external_range(b).expect("the packed weight is external");
    assert_eq!(
        external_range(rows_view),
        Some(range),
        "{label}: lookup view is a copy"
    );

    // Independent expectation: re-quantize every block, dequantize.
    let mut w_hat = vec![0f32; rows * k];
    let mut codes = vec![0u8; block];
    for r in 0..rows {
        for j in 0..blocks {
            let span = r * k + j * block..r * k + ((j + 1) * block).min(k);
            let q = quantize_block(
                &w[span.clone()],
                bits,
                symmetric,
                Rounding::Search,
                None,
                &mut codes,
            );
            for (o, &c) in w_hat[span].iter_mut().zip(&codes) {
                *o = dequantize(c, q);
            }
        }
    }
    let err2: f64 = w
        .iter()
        .zip(&w_hat)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let sum2: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
    let rel = (err2 / sum2).sqrt();
    assert!(
        rel < if bits == 4 { 0.12 } else { 0.008 },
        "{label}: relative RMS error {rel}"
    );

    let m = 3;
    let xs = Array2::from_shape_vec((m, k), values(m * k, 7)).unwrap();
    let id_list = [0i64, 7, rows as i64 - 1];
    let mut session =
        ort_env::create_session(&model_path, &RuntimeOptions::cpu().with_threads(Some(2))).unwrap();
    let outputs = session
        .run(ort::inputs![
            "x" => Tensor::from_array(xs.clone()).unwrap(),
            "ids" => Tensor::from_array(Array1::from(id_list.to_vec())).unwrap(),
        ])
        .unwrap();
    let y = outputs["y"].try_extract_array::<f32>().unwrap();
    let e = outputs["e"].try_extract_array::<f32>().unwrap();
    for half in ["y0", "y1"] {
        let h = outputs[half].try_extract_array::<f32>().unwrap();
        assert_eq!(
            h, y,
            "{label}: {half} of the stacked MatMulNBits differs from the single one"
        );
    }
    assert_eq!(y.shape(), &[m, rows]);
    assert_eq!(e.shape(), &[id_list.len(), k]);
    let mut worst = 0f64;
    let mut scale = 0f64;
    for i in 0..m {
        for r in 0..rows {
            let want: f64 = (0..k)
                .map(|c| xs[[i, c]] as f64 * w_hat[r * k + c] as f64)
                .sum();
            worst = worst.max((y[[i, r]] as f64 - want).abs());
            scale = scale.max(want.abs());
        }
    }
    assert!(
        worst <= 1e-5 * scale + 1e-6,
        "{label}: MatMulNBits off by {worst} (outputs up to {scale})"
    );
    for (t, &id) in id_list.iter().enumerate() {
        for c in 0..k {
            let want = w_hat[id as usize * k + c];
            assert_eq!(e[[t, c]], want, "{label}: lookup of row {id}, column {c}");
        }
    }
    eprintln!("{label}: relative RMS error {rel:.2e}, MatMul max |Δ| {worst:.1e}, lookup exact");
}

#[test]
fn four_bit_layouts() {
    for symmetric in [false, true] {
        run(&Case {
            bits: 4,
            symmetric,
            rows: 640,
            k: 64,
            block: 32,
        });
        run(&Case {
            bits: 4,
            symmetric,
            rows: 640,
            k: 48,
            block: 32,
        });
        run(&Case {
            bits: 4,
            symmetric,
            rows: 640,
            k: 80,
            block: 16,
        });
    }
}

#[test]
fn eight_bit_layouts() {
    for symmetric in [false, true] {
        run(&Case {
            bits: 8,
            symmetric,
            rows: 320,
            k: 64,
            block: 32,
        });
        run(&Case {
            bits: 8,
            symmetric,
            rows: 320,
            k: 48,
            block: 32,
        });
    }
}
