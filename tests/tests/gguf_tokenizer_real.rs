//! The tokenizer rebuilt from the real Gemma 3 270M GGUF gives the ids of the model's own Hugging Face tokenizer.
//!
//! `$GEMMA3_270M_GGUF` names the GGUF (llama.cpp's Q4_K_M conversion). The reference ids in
//! `fixtures/gguf/tokenizer_reference.json` come from the Hugging Face `tokenizer.json` of google/gemma-3-270m,
//! encoded with the `tokenizers` package by `fixtures/gguf/make_tokenizer_reference.py real` over
//! `fixtures/gguf/tokenizer_corpus.txt` (multilingual text, code, whitespace runs, special tokens written as text):
//! every line, every block of 10 lines, and the whole file, with and without special tokens.

use anyhow::{bail, Context, Result};
use gemma_models::gguf::{read_vocab, tokenizer_files};
use gemma_runtime::tokenizer::Tokenizer;
use gemma_tests::fixtures_dir;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    config: serde_json::Map<String, serde_json::Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    text: String,
    ids: Vec<u32>,
    ids_plain: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

fn gguf_path() -> Result<PathBuf> {
    match std::env::var_os("GEMMA3_270M_GGUF").map(PathBuf::from) {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!("GEMMA3_270M_GGUF={} is not a file", p.display()),
        None => bail!(
            "set GEMMA3_270M_GGUF to the Gemma 3 270M GGUF (gemma-3-270m-q4_k_m.gguf, sha256 \
             a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818)"
        ),
    }
}

#[test]
fn gguf_tokenizer_gives_the_hugging_face_ids_over_the_corpus() -> Result<()> {
    let path = gguf_path()?;
    let vocab = read_vocab(&path).with_context(|| format!("reading {}", path.display()))?;
    let start = std::time::Instant::now();
    let files = tokenizer_files(&vocab).context("rebuilding the tokenizer")?;
    eprintln!(
        "rebuilt tokenizer.json ({} tokens, {:.1} MB) in {:.2} s",
        vocab.tokens.len(),
        files.tokenizer_json.len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tokenizer.json"), &files.tokenizer_json)?;
    let tokenizer = Tokenizer::from_dir(dir.path())?;

    let reference_path = fixtures_dir().join("gguf/tokenizer_reference.json");
    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(&reference_path)
            .with_context(|| format!("reading {}", reference_path.display()))?,
    )?;
    assert!(
        reference.cases.len() > 200,
        "the corpus is a few hundred lines"
    );

    let mut failures = Vec::new();
    let mut ids_checked = 0;
    for (i, case) in reference.cases.iter().enumerate() {
        let what = format!("case {i} ({}) {:?}", case.kind, case.text);
        let ids = tokenizer.encode(&case.text, true)?;
        let plain = tokenizer.encode(&case.text, false)?;
        ids_checked += ids.len() + plain.len();
        if ids != case.ids {
            failures.push(format!("{what}: ids {ids:?}, expected {:?}", case.ids));
        }
        if plain != case.ids_plain {
            failures.push(format!(
                "{what}: ids without special tokens {plain:?}, expected {:?}",
                case.ids_plain
            ));
        }
        let decoded = tokenizer.decode(&case.ids_plain, false)?;
        if decoded != case.decoded {
            failures.push(format!(
                "{what}: decodes to {decoded:?}, expected {:?}",
                case.decoded
            ));
        }
        let skipped = tokenizer.decode(&case.ids, true)?;
        if skipped != case.decoded_skip_special {
            failures.push(format!(
                "{what}: decodes (skipping special tokens) to {skipped:?}, expected {:?}",
                case.decoded_skip_special
            ));
        }
    }
    eprintln!(
        "{} cases, {ids_checked} ids compared, {} mismatches",
        reference.cases.len(),
        failures.len()
    );
    if !failures.is_empty() {
        bail!(
            "{} mismatches with the Hugging Face tokenizer; first ones:\n{}",
            failures.len(),
            failures[..failures.len().min(10)].join("\n")
        );
    }
    Ok(())
}

#[test]
fn gguf_tokenizer_config_has_the_hugging_face_special_tokens() -> Result<()> {
    let path = gguf_path()?;
    let vocab = read_vocab(&path).with_context(|| format!("reading {}", path.display()))?;
    let files = tokenizer_files(&vocab)?;
    let config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&files.tokenizer_config_json)?;
    let reference_path = fixtures_dir().join("gguf/tokenizer_reference.json");
    let reference: Reference = serde_json::from_str(&std::fs::read_to_string(&reference_path)?)?;
    for (key, want) in &reference.config {
        assert_eq!(config.get(key), Some(want), "tokenizer_config.json {key}");
    }
    assert_eq!(reference.config.len(), 6);
    // The runtime reads bos/eos from this file beside the template; the ids the tokenizer gives them are the GGUF's.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tokenizer.json"), &files.tokenizer_json)?;
    let tokenizer = Tokenizer::from_dir(dir.path())?;
    for (key, id) in [
        ("bos_token", vocab.bos_id),
        ("eos_token", vocab.eos_id),
        ("pad_token", vocab.pad_id),
        ("unk_token", vocab.unk_id),
    ] {
        let token = config[key].as_str().context(key)?;
        assert_eq!(tokenizer.token_to_id(token), id, "{key} {token}");
    }
    Ok(())
}
