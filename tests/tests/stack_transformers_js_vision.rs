//! transformers.js (`@huggingface/transformers`, Node) generates with an image on the Gemma 3 vision export, with a
//! plain `AutoModelForImageTextToText.from_pretrained(OUT)` and `AutoProcessor.from_pretrained(OUT)`, through
//! `tests/stacks/transformers_js_vision.cjs`. The harness runs with the node_modules of `scripts/setup-stacks`
//! (`GEMMA_STACKS_NODE_MODULES`, which `scripts/test` sets); without it the test fails and says so.

mod stack_common;

use gemma_exporter::onnx::ModelProto;
use gemma_exporter::{GraphKind, Precision};
use gemma_tests::*;
use prost::Message;
use stack_common::*;
use std::path::Path;
use std::process::Command;

/// The Gemma 3 vision export (`onnx/vision_encoder.onnx`, `embed_tokens.onnx`, `decoder_model_merged.onnx`, beside
/// the only copy of the weights; the decoder without the `token_type_ids` input; the processor files) generates with an image
/// through `AutoModelForImageTextToText.from_pretrained(OUT)` and `AutoProcessor.from_pretrained(OUT)` (with a
/// word-level tokenizer written here: the tiny fixture has none). Its ids are not compared with `gemma-vision`'s:
/// transformers.js feeds no `token_type_ids`, so image tokens attend causally there and bidirectionally in ours
/// (semantics §5.5). Without an image the attention is the same, and the same sessions give exactly our text ids.
#[test]
fn tjs_gemma3_vision_generates_with_an_image() {
    let (_tmp, out) = export_precision_to_temp(
        &tiny_fixture("cg-mqa-bf16-sharded-hf4"),
        Precision::Fp32,
        GraphKind::Portable,
    )
    .unwrap();
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    // The weights are in onnx/, once: the text graphs share the decoder session's data, the encoder has its own;
    // the top-level graphs read them there.
    let onnx = out.join("onnx");
    let text = "decoder_model_merged.onnx_data";
    for (graph, data) in [
        ("onnx/vision_encoder.onnx", "vision_encoder.onnx_data"),
        ("onnx/embed_tokens.onnx", text),
        ("onnx/decoder_model_merged.onnx", text),
        ("vision_encoder.onnx", "onnx/vision_encoder.onnx_data"),
        ("embed_tokens.onnx", &format!("onnx/{text}")),
        ("decoder_model_merged.onnx", &format!("onnx/{text}")),
        ("model.onnx", &format!("onnx/{text}")),
    ] {
        assert_unlinked_data(&out, graph, data);
    }
    let config = json("config.json");
    assert_eq!(
        config["transformers.js_config"]["use_external_data_format"],
        serde_json::json!({"vision_encoder.onnx": 1, "decoder_model_merged.onnx": 1}),
        "embed_tokens reads the decoder's data beside it"
    );
    let decoder = std::fs::read(onnx.join("decoder_model_merged.onnx")).unwrap();
    let decoder = ModelProto::decode(&*decoder).unwrap().graph.unwrap();
    let inputs: Vec<_> = decoder
        .input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .collect();
    assert!(!inputs.contains(&"token_type_ids"), "{inputs:?}");
    assert!(inputs.contains(&"position_ids") && inputs.contains(&"inputs_embeds"));
    assert_eq!(
        json("preprocessor_config.json")["processor_class"],
        "Gemma3Processor"
    );
    assert_eq!(json("processor_config.json")["image_seq_length"], 4);

    write_tiny_tokenizer(&out);
    let image = fixtures_dir().join("images").join("landscape-480x640.png");
    let with_image = tjs_vision(
        &out,
        Prompt::Text("<bos> w5 <start_of_image> w7 w9"),
        Some(&image),
    );
    // The processor put the fixture's 4 image tokens between <start_of_image> and <end_of_image>.
    let prompt: &[u32] = &[2, 5, 253, 255, 255, 255, 255, 254, 7, 9];
    assert_eq!(ids(&with_image["prompt_ids"]), prompt);
    assert_eq!(
        with_image["pixel_values_dims"],
        serde_json::json!([1, 3, 56, 56])
    );
    let generated = ids(&with_image["token_ids"]);
    assert!(
        !generated.is_empty() && generated.iter().all(|&t| t < 256),
        "{generated:?}"
    );
    // The image's features replaced the image tokens' embeddings: the same ids without the image generate otherwise.
    assert_ne!(
        generated,
        ids(&tjs_vision(&out, Prompt::Ids(prompt), None)["token_ids"])
    );
    eprintln!("transformers.js generated {generated:?} with the image");

    let text = tjs_vision(&out, Prompt::Ids(LONG), None);
    let (ours, _) = our_generate(&out, LONG, 8).unwrap();
    assert_eq!(
        ids(&text["token_ids"]),
        ours,
        "text through the image-text-to-text sessions"
    );
}

enum Prompt<'a> {
    /// Encoded by `AutoProcessor`.
    Text(&'a str),
    Ids(&'a [u32]),
}

/// 8 greedy tokens by transformers_js_vision.cjs.
fn tjs_vision(dir: &Path, prompt: Prompt, image: Option<&Path>) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", stacks_node_modules())
        .arg(harness("transformers_js_vision.cjs"))
        .arg(dir)
        .args(["-n", "8"]);
    match prompt {
        Prompt::Text(text) => cmd.arg("--prompt").arg(text),
        Prompt::Ids(ids) => cmd.arg("--ids").arg(serde_json::to_string(ids).unwrap()),
    };
    if let Some(image) = image {
        cmd.arg("--image").arg(image);
    }
    let out: serde_json::Value = run_json(cmd, "transformers_js_vision.cjs").unwrap();
    assert_eq!(out["dtype"], "fp32");
    out
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// What `AutoProcessor` needs beside the export: a word-level tokenizer over the fixture's 256 ids (`w{id}`, the
/// specials, Gemma 3's image tokens 253/254/255 named in tokenizer_config.json) and a chat template.
fn write_tiny_tokenizer(dir: &Path) {
    let mut names: Vec<String> = (0..256).map(|i| format!("w{i}")).collect();
    let specials = [
        (0, "<pad>"),
        (1, "<eos>"),
        (2, "<bos>"),
        (3, "<unk>"),
        (253, "<start_of_image>"),
        (254, "<end_of_image>"),
        (255, "<image_soft_token>"),
    ];
    for (id, name) in specials {
        names[id] = name.into();
    }
    let vocab: serde_json::Map<_, _> = names
        .into_iter()
        .zip(0..)
        .map(|(n, i)| (n, i.into()))
        .collect();
    let added: Vec<_> = specials
        .iter()
        .map(|(id, name)| serde_json::json!({"id": id, "content": name, "special": true}))
        .collect();
    let tokenizer = serde_json::json!({"version": "1.0", "added_tokens": added,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "normalizer": null, "post_processor": null, "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}});
    let config = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>", "boi_token": "<start_of_image>",
        "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"});
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("chat_template.jinja"), "{{ bos_token }}").unwrap();
}
