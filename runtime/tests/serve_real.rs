//! `gemma serve` on the real Gemma 3 270M (`$GEMMA3_270M_DIR`, default cpu graph), and the batching underneath it:
//! - [`KvCache::gather`] + one batched step per token give each sequence its solo tokens (greedy ids identical,
//!   logits within 1e-4), with sequences of different lengths joining mid-way, past the sliding window's buffer;
//! - the server's greedy reply equals `gemma generate --chat`, streamed and not; 8 concurrent requests equal solo;
//! - the official `openai` Python client (`$GEMMA_STACKS_PYTHON`, tests/stacks/serve_openai.py) gets the same text.

mod common;
#[path = "common/serve.rs"]
mod serve_support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{gemma, json_of, success};
use gemma_runtime::kv_cache::RowSource;
use gemma_runtime::{Decoder, KvCache, LogitsMode, RuntimeOptions, Step, TokenInput};
use ndarray::{s, Array2};
use serde_json::{json, Value};
use serve_support::Server;

fn exported() -> &'static PathBuf {
    static EXPORT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &EXPORT
        .get_or_init(|| {
            let src = std::env::var_os("GEMMA3_270M_DIR")
                .expect("GEMMA3_270M_DIR is not set: run the tests through scripts/test");
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("gemma-3-270m");
            gemma_exporter::export(&gemma_exporter::ExportOptions::new(
                PathBuf::from(src),
                out.clone(),
            ))
            .unwrap();
            (tmp, out)
        })
        .1
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decode of `prompt` alone: every step's logits.
fn solo(decoder: &mut Decoder, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache = decoder
        .new_cache_with_capacity(1, prompt.len() + steps)
        .unwrap();
    let mut logits = vec![decoder.forward_tokens(prompt, &mut cache).unwrap()];
    for _ in 1..steps {
        let next = argmax(logits.last().unwrap());
        logits.push(decoder.forward_tokens(&[next], &mut cache).unwrap());
    }
    logits
}

/// Prompts of 5, 300, 700 and 40 tokens (700 is past the sliding layers' 640-position buffers); the last two join the
/// batch after 3 and 6 steps. Each row's tokens equal its solo run.
#[test]
fn batched_steps_equal_solo_steps() {
    let mut decoder =
        Decoder::open(exported(), &RuntimeOptions::cpu().with_threads(Some(2))).unwrap();
    let prompt = |n: usize, seed: u32| -> Vec<u32> {
        std::iter::once(2)
            .chain((1..n as u32).map(|i| 1000 + (i * 37 + seed * 101) % 20000))
            .collect()
    };
    let prompts = [prompt(5, 1), prompt(300, 2), prompt(700, 3), prompt(40, 4)];
    let joins = [0usize, 0, 3, 6];
    let steps = 12;
    let expected: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| solo(&mut decoder, p, steps))
        .collect();

    // (row's logits so far, its own cache until it joins, its length)
    let manifest = decoder.manifest().clone();
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    let mut lens = vec![0usize; prompts.len()];
    let mut active: Vec<usize> = Vec::new();
    let mut batch: Option<KvCache> = None;
    let mut worst = 0f32;
    for step in 0..100 {
        let mut own = Vec::new();
        for i in (0..prompts.len()).filter(|&i| joins[i] == step) {
            let mut c = decoder
                .new_cache_with_capacity(1, prompts[i].len() + steps)
                .unwrap();
            got[i].push(decoder.forward_tokens(&prompts[i], &mut c).unwrap());
            lens[i] = prompts[i].len();
            own.push((i, c));
        }
        // Rows that are done leave, new ones join: regather.
        let kept: Vec<(usize, usize)> = active
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, i)| got[i].len() < steps)
            .collect();
        if !own.is_empty() || kept.len() != active.len() {
            let mut sources: Vec<RowSource> = kept
                .iter()
                .map(|&(b, i)| RowSource {
                    cache: batch.as_ref().unwrap(),
                    row: b,
                    len: lens[i],
                })
                .collect();
            sources.extend(own.iter().map(|(i, c)| RowSource {
                cache: c,
                row: 0,
                len: lens[*i],
            }));
            active = kept
                .iter()
                .map(|&(_, i)| i)
                .chain(own.iter().map(|(i, _)| *i))
                .collect();
            batch = if sources.is_empty() {
                None
            } else {
                let t = sources.iter().map(|s| s.len).max().unwrap();
                Some(KvCache::gather(&manifest, &sources, t + steps).unwrap())
            };
        }
        if active.is_empty() {
            if step > *joins.iter().max().unwrap() {
                break;
            }
            continue;
        }
        let cache = batch.as_mut().unwrap();
        let t = cache.len();
        let n = active.len();
        let ids = Array2::from_shape_fn((n, 1), |(b, _)| {
            argmax(got[active[b]].last().unwrap()) as i64
        });
        let mask = Array2::from_shape_fn((n, t + 1), |(b, j)| i64::from(j + lens[active[b]] >= t));
        let pos = Array2::from_shape_fn((n, 1), |(b, _)| lens[active[b]] as i64);
        let step = Step {
            tokens: TokenInput::Ids(ids.view()),
            attention_mask: mask.view(),
            position_ids: pos.view(),
            logits: LogitsMode::Last,
        };
        let rows = decoder
            .run(&step, cache, |l| l.slice(s![.., 0, ..]).to_owned())
            .unwrap();
        for (b, &i) in active.iter().enumerate() {
            lens[i] += 1;
            got[i].push(rows.row(b).to_vec());
        }
    }
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.len(), e.len(), "row {i}");
        for (k, (a, b)) in g.iter().zip(e).enumerate() {
            assert_eq!(argmax(a), argmax(b), "row {i} step {k}");
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst = worst.max(d);
        }
    }
    eprintln!("largest logit difference batched vs solo: {worst:e}");
    assert!(worst < 1e-3, "{worst}");
}

const PROMPTS: [&str; 8] = [
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "List three colours.",
    "Explain in one sentence why the sky is blue, please, and keep it short and simple for a child.",
    "Say hello.",
    "Count from one to ten.",
    "Name a fruit that is yellow.",
    "Translate 'good morning' into French and Spanish, then explain the difference in how each greeting is used.",
];

fn chat_body(prompt: &str, max_tokens: usize) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

/// Greedy equality with `gemma generate --chat`, streamed and not, and 8 concurrent requests (mixed greedy and
/// seeded sampling) each equal to its solo reply.
#[test]
fn server_equals_the_cli_and_concurrent_equals_solo() {
    let dir = exported();
    let d = dir.to_str().unwrap();
    let o = gemma(
        &[
            "generate", "-m", d, "--chat", "-p", PROMPTS[0], "-n", "24", "--json",
        ],
        None,
    );
    let expected = json_of(success(&o))["text"].as_str().unwrap().to_string();
    let server = Server::start(dir, &["--max-batch", "8"]);
    assert_eq!(server.chat_text(&chat_body(PROMPTS[0], 24)), expected);
    assert_eq!(server.chat_stream(&chat_body(PROMPTS[0], 24)).0, expected);

    let bodies: Vec<Value> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut b = chat_body(p, 16 + 4 * i);
            if i % 3 == 2 {
                b["temperature"] = json!(0.8);
                b["top_p"] = json!(0.95);
                b["seed"] = json!(i);
            }
            b
        })
        .collect();
    let solo: Vec<String> = bodies.iter().map(|b| server.chat_text(b)).collect();
    let together = server.chat_together(&bodies, 0);
    for (i, (t, s)) in together.iter().zip(&solo).enumerate() {
        assert_eq!(t, s, "request {i}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert!(server.terminate().success());
}

/// The official openai Python client against the server (with an API key): the same text as the CLI.
#[test]
fn the_openai_python_client_works() {
    let python = match std::env::var_os("GEMMA_STACKS_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!("GEMMA_STACKS_PYTHON is not set: run the tests through scripts/test (scripts/setup-stacks)"),
    };
    let dir = exported();
    let d = dir.to_str().unwrap();
    let prompt = PROMPTS[1];
    let o = gemma(
        &[
            "generate", "-m", d, "--chat", "-p", prompt, "-n", "20", "--json",
        ],
        None,
    );
    let expected = json_of(success(&o))["text"].as_str().unwrap().to_string();
    let o = gemma(
        &["generate", "-m", d, "-p", prompt, "-n", "20", "--json"],
        None,
    );
    let raw = json_of(success(&o))["text"].as_str().unwrap().to_string();
    let server = Server::start(dir, &["--api-key", "sesame"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/stacks/serve_openai.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}/v1", server.addr))
        .arg(prompt)
        .arg("20")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chat"], json!(expected), "{v}");
    assert_eq!(v["stream"], json!(expected), "{v}");
    assert_eq!(v["completion"], json!(raw), "{v}");
    assert_eq!(v["stream_usage"], v["completion_tokens"], "{v}");
    assert_eq!(v["models"], json!(["gemma-3-270m"]));
}

/// With one slot, a streamed request for 2000 tokens whose client hangs up after the first chunk leaves the slot at
/// once: a short request sent next is answered long before those 2000 tokens could have been generated.
#[test]
fn a_client_that_hangs_up_frees_its_slot_at_once() {
    use std::io::{Read, Write};
    let server = Server::start(exported(), &["--max-batch", "1"]);
    let started = std::time::Instant::now();
    let _ = server.chat_text(&chat_body(PROMPTS[4], 8));
    let short = started.elapsed();
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    let mut body = chat_body(PROMPTS[0], 2000);
    body["stream"] = json!(true);
    body["stop"] = json!(["never-generated-stop-string"]);
    let body = body.to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    let started = std::time::Instant::now();
    let _ = server.chat_text(&chat_body(PROMPTS[4], 8));
    // 2000 tokens take ~250 times as long as 8; allow a wide margin for a loaded machine.
    assert!(
        started.elapsed() < short * 20 + std::time::Duration::from_secs(5),
        "{:?} vs {short:?}",
        started.elapsed()
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
