//! The real Gemma 3 270M as llama.cpp ships it (the public Q4_K_M GGUF, `$GEMMA3_270M_GGUF`), exported straight
//! from the GGUF file: config, weights (Q4_K, Q5_0, Q6_K, Q8_0, F32 dequantized, norms `1 + w` undone) and
//! generation config all come from the file.
//!
//! - The config built from the metadata resolves to the same [`TextConfig`](gemma_models::TextConfig) and token ids
//!   as the Hugging Face folder's config.json (`$GEMMA3_270M_DIR`, dequantized from the same GGUF).
//! - `$GEMMA3_270M_DIR` holds the GGUF's weights dequantized and then rounded to bf16, and transformers' references
//!   were computed on that folder. Exported with `--precision bf16` (the same rounding of the same dequantized
//!   values), the GGUF gives transformers' 32 greedy ids for every prompt of `tests/fixtures/real/gemma3-270m.json`
//!   (decoding from transformers' prompt ids), and a perplexity on `perplexity.txt` within 0.1% of the folder's
//!   export (same tokens: the folder's tokenizer, since the GGUF export's tokenizer comes from another branch).
//! - Exported fp32 (the GGUF's exact weights), the perplexity is within 0.5% of the folder's: the bf16 rounding
//!   alone moves it by 0.36% (measured; the fp32 GGUF export equals an export of the same weights dequantized to
//!   f32 by gguf-py, bit for bit in perplexity).

use gemma_exporter::{GraphKind, Precision};
use gemma_models::{gguf, ModelConfig};
use gemma_runtime::{perplexity, Decoder, RuntimeOptions, Tokenizer};
use gemma_tests::*;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `$GEMMA3_270M_GGUF` (scripts/test sets it).
fn gguf_path() -> PathBuf {
    let path = std::env::var_os("GEMMA3_270M_GGUF")
        .map(PathBuf::from)
        .expect(
        "GEMMA3_270M_GGUF is not set: point it at gemma-3-270m-q4_k_m.gguf (scripts/test sets it)",
    );
    assert!(
        path.is_file(),
        "GEMMA3_270M_GGUF={} is not a file",
        path.display()
    );
    path
}

/// One export of the GGUF (cpu graph, fp32) shared by the tests of this file.
fn exported() -> &'static PathBuf {
    static EXPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &EXPORT
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let out = export_graph_to_temp(&gguf_path(), GraphKind::Cpu)
                .expect("export of the real Gemma 3 270M GGUF");
            eprintln!(
                "exported the GGUF in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            out
        })
        .1
}

/// The GGUF exported with bf16 weights (cpu graph).
fn exported_bf16() -> &'static PathBuf {
    static EXPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &EXPORT
        .get_or_init(|| {
            export_precision_to_temp(&gguf_path(), Precision::Bf16, GraphKind::Cpu)
                .expect("bf16 export of the real Gemma 3 270M GGUF")
        })
        .1
}

fn runtime() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

#[test]
fn config_from_metadata_equals_the_folders_config() {
    let model = gguf::open(&gguf_path()).unwrap();
    let dir = gemma3_270m_dir().unwrap();
    let folder = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(model.config.text, folder.text);
    assert_eq!(model.config.architecture, folder.architecture);
    assert_eq!(model.config.model_type, folder.model_type);
    assert_eq!(
        (model.config.bos_token_id, model.config.pad_token_id),
        (folder.bos_token_id, folder.pad_token_id)
    );
    assert_eq!(model.config.eos_token_ids, folder.eos_token_ids);
    assert_eq!(model.vocab.tokens.len(), 262_144);
    assert_eq!(model.vocab.tokens[106], "<end_of_turn>");
}

#[test]
fn export_writes_configs_and_records_the_source() {
    let out = exported();
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gen["eos_token_id"], serde_json::json!([1, 106]));
    assert_eq!(gen["bos_token_id"], 2);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["source_format"], "gguf");
    assert_eq!(manifest["eos_token_ids"], serde_json::json!([1, 106]));
    ModelConfig::from_file(&out.join("config.json")).unwrap();
}

#[test]
fn greedy_ids_match_transformers() {
    let reference = real_reference();
    let mut decoder = Decoder::open(exported_bf16(), &runtime()).unwrap();
    for p in &reference.prompts {
        let mut cache = decoder.new_cache(1).unwrap();
        let mut logits = decoder.forward_tokens(&p.input_ids, &mut cache).unwrap();
        let mut got = Vec::new();
        while got.len() < p.generated_ids.len() {
            let next = argmax(&logits);
            got.push(next);
            logits = decoder.forward_tokens(&[next], &mut cache).unwrap();
        }
        assert_eq!(got, p.generated_ids, "greedy continuation of {:?}", p.text);
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn perplexity_matches_the_folder_export() {
    let reference = real_reference().perplexity;
    let text =
        std::fs::read_to_string(fixtures_dir().join("real").join(&reference.text_file)).unwrap();
    let dir = gemma3_270m_dir().unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let (_tmp, folder_export) = export_graph_to_temp(&dir, GraphKind::Cpu).unwrap();
    let run = |export: &PathBuf| {
        let mut decoder = Decoder::open(export, &runtime()).unwrap();
        perplexity(&mut decoder, &tokenizer, &text, reference.context).unwrap()
    };
    let from_folder = run(&folder_export);
    for (export, precision, tolerance) in
        [(exported_bf16(), "bf16", 1e-3), (exported(), "fp32", 5e-3)]
    {
        let from_gguf = run(export);
        assert_eq!(from_gguf.tokens, reference.tokens);
        assert_eq!(from_gguf.predicted, from_folder.predicted);
        let rel = (from_gguf.perplexity / from_folder.perplexity - 1.0).abs();
        eprintln!(
            "perplexity from the GGUF at {precision} {:.4}, from the folder {:.4} (transformers {:.4}): relative \
             difference {rel:e}",
            from_gguf.perplexity, from_folder.perplexity, reference.perplexity
        );
        assert!(rel < tolerance, "{precision}: relative difference {rel}");
    }
}
