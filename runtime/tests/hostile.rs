//! `gemma` and `gemma-vision` against hostile input (issue 15): templates that never end or grow without bound,
//! token counts that overflow, endless inputs (`/dev/zero`), closed and full outputs, absurd thread counts, many
//! huge images. Each case: the command, the expected exit code, a fragment of the message, no panic, and a deadline
//! (a hang is a failure).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{export, out_dir, stderr, write_messages, write_template, write_tokenizer};

/// Runs `bin` with `args`, stdin from `stdin` (a file) or empty, stdout to `stdout` (a file) or a pipe, under a
/// deadline.
fn run_with(bin: &str, args: &[&str], stdin: Option<&Path>, stdout: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    cmd.stdout(match stdout {
        Some(p) => Stdio::from(std::fs::OpenOptions::new().write(true).open(p).unwrap()),
        None => Stdio::piped(),
    });
    cmd.stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("{bin} {args:?} hung");
        }
    }
}

fn gemma(args: &[&str]) -> Output {
    run_with(env!("CARGO_BIN_EXE_gemma"), args, None, None)
}

/// Asserts exit `code`, `needle` in stderr, and no panic.
fn expect(o: &Output, code: i32, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    assert!(
        err.contains(needle),
        "{what}: stderr should mention {needle:?}: {err}"
    );
}

/// An export of the tiny Gemma 2 fixture with the test tokenizer and `template` as its chat template.
fn model(template: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = export();
    let dir = out_dir(&tmp);
    write_tokenizer(&dir, &[]);
    write_template(&dir, template);
    (tmp, dir)
}

#[test]
fn hostile_chat_templates_fail_cleanly() {
    let cases = [
        (
            "a loop that never ends",
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "steps",
        ),
        (
            "a string that doubles",
            "{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}\
             {% endfor %}{{ ns.s | length }}",
            "MiB of memory",
        ),
        (
            "output that floods",
            "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "larger than 16 MiB",
        ),
    ];
    for (what, template, needle) in cases {
        let (tmp, dir) = model(template);
        let messages = write_messages(
            tmp.path(),
            serde_json::json!([{"role": "user", "content": "w5"}]),
        );
        let start = Instant::now();
        let o = gemma(&[
            "chat",
            "-m",
            dir.to_str().unwrap(),
            "--messages",
            messages.to_str().unwrap(),
            "-n",
            "2",
            "--threads",
            "1",
        ]);
        expect(&o, 1, needle, what);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn token_counts_that_overflow_are_refused() {
    let (tmp, dir) = model("{% for m in messages %}{{ m['content'] }}{% endfor %}");
    let m = dir.to_str().unwrap();
    let messages = write_messages(
        tmp.path(),
        serde_json::json!([{"role": "user", "content": "w5"}]),
    );
    let max = "18446744073709551615";
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        (
            "generate -n max",
            vec!["generate", "-m", m, "-p", "w5 w6", "-n", max],
            1,
            "prompt too long",
        ),
        (
            "chat -n max",
            vec![
                "chat",
                "-m",
                m,
                "--messages",
                messages.to_str().unwrap(),
                "-n",
                max,
            ],
            1,
            "prompt too long",
        ),
        (
            "bench --gen-tokens max",
            vec!["bench", "-m", m, "--gen-tokens", max],
            1,
            "exceed",
        ),
        (
            "bench --prompt-tokens max",
            vec![
                "bench",
                "-m",
                m,
                "--prompt-tokens",
                max,
                "--gen-tokens",
                "4",
            ],
            1,
            "exceed",
        ),
        (
            "--threads 65535",
            vec!["generate", "-m", m, "-p", "w5", "--threads", "65535"],
            2,
            "256",
        ),
        (
            "--threads 0",
            vec!["generate", "-m", m, "-p", "w5", "--threads", "0"],
            2,
            "256",
        ),
    ];
    for (what, args, code, needle) in &cases {
        expect(&gemma(args), *code, needle, what);
    }
}

#[test]
fn endless_inputs_are_read_with_a_cap() {
    let (_tmp, dir) = model("{% for m in messages %}{{ m['content'] }}{% endfor %}");
    let m = dir.to_str().unwrap();
    let zero = Path::new("/dev/zero");
    let bin = env!("CARGO_BIN_EXE_gemma");
    for (what, args, stdin) in [
        (
            "perplexity --text /dev/zero",
            vec!["perplexity", "-m", m, "--text", "/dev/zero"],
            None,
        ),
        (
            "chat --messages /dev/zero",
            vec!["chat", "-m", m, "--messages", "/dev/zero"],
            None,
        ),
        (
            "generate -p - < /dev/zero",
            vec!["generate", "-m", m, "-p", "-"],
            Some(zero),
        ),
    ] {
        let o = run_with(bin, &args, stdin, None);
        expect(&o, 1, "larger than 256 MiB", what);
    }
}

#[test]
fn closed_and_full_outputs_never_panic() {
    let (tmp, dir) = model("{% for m in messages %}{{ m['content'] }}{% endfor %}");
    let m = dir.to_str().unwrap();
    let messages = write_messages(
        tmp.path(),
        serde_json::json!([{"role": "user", "content": "w5"}]),
    );
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16").unwrap();
    let runs: Vec<(&str, Vec<&str>)> = vec![
        (
            "generate",
            vec!["generate", "-m", m, "-p", "w5 w6", "-n", "4"],
        ),
        (
            "generate --json",
            vec!["generate", "-m", m, "-p", "w5 w6", "-n", "4", "--json"],
        ),
        (
            "perplexity --json",
            vec![
                "perplexity",
                "-m",
                m,
                "--text",
                text.to_str().unwrap(),
                "--context",
                "8",
                "--json",
            ],
        ),
        (
            "bench --json",
            vec![
                "bench",
                "-m",
                m,
                "--prompt-tokens",
                "4",
                "--gen-tokens",
                "2",
                "--repeat",
                "1",
                "--json",
            ],
        ),
        (
            "chat --json",
            vec![
                "chat",
                "-m",
                m,
                "--messages",
                messages.to_str().unwrap(),
                "--json",
                "-n",
                "2",
            ],
        ),
    ];
    let bin = env!("CARGO_BIN_EXE_gemma");
    for (what, args) in &runs {
        // A full device: a clear error and status 1.
        let o = run_with(bin, args, None, Some(Path::new("/dev/full")));
        expect(
            &o,
            1,
            "No space left on device",
            &format!("{what} > /dev/full"),
        );
        // A closed pipe: quiet, status 141 (as if killed by SIGPIPE).
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{what} | closed: {err}");
        assert_eq!(o.status.code(), Some(141), "{what} | closed: {err}");
    }
    // stderr on a full device: status 1, never 101 (a panic).
    let o = Command::new(bin)
        .args(["generate", "-m", "/nonexistent", "-p", "w5"])
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(runs.len(), 5);
}

/// The tiny Gemma 3 multimodal fixture, exported with the test tokenizer and Gemma 3's template.
fn vision_model(tmp: &Path) -> PathBuf {
    let out = tmp.join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        common::fixtures()
            .join("tiny")
            .join("cg-mqa-bf16-sharded-hf4"),
        out.clone(),
    ))
    .unwrap();
    write_tokenizer(
        &out,
        &[
            (253, "<start_of_image>"),
            (254, "<end_of_image>"),
            (255, "<image_soft_token>"),
        ],
    );
    out
}

#[test]
fn hostile_images_fail_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vision_model(tmp.path());
    let m = dir.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_gemma-vision");
    for (what, image, needle) in [
        ("/dev/zero as an image", "/dev/zero", "over the limit"),
        ("/dev/urandom as an image", "/dev/urandom", "over the limit"),
    ] {
        let o = run_with(
            bin,
            &["describe", image, "-m", m, "-p", "w5", "--raw", "-n", "1"],
            None,
            None,
        );
        expect(&o, 1, needle, what);
    }
    // A PNG whose header claims 8192×8192 (64 megapixels, the most one image may have; the body is cut): five of
    // them are too big to decode at once, which their headers alone say.
    let big = tmp.path().join("big.png");
    let png = image::RgbImage::new(16, 16);
    let mut bytes = Vec::new();
    png.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    // IHDR width and height live at bytes 16..24.
    bytes[16..20].copy_from_slice(&8192u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&8192u32.to_be_bytes());
    // The IHDR CRC (over the chunk type and data, bytes 12..29) must match, or the header is refused as corrupt.
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&big, &bytes).unwrap();
    let mut args = vec!["describe", "-m", m, "-p", "w5", "--raw", "-n", "1"];
    for _ in 0..5 {
        args.push(big.to_str().unwrap());
    }
    let start = Instant::now();
    let o = run_with(bin, &args, None, None);
    expect(&o, 1, "megapixels", "5 huge images");
    assert!(start.elapsed() < Duration::from_secs(30));
    // More images than the context can hold: refused before the model is loaded.
    let small = tmp.path().join("small.png");
    png.save(&small).unwrap();
    let mut args = vec!["describe", "-m", m, "-p", "w5", "--raw", "-n", "1"];
    for _ in 0..2000 {
        args.push(small.to_str().unwrap());
    }
    let o = run_with(bin, &args, None, None);
    expect(&o, 1, "positions", "2000 images");
}

/// CRC-32 (IEEE), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
