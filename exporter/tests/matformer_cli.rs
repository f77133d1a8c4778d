//! `gemma-export --matformer` as users run it: a slice of a full Gemma 3n checkpoint (text, vision and audio), and
//! each bad spec refused with exit 1, a message naming `--matformer` and what is wrong, and no output folder.
//! The slices' logits are checked against transformers in `tests/tests/gemma3n_matformer.rs`.

mod common;

use common::{assert_failed, export, stderr, tiny_fixture};

#[test]
fn slices_a_conditional_generation_checkpoint() {
    // tiny/gemma3n-f32: 4 layers S F S F, layers 2 and 3 reusing the keys and values of layers 0 and 1.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    let run = export(
        &tiny_fixture("gemma3n-f32"),
        &out,
        &["--matformer", "skip=3,ffn=64"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let text = &config["text_config"];
    assert_eq!(text["num_hidden_layers"], 3);
    assert_eq!(text["intermediate_size"], serde_json::json!([64, 64, 64]));
    assert_eq!(text["num_kv_shared_layers"], 1);
    assert_eq!(
        text["layer_types"],
        serde_json::json!(["sliding_attention", "full_attention", "sliding_attention"])
    );
    assert_eq!(
        text["activation_sparsity_pattern"],
        serde_json::json!([0.95, 0.0, 0.0])
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["num_layers"], 3);
    assert_eq!(manifest["matformer"]["spec"], "skip=3,ffn=64*3");
    assert_eq!(
        manifest["matformer"]["kept_layers"],
        serde_json::json!([0, 1, 2])
    );
    assert_eq!(manifest["gemma3n"]["kv_layers"], 2);
}

#[test]
fn bad_specs_are_refused_naming_the_argument() {
    // tiny/gemma3n-text-f32: 6 layers, widths 96 96 128 128 96 64, layers 4 and 5 reusing layers 3 and 2.
    let text = tiny_fixture("gemma3n-text-f32");
    let gemma3 = tiny_fixture("mqa-f32-hf5");
    for (src, spec, needle) in [
        (
            &text,
            "skip=3",
            "layer 3 cannot be skipped: it computes the keys and values that layer 4",
        ),
        (&text, "skip=9", "layer 9 is out of range"),
        (&text, "ffn=100", "larger than its MLP width 96"),
        (
            &text,
            "skip=0,ffn=8,8",
            "ffn lists 2 widths, but 5 layers are kept",
        ),
        (&text, "skip=0-5", "no model"),
        (&text, "E4X", "unknown preset \"E4X\""),
        (&text, "E2B", "preset E2B slices Gemma 3n E4B"),
        (&text, "skip=x", "not a non-negative integer"),
        (&text, "layers=3", "unknown key"),
        (&gemma3, "ffn=8", "only Gemma 3n checkpoints can be sliced"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("onnx");
        let run = export(src, &out, &["--matformer", spec]);
        let err = assert_failed(&run, needle);
        assert!(err.contains("--matformer"), "{spec}: {err}");
        assert!(!out.exists(), "{spec}: an output folder was left");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{spec}: something was left"
        );
    }
}
