//! Helpers of the CLI tests (`chat_cli.rs`, `fim_cli.rs`): exports of the tiny random Gemma 2 fixture
//! (`../tests/fixtures/tiny/gemma2-gqa-bf16-sharded-hf4`) with a word-level tokenizer.json written by the test: ids
//! 0–3 are `<pad> <eos> <bos> <unk>`, 106/107 `<start_of_turn>`/`<end_of_turn>` (Gemma 1/2 ids), 250/251 the words
//! `user`/`model`, and every other id `i` the word `w{i}`. The random model's replies are meaningless, but they are
//! deterministic (greedy, or sampled with a seed), which is all the tests need.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

pub const FIXTURE: &str = "gemma2-gqa-bf16-sharded-hf4";
pub const END_OF_TURN: u32 = 107;
pub const FIM: [(u32, &str); 4] = [
    (67, "<|fim_prefix|>"),
    (68, "<|fim_suffix|>"),
    (69, "<|fim_middle|>"),
    (70, "<|file_separator|>"),
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The hub's Gemma 1/2 chat template, as committed with the transformers-rendered references.
pub fn gemma2_template() -> String {
    let path = fixtures().join("chat/templates.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["templates"]["gemma2"].as_str().unwrap().to_string()
}

/// A fresh fp32 export of the tiny Gemma 2 fixture (no tokenizer yet).
pub fn export() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(
            fixtures().join("tiny").join(FIXTURE),
            tmp.path().join("onnx"),
        )
        .graph(gemma_exporter::GraphKind::Portable),
    )
    .unwrap();
    tmp
}

pub fn out_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("onnx")
}

/// Writes the word-level tokenizer.json described in the module doc, with `specials` (id, token) on top of the
/// default special tokens (a later entry for the same id wins; a default special token given another id moves).
pub fn write_tokenizer(dir: &Path, specials: &[(u32, &str)]) {
    let mut names: Vec<String> = (0..256).map(|i| format!("w{i}")).collect();
    names[250] = "user".into();
    names[251] = "model".into();
    let defaults = [
        (0, "<pad>"),
        (1, "<eos>"),
        (2, "<bos>"),
        (3, "<unk>"),
        (106, "<start_of_turn>"),
        (END_OF_TURN, "<end_of_turn>"),
    ];
    let mut special_ids = Vec::new();
    for &(id, token) in defaults.iter().chain(specials) {
        // A token moved to another id leaves a plain word behind.
        if let Some(old) = names.iter().position(|n| n == token) {
            names[old] = format!("w{old}");
            special_ids.retain(|&i| i != old as u32);
        }
        names[id as usize] = token.to_string();
        special_ids.push(id);
    }
    let vocab: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = special_ids
        .iter()
        .map(|&id| {
            json!({"id": id, "content": names[id as usize], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

pub fn write_template(dir: &Path, template: &str) {
    let config = json!({"bos_token": "<bos>", "eos_token": "<eos>", "chat_template": template});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

pub fn write_messages(dir: &Path, messages: Value) -> PathBuf {
    let path = dir.join("conversation.json");
    std::fs::write(&path, messages.to_string()).unwrap();
    path
}

pub fn gemma(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gemma"));
    cmd.args(args).args(["--threads", "1"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run gemma");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn success(o: &Output) -> &Output {
    assert!(o.status.success(), "gemma failed: {}", stderr(o));
    o
}

pub fn failure(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic in: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

pub fn json_of(o: &Output) -> Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

pub fn token_ids(v: &Value) -> Vec<u32> {
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// An index `k` such that `ids[k]` is an ordinary word that neither occurs earlier in `ids` nor in `avoid`: moving a
/// stop token onto that id must end a rerun exactly after `ids[..=k]`. Mid-run indices are preferred (the rerun then
/// stops before `-n`, so the stop is not confused with the length limit).
pub fn stop_index(ids: &[u32], avoid: &[u32]) -> usize {
    let usable = |k: usize| {
        let id = ids[k];
        id > 3
            && ![106, END_OF_TURN, 250, 251].contains(&id)
            && !avoid.contains(&id)
            && !ids[..k].contains(&id)
    };
    (2..ids.len().saturating_sub(1))
        .find(|&k| usable(k))
        .or_else(|| (0..ids.len()).find(|&k| usable(k)))
        .expect("some generated id can carry the stop token")
}
