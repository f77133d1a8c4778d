//! `gemma generate --fim-prefix/--fim-suffix` end to end on the tiny Gemma 2 export of `common`, with CodeGemma's
//! FIM tokens added to its word-level tokenizer: the prompt layout, the stop at `<|file_separator|>` (found by name,
//! moved onto a token the model is known to generate), and the error for a tokenizer without FIM tokens.

mod common;

use common::*;
use gemma_runtime::{GenerateOptions, Generator, RuntimeOptions, SamplingConfig};
use serde_json::json;

/// `generate --fim-prefix/--fim-suffix`: the FIM prompt from the tokenizer's tokens, stop at `<|file_separator|>`
/// (found by name, moved onto a generated id as above); a tokenizer without FIM tokens is a clear error.
#[test]
fn fim_prompt_and_file_separator_stop() {
    let tmp = export();
    let dir = out_dir(&tmp);
    let d = dir.to_str().unwrap();
    let args = [
        "generate",
        "-m",
        d,
        "--fim-prefix",
        "w10 w11",
        "--fim-suffix",
        "w12",
        "--json",
        "-n",
        "8",
        "--temperature",
        "2",
        "--seed",
        "5",
    ];
    write_tokenizer(&dir, &FIM);
    let first = json_of(success(&gemma(&args, None)));
    // <bos> <|fim_prefix|> w10 w11 <|fim_suffix|> w12 <|fim_middle|>
    assert_eq!(first["prompt_tokens"], json!(7));
    let ids = token_ids(&first);
    let mut generator =
        Generator::open(&dir, &RuntimeOptions::cpu().with_threads(Some(1))).unwrap();
    let (prompt, stops) = generator.encode_fim("w10 w11", "w12").unwrap();
    assert_eq!(prompt, vec![2, 67, 10, 11, 68, 12, 69]);
    assert_eq!(stops, vec![1, 67, 68, 69, 70]);
    let options = GenerateOptions {
        max_new_tokens: 8,
        sampling: SamplingConfig {
            temperature: 2.0,
            top_k: None,
            top_p: None,
            seed: Some(5),
        },
        stop: None,
    };
    let out = generator
        .generate_from_ids_until(&prompt, &stops, &options, |_| {})
        .unwrap();
    assert_eq!(out.token_ids, ids);
    drop(generator);

    if !(first["stop_reason"] == json!("eos") && ids.last() == Some(&70)) {
        let k = stop_index(&ids, &[10, 11, 12, 67, 68, 69, 70]);
        eprintln!(
            "generated {ids:?}; <|file_separator|> moved to id {} (index {k})",
            ids[k]
        );
        let mut moved = FIM.to_vec();
        moved[3] = (ids[k], "<|file_separator|>");
        write_tokenizer(&dir, &moved);
        let second = json_of(success(&gemma(&args, None)));
        assert_eq!(token_ids(&second), ids[..=k].to_vec(), "first run: {ids:?}");
        assert_eq!(second["stop_reason"], json!("eos"));
    }

    // No FIM tokens: the error names them and the file.
    write_tokenizer(&dir, &[]);
    let err = failure(&gemma(&args, None));
    assert!(
        err.contains("`<|fim_prefix|>`")
            && err.contains("`<|file_separator|>`")
            && err.contains("tokenizer.json")
            && err.contains("CodeGemma"),
        "{err}"
    );
    // FIM and a plain prompt do not mix.
    let o = gemma(
        &["generate", "-m", d, "-p", "w1", "--fim-prefix", "w2"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
