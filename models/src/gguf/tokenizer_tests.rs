//! The tokenizer rebuild on a small synthetic SentencePiece vocabulary, against what transformers' own
//! `GemmaConverter` made of the same vocabulary (`tests/fixtures/gguf/synthetic_vocab.json`, written by
//! `tests/fixtures/gguf/make_tokenizer_reference.py synthetic`), and its refusals.

use std::path::Path;

use serde_json::Value;

use super::super::tokenizer_files::tokenizer_files;
use super::super::vocab::{token_type, GgufVocab, VocabError};

fn fixture() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf/synthetic_vocab.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("synthetic_vocab.json is JSON")
}

/// The fixture's `gguf` section: the vocabulary as llama.cpp's converter stores it.
fn synthetic_vocab(fixture: &Value) -> GgufVocab {
    let g = &fixture["gguf"];
    let id = |k: &str| g[k].as_u64().map(|n| n as u32);
    GgufVocab {
        model: g["model"].as_str().unwrap().to_string(),
        tokens: serde_json::from_value(g["tokens"].clone()).unwrap(),
        scores: serde_json::from_value(g["scores"].clone()).unwrap(),
        token_types: serde_json::from_value(g["token_types"].clone()).unwrap(),
        bos_id: id("bos_id"),
        eos_id: id("eos_id"),
        unk_id: id("unk_id"),
        pad_id: id("pad_id"),
        add_bos: Some(true),
        add_eos: Some(false),
        add_space_prefix: Some(false),
        ..GgufVocab::default()
    }
}

fn unsupported(vocab: &GgufVocab) -> String {
    match tokenizer_files(vocab) {
        Err(VocabError::Unsupported(m)) => m,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn invalid(vocab: &GgufVocab) -> String {
    match tokenizer_files(vocab) {
        Err(e @ VocabError::Invalid(_)) => e.to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn synthetic_vocab_merges_vocab_and_added_tokens_match_transformers() {
    let fixture = fixture();
    let files = tokenizer_files(&synthetic_vocab(&fixture)).unwrap();
    let ours: Value = serde_json::from_str(&files.tokenizer_json).unwrap();
    let theirs = &fixture["transformers"];
    assert_eq!(ours["model"]["merges"], theirs["merges"]);
    assert_eq!(ours["model"]["vocab"], theirs["vocab"]);
    assert_eq!(ours["added_tokens"], theirs["added_tokens"]);
    // The merges really are the point: the fixture has a few dozen, including whitespace runs and multi-byte pieces.
    assert!(theirs["merges"].as_array().unwrap().len() > 30);
}

#[test]
fn synthetic_vocab_encodes_like_transformers() {
    let fixture = fixture();
    let files = tokenizer_files(&synthetic_vocab(&fixture)).unwrap();
    let tok: tokenizers::Tokenizer = files.tokenizer_json.parse().unwrap();
    let cases = fixture["transformers"]["encoded"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids_plain"].clone()).unwrap();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "ids of {text:?}");
        // With special tokens the post-processor puts <bos> (id 2) first.
        let with_bos = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(with_bos[0], 2, "{text:?}");
        assert_eq!(&with_bos[1..], &want[..], "{text:?}");
        // The decoder writes "▁" as a space, so only texts without a literal "▁" come back unchanged.
        if !text.contains('\u{2581}') {
            assert_eq!(
                tok.decode(&want, false).unwrap(),
                text,
                "round trip of {text:?}"
            );
        }
    }
}

#[test]
fn tokenizer_config_names_special_tokens_and_carries_the_chat_template() {
    let fixture = fixture();
    let mut vocab = synthetic_vocab(&fixture);
    vocab.chat_template = Some("{{ bos_token }}{{ messages[0]['content'] }}".into());
    let files = tokenizer_files(&vocab).unwrap();
    let config: Value = serde_json::from_str(&files.tokenizer_config_json).unwrap();
    assert_eq!(config["bos_token"], "<bos>");
    assert_eq!(config["eos_token"], "<eos>");
    assert_eq!(config["pad_token"], "<pad>");
    assert_eq!(config["unk_token"], "<unk>");
    assert_eq!(config["add_bos_token"], true);
    assert_eq!(config["add_eos_token"], false);
    assert_eq!(
        config["chat_template"],
        "{{ bos_token }}{{ messages[0]['content'] }}"
    );
    // Not a Gemma 3 vocabulary (no image delimiters): no image tokens.
    assert!(config.get("image_token").is_none());
}

#[test]
fn add_eos_and_add_bos_shape_the_post_processor() {
    let fixture = fixture();
    let mut vocab = synthetic_vocab(&fixture);
    vocab.add_bos = Some(false);
    vocab.add_eos = Some(true);
    let files = tokenizer_files(&vocab).unwrap();
    let tok: tokenizers::Tokenizer = files.tokenizer_json.parse().unwrap();
    let plain = tok.encode("the cat", false).unwrap().get_ids().to_vec();
    let special = tok.encode("the cat", true).unwrap().get_ids().to_vec();
    assert_eq!(special, [plain.as_slice(), &[1]].concat());
    let config: Value = serde_json::from_str(&files.tokenizer_config_json).unwrap();
    assert_eq!(config["add_bos_token"], false);
    assert_eq!(config["add_eos_token"], true);
}

#[test]
fn refuses_other_tokenizer_models_by_name() {
    let mut vocab = synthetic_vocab(&fixture());
    vocab.model = "gpt2".into();
    vocab.pre = Some("llama-bpe".into());
    let m = unsupported(&vocab);
    assert!(
        m.contains("\"gpt2\"") && m.contains("llama-bpe") && m.contains("0 merges"),
        "{m}"
    );
    vocab.model = "bert".into();
    assert!(unsupported(&vocab).contains("\"bert\""));
}

#[test]
fn refuses_what_it_cannot_rebuild() {
    let base = synthetic_vocab(&fixture());

    let mut v = base.clone();
    v.scores.clear();
    assert!(unsupported(&v).contains("tokenizer.ggml.scores"));

    let mut v = base.clone();
    v.token_types.clear();
    assert!(unsupported(&v).contains("tokenizer.ggml.token_type"));

    let mut v = base.clone();
    v.add_space_prefix = Some(true);
    assert!(unsupported(&v).contains("add_space_prefix"));

    // Unigram-like scores (not decreasing with the id): the merge order cannot be recovered.
    let mut v = base.clone();
    let normal: Vec<usize> = (0..v.tokens.len())
        .filter(|&i| v.token_types[i] == token_type::NORMAL)
        .collect();
    v.scores.swap(normal[3], normal[4]);
    let m = unsupported(&v);
    assert!(
        m.contains("do not decrease") && m.contains(&format!("token {}", normal[4])),
        "{m}"
    );

    let mut v = base.clone();
    v.scores[normal[5]] = f32::NAN;
    assert!(unsupported(&v).contains("do not decrease"));

    // A hostile megabyte-long token is refused before any merge is looked for.
    let mut v = base.clone();
    v.tokens[normal[0]] = "x".repeat(1 << 20);
    let m = unsupported(&v);
    assert!(
        m.contains(&format!(
            "tokenizer.ggml.tokens[{}] is 1048576 bytes",
            normal[0]
        )),
        "{m}"
    );
}

#[test]
fn refuses_inconsistent_vocabularies() {
    let base = synthetic_vocab(&fixture());

    let mut v = base.clone();
    v.scores.pop();
    assert!(invalid(&v).contains("tokenizer.ggml.scores has"));

    let mut v = base.clone();
    v.bos_id = Some(v.tokens.len() as u32);
    assert!(invalid(&v).contains("tokenizer.ggml.bos_token_id"));

    let mut v = base.clone();
    let last = v.tokens.len() - 1;
    v.tokens[last] = v.tokens[last - 1].clone();
    let m = invalid(&v);
    assert!(
        m.contains("twice") && m.contains(&format!("ids {} and {last}", last - 1)),
        "{m}"
    );

    let mut v = base.clone();
    v.token_types[7] = 9;
    assert!(invalid(&v).contains("token_type[7] is 9"));

    let mut v = base.clone();
    v.bos_id = None;
    assert!(invalid(&v).contains("add_bos_token is true"));

    let mut v = base;
    v.tokens.clear();
    v.scores.clear();
    v.token_types.clear();
    assert!(invalid(&v).contains("empty"));
}

/// The built-in templates are the ones transformers renders from the hub checkpoints (tests/fixtures/chat).
#[test]
fn builtin_chat_templates_are_the_hub_ones() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/chat/templates.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        doc["templates"]["gemma3"],
        crate::gguf::vocab::GEMMA3_CHAT_TEMPLATE
    );
    assert_eq!(
        doc["templates"]["gemma2"],
        crate::gguf::vocab::GEMMA_CHAT_TEMPLATE
    );
}
