//! Gemma 1 and Gemma 2 text parity: the tiny random checkpoints of `make_fixtures.py families` are exported, run
//! through ONNX Runtime with the runtime's decoder and KV cache, and compared with transformers fp32 eager logits
//! (max |Δ| ≤ 1e-4): prefill then one-token decode steps, the whole prompt in one prefill (past Gemma 2's window),
//! and a batch of 2 with left padding followed by decode steps; prefill and decode with the CPU-optimized graph too.
//!
//! Also: the configs resolve to what transformers used, the manifest says so, and checkpoints whose tensors belong to
//! another generation than their config.json are refused with a message naming the tensor and the field.

use gemma_exporter::ExportError;
use gemma_models::{CheckpointError, Family, LayerType, ModelConfig};
use gemma_tests::*;
use std::path::Path;

const GEMMA1_MQA: &str = "gemma1-mqa-bf16-hf4";
const GEMMA1_MHA: &str = "gemma1-mha-f16-hf5";
const GEMMA2: &str = "gemma2-gqa-bf16-sharded-hf4";

parity_table! {
    gemma1_mqa_prefill_and_decode: Parity::portable(GEMMA1_MQA).prefill_then_decode(7);
    gemma1_mqa_left_padded_batch: Parity::portable(GEMMA1_MQA).left_padded_batch();
    gemma1_mha_prefill_and_decode: Parity::portable(GEMMA1_MHA).prefill_then_decode(7);
    gemma1_mha_whole_prompt_in_one_prefill: Parity::portable(GEMMA1_MHA).prefill_then_decode(20);
    gemma1_mha_left_padded_batch: Parity::portable(GEMMA1_MHA).left_padded_batch();
    gemma2_prefill_and_decode: Parity::portable(GEMMA2).prefill_then_decode(7);
    /// 20 tokens in one prefill with a window of 5: the sliding mask, not just the cache, does the windowing.
    gemma2_whole_prompt_in_one_prefill: Parity::portable(GEMMA2).prefill_then_decode(20);
    gemma2_left_padded_batch: Parity::portable(GEMMA2).left_padded_batch();
}

fn config(fixture: &str) -> ModelConfig {
    ModelConfig::from_file(&tiny_fixture(fixture).join("config.json")).unwrap()
}

/// The fixtures' configs resolve to what transformers used (make_fixtures.py checks the same on its side).
#[test]
fn configs_resolve_like_transformers() {
    for fixture in [GEMMA1_MQA, GEMMA1_MHA] {
        let t = config(fixture).text;
        assert_eq!(t.family, Family::Gemma, "{fixture}");
        assert_eq!(t.layer_types, vec![LayerType::Full; 4], "{fixture}");
        assert_eq!(t.sliding_window, None, "{fixture}");
        assert_eq!(
            (t.attn_logit_softcapping, t.final_logit_softcapping),
            (None, None)
        );
        assert_eq!(
            t.attention_scale(),
            0.25,
            "{fixture}: head_dim^-0.5 with head_dim 16"
        );
        assert_ne!(t.head_dim, t.hidden_size / t.num_attention_heads);
        assert_eq!(t.rope_full, t.rope_sliding);
    }
    assert_eq!(config(GEMMA1_MQA).text.num_key_value_heads, 1);
    assert_eq!(config(GEMMA1_MHA).text.num_key_value_heads, 4);
    assert_eq!(config(GEMMA1_MQA).text.rope_full.theta, 1e4);
    assert_eq!(config(GEMMA1_MHA).text.rope_full.theta, 1e3);

    let t = config(GEMMA2).text;
    assert_eq!(t.family, Family::Gemma2);
    // No layer_types in the file: even layers are sliding (Gemma2Config.__post_init__).
    assert_eq!(
        t.layer_types,
        vec![
            LayerType::Sliding,
            LayerType::Full,
            LayerType::Sliding,
            LayerType::Full
        ]
    );
    assert_eq!(t.sliding_window, Some(5));
    assert_eq!(
        (t.attn_logit_softcapping, t.final_logit_softcapping),
        (Some(2.0), Some(3.0))
    );
    assert_eq!(t.query_pre_attn_scalar, 24.0);
    assert_eq!(t.num_key_value_heads, 2);
}

/// The export's manifest carries the family and the window (the runtime relies on them).
#[test]
fn manifests_name_the_family() {
    for (fixture, family, window) in [(GEMMA1_MQA, "gemma", None), (GEMMA2, "gemma2", Some(5))] {
        let (_tmp, out) = export_to_temp(&tiny_fixture(fixture)).unwrap();
        let m = gemma_runtime::manifest::load(&out).unwrap();
        assert_eq!(
            gemma_models::contract::family_name(m.family),
            family,
            "{fixture}"
        );
        assert_eq!(m.sliding_window, window, "{fixture}");
    }
}

/// Copies a fixture folder (config, weights) into a temp dir, with `edit` applied to its config.json.
fn copy_fixture(fixture: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = tiny_fixture(fixture);
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name != "reference.safetensors" {
            std::fs::copy(&path, tmp.path().join(name)).unwrap();
        }
    }
    let config_path = tmp.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, config.to_string()).unwrap();
    tmp
}

/// Adds `extra` ([name, shape] of f32 zeros) to the single-file `model.safetensors` in `dir`.
fn add_tensors(dir: &Path, extra: &[(&str, Vec<usize>)]) {
    let path = dir.join("model.safetensors");
    let mut tensors = read_safetensors(&path);
    for (name, shape) in extra {
        tensors.push(f32_tensor(name, shape, &vec![0.0; shape.iter().product()]));
    }
    write_safetensors(&path, &tensors);
}

fn export_error(src: &Path) -> ExportError {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    let e = gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(src, &out).graph(gemma_exporter::GraphKind::Portable),
    )
    .expect_err("the export should be refused");
    assert!(
        !out.exists(),
        "a refused export must not leave an output folder"
    );
    e
}

/// A Gemma 1 config over Gemma 2 weights (sandwich norms present) and a Gemma 1 checkpoint with Gemma 3 QK-norm
/// tensors added: refused, naming the tensor and `model_type`.
#[test]
fn tensors_of_another_generation_are_refused() {
    // Gemma 2 weights, config relabelled as Gemma 1 (Gemma 2-only fields removed, else the config is refused first).
    let dir = copy_fixture(GEMMA2, |c| {
        let m = c.as_object_mut().unwrap();
        for key in [
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "query_pre_attn_scalar",
            "sliding_window",
            "cache_implementation",
            "hidden_activation",
        ] {
            m.remove(key);
        }
        m.insert("model_type".into(), "gemma".into());
        m.insert(
            "architectures".into(),
            serde_json::json!(["GemmaForCausalLM"]),
        );
    });
    let e = export_error(dir.path());
    let msg = e.to_string();
    match &e {
        ExportError::Checkpoint(CheckpointError::TensorNotInConfig { tensor, field, .. }) => {
            assert!(tensor.ends_with("feedforward_layernorm.weight"), "{msg}");
            assert_eq!(field, "model_type");
        }
        other => panic!("expected TensorNotInConfig, got {other:?}"),
    }
    assert!(
        msg.contains("sandwich") && msg.contains("\"gemma\"") && msg.contains("`model_type`"),
        "{msg}"
    );

    // Gemma 1 weights plus a Gemma 3 QK-norm tensor.
    let dir = copy_fixture(GEMMA1_MQA, |_| {});
    add_tensors(
        dir.path(),
        &[("model.layers.1.self_attn.q_norm.weight", vec![16])],
    );
    let msg = export_error(dir.path()).to_string();
    assert!(
        msg.contains("model.layers.1.self_attn.q_norm.weight")
            && msg.contains("QK-norm")
            && msg.contains("Gemma 3"),
        "{msg}"
    );

    // More layers in the weights than num_hidden_layers says.
    let dir = copy_fixture(GEMMA1_MQA, |c| {
        c["num_hidden_layers"] = 3.into();
    });
    let msg = export_error(dir.path()).to_string();
    assert!(
        msg.contains("model.layers.3.") && msg.contains("`num_hidden_layers` is 3"),
        "{msg}"
    );
}

/// Config fields of another generation are refused by name before any tensor is read.
#[test]
fn config_fields_of_another_generation_are_refused() {
    let dir = copy_fixture(GEMMA1_MHA, |c| {
        c["final_logit_softcapping"] = 30.0.into();
    });
    let msg = export_error(dir.path()).to_string();
    assert!(
        msg.contains("field `final_logit_softcapping`") && msg.contains("Gemma 2 field"),
        "{msg}"
    );
    let dir = copy_fixture(GEMMA2, |c| {
        c["rope_local_base_freq"] = 10000.0.into();
    });
    let msg = export_error(dir.path()).to_string();
    assert!(
        msg.contains("field `rope_local_base_freq`") && msg.contains("Gemma 3 field"),
        "{msg}"
    );
}

/// The CPU-optimized graph (`--graph cpu`: GroupQueryAttention with in-place KV buffers) on the same fixtures:
/// prefill 7 tokens, then one token at a time past Gemma 2's window, every position within 1e-4 of transformers.
#[test]
fn cpu_graph_prefill_and_decode() {
    for fixture in FAMILY_FIXTURES {
        Parity::cpu(fixture).prefill_then_decode(7);
    }
}
