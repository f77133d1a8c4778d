//! `gemma serve` end to end on tiny exports (the word-level tokenizer and Gemma 2 template of `common`):
//! - temperature 0 gives `gemma generate --chat`'s text, streamed and not;
//! - 8 concurrent requests (different lengths, greedy and seeded sampling) each equal their solo result, on the
//!   portable graph and on the cpu graph (in-place KV buffers);
//! - every bad request is a 4xx OpenAI error object, and the server stays up; `--api-key`; SIGTERM exits cleanly;
//! - a system message on the Gemma 2 template (no system role) is folded into the first user message, as `gemma chat`
//!   does.
//!
//! Multimodal exports: `serve_vision.rs`.

mod common;
#[path = "common/serve.rs"]
mod serve_support;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};
use serve_support::Server;

/// A tiny export of `graph` with the tokenizer and the Gemma 2 chat template.
fn tiny(graph: gemma_exporter::GraphKind) -> (tempfile::TempDir, PathBuf) {
    tiny_of(FIXTURE, graph)
}

/// [`tiny`] of another fixture.
fn tiny_of(fixture: &str, graph: gemma_exporter::GraphKind) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("onnx");
    gemma_exporter::export(
        &gemma_exporter::ExportOptions::new(fixtures().join("tiny").join(fixture), dir.clone())
            .graph(graph),
    )
    .unwrap();
    write_tokenizer(&dir, &[]);
    write_template(&dir, &gemma2_template());
    (tmp, dir)
}

fn chat_body(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": "x", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
           "temperature": 0})
}

fn cli_text(dir: &Path, prompt: &str, n: usize) -> String {
    let o = gemma(
        &[
            "generate",
            "-m",
            dir.to_str().unwrap(),
            "--chat",
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--json",
        ],
        None,
    );
    json_of(success(&o))["text"].as_str().unwrap().to_string()
}

/// Requests of several lengths, greedy and seeded: (body, label).
fn mixed_requests() -> Vec<Value> {
    (0..8)
        .map(|i| {
            let words: Vec<String> = (0..(1 + 3 * i))
                .map(|k| format!("w{}", 10 + (i * 7 + k) % 90))
                .collect();
            let mut body = chat_body(&words.join(" "), 12 + 5 * i);
            if i % 2 == 1 {
                body["temperature"] = json!(1.5);
                body["seed"] = json!(i);
            }
            body
        })
        .collect()
}

fn concurrent_equals_solo(fixture: &str, graph: gemma_exporter::GraphKind) {
    let (_tmp, dir) = tiny_of(fixture, graph);
    let server = Server::start(&dir, &["--max-batch", "8"]);
    let bodies = mixed_requests();
    let solo: Vec<String> = bodies.iter().map(|b| server.chat_text(b)).collect();
    let distinct: std::collections::HashSet<&String> = solo.iter().collect();
    assert!(
        distinct.len() > 4,
        "{fixture}: the replies must differ for the comparison to mean something: {solo:?}"
    );
    for round in 0..3 {
        let together = server.chat_together(&bodies, round);
        assert_eq!(together, solo, "round {round}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn concurrent_requests_equal_solo_on_the_portable_graph() {
    concurrent_equals_solo(FIXTURE, gemma_exporter::GraphKind::Portable);
}

#[test]
fn concurrent_requests_equal_solo_on_the_cpu_graph() {
    concurrent_equals_solo(FIXTURE, gemma_exporter::GraphKind::Cpu);
}

/// Gemma 3n (embed_tokens per step, per-layer inputs, KV-shared layers without buffers of their own, a window of 4
/// under prompts of up to 22 words) batches like the other families, on both graphs.
#[test]
fn gemma3n_concurrent_requests_equal_solo() {
    for graph in [
        gemma_exporter::GraphKind::Cpu,
        gemma_exporter::GraphKind::Portable,
    ] {
        concurrent_equals_solo("gemma3n-text-f32", graph);
    }
}

#[test]
fn greedy_equals_the_cli_streamed_and_not() {
    let (_tmp, dir) = tiny(gemma_exporter::GraphKind::Cpu);
    let prompt = "w10 w11 w12 w13";
    let expected = cli_text(&dir, prompt, 20);
    let server = Server::start(&dir, &[]);
    assert_eq!(server.chat_text(&chat_body(prompt, 20)), expected);
    let (streamed, data) = server.chat_stream(&chat_body(prompt, 20));
    assert_eq!(streamed, expected);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(
        finish["choices"][0]["finish_reason"].is_string(),
        "{finish}"
    );

    let r = server
        .post("/v1/chat/completions", &chat_body(prompt, 20))
        .json();
    assert_eq!(r["object"], "chat.completion");
    let usage = &r["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    // /v1/completions: the raw prompt, as `gemma generate` without --chat.
    let o = gemma(
        &[
            "generate",
            "-m",
            dir.to_str().unwrap(),
            "-p",
            prompt,
            "-n",
            "9",
            "--json",
        ],
        None,
    );
    let raw = json_of(success(&o))["text"].as_str().unwrap().to_string();
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 9, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["text"], json!(raw));
    let models = server.request("GET", "/v1/models", None).json();
    assert_eq!(models["data"][0]["id"], "onnx");
    let log = server.log();
    assert!(log.contains("POST /v1/chat/completions 200"), "{log}");
    assert!(server.terminate().success());
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_stays_up() {
    let (_tmp, dir) = tiny(gemma_exporter::GraphKind::Cpu);
    let server = Server::start(&dir, &["--ctx", "64"]);
    let long: Vec<String> = (0..80).map(|k| format!("w{}", 10 + k)).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, "not valid JSON"),
        ("missing field", br#"{"model": "x"}"#.to_vec(), 400, "messages"),
        ("wrong type", br#"{"messages": 5}"#.to_vec(), 400, "schema"),
        ("unknown role", br#"{"messages": [{"role": "wizard", "content": "w10"}]}"#.to_vec(), 400, "wizard"),
        ("negative max_tokens", br#"{"messages": [{"role": "user", "content": "w10"}], "max_tokens": -3}"#.to_vec(),
         400, "max_tokens"),
        ("oversized max_tokens",
         br#"{"messages": [{"role": "user", "content": "w10"}], "max_tokens": 1000000000000}"#.to_vec(), 400,
         "context"),
        ("prompt too long", chat_body(&long.join(" "), 4).to_string().into_bytes(), 400, "context"),
        ("image on a text model",
         br#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}"#.to_vec(),
         400, "images"),
        ("bad temperature", br#"{"messages": [{"role": "user", "content": "w1"}], "temperature": -1}"#.to_vec(), 400,
         "temperature"),
        ("body too large", vec![b' '; 33 << 20], 413, ""),
    ];
    for (what, body, status, needle) in cases {
        let r = server
            .try_request("POST", "/v1/chat/completions", Some(&body), &[])
            .unwrap();
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let e = r.json();
        let message = e["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {}", r.body));
        assert!(message.contains(needle), "{what}: {message}");
        assert!(e["error"]["type"].is_string(), "{what}: {e}");
    }
    let r = server.request("GET", "/nope", None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
    // Still serving.
    server.chat_text(&chat_body("w10 w11", 4));
    assert_eq!(server.request("GET", "/health", None).status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn api_key_is_required_on_v1_only() {
    let (_tmp, dir) = tiny(gemma_exporter::GraphKind::Cpu);
    let server = Server::start(&dir, &["--api-key", "sesame"]);
    let body = chat_body("w10 w11", 3).to_string();
    let r = server
        .try_request("POST", "/v1/chat/completions", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let wrong = [("Authorization", "Bearer nope")];
    let r = server
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body.as_bytes()),
            &wrong,
        )
        .unwrap();
    assert_eq!(r.status, 401);
    let right = [("Authorization", "Bearer sesame")];
    let r = server
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body.as_bytes()),
            &right,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(server.request("GET", "/health", None).status, 200);
}

/// A client that hangs up mid-stream frees its slot: with one slot, a request sent right after is answered
/// although the abandoned one asked for the whole context.
#[test]
fn a_client_that_hangs_up_frees_its_slot() {
    use std::io::{Read, Write};
    let (_tmp, dir) = tiny(gemma_exporter::GraphKind::Cpu);
    let server = Server::start(&dir, &["--max-batch", "1"]);
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        let body = json!({"messages": [{"role": "user", "content": "w10"}], "stream": true, "temperature": 1,
                          "seed": 1, "stop": ["w1000"]})
        .to_string();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 64];
        let n = s.read(&mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        drop(s);
    }
    let start = std::time::Instant::now();
    let _ = server.chat_text(&chat_body("w10 w11", 4));
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// The Gemma 2 template raises an exception for a system message; the server folds it into the first user message
/// as `gemma chat` does (system text, a blank line, the user's text), also after earlier turns.
#[test]
fn a_system_message_is_folded_on_a_template_without_system_role() {
    let (_tmp, dir) = tiny(gemma_exporter::GraphKind::Cpu);
    let expected = cli_text(&dir, "w30 w31\n\nw10 w11", 10);
    let server = Server::start(&dir, &[]);
    let mut body = chat_body("w10 w11", 10);
    body["messages"] =
        json!([{"role": "system", "content": "w30 w31"}, {"role": "user", "content": "w10 w11"}]);
    assert_eq!(server.chat_text(&body), expected);
    assert_eq!(server.chat_stream(&body).0, expected);
    // Several turns: only the first user message takes the system text.
    body["messages"] = json!([{"role": "system", "content": "w30"}, {"role": "user", "content": "w10"},
                              {"role": "assistant", "content": "w12"}, {"role": "user", "content": "w11"}]);
    let folded = json!([{"role": "user", "content": "w30\n\nw10"}, {"role": "assistant", "content": "w12"},
                        {"role": "user", "content": "w11"}]);
    let mut plain = body.clone();
    plain["messages"] = folded;
    assert_eq!(server.chat_text(&body), server.chat_text(&plain));
    // A system message anywhere but first is the client's mistake.
    body["messages"] =
        json!([{"role": "user", "content": "w10"}, {"role": "system", "content": "w30"}]);
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 400, "{}", r.body);
}
