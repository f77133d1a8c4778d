//! `gemma serve` on the tiny multimodal export (Gemma 3 vision, the Gemma 3 chat template; its decoder on embeddings
//! has the portable graph):
//! - an image request equals the library's `Conversation` on the same image;
//! - concurrent image requests (one or two images, images in an earlier turn, none, a system message, seeded
//!   sampling) are decoded in one batch and each equals its solo result.
//!
//! PaliGemma 2 (`../tests/fixtures/paligemma`, no chat template: a user message is prompted as `gemma-vision
//! describe` prompts it; prefix-LM token types, positions from 1): the same, and the text equals `describe`'s.

mod common;
#[path = "common/serve.rs"]
mod serve_support;

use std::path::PathBuf;

use common::*;
use gemma_runtime::{ChatOptions, Conversation, GenerateOptions, RuntimeOptions, VisionGenerator};
use serde_json::{json, Value};
use serve_support::{base64, Server};

const VISION_FIXTURE: &str = "cg-mqa-bf16-sharded-hf4";

/// The tiny multimodal export with the image tokens and the Gemma 3 chat template.
fn tiny_vision() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        fixtures().join("tiny").join(VISION_FIXTURE),
        dir.clone(),
    ))
    .unwrap();
    write_tokenizer(
        &dir,
        &[
            (253, "<start_of_image>"),
            (254, "<end_of_image>"),
            (255, "<image_soft_token>"),
        ],
    );
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat/templates.json")).unwrap(),
    )
    .unwrap();
    let config = json!({"bos_token": "<bos>", "eos_token": "<eos>", "chat_template": doc["templates"]["gemma3"]});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    (tmp, dir)
}

/// A fixture image as a `data:` URI part.
fn image_part(name: &str) -> Value {
    let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
    let url = format!("data:image/png;base64,{}", base64(&bytes));
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

#[test]
fn image_request_on_a_vision_export() {
    let (_tmp, dir) = tiny_vision();
    let image = fixtures().join("images/landscape-480x640.png");
    let bytes = std::fs::read(&image).unwrap();

    let gen = VisionGenerator::open(&dir, &RuntimeOptions::cpu().with_threads(Some(1))).unwrap();
    let options = ChatOptions {
        generate: GenerateOptions {
            max_new_tokens: 8,
            ..GenerateOptions::default()
        },
        ..ChatOptions::default()
    };
    let mut conv = Conversation::new(gen, options).unwrap();
    conv.add_image(&image).unwrap();
    let expected = conv.send("w20 w21", |_| {}).unwrap().output.text;

    let server = Server::start(&dir, &[]);
    let url = format!("data:image/png;base64,{}", base64(&bytes));
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "w20 w21"}]}],
        "max_tokens": 8, "temperature": 0});
    assert_eq!(server.chat_text(&body), expected);
    assert_eq!(server.chat_stream(&body).0, expected);
    let bad = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    let r = server.post("/v1/chat/completions", &bad);
    assert_eq!(r.status, 400, "{}", r.body);
}

/// Image requests sent together are decoded in one batch (each prefilled alone with its images): each equals its
/// solo result, greedy and seeded, streamed or not.
#[test]
fn concurrent_image_requests_equal_solo() {
    let (_tmp, dir) = tiny_vision();
    let server = Server::start(&dir, &["--max-batch", "8"]);
    let land = || image_part("landscape-480x640.png");
    let portrait = || image_part("portrait-1000x300.png");
    let messages = [
        json!([{"role": "user", "content": [land(), text_part("w20 w21")]}]),
        json!([{"role": "user", "content": [portrait(), text_part("w30")]}]),
        json!([{"role": "user", "content": [land(), portrait(), text_part("w40 w41 w42")]}]),
        json!([{"role": "user", "content": [image_part("ratio-1.2-500x600.png"), text_part("w50")]},
               {"role": "assistant", "content": "w51 w52"}, {"role": "user", "content": "w53"}]),
        json!([{"role": "user", "content": "w60 w61 w62 w63"}]),
        json!([{"role": "system", "content": "w70"}, {"role": "user", "content": [portrait(), text_part("w71")]}]),
    ];
    let bodies: Vec<Value> = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut body = json!({"messages": m, "max_tokens": 6 + 3 * i, "temperature": 0});
            if i % 3 == 1 {
                body["temperature"] = json!(1.5);
                body["seed"] = json!(i);
            }
            body
        })
        .collect();
    let solo: Vec<String> = bodies.iter().map(|b| server.chat_text(b)).collect();
    for round in 0..2 {
        let together = server.chat_together(&bodies, round);
        assert_eq!(together, solo, "round {round}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// PaliGemma has no chat template: one user message with its images is prompted as `gemma-vision describe` does,
/// and concurrent requests each equal their solo result.
#[test]
fn paligemma_requests_are_batched_and_equal_describe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pg2");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        fixtures().join("paligemma/pg2-s32"),
        dir.clone(),
    ))
    .unwrap();
    let land = fixtures().join("images/landscape-480x640.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-vision"))
        .args([
            "describe",
            land.to_str().unwrap(),
            "-m",
            dir.to_str().unwrap(),
        ])
        .args(["-p", "caption en", "-n", "5", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let described: Value = serde_json::from_slice(&o.stdout).unwrap();

    let server = Server::start(&dir, &["--max-batch", "8"]);
    let user = |parts: Vec<Value>| json!([{"role": "user", "content": parts}]);
    let land = || image_part("landscape-480x640.png");
    let messages = [
        user(vec![land(), text_part("caption en")]),
        user(vec![image_part("tiny-20x30.png"), text_part("caption en")]),
        user(vec![
            land(),
            image_part("portrait-1000x300.png"),
            text_part("detect cat"),
        ]),
        user(vec![text_part("answer en why")]),
        user(vec![image_part("portrait-1000x300.png"), text_part("ocr")]),
    ];
    let bodies: Vec<Value> = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut body = json!({"messages": m, "max_tokens": 5 + 2 * i, "temperature": 0});
            if i == 4 {
                body["temperature"] = json!(1.5);
                body["seed"] = json!(7);
            }
            body
        })
        .collect();
    let solo: Vec<String> = bodies.iter().map(|b| server.chat_text(b)).collect();
    assert_eq!(json!(solo[0]), described["text"]);
    for round in 0..2 {
        assert_eq!(server.chat_together(&bodies, round), solo, "round {round}");
    }
    // Without a template, only one user message can be prompted.
    let two =
        json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
    let r = server.post("/v1/chat/completions", &two);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
