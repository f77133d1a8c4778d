//! `gemma-vision describe` and `gemma chat --image` end to end on the tiny Gemma3ForConditionalGeneration export
//! (`../tests/fixtures/tiny/cg-mqa-bf16-sharded-hf4`: 56 px images, 4 soft tokens, image tokens 253/254/255) with
//! the word-level tokenizer of `common` and Gemma 3's chat template: the CLI gives the library's answer, crop counts
//! and timings in `--json`, and every bad input (images, folder, prompt) is a one-line error with exit code 1.
//! The numbers themselves are checked against transformers in `tests/tests/vision_runtime.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fixtures, write_tokenizer};
use gemma_runtime::{GenerateOptions, RuntimeOptions, VisionGenerator, VisionOptions};
use serde_json::Value;

const FIXTURE: &str = "cg-mqa-bf16-sharded-hf4";
const IMAGE_TOKENS: [(u32, &str); 3] = [
    (253, "<start_of_image>"),
    (254, "<end_of_image>"),
    (255, "<image_soft_token>"),
];

/// A fresh fp32 export of `fixture` (default graph: the CPU one for the text decoder) in `tmp/onnx`.
fn export(tmp: &Path, fixture: &str) -> PathBuf {
    let out = tmp.join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(
        fixtures().join("tiny").join(fixture),
        out.clone(),
    ))
    .unwrap();
    out
}

/// The vision export, with the tokenizer and Gemma 3's chat template (as committed in chat/templates.json).
fn vision_export(tmp: &Path) -> PathBuf {
    let dir = export(tmp, FIXTURE);
    write_tokenizer(&dir, &IMAGE_TOKENS);
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat/templates.json")).unwrap(),
    )
    .unwrap();
    let config = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>",
                                    "chat_template": doc["templates"]["gemma3"]});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

fn run(bin: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn vision(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_gemma-vision"), args, "")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_clean_failure(o: &Output) -> String {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic in: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A 1000×300 landscape (3 Pan & Scan crops) and a 60×90 portrait (too small to crop), as PNG and JPEG.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let wide = image::RgbImage::from_fn(1000, 300, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 40])
    });
    let small = image::RgbImage::from_fn(60, 90, |x, y| {
        image::Rgb([200, (3 * x) as u8, (2 * y) as u8])
    });
    let (a, b) = (dir.join("wide.png"), dir.join("small.jpg"));
    wide.save(&a).unwrap();
    small.save(&b).unwrap();
    (a, b)
}

#[test]
fn help_teaches_with_examples() {
    for args in [&["--help"][..], &["describe", "--help"]] {
        let o = vision(args);
        assert!(o.status.success());
        let out = text(&o.stdout);
        for needle in [
            "Examples:",
            "gemma-vision describe",
            "--pan-and-scan",
            "--json",
            "--raw",
            "WebP",
            "<start_of_image>",
        ] {
            assert!(out.contains(needle), "{args:?}: no {needle:?} in\n{out}");
        }
    }
}

#[test]
fn describe_json_equals_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vision_export(tmp.path());
    let (wide, small) = images(tmp.path());
    let d = dir.to_str().unwrap();
    let args = [
        wide.to_str().unwrap(),
        small.to_str().unwrap(),
        "-m",
        d,
        "-p",
        "w20 w21",
        "-n",
        "5",
        "--threads",
        "1",
    ];
    let o = vision(&[&["describe"][..], &args, &["--pan-and-scan", "--json"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    let crops: Vec<u64> = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["num_crops"].as_u64().unwrap())
        .collect();
    assert_eq!(crops, [3, 0]);
    assert_eq!(
        (
            j["images"][0]["width"].as_u64(),
            j["images"][0]["height"].as_u64()
        ),
        (Some(1000), Some(300))
    );
    assert_eq!(j["pan_and_scan"], true);
    assert!(j["time_to_first_token_s"].as_f64().unwrap() > 0.0);

    // the library, same images and prompt: same prompt length and tokens
    let mut gen =
        VisionGenerator::open(&dir, &RuntimeOptions::cpu().with_threads(Some(1))).unwrap();
    let opts = VisionOptions {
        generate: GenerateOptions {
            max_new_tokens: 5,
            ..Default::default()
        },
        pan_and_scan: true,
        ..Default::default()
    };
    let lib = gen
        .describe(&[wide.clone(), small.clone()], "w20 w21", &opts, |_| {})
        .unwrap();
    assert_eq!(
        j["prompt_tokens"].as_u64(),
        Some(lib.generation.prompt_tokens as u64)
    );
    let ids: Vec<u32> = serde_json::from_value(j["token_ids"].clone()).unwrap();
    assert_eq!(ids, lib.generation.token_ids);
    assert_eq!(j["text"].as_str(), Some(lib.generation.text.as_str()));

    // streamed: the answer on stdout, the statistics on stderr
    let o = vision(&[&["describe"][..], &args].concat());
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout).trim_end(),
        lib_text_without_crops(&mut gen, &wide, &small)
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("2 image(s), crops 0+0") && err.contains("first token after"),
        "{err}"
    );
}

/// The library's answer without Pan & Scan (the CLI default for this export).
fn lib_text_without_crops(gen: &mut VisionGenerator, a: &Path, b: &Path) -> String {
    let opts = VisionOptions {
        generate: GenerateOptions {
            max_new_tokens: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    gen.describe(
        &[a.to_path_buf(), b.to_path_buf()],
        "w20 w21",
        &opts,
        |_| {},
    )
    .unwrap()
    .generation
    .text
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vision_export(tmp.path());
    let d = dir.to_str().unwrap();
    let (wide, _) = images(tmp.path());
    let png = std::fs::read(&wide).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let truncated = write("cut.png", &png[..png.len() / 3]);
    let notes = write("notes.gif", b"plain text, not a GIF");
    // Header-only PNGs committed by `tests/fixtures/make_fixtures.py bombs`.
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images");
    let bomb = write(
        "bomb.png",
        &std::fs::read(images.join("bomb-100000x100000.png")).unwrap(),
    );
    let zero = write(
        "zero.png",
        &std::fs::read(images.join("zero-0x5.png")).unwrap(),
    );
    let empty = write("empty.bmp", b"");
    for (path, words) in [
        (&truncated, &["cut.png", "truncated"][..]),
        (
            &notes,
            &["notes.gif", "not an image", "JPEG, PNG, WebP, GIF, BMP"],
        ),
        (
            &bomb,
            &[
                "bomb.png",
                "100000×100000",
                "16384",
                "refused before decoding",
            ],
        ),
        (&zero, &["zero.png", "0×5", "zero-sized"]),
        (&empty, &["empty.bmp", "empty"]),
        (
            &tmp.path().join("missing.jpg"),
            &["missing.jpg", "cannot read"],
        ),
    ] {
        let err = assert_clean_failure(&vision(&["describe", path.to_str().unwrap(), "-m", d]));
        for w in words {
            assert!(err.contains(w), "{}: no {w:?} in {err}", path.display());
        }
    }
    let w = wide.to_str().unwrap();
    // placeholders: a raw prompt must hold one <start_of_image> per image; a chat prompt must not write its own
    for (extra, words) in [
        (&["--raw", "-p", "w9 w10"][..], "0 image placeholder(s)"),
        (
            &["--raw", "-p", "<start_of_image> <start_of_image>"],
            "2 image placeholder(s)",
        ),
        (
            &["-p", "compare with <start_of_image>"],
            "2 image placeholder(s)",
        ),
    ] {
        let err = assert_clean_failure(&vision(&[&["describe", w, "-m", d][..], extra].concat()));
        assert!(err.contains(words) && err.contains("1 image(s)"), "{err}");
    }
    // a text-only export
    let text_tmp = tempfile::tempdir().unwrap();
    let text_dir = export(text_tmp.path(), "mqa-f32-hf5");
    write_tokenizer(&text_dir, &[]);
    let t = text_dir.to_str().unwrap();
    let err = assert_clean_failure(&vision(&["describe", w, "-m", t]));
    assert!(
        err.contains("text-only") && err.contains("Gemma3ForConditionalGeneration"),
        "{err}"
    );
    let err = assert_clean_failure(&run(
        env!("CARGO_BIN_EXE_gemma"),
        &["chat", "-m", t, "--image", w],
        "",
    ));
    assert!(err.contains("text-only"), "{err}");
    // not an export at all
    let err = assert_clean_failure(&vision(&[
        "describe",
        w,
        "-m",
        tmp.path().to_str().unwrap(),
    ]));
    assert!(err.contains("gemma-onnx.json"), "{err}");
}

#[test]
fn chat_takes_images_and_reuses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vision_export(tmp.path());
    let (wide, small) = images(tmp.path());
    let input = format!(
        "w20 w21\n/image {}\nw30\n/image nope.png\nw31\n",
        small.display()
    );
    let o = run(
        env!("CARGO_BIN_EXE_gemma"),
        &[
            "chat",
            "-m",
            dir.to_str().unwrap(),
            "--image",
            wide.to_str().unwrap(),
            "-n",
            "3",
            "-v",
            "--threads",
            "1",
        ],
        &input,
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        text(&o.stdout).lines().count(),
        3,
        "three replies: {}",
        text(&o.stdout)
    );
    assert!(
        err.contains("image") && err.contains("wide.png attached: 1000×300"),
        "{err}"
    );
    assert!(err.contains("small.jpg attached: 60×90"), "{err}");
    assert!(
        err.contains("error: nope.png: cannot read the image"),
        "{err}"
    );
    // turns 2 and 3 prefill only what is new, the second image included
    assert_eq!(err.matches("[debug] reusing").count(), 2, "{err}");
}
