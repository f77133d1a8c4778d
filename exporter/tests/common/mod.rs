//! What the CLI tests of `gemma-export` share: running the binary, the committed fixtures of `tests/fixtures`, a
//! small Gemma 3 checkpoint generated on the spot, and the checks a refused export goes through.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

/// The mock Hugging Face Hub of `hub.rs`.
pub mod mock_hub;

use gemma_models::testing::{f32_tensor, write_safetensors};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures` of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A tiny checkpoint of `tests/fixtures/tiny` (made by `make_fixtures.py`).
pub fn tiny_fixture(name: &str) -> PathBuf {
    fixtures().join("tiny").join(name)
}

/// `gemma-export SRC -o OUT --quiet EXTRA…`, not yet run.
pub fn command(src: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemma-export"));
    c.arg(src).arg("-o").arg(out).arg("--quiet").args(extra);
    c
}

/// Runs `gemma-export SRC -o OUT --quiet EXTRA…` to the end.
pub fn export(src: &Path, out: &Path, extra: &[&str]) -> Output {
    command(src, out, extra).output().expect("run gemma-export")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a run failed as a refusal does: exit 1 (an error, not a crash), no panic, `needle` in stderr.
/// Returns stderr.
pub fn assert_failed(out: &Output, needle: &str) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 (error), got {:?}: {err}",
        out.status.code()
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    err
}

/// The names in `dir` for which `keep` holds: what a failed export may have left beside its OUT.
pub fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| keep(n))
        .collect()
}

/// `gemma-onnx.json` of an export folder.
pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("gemma-onnx.json")).unwrap()).unwrap()
}

/// Sizes of a generated Gemma 3 checkpoint (one KV head).
#[derive(Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub inter: usize,
    pub vocab: usize,
    pub layers: usize,
}

/// Exports in a few milliseconds.
pub const TINY: Dims = Dims {
    hidden: 16,
    heads: 2,
    head_dim: 8,
    inter: 32,
    vocab: 32,
    layers: 2,
};

/// The config.json of a generated checkpoint: Gemma3ForCausalLM, sliding window 4, every other layer global.
pub fn config(d: Dims) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": d.vocab, "hidden_size": d.hidden, "intermediate_size": d.inter,
        "num_hidden_layers": d.layers, "num_attention_heads": d.heads, "num_key_value_heads": 1,
        "head_dim": d.head_dim, "query_pre_attn_scalar": d.head_dim, "rms_norm_eps": 1e-6, "sliding_window": 4,
        "sliding_window_pattern": 2, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rope_scaling": null, "max_position_embeddings": 128, "hidden_activation": "gelu_pytorch_tanh",
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "float32"
    })
}

/// The tensors (name, shape) of a generated checkpoint.
pub fn tensors(d: Dims) -> Vec<(String, Vec<usize>)> {
    let (h, hd, nh, i, v) = (d.hidden, d.head_dim, d.heads, d.inter, d.vocab);
    let mut list = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, h]),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    for l in 0..d.layers {
        for (s, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("pre_feedforward_layernorm.weight", vec![h]),
            ("post_feedforward_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![nh * hd, h]),
            ("self_attn.k_proj.weight", vec![hd, h]),
            ("self_attn.v_proj.weight", vec![hd, h]),
            ("self_attn.o_proj.weight", vec![h, nh * hd]),
            ("self_attn.q_norm.weight", vec![hd]),
            ("self_attn.k_norm.weight", vec![hd]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
        ] {
            list.push((format!("model.layers.{l}.{s}"), shape));
        }
    }
    list
}

/// Writes a Gemma 3 checkpoint of size `d` (f32, small deterministic values) to `dir/name`; `edit` may change
/// tensor shapes or drop tensors first.
pub fn checkpoint(
    dir: &Path,
    name: &str,
    d: Dims,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>)>),
) -> PathBuf {
    let mut list = tensors(d);
    edit(&mut list);
    let data: Vec<_> = list
        .iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 7 + k * 13) % 17) as f32 * 0.01 - 0.08)
                .collect();
            f32_tensor(name, shape, &values)
        })
        .collect();
    let src = dir.join(name);
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("config.json"), config(d).to_string()).unwrap();
    write_safetensors(&src.join("model.safetensors"), &data);
    src
}

/// A copy of every file of the tiny fixture `name` in `dest` (created); returns `dest`.
pub fn copy_tiny(name: &str, dest: &Path) -> PathBuf {
    fs::create_dir_all(dest).unwrap();
    for e in fs::read_dir(tiny_fixture(name)).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    dest.to_path_buf()
}
