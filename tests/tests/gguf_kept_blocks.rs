//! GGUF blocks kept as they are at `--precision int8` (issue 9): a tiny Gemma 3 stored in a GGUF file with Q8_0,
//! Q5_0 and Q4_0 linears (quantized here by ggml's reference quantizers) is exported twice at int8, once keeping
//! the source blocks (the default) and once re-quantizing the dequantized weights (`keep=none`), and the two exports'
//! logits agree within a tight tolerance; the manifest lists exactly the kept tensors.
//!
//! The GGUF is written by the test from the `mqa-f32-hf5` fixture (llama.cpp's names, norms stored as `1 + w`, dims
//! fastest first) and opened through `Checkpoint::open_gguf`; the graph is built by the exporter's own decoder
//! builder, as `gemma-export` does for a checkpoint.
//!
//! With a LoRA adapter (`--lora`), the adapted matrices are read through the merge, so their stored blocks are not
//! the weights any more: a full `gemma-export FILE.gguf --precision int8 --lora DIR` re-quantizes exactly those and
//! still keeps the others (the file also carries the metadata `gemma-export` needs for that).

use gemma_exporter::builder::{model, GraphBuilder};
use gemma_exporter::decoder::{portable::Portable, DecoderInput};
use gemma_exporter::ops::MS_DOMAIN;
use gemma_exporter::weights::WeightWriter;
use gemma_exporter::{
    decoder, manifest, onnx, ExportOptions, GraphKind, LoraOptions, Precision, QuantConfig,
};
use gemma_models::testing::GgufWriter;
use gemma_models::{Checkpoint, ModelConfig};
use gemma_tests::*;
use ndarray::{Array2, Array3};
use prost::Message;
use std::path::Path;

/// GGUF type ids.
const F32: u32 = 0;
const Q4_0: u32 = 2;
const Q5_0: u32 = 6;
const Q8_0: u32 = 8;

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = round(x / d)`.
fn q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16_bytes(d));
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// ggml's `quantize_row_q4_0_ref` (`nmax` 8) and `quantize_row_q5_0_ref` (`nmax` 16): `d = max / −nmax` from the
/// value of largest magnitude, codes `min(2·nmax − 1, trunc(x / d + nmax + 0.5))`.
fn q_small(x: &[f32], nmax: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks_exact(32) {
        let max = b
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -nmax;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let code = |v: f32| ((v * id + nmax + 0.5) as i8).min(2 * nmax as i8 - 1) as u8;
        out.extend(f16_bytes(d));
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let (c0, c1) = (code(b[j]), code(b[j + 16]));
            qs[j] = (c0 & 0x0F) | ((c1 & 0x0F) << 4);
            qh |= u32::from(c0 >> 4) << j | u32::from(c1 >> 4) << (j + 16);
        }
        if nmax == 16.0 {
            out.extend(qh.to_le_bytes());
        }
        out.extend(qs);
    }
    out
}

/// llama.cpp's name of a Gemma 3 tensor, and whether its converter stores it as `1 + w`.
fn gguf_name(hf: &str) -> (String, bool) {
    match hf {
        "model.embed_tokens.weight" => return ("token_embd.weight".into(), false),
        "model.norm.weight" => return ("output_norm.weight".into(), true),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
    let (layer, suffix) = rest.split_once('.').unwrap();
    let part = match suffix {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "post_attention_layernorm.weight" => "post_attention_norm",
        "pre_feedforward_layernorm.weight" => "ffn_norm",
        "post_feedforward_layernorm.weight" => "post_ffw_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        other => panic!("unexpected tensor {other}"),
    };
    (
        format!("blk.{layer}.{part}.weight"),
        suffix.ends_with("norm.weight"),
    )
}

/// The storage type of each tensor in the test GGUF: k_proj Q5_0, up_proj Q4_0, layer 0's v_proj F32 (so the
/// stacked q/k/v of layer 0 mixes kept and re-quantized parts), norms F32, every other matrix Q8_0.
fn gguf_type(hf: &str) -> u32 {
    if hf.ends_with("norm.weight") || hf == "model.layers.0.self_attn.v_proj.weight" {
        F32
    } else if hf.ends_with("k_proj.weight") {
        Q5_0
    } else if hf.ends_with("up_proj.weight") {
        Q4_0
    } else {
        Q8_0
    }
}

/// The `gemma3.*` metadata of `cfg` as llama.cpp's converter writes it, enough for `gemma-export` to rebuild a
/// config.json (attention scale and layer pattern follow llama.cpp's rules, not the fixture's config).
fn gemma3_metadata(cfg: &ModelConfig) -> GgufWriter {
    let t = &cfg.text;
    let mut w = GgufWriter::new();
    w.str("general.architecture", "gemma3")
        .u32("gemma3.block_count", t.num_hidden_layers as u32)
        .u32("gemma3.context_length", t.max_position_embeddings as u32)
        .u32("gemma3.embedding_length", t.hidden_size as u32)
        .u32("gemma3.feed_forward_length", t.intermediate_size as u32)
        .u32("gemma3.attention.head_count", t.num_attention_heads as u32)
        .u32(
            "gemma3.attention.head_count_kv",
            t.num_key_value_heads as u32,
        )
        .u32("gemma3.attention.key_length", t.head_dim as u32)
        .u32("gemma3.attention.value_length", t.head_dim as u32)
        .f32(
            "gemma3.attention.layer_norm_rms_epsilon",
            t.rms_norm_eps as f32,
        )
        .u32(
            "gemma3.attention.sliding_window",
            t.sliding_window.unwrap_or(512) as u32,
        )
        .u32("gemma3.attention.sliding_window_pattern", 3);
    w
}

/// Writes the fixture's weights as a gemma3 GGUF; returns the tensors expected to be kept at int8 (the layers'
/// matrices stored in a kept format; not the embedding, which int8 quantizes in blocks of 64).
fn fixture_as_gguf(fixture: &Path, path: &Path, cfg: &ModelConfig) -> Vec<String> {
    let src = Checkpoint::open(fixture).unwrap();
    let mut gguf = gemma3_metadata(cfg);
    let mut kept = Vec::new();
    for name in src.names() {
        let view = src.tensor(name).unwrap();
        let mut values = view.to_f32_vec();
        let (gname, norm) = gguf_name(name);
        if norm {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        let ty = gguf_type(name);
        let data = match ty {
            F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Q8_0 => q8_0(&values),
            Q5_0 => q_small(&values, 16.0),
            Q4_0 => q_small(&values, 8.0),
            _ => unreachable!(),
        };
        if ty != F32 && name != "model.embed_tokens.weight" {
            kept.push(name.to_string());
        }
        let dims: Vec<u64> = view.shape.iter().rev().map(|&d| d as u64).collect();
        gguf.tensor(&gname, &dims, ty, data);
    }
    gguf.write(path);
    kept.sort();
    kept
}

/// Exports `ckpt` at `precision` into `dir` (portable graph, model.onnx + data + manifest) as `gemma-export` does;
/// returns the manifest's kept tensors.
fn export(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    fixture: &Path,
    precision: Precision,
    dir: &Path,
) -> Vec<String> {
    let mut w = WeightWriter::create(
        &dir.join("model.onnx_data"),
        indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let mut g = GraphBuilder::new();
    let (linear, ids) = (precision.linear_kind(), DecoderInput::InputIds);
    decoder::build(&mut g, &mut w, ckpt, linear, ids, &mut Portable::new(cfg)).unwrap();
    let kept = std::mem::take(&mut w.quant_stats.kept);
    w.finish().unwrap();
    let proto = model(
        g.finish("gemma_decoder"),
        &[("", onnx::OPSET), (MS_DOMAIN, 1)],
        &[],
    );
    std::fs::write(dir.join("model.onnx"), proto.encode_to_vec()).unwrap();
    let quantization = precision.quant().map(|q| q.spec());
    let mut manifest =
        manifest::new(cfg, fixture, precision.kind(), quantization, "model.onnx").unwrap();
    manifest.kept_source_blocks = kept.clone();
    manifest::write(&manifest, dir).unwrap();
    kept
}

fn logits(dir: &Path, ids: &Array2<i64>) -> Array3<f32> {
    prompt_logits(dir, ids)
}

#[test]
fn int8_export_of_a_gguf_keeps_q8_0_q5_0_q4_0_blocks_with_the_same_logits() {
    let fixture = tiny_fixture("mqa-f32-hf5");
    let cfg = ModelConfig::from_file(&fixture.join("config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny-q8_0.gguf");
    let expected_kept = fixture_as_gguf(&fixture, &gguf, &cfg);
    let ckpt = Checkpoint::open_gguf(&gguf).unwrap();
    let ids = Reference::load(&fixture)
        .unwrap()
        .i64_2d("prefill.input_ids")
        .unwrap();

    let keep = Precision::Int8(QuantConfig::int8());
    let requantize = Precision::Int8(QuantConfig::int8().parse_spec("keep=none").unwrap());
    let (kept_dir, requant_dir) = (tmp.path().join("kept"), tmp.path().join("requantized"));
    std::fs::create_dir(&kept_dir).unwrap();
    std::fs::create_dir(&requant_dir).unwrap();
    let mut kept = export(&ckpt, &cfg, &fixture, keep, &kept_dir);
    kept.sort();
    assert_eq!(
        kept, expected_kept,
        "every Q8_0/Q5_0/Q4_0 layer matrix is kept, nothing else"
    );
    assert_eq!(kept.len(), 7 * cfg.text.num_hidden_layers - 1);
    assert!(export(&ckpt, &cfg, &fixture, requantize, &requant_dir).is_empty());

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept_dir.join("gemma-onnx.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["kept_source_blocks"].as_array().unwrap().len(),
        kept.len()
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(requant_dir.join("gemma-onnx.json")).unwrap(),
    )
    .unwrap();
    assert!(manifest.get("kept_source_blocks").is_none());
    assert!(manifest["quantization"]
        .as_str()
        .unwrap()
        .ends_with("keep=none"));

    let (a, b) = (logits(&kept_dir, &ids), logits(&requant_dir, &ids));
    assert!(a.iter().all(|v| v.is_finite()));
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("kept vs re-quantized: max |Δlogit| {diff:.3e} (max |logit| {scale:.2})");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "max |Δlogit| {diff} over max |logit| {scale}"
    );
}

/// `gemma-export FILE.gguf -o OUT --precision int8 [--quant-spec keep=none] [--lora DIR]`; returns the manifest.
fn export_cli_like(
    src: &Path,
    out: &Path,
    precision: Precision,
    lora: Option<&Path>,
) -> serde_json::Value {
    let lora = lora.map(|dir| LoraOptions {
        dir: dir.to_path_buf(),
        scale: 1.0,
    });
    let opts = ExportOptions::new(src, out)
        .precision(precision)
        .graph(GraphKind::Portable)
        .lora(lora);
    gemma_exporter::export(&opts).unwrap_or_else(|e| panic!("exporting {}: {e}", src.display()));
    serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap()).unwrap()
}

fn kept_of(manifest: &serde_json::Value) -> Vec<String> {
    let mut kept: Vec<String> = manifest
        .get("kept_source_blocks")
        .map(|k| serde_json::from_value(k.clone()).unwrap())
        .unwrap_or_default();
    kept.sort();
    kept
}

/// `--precision int8 --lora`: the adapter of `lora/layers-to-transform` (q_proj and up_proj of layers 1 and 4, i.e.
/// two Q8_0 and two Q4_0 matrices of this GGUF) is merged as the weights are read, so those four are re-quantized
/// from the merged values and the manifest does not list them; every other Q8_0/Q5_0/Q4_0 matrix is still kept. The
/// merged export agrees with a `keep=none` one with the same adapter (and differs from the plain export), so the
/// adapted blocks really are the merged weights.
#[test]
fn int8_export_of_a_gguf_with_lora_requantizes_the_adapted_tensors() {
    let fixture = tiny_fixture("mqa-f32-hf5");
    let cfg = ModelConfig::from_file(&fixture.join("config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny-q8_0.gguf");
    let all_kept = fixture_as_gguf(&fixture, &gguf, &cfg);
    let adapter = fixtures_dir().join("lora/layers-to-transform");
    let adapted = [
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.4.mlp.up_proj.weight",
        "model.layers.4.self_attn.q_proj.weight",
    ];
    assert!(adapted.iter().all(|a| all_kept.iter().any(|k| k == a)));
    let keep = || Precision::Int8(QuantConfig::int8());
    let requantize = || Precision::Int8(QuantConfig::int8().parse_spec("keep=none").unwrap());
    let dir = |n: &str| tmp.path().join(n);

    let plain = export_cli_like(&gguf, &dir("plain"), keep(), None);
    assert_eq!(
        kept_of(&plain),
        all_kept,
        "without an adapter every block is kept"
    );

    let merged = export_cli_like(&gguf, &dir("merged"), keep(), Some(&adapter));
    assert_eq!(merged["lora"]["merged_modules"], adapted.len());
    let expected: Vec<String> = all_kept
        .iter()
        .filter(|k| !adapted.contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        kept_of(&merged),
        expected,
        "the adapted tensors are re-quantized, the others kept"
    );

    let merged_requant = export_cli_like(&gguf, &dir("merged-none"), requantize(), Some(&adapter));
    assert!(kept_of(&merged_requant).is_empty());

    let ids = Reference::load(&fixture)
        .unwrap()
        .i64_2d("prefill.input_ids")
        .unwrap();
    let (a, b) = (
        logits(&dir("merged"), &ids),
        logits(&dir("merged-none"), &ids),
    );
    let c = logits(&dir("plain"), &ids);
    let max_diff = |x: &Array3<f32>, y: &Array3<f32>| {
        x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()))
    };
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (same, lora_effect) = (max_diff(&a, &b), max_diff(&a, &c));
    eprintln!(
        "int8 + LoRA, kept vs re-quantized: max |Δlogit| {same:.3e}; merged vs plain {lora_effect:.3} (max |logit| {scale:.2})"
    );
    assert!(a.iter().all(|v| v.is_finite()));
    assert!(
        same <= 1e-4 * scale.max(1.0),
        "kept vs re-quantized with the adapter: max |Δlogit| {same} over max |logit| {scale}"
    );
    assert!(
        lora_effect > 1e-2,
        "the adapter must change the int8 export: {lora_effect}"
    );
}
