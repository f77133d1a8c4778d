//! GGUF container, config and checkpoint tests on small files written here byte by byte.

use std::path::{Path, PathBuf};

use super::container::{self, Array, Value};
use super::*;
use crate::config::{Family, LayerType};
use crate::testing::GgufWriter as Writer;

/// A tiny valid gemma3 model: hidden 8, 2 layers, 2 heads of 4, 1 KV head, ffn 16, vocab 4, norms stored as 1 + w.
pub(crate) fn tiny_gemma3() -> Writer {
    let mut w = Writer::new();
    w.str("general.architecture", "gemma3")
        .u32("gemma3.context_length", 64)
        .u32("gemma3.embedding_length", 8)
        .u32("gemma3.block_count", 2)
        .u32("gemma3.feed_forward_length", 16)
        .u32("gemma3.attention.head_count", 2)
        .u32("gemma3.attention.head_count_kv", 1)
        .u32("gemma3.attention.key_length", 4)
        .u32("gemma3.attention.value_length", 4)
        .f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        .f32("gemma3.rope.freq_base", 1e6)
        .u32("gemma3.attention.sliding_window", 3)
        .strings(
            "tokenizer.ggml.tokens",
            &["<pad>", "<eos>", "<bos>", "<end_of_turn>"],
        )
        .u32("tokenizer.ggml.eos_token_id", 1);
    let ramp = |n: usize| (0..n).map(|i| i as f32 * 0.01).collect::<Vec<_>>();
    w.f32_tensor("token_embd.weight", &[8, 4], &ramp(32));
    w.f32_tensor("output_norm.weight", &[8], &[1.5; 8]);
    for l in 0..2 {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        w.f32_tensor(&t("attn_q"), &[8, 8], &ramp(64))
            .f32_tensor(&t("attn_k"), &[8, 4], &ramp(32))
            .f32_tensor(&t("attn_v"), &[8, 4], &ramp(32))
            .f32_tensor(&t("attn_output"), &[8, 8], &ramp(64))
            .f32_tensor(&t("ffn_gate"), &[8, 16], &ramp(128))
            .f32_tensor(&t("ffn_up"), &[8, 16], &ramp(128))
            .f32_tensor(&t("ffn_down"), &[16, 8], &ramp(128));
        for n in [
            "attn_norm",
            "post_attention_norm",
            "ffn_norm",
            "post_ffw_norm",
        ] {
            w.f32_tensor(&t(n), &[8], &[1.25; 8]);
        }
        w.f32_tensor(&t("attn_q_norm"), &[4], &[0.5; 4]);
        w.f32_tensor(&t("attn_k_norm"), &[4], &[0.5; 4]);
    }
    w
}

fn write_tmp(w: &Writer) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    w.write(&path);
    (dir, path)
}

#[test]
fn metadata_of_every_value_type_round_trips() {
    let mut w = Writer::new();
    w.raw("u8", 0, vec![7])
        .raw("i8", 1, vec![0xff])
        .raw("u16", 2, 513u16.to_le_bytes().to_vec())
        .raw("i16", 3, (-2i16).to_le_bytes().to_vec())
        .u32("u32", 70000)
        .raw("i32", 5, (-3i32).to_le_bytes().to_vec())
        .f32("f32", 0.5)
        .raw("bool", 7, vec![1])
        .str("string", "héllo")
        .raw("u64", 10, (1u64 << 40).to_le_bytes().to_vec())
        .raw("i64", 11, (-4i64).to_le_bytes().to_vec())
        .raw("f64", 12, 0.25f64.to_le_bytes().to_vec())
        .strings("strings", &["a", "", "ccc"]);
    // An array of two arrays of i32.
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend(2u64.to_le_bytes());
    for vals in [[1i32, 2], [3, 4]] {
        nested.extend(5u32.to_le_bytes());
        nested.extend(2u64.to_le_bytes());
        for v in vals {
            nested.extend(v.to_le_bytes());
        }
    }
    w.raw("nested", 9, nested);
    let bytes = w.bytes();
    let p = container::parse(Path::new("x.gguf"), &bytes, true).unwrap();
    let m = &p.metadata;
    assert_eq!(p.version, 3);
    assert_eq!(m["u8"], Value::U8(7));
    assert_eq!(m["i8"], Value::I8(-1));
    assert_eq!(m["u16"], Value::U16(513));
    assert_eq!(m["i16"], Value::I16(-2));
    assert_eq!(m["u32"], Value::U32(70000));
    assert_eq!(m["i32"], Value::I32(-3));
    assert_eq!(m["f32"], Value::F32(0.5));
    assert_eq!(m["bool"], Value::Bool(true));
    assert_eq!(m["string"], Value::String("héllo".into()));
    assert_eq!(m["u64"], Value::U64(1 << 40));
    assert_eq!(m["i64"], Value::I64(-4));
    assert_eq!(m["f64"], Value::F64(0.25));
    assert_eq!(
        m["strings"],
        Value::Array(Array::String(vec!["a".into(), "".into(), "ccc".into()]))
    );
    assert_eq!(
        m["nested"],
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3, 4])
        ]))
    );
    // f32 metadata keeps its shortest decimal form.
    assert_eq!(Value::F32(1e-6).as_f64(), Some(1e-6));
}

fn parse_err(bytes: &[u8]) -> GgufError {
    container::parse(Path::new("bad.gguf"), bytes, true).unwrap_err()
}

#[test]
fn every_truncation_of_a_valid_file_is_refused_as_truncated() {
    let bytes = tiny_gemma3().bytes();
    let parsed = container::parse(Path::new("ok.gguf"), &bytes, true).unwrap();
    let data_start = parsed.tensors.iter().map(|t| t.begin).min().unwrap();
    // Every cut inside the header (infos included), and a few inside the data.
    for cut in (0..data_start).chain([data_start + 3, bytes.len() - 100, bytes.len() - 1]) {
        match parse_err(&bytes[..cut]) {
            GgufError::Truncated {
                expected, actual, ..
            } => {
                assert_eq!(actual, cut as u64);
                assert!(expected > actual, "cut {cut}: expected {expected}");
            }
            e => panic!("cut at {cut}: {e}"),
        }
    }
    let e = parse_err(&bytes[..bytes.len() - 1]).to_string();
    assert!(
        e.contains("bad.gguf") && e.contains("truncated") && e.contains("tensor blk.1"),
        "{e}"
    );
}

#[test]
fn bad_magic_and_versions_are_refused() {
    let mut bytes = tiny_gemma3().bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let e = parse_err(&bytes);
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
    for version in [1u32, 4, 0x0300_0000] {
        let mut w = tiny_gemma3();
        w.version = version;
        let e = parse_err(&w.bytes());
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version: v, .. } if v == version),
            "{e}"
        );
    }
    let mut w = tiny_gemma3();
    w.version = 2;
    assert!(container::parse(Path::new("v2.gguf"), &w.bytes(), true).is_ok());
}

#[test]
fn huge_counts_and_lengths_are_refused_before_allocating() {
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    // 2^40 tensors
    let mut b = header.clone();
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(0u64.to_le_bytes());
    assert!(matches!(parse_err(&b), GgufError::Invalid { .. }));
    // 1000 metadata entries announced in a 24-byte file
    let mut b = header.clone();
    b.extend(0u64.to_le_bytes());
    b.extend(1000u64.to_le_bytes());
    assert!(matches!(parse_err(&b), GgufError::Truncated { .. }));
    // a key of 2^62 bytes
    let mut b = header.clone();
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((1u64 << 62).to_le_bytes());
    b.extend([0u8; 16]);
    assert!(matches!(parse_err(&b), GgufError::Invalid { .. }));
    // an array of 2^60 u64 elements
    let mut w = Writer::new();
    let mut arr = 10u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 60).to_le_bytes());
    w.raw("big", 9, arr);
    let e = parse_err(&w.bytes());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("big"), "{e}");
}

#[test]
fn unsupported_arch_and_quant_types_are_named() {
    let mut w = tiny_gemma3();
    w.kv[0] = (
        "general.architecture".into(),
        8,
        crate::testing::gguf_str("llama"),
    );
    let (_d, path) = write_tmp(&w);
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("unsupported architecture \"llama\""), "{e}");
    assert!(e.contains("gemma, gemma2, gemma3"), "{e}");

    let mut w = tiny_gemma3();
    w.tensors[2].2 = 17; // IQ2_XS
    let (_d, path) = write_tmp(&w);
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("tensor blk.0.attn_q.weight is IQ2_XS (ggml type 17)") && e.contains("Q6_K"),
        "{e}"
    );
}

#[test]
fn unknown_tensors_are_refused_by_name() {
    let mut w = tiny_gemma3();
    w.f32_tensor("rope_freqs.weight", &[2], &[1.0, 1.0]);
    let (_d, path) = write_tmp(&w);
    let e = Checkpoint::open_gguf(&path).unwrap_err().to_string();
    assert!(
        e.contains("unknown tensor rope_freqs.weight for architecture gemma3"),
        "{e}"
    );
}

#[test]
fn checkpoint_renames_reverses_shapes_and_undoes_the_norm_offset() {
    let (_d, path) = write_tmp(&tiny_gemma3());
    let ckpt = Checkpoint::open_gguf(&path).unwrap();
    let q = ckpt
        .tensor_with_shape("model.layers.0.self_attn.q_proj.weight", &[8, 8])
        .unwrap();
    assert_eq!(q.to_f32_vec()[9], 9.0 * 0.01f32);
    ckpt.tensor_with_shape("model.layers.1.mlp.down_proj.weight", &[8, 16])
        .unwrap();
    ckpt.tensor_with_shape("model.embed_tokens.weight", &[4, 8])
        .unwrap();
    let n = ckpt
        .tensor("model.layers.1.pre_feedforward_layernorm.weight")
        .unwrap();
    assert_eq!(n.to_f32_vec(), vec![0.25; 8]);
    let n = ckpt
        .tensor("model.layers.0.self_attn.k_norm.weight")
        .unwrap();
    assert_eq!(n.to_f32_vec(), vec![-0.5; 4]);
    assert_eq!(
        ckpt.tensor("model.norm.weight").unwrap().to_f32_vec(),
        vec![0.5; 8]
    );
    assert!(!ckpt.contains("lm_head.weight"));
    assert_eq!(ckpt.names().len(), 2 + 2 * 13);
}

#[test]
fn config_from_metadata_resolves_like_transformers() {
    let mut w = tiny_gemma3();
    w.u32("gemma3.attention.sliding_window_pattern", 2)
        .str("gemma3.rope.scaling.type", "linear")
        .f32("gemma3.rope.scaling.factor", 8.0);
    w.f32_tensor("output.weight", &[8, 4], &[0.0; 32]);
    let (_d, path) = write_tmp(&w);
    let model = open(&path).unwrap();
    let t = &model.config.text;
    assert_eq!(t.family, Family::Gemma3);
    assert_eq!(model.config.architecture, "Gemma3ForCausalLM");
    assert_eq!(
        (t.vocab_size, t.hidden_size, t.intermediate_size),
        (4, 8, 16)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (2, 1, 4)
    );
    assert_eq!(t.rms_norm_eps, 1e-6);
    assert_eq!(t.query_pre_attn_scalar, 4.0);
    assert_eq!(t.sliding_window, Some(3));
    assert_eq!(t.layer_types, vec![LayerType::Sliding, LayerType::Full]);
    assert_eq!(
        (t.rope_full.theta, t.rope_full.linear_factor),
        (1e6, Some(8.0))
    );
    assert_eq!(
        (t.rope_sliding.theta, t.rope_sliding.linear_factor),
        (1e4, None)
    );
    assert!(!t.tie_word_embeddings);
    assert_eq!(model.config.eos_token_ids, vec![1]);
    assert_eq!(model.vocab.tokens.len(), 4);
    assert!(model.checkpoint.contains("lm_head.weight"));

    // Per-layer bools; and a file without a window has only global layers.
    let mut w = tiny_gemma3();
    w.raw("gemma3.attention.sliding_window_pattern", 9, {
        let mut b = 7u32.to_le_bytes().to_vec();
        b.extend(2u64.to_le_bytes());
        b.extend([0u8, 1]);
        b
    });
    let (_d, path) = write_tmp(&w);
    let t = open(&path).unwrap().config.text;
    assert_eq!(t.layer_types, vec![LayerType::Full, LayerType::Sliding]);
    let mut w = tiny_gemma3();
    w.kv.retain(|(k, ..)| k != "gemma3.attention.sliding_window");
    let (_d, path) = write_tmp(&w);
    let t = open(&path).unwrap().config.text;
    assert_eq!(t.layer_types, vec![LayerType::Full; 2]);
}

#[test]
fn missing_and_mistyped_metadata_is_named() {
    let mut w = tiny_gemma3();
    w.kv.retain(|(k, ..)| k != "gemma3.embedding_length");
    let (_d, path) = write_tmp(&w);
    let e = open(&path).unwrap_err().to_string();
    assert!(
        e.contains("metadata key gemma3.embedding_length: missing"),
        "{e}"
    );

    let mut w = tiny_gemma3();
    w.str("gemma3.rope.scaling.type", "yarn");
    let (_d, path) = write_tmp(&w);
    let e = open(&path).unwrap_err().to_string();
    assert!(
        e.contains("gemma3.rope.scaling.type") && e.contains("yarn"),
        "{e}"
    );

    let mut w = tiny_gemma3();
    w.str("tokenizer.ggml.scores", "no");
    let (_d, path) = write_tmp(&w);
    let e = read_vocab(&path).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.scores"), "{e}");
}

#[test]
fn read_vocab_reads_only_the_metadata() {
    let bytes = tiny_gemma3().bytes();
    // Cut off in the tensor data: the vocabulary is still readable.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
    let v = read_vocab(&path).unwrap();
    assert_eq!(v.tokens[3], "<end_of_turn>");
    assert_eq!(v.eos_id, Some(1));
    assert!(GgufFile::open(&path).is_err());
    assert!(has_magic(&path));
}

#[test]
fn generation_config_adds_end_of_turn_and_eot_to_eos() {
    let (_d, path) = write_tmp(&tiny_gemma3());
    let vocab = read_vocab(&path).unwrap();
    let gen = generation_config_json(&vocab);
    assert_eq!(gen["eos_token_id"], serde_json::json!([1, 3]));
    assert_eq!(
        (gen["bos_token_id"].as_u64(), gen["pad_token_id"].as_u64()),
        (Some(2), Some(0))
    );
    let vocab = GgufVocab {
        eos_id: Some(7),
        eot_id: Some(9),
        ..Default::default()
    };
    assert_eq!(
        generation_config_json(&vocab)["eos_token_id"],
        serde_json::json!([7, 9])
    );
    assert_eq!(
        generation_config_json(&GgufVocab::default())["eos_token_id"],
        1
    );
}
