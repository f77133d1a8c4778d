//! GGUF sources on tiny random models (`tests/fixtures/gguf/*`, made by `fixtures/make_gguf_fixtures.py` from the
//! tiny Hugging Face fixtures the way llama.cpp's converter writes Gemma 1, 2 and 3): exported straight from the
//! `.gguf` file, run through ONNX Runtime with the runtime's decoder and KV cache, and compared with transformers
//! fp32 eager logits (max |Δ| ≤ 1e-4), prefill then one-token decode steps past the sliding window.
//!
//! Also: the config the metadata gives, the generated files and warnings of an export, and the refusals (truncated
//! file, bad magic, unsupported architecture, unsupported quant type, unknown tensor), each naming what is wrong.

use gemma_exporter::{export, ExportError, ExportOptions, GraphKind};
use gemma_models::gguf::{self, GgufError};
use gemma_models::{Family, LayerType};
use gemma_tests::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join("gguf").join(name)
}

fn gguf_file(name: &str) -> PathBuf {
    fixture(name).join("model.gguf")
}

#[test]
fn gemma1_prefill_and_decode() {
    prefill_then_decode_from(&gguf_file("gemma1"), &fixture("gemma1"), "gguf gemma1", 7);
}

#[test]
fn gemma2_prefill_and_decode() {
    prefill_then_decode_from(&gguf_file("gemma2"), &fixture("gemma2"), "gguf gemma2", 7);
}

#[test]
fn gemma2_whole_prompt_in_one_prefill() {
    prefill_then_decode_from(&gguf_file("gemma2"), &fixture("gemma2"), "gguf gemma2", 20);
}

#[test]
fn gemma3_prefill_and_decode() {
    prefill_then_decode_from(&gguf_file("gemma3"), &fixture("gemma3"), "gguf gemma3", 7);
}

#[test]
fn configs_from_metadata() {
    let g1 = gguf::open(&gguf_file("gemma1")).unwrap().config;
    assert_eq!(g1.text.family, Family::Gemma);
    assert_eq!(g1.text.layer_types, vec![LayerType::Full; 4]);
    assert_eq!(g1.text.rope_full.theta, 10_000.0);

    let g2 = gguf::open(&gguf_file("gemma2")).unwrap().config.text;
    assert_eq!(g2.family, Family::Gemma2);
    assert_eq!(
        (g2.attn_logit_softcapping, g2.final_logit_softcapping),
        (Some(2.0), Some(3.0))
    );
    assert_eq!(g2.sliding_window, Some(5));
    assert_eq!(g2.query_pre_attn_scalar, 16.0, "llama.cpp's rule: head_dim");
    assert_eq!(g2.layer_types[..2], [LayerType::Sliding, LayerType::Full]);

    let m3 = gguf::open(&gguf_file("gemma3")).unwrap();
    let g3 = m3.config.text;
    assert_eq!(g3.family, Family::Gemma3);
    assert!(
        !g3.tie_word_embeddings,
        "output.weight makes the head untied"
    );
    assert!(m3.checkpoint.contains("lm_head.weight"));
    let (s, f) = (LayerType::Sliding, LayerType::Full);
    assert_eq!(g3.layer_types, vec![s, s, f, s, s, f]);
    assert_eq!(g3.rope_full.linear_factor, Some(8.0));
    assert_eq!(
        (g3.rope_sliding.theta, g3.rope_sliding.linear_factor),
        (10_000.0, None)
    );
}

fn opts(src: &Path, out: &Path) -> ExportOptions {
    ExportOptions::new(src, out).graph(GraphKind::Portable)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn export_writes_configs_template_and_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g2");
    let report = export(&opts(&gguf_file("gemma2"), &out)).unwrap();
    let gen = read_json(&out.join("generation_config.json"));
    assert_eq!(gen["eos_token_id"], serde_json::json!([1, 106]));
    assert_eq!(
        (gen["bos_token_id"].as_u64(), gen["pad_token_id"].as_u64()),
        (Some(2), Some(0))
    );
    let manifest = read_json(&out.join("gemma-onnx.json"));
    assert_eq!(manifest["source_format"], "gguf");
    assert_eq!(manifest["eos_token_ids"], serde_json::json!([1, 106]));
    assert_eq!(read_json(&out.join("config.json"))["model_type"], "gemma2");
    let template = std::fs::read_to_string(out.join("chat_template.jinja")).unwrap();
    assert!(template.contains("<start_of_turn>"));
    // Either the tokenizer was rebuilt, or one warning says why not.
    let tokenizer_warnings = report
        .warnings
        .iter()
        .filter(|w| w.contains("tokenizer"))
        .count();
    assert_eq!(
        out.join("tokenizer.json").is_file(),
        tokenizer_warnings == 0,
        "{:?}",
        report.warnings
    );

    // No tokenizer metadata: no tokenizer files, one warning.
    let out = tmp.path().join("g1");
    let report = export(&opts(&gguf_file("gemma1"), &out)).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("no tokenizer metadata"),
        "{:?}",
        report.warnings
    );
    assert!(!out.join("tokenizer.json").exists());
    assert_eq!(
        read_json(&out.join("generation_config.json"))["eos_token_id"],
        1
    );

    // A folder export records its format too.
    let out = tmp.path().join("folder");
    export(&opts(&tiny_fixture("gemma1-mqa-bf16-hf4"), &out)).unwrap();
    assert_eq!(
        read_json(&out.join("gemma-onnx.json"))["source_format"],
        "safetensors"
    );
}

/// Exports `bytes` written as `name` and returns the error; checks that no output folder was left behind.
fn refused(name: &str, bytes: &[u8]) -> (GgufError, String) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join(name);
    std::fs::write(&src, bytes).unwrap();
    let out = tmp.path().join("out");
    let err = export(&opts(&src, &out)).unwrap_err();
    assert!(!out.exists(), "a refused export must leave no folder");
    let text = err.to_string();
    assert!(text.contains(name), "the message names the file: {text}");
    match err {
        ExportError::Gguf(e) => (e, text),
        e => panic!("expected a GGUF error, got {e}"),
    }
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(from)));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn broken_files_are_refused_by_name() {
    let good = std::fs::read(gguf_file("gemma2")).unwrap();

    let (e, text) = refused("cut.gguf", &good[..good.len() - 100]);
    assert!(matches!(e, GgufError::Truncated { .. }), "{text}");
    assert!(
        text.contains("truncated")
            && text.contains("tensor")
            && text.contains(&(good.len() - 100).to_string()),
        "{text}"
    );

    let (e, text) = refused("magic.gguf", &patch(&good, b"GGUF", b"GGML"));
    assert!(matches!(e, GgufError::BadMagic { .. }), "{text}");

    let (e, text) = refused(
        "arch.gguf",
        &patch(
            &good,
            b"\x06\0\0\0\0\0\0\0gemma2",
            b"\x06\0\0\0\0\0\0\0llama2",
        ),
    );
    assert!(matches!(e, GgufError::UnsupportedArch { .. }), "{text}");
    assert!(text.contains("\"llama2\""), "{text}");

    // blk.0.attn_q.weight's info: name, n_dims = 2, two dims, then the type: make it IQ2_XS (17).
    let name = b"blk.0.attn_q.weight";
    let at = good.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let mut bad = good.clone();
    bad[at + 4 + 16..at + 4 + 16 + 4].copy_from_slice(&17u32.to_le_bytes());
    let (e, text) = refused("quant.gguf", &bad);
    assert!(
        matches!(e, GgufError::UnsupportedQuant { id: 17, .. }),
        "{text}"
    );
    assert!(
        text.contains("blk.0.attn_q.weight is IQ2_XS (ggml type 17)"),
        "{text}"
    );

    let (e, text) = refused(
        "name.gguf",
        &patch(&good, b"blk.1.ffn_up.weight", b"blk.1.ffn_xx.weight"),
    );
    assert!(matches!(e, GgufError::UnknownTensor { .. }), "{text}");
    assert!(text.contains("blk.1.ffn_xx.weight"), "{text}");
}
