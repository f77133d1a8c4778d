//! Times the tokenizer rebuild from a GGUF vocabulary (reading the metadata, then `tokenizer_files`):
//! `cargo run --release -p gemma-models --example gguf_tokenizer_time -- FILE.gguf`.

use std::time::Instant;

use gemma_models::gguf::{read_vocab, tokenizer_files};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: gguf_tokenizer_time FILE.gguf")?;
    let start = Instant::now();
    let vocab = read_vocab(path.as_ref())?;
    let read = start.elapsed();
    let start = Instant::now();
    let files = tokenizer_files(&vocab)?;
    let built = start.elapsed();
    println!(
        "{} tokens: metadata read in {:.2} s, tokenizer.json ({:.1} MB) and tokenizer_config.json built in {:.2} s",
        vocab.tokens.len(),
        read.as_secs_f64(),
        files.tokenizer_json.len() as f64 / 1e6,
        built.as_secs_f64()
    );
    Ok(())
}
