//! `gemma generate --image` on the tiny Gemma3ForConditionalGeneration export (`cg-mqa-bf16-sharded-hf4`, as in
//! `vision_cli.rs`: the word-level tokenizer of `common` and Gemma 3's chat template) gives what `gemma-vision
//! describe` gives for the same images and prompt, and attachments a model cannot take fail with one line naming the
//! flag and the file. (Gemma 3n's `--audio` is in `gemma3n_cli.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{failure, fixtures, gemma, json_of, success, token_ids, write_tokenizer};
use serde_json::Value;

const IMAGE_TOKENS: [(u32, &str); 3] = [
    (253, "<start_of_image>"),
    (254, "<end_of_image>"),
    (255, "<image_soft_token>"),
];

/// An fp32 export of the tiny fixture `name` in `tmp/name`, with the word-level tokenizer and, when `template`,
/// Gemma 3's chat template.
fn export(tmp: &Path, name: &str, template: bool) -> PathBuf {
    let out = tmp.join(name);
    let src = fixtures().join("tiny").join(name);
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(src, out.clone())).unwrap();
    write_tokenizer(&out, &IMAGE_TOKENS);
    if template {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("chat/templates.json")).unwrap(),
        )
        .unwrap();
        let config = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>",
                                        "chat_template": doc["templates"]["gemma3"]});
        std::fs::write(out.join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    out
}

fn describe(args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_gemma-vision"))
        .arg("describe")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    json_of(success(&o))
}

#[test]
fn generate_help_says_how_audio_is_read() {
    let o = gemma(&["generate", "--help"], None);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for needle in [
        "--image <FILE>",
        "--audio <FILE>",
        "resampled",
        "Python",
        "command-line order",
    ] {
        assert!(help.contains(needle), "no {needle:?} in\n{help}");
    }
}

#[test]
fn generate_with_images_equals_describe_and_refuses_what_the_model_cannot_take() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = export(tmp.path(), "cg-mqa-bf16-sharded-hf4", true);
    let d = dir.to_str().unwrap();
    let wide = tmp.path().join("wide.png");
    image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 40])
    })
    .save(&wide)
    .unwrap();
    let small = fixtures().join("images/landscape-480x640.png");
    let (a, b) = (wide.to_str().unwrap(), small.to_str().unwrap());
    let common = [
        "-m",
        d,
        "-p",
        "w20 w21",
        "-n",
        "6",
        "--threads",
        "1",
        "--json",
    ];
    let want = describe(&[&[a, b][..], &common].concat());
    let got = json_of(success(&gemma(
        &[
            &["generate", "--image", a, "--image", b][..],
            &common[..common.len() - 3],
            &["--json"],
        ]
        .concat(),
        None,
    )));
    assert_eq!(token_ids(&got), token_ids(&want));
    assert_eq!(got["prompt_tokens"], want["prompt_tokens"]);
    assert_eq!(got["text"], want["text"]);
    assert!(
        got["prompt_tokens"].as_u64().unwrap() > 8,
        "the images' tokens are in the prompt"
    );

    // Refused with exit code 1, naming the flag and the file.
    let clip = fixtures().join("tiny/gemma3n-audio-f32/clips/odd.wav");
    let c = clip.to_str().unwrap();
    let err = failure(&gemma(
        &["generate", "-m", d, "-p", "w5", "--audio", c],
        None,
    ));
    assert!(
        err.starts_with("error: --audio") && err.contains(c) && err.contains("takes no audio"),
        "{err}"
    );
    let err = failure(&gemma(
        &["generate", "-m", d, "-p", "w5", "--image", c],
        None,
    ));
    assert!(
        err.starts_with("error: --image") && err.contains(c),
        "{err}"
    );

    let text_only = export(tmp.path(), "gqa-f16-hf5", false);
    let t = text_only.to_str().unwrap();
    let err = failure(&gemma(
        &["generate", "-m", t, "-p", "w5", "--image", a],
        None,
    ));
    assert!(
        err.starts_with("error: --image") && err.contains(a) && err.contains("text-only"),
        "{err}"
    );
    let err = failure(&gemma(
        &["generate", "-m", t, "-p", "w5", "--audio", c],
        None,
    ));
    assert!(err.contains(c) && err.contains("takes no audio"), "{err}");
}
