//! The fuzz targets' seed corpora as a stable-Rust regression test (docs/reliability.md, "Fuzzing").
//!
//! Every file of `tests/fuzz/corpus/<target>/` (the seeds, and a `regress-*` file for each fuzzer finding) goes
//! through the entry point its cargo-fuzz target calls (`gemma_models::fuzzing`, `gemma_runtime::fuzzing`), here
//! without libFuzzer or nightly. Each must return, without panicking, either `Ok` or a typed error with a message.
//!
//! A new target adds one row to [`TARGETS`].

use std::path::{Path, PathBuf};

/// One entry point: the input's bytes to `Ok(())` or an error's message.
type Entry = fn(&[u8]) -> Result<(), String>;

fn models(
    f: fn(&[u8]) -> Result<(), gemma_models::fuzzing::Refused>,
) -> impl Fn(&[u8]) -> Result<(), String> {
    move |b| f(b).map_err(|e| e.to_string())
}

fn runtime(f: fn(&[u8]) -> gemma_runtime::Result<()>) -> impl Fn(&[u8]) -> Result<(), String> {
    move |b| f(b).map_err(|e| e.to_string())
}

/// `(target, entry point)`: the corpus folder name is the cargo-fuzz target's name.
const TARGETS: [(&str, Entry); 8] = [
    ("safetensors_file", |b| {
        models(gemma_models::fuzzing::safetensors_file)(b)
    }),
    ("safetensors_index", |b| {
        models(gemma_models::fuzzing::safetensors_index)(b)
    }),
    ("config_json", |b| {
        models(gemma_models::fuzzing::config_json)(b)
    }),
    ("gguf", |b| models(gemma_models::fuzzing::gguf)(b)),
    ("manifest", |b| runtime(gemma_runtime::fuzzing::manifest)(b)),
    ("chat_template", |b| {
        runtime(gemma_runtime::fuzzing::chat_template)(b)
    }),
    ("image", |b| runtime(gemma_runtime::fuzzing::image)(b)),
    ("serve_request", |b| {
        gemma_runtime::fuzzing::serve_request(b).map_err(|e| e.message)
    }),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Runs every file of one target's corpus; returns `(files, ok, refused)`.
fn run_corpus(target: &str, entry: Entry) -> (usize, usize, usize) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let (mut ok, mut refused) = (0, 0);
    for file in &files {
        let bytes = std::fs::read(file).expect("corpus file");
        match std::panic::catch_unwind(|| entry(&bytes)) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(message)) => {
                assert!(
                    !message.trim().is_empty(),
                    "{}: refused with an empty message",
                    file.display()
                );
                refused += 1;
            }
            Err(_) => panic!("{target}: {} panicked", file.display()),
        }
    }
    (files.len(), ok, refused)
}

#[test]
fn every_corpus_file_gives_ok_or_a_typed_error() {
    for (target, entry) in TARGETS {
        let (files, ok, refused) = run_corpus(target, entry);
        eprintln!("{target}: {files} files, {ok} accepted, {refused} refused");
        assert!(files >= 10, "{target}: only {files} corpus files");
        assert!(
            ok > 0,
            "{target}: no corpus file is accepted: the seeds do not reach past the first check"
        );
        assert!(refused > 0, "{target}: no corpus file is refused");
    }
}
