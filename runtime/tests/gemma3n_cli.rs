//! `gemma generate` on a Gemma 3n export (the tiny random Gemma3nForCausalLM of
//! `../tests/fixtures/make_gemma3n_fixtures.py`, with the word-level tokenizer of `common`): the prompt of the
//! fixture's references, BOS added, no template, gives transformers' greedy ids (`decode.ids`).

mod common;

use common::{fixtures, gemma, json_of, success, token_ids, write_tokenizer};
use serde_json::Value;

const FIXTURE: &str = "gemma3n-text-f32";

/// An int64 tensor of a safetensors file as a flat list (the runtime has no safetensors dependency: the format is
/// an 8-byte header length, a JSON header of dtype/shape/data_offsets, then the data).
fn int64_tensor(path: &std::path::Path, name: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[name];
    assert_eq!(t["dtype"], "I64", "{name}");
    let range = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        range[0].as_u64().unwrap() as usize,
        range[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + a..8 + n + b]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn generate_gives_transformers_greedy_ids() {
    let src = fixtures().join("tiny").join(FIXTURE);
    let reference = src.join("reference.safetensors");
    let prompt_ids = int64_tensor(&reference, "prefill.input_ids");
    let greedy = int64_tensor(&reference, "decode.ids");
    assert_eq!(prompt_ids[0], 2, "the reference prompt starts with <bos>");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(&src, &out)).unwrap();
    write_tokenizer(&out, &[]);
    let prompt: Vec<String> = prompt_ids[1..].iter().map(|i| format!("w{i}")).collect();
    let n = greedy.len().to_string();
    let model = out.to_str().unwrap();
    let args = [
        "generate",
        "-m",
        model,
        "-p",
        &prompt.join(" "),
        "-n",
        &n,
        "--json",
    ];
    let v = json_of(success(&gemma(&args, None)));
    let want: Vec<u32> = greedy.iter().map(|&i| i as u32).collect();
    assert_eq!(token_ids(&v), want);
    assert_eq!(v["prompt_tokens"], prompt_ids.len());
}
