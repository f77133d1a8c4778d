//! What the transformers.js and Optimum stack tests share: the stacks environment of `scripts/setup-stacks`, running
//! a harness of `tests/stacks/`, greedy generation with this project's runtime, and the comparison.

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use gemma_runtime::{Decoder, RuntimeOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// 14 tokens: nearly three 5-token windows of the tiny Gemma 3 fixtures, so the sliding layers mask during prefill
/// and decode.
pub const LONG: &[u32] = &[2, 200, 13, 77, 5, 91, 250, 33, 64, 128, 7, 19, 222, 45];
/// Shorter than the window.
pub const SHORT: &[u32] = &[2, 31, 180];

pub use gemma_tests::stacks_python;

/// The node_modules with transformers.js: `$GEMMA_STACKS_NODE_MODULES`, else `node/node_modules` in the venv of
/// `$GEMMA_STACKS_PYTHON` (where scripts/setup-stacks puts it).
pub fn stacks_node_modules() -> PathBuf {
    if let Some(p) = std::env::var_os("GEMMA_STACKS_NODE_MODULES").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let python = stacks_python();
    let venv = python
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    venv.join("node").join("node_modules")
}

/// `tests/stacks/NAME`.
pub fn harness(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stacks")
        .join(name)
}

/// Runs `cmd` and parses the JSON object it prints; its stderr goes into the error.
pub fn run_json<T: serde::de::DeserializeOwned>(mut cmd: Command, what: &str) -> Result<T> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{what} printed: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Greedy generation with this project's runtime, as `gemma generate --temperature 0` does it: one prefill, then
/// one token per step, stopping at the manifest's stop tokens. Returns the ids and each step's logits.
pub fn our_generate(
    dir: &Path,
    prompt: &[u32],
    max_new: usize,
) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let mut decoder = Decoder::open(dir, &RuntimeOptions::cpu().with_threads(Some(2)))?;
    let stops = gemma_runtime::manifest::stop_token_ids(dir, decoder.manifest())?;
    let mut cache = decoder.new_cache_with_capacity(1, prompt.len() + max_new)?;
    let (mut ids, mut all_logits, mut feed) = (Vec::new(), Vec::new(), prompt.to_vec());
    while ids.len() < max_new {
        let logits = decoder.forward_tokens(&feed, &mut cache)?;
        let next = argmax(&logits);
        all_logits.push(logits);
        ids.push(next);
        if stops.contains(&next) {
            break;
        }
        feed = vec![next];
    }
    Ok((ids, all_logits))
}

/// The index of the largest value (the first of equal ones): the greedy pick.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The largest difference between two runs' per-step logits; panics (naming `what`) when the step counts or vocab
/// sizes differ.
pub fn max_logit_diff(what: &str, theirs: &[Vec<f32>], ours: &[Vec<f32>]) -> f32 {
    assert_eq!(theirs.len(), ours.len(), "{what}: number of steps");
    let mut worst = 0f32;
    for (step, (a, b)) in theirs.iter().zip(ours).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: vocab size at step {step}");
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

/// The external-data files (`location`s) the graph at `path` reads, sorted, without repeats.
pub fn data_locations(path: &Path) -> Vec<String> {
    use prost::Message;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let proto = gemma_exporter::onnx::ModelProto::decode(&*bytes).unwrap();
    let mut locations: Vec<String> = proto
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .flat_map(|t| &t.external_data)
        .filter(|e| e.key.as_deref() == Some("location"))
        .filter_map(|e| e.value.clone())
        .collect();
    locations.sort();
    locations.dedup();
    locations
}

/// Fails unless the graph `dir/graph` reads exactly the data file `data` (a path relative to `dir`), and that file
/// is a plain file with one link (no symbolic or hard link: the onnx package and ONNX Runtime load it as it is).
pub fn assert_unlinked_data(dir: &Path, graph: &str, data: &str) {
    assert_eq!(data_locations(&dir.join(graph)), [data], "{graph}");
    let file = Path::new(graph)
        .parent()
        .unwrap_or(Path::new(""))
        .join(data);
    let meta = std::fs::symlink_metadata(dir.join(&file)).unwrap();
    assert!(meta.is_file(), "{} is a plain file", file.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.nlink(), 1, "{} has one link", file.display());
    }
}
