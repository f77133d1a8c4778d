//! The folder a Gemma3ForConditionalGeneration export writes, and what it refuses: the `vision` manifest section;
//! `embed_tokens.onnx` and `decoder_model_merged.onnx` reference `model.onnx`'s own weights (nothing is stored
//! twice), which a portable export keeps in `onnx/decoder_model_merged.onnx_data` (the transformers.js layout);
//! vision weights live in `onnx/vision_encoder.onnx_data`; a text-only model gets no image
//! files; checkpoints with a missing, incomplete or wrongly shaped vision tower, or an invalid vision config, are
//! refused with a message naming the tensor or field, before anything is written.
//!
//! The numbers of the image graphs are checked in `vision_gemma3.rs`.

use gemma_tests::vision::external_data;
use gemma_tests::*;
use std::path::Path;

const FIXTURE: &str = "cg-mqa-bf16-sharded-hf4";
/// The same weights named `vision_tower.vision_model.*` (hub form), in one model.safetensors.
const HUB_FIXTURE: &str = "cg-mqa-bf16-hubnames";

#[test]
fn export_layout_and_shared_weights() {
    let (_tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gemma-onnx.json")).unwrap())
            .unwrap();
    let v = &manifest["vision"];
    assert_eq!(v["encoder"], "vision_encoder.onnx");
    assert_eq!(v["encoder_data"], "onnx/vision_encoder.onnx_data");
    assert_eq!(v["embed_tokens"], "embed_tokens.onnx");
    assert_eq!(v["decoder_with_embeds"], "decoder_model_merged.onnx");
    assert_eq!(
        (v["image_size"].as_u64(), v["patch_size"].as_u64()),
        (Some(56), Some(14))
    );
    assert_eq!(v["mm_tokens_per_image"], 4);
    assert_eq!(
        (v["boi_token_id"].as_u64(), v["eoi_token_id"].as_u64()),
        (Some(253), Some(254))
    );
    assert_eq!(v["image_token_id"], 255);
    assert_eq!(
        manifest["decoder"], "model.onnx",
        "the text decoder entry is unchanged"
    );

    let text = external_data(&out.join("model.onnx")).unwrap();
    assert!(text
        .values()
        .all(|(loc, ..)| loc == "onnx/decoder_model_merged.onnx_data"));
    for graph in ["embed_tokens.onnx", "decoder_model_merged.onnx"] {
        let ext = external_data(&out.join(graph)).unwrap();
        assert!(!ext.is_empty(), "{graph} has no external weights");
        for (name, place) in &ext {
            assert_eq!(
                text.get(name),
                Some(place),
                "{graph}: {name} is not model.onnx's copy"
            );
        }
    }
    let vision = external_data(&out.join("vision_encoder.onnx")).unwrap();
    assert!(!vision.is_empty());
    assert!(vision
        .values()
        .all(|(loc, ..)| loc == "onnx/vision_encoder.onnx_data"));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.contains(".onnx"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "decoder_model_merged.onnx",
            "embed_tokens.onnx",
            "model.onnx",
            "preprocess.onnx",
            "vision_encoder.onnx",
        ]
    );
    let mut data: Vec<String> = std::fs::read_dir(out.join("onnx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".onnx_data"))
        .collect();
    data.sort();
    assert_eq!(
        data,
        ["decoder_model_merged.onnx_data", "vision_encoder.onnx_data"]
    );

    // A text-only model gets no image files and no vision section.
    let (_tmp2, text_only) = export_to_temp(&tiny_fixture("gqa-bf16-sharded-hf4")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(text_only.join("gemma-onnx.json")).unwrap())
            .unwrap();
    assert!(manifest.get("vision").is_none());
    for f in [
        "vision_encoder.onnx",
        "embed_tokens.onnx",
        "decoder_model_merged.onnx",
    ] {
        assert!(!text_only.join(f).exists(), "text-only export has {f}");
    }
}

/// A copy of the hub-named fixture with `edit` applied to its config and `keep` filtering its tensors.
fn broken_copy(
    edit: impl Fn(&mut serde_json::Value),
    keep: impl Fn(&str) -> bool,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let src = tiny_fixture(HUB_FIXTURE);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut tensors = read_safetensors(&src.join("model.safetensors"));
    tensors.retain(|(n, ..)| keep(n));
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    (tmp, dir)
}

fn export_error(src: &Path) -> String {
    let out = src.parent().unwrap().join("onnx");
    let err = gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(src, &out).graph(gemma_exporter::GraphKind::Portable),
    )
    .expect_err("the export should be refused");
    assert!(!out.exists(), "a refused export wrote {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(src.parent().unwrap()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "a refused export left files beside the checkpoint"
    );
    format!("{err:#}")
}

#[test]
fn broken_vision_checkpoints_are_refused_before_writing() {
    // No vision tower at all.
    let (_t, dir) = broken_copy(|_| {}, |n| !n.starts_with("vision_tower."));
    let msg = export_error(&dir);
    assert!(
        msg.contains("without a vision tower")
            && msg.contains("vision_tower.vision_model.embeddings.patch_embedding.weight")
            && msg.contains("vision_tower.embeddings.patch_embedding.weight"),
        "{msg}"
    );
    // A missing tensor.
    let (_t, dir) = broken_copy(
        |_| {},
        |n| n != "vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias",
    );
    let msg = export_error(&dir);
    assert!(
        msg.contains("vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias"),
        "{msg}"
    );
    // The config promises more layers than the checkpoint has.
    let (_t, dir) = broken_copy(
        |c| c["vision_config"]["num_hidden_layers"] = 3.into(),
        |_| true,
    );
    let msg = export_error(&dir);
    assert!(
        msg.contains("vision_tower.vision_model.encoder.layers.2."),
        "{msg}"
    );
    // A wrong shape.
    let (_t, dir) = broken_copy(
        |c| c["vision_config"]["intermediate_size"] = 60.into(),
        |_| true,
    );
    let msg = export_error(&dir);
    assert!(
        msg.contains("mlp.fc1.weight") && msg.contains("[60, 32]"),
        "{msg}"
    );
    // A missing projector.
    let (_t, dir) = broken_copy(|_| {}, |n| !n.starts_with("multi_modal_projector."));
    let msg = export_error(&dir);
    assert!(msg.contains("multi_modal_projector."), "{msg}");
    // An invalid vision config is named by field.
    let (_t, dir) = broken_copy(|c| c["mm_tokens_per_image"] = 9.into(), |_| true);
    let msg = export_error(&dir);
    assert!(msg.contains("`mm_tokens_per_image`"), "{msg}");
}
