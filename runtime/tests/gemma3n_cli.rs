//! `gemma generate` on a Gemma 3n export (the tiny random Gemma3nForCausalLM of
//! `../tests/fixtures/make_gemma3n_fixtures.py`, with the word-level tokenizer of `common`): the prompt of the
//! fixture's references, BOS added, no template, gives transformers' greedy ids (`decode.ids`).
//!
//! `gemma generate --audio` on the tiny Gemma3nForConditionalGeneration with an audio tower
//! (`../tests/fixtures/make_gemma3n_audio_fixtures.py`, whose folder holds a word-level tokenizer and Gemma 3n's chat
//! template): the prompt is `Gemma3nProcessor.apply_chat_template`'s (its length) and the greedy ids are the full
//! model's (`cli_reference.safetensors`), for one clip and for two; every attachment the model cannot take is a
//! one-line error naming the flag and the file.
//!
//! `gemma generate --image [--audio]` on the tiny Gemma 3n with all three towers
//! (`../tests/fixtures/make_gemma3n_vision_fixtures.py`): the prompt is the processor's (its length), the first
//! greedy token is the full model's (`<case>.decode.ids`) and the second the argmax of its next-step logits.

mod common;

use std::path::{Path, PathBuf};

use common::{failure, fixtures, gemma, json_of, success, token_ids, write_tokenizer};
use serde_json::Value;

const FIXTURE: &str = "gemma3n-text-f32";
const AUDIO_FIXTURE: &str = "gemma3n-audio-f32";
const VISION_FIXTURE: &str = "gemma3n-f32";

/// An int64 tensor of a safetensors file as a flat list (the runtime has no safetensors dependency: the format is
/// an 8-byte header length, a JSON header of dtype/shape/data_offsets, then the data).
fn int64_tensor(path: &std::path::Path, name: &str) -> Vec<i64> {
    tensor_bytes(path, name, "I64")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A float32 tensor of a safetensors file as a flat list.
fn f32_tensor(path: &std::path::Path, name: &str) -> Vec<f32> {
    tensor_bytes(path, name, "F32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The raw bytes of tensor `name`, whose dtype must be `dtype`.
fn tensor_bytes(path: &std::path::Path, name: &str, dtype: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[name];
    assert_eq!(t["dtype"], dtype, "{name}");
    let range = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        range[0].as_u64().unwrap() as usize,
        range[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + a..8 + n + b].to_vec()
}

#[test]
fn generate_with_an_image_and_a_clip_gives_transformers_tokens() {
    let src = fixtures().join("tiny").join(VISION_FIXTURE);
    let reference = src.join("vision_reference.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(&src, &out)).unwrap();
    let (model, image, clip) = (
        out.to_str().unwrap(),
        src.join("image.png"),
        src.join("clip.wav"),
    );
    let (image, clip) = (image.to_str().unwrap(), clip.to_str().unwrap());
    for (case, prompt, with_clip) in [
        ("image_text", "Describe the picture.", false),
        ("image_audio_text", "What do you see and hear?", true),
    ] {
        let ids = int64_tensor(&reference, &format!("{case}.input_ids"));
        let first = int64_tensor(&reference, &format!("{case}.decode.ids"))[0] as u32;
        let next = f32_tensor(&reference, &format!("{case}.decode.logits"));
        let next = (0..next.len())
            .max_by(|&a, &b| next[a].total_cmp(&next[b]))
            .unwrap() as u32;
        let mut args = vec!["generate", "-m", model, "-p", prompt, "--image", image];
        if with_clip {
            args.extend(["--audio", clip]);
        }
        args.extend(["-n", "2", "--ignore-eos", "--json"]);
        let v = json_of(success(&gemma(&args, None)));
        assert_eq!(
            v["prompt_tokens"],
            ids.len(),
            "{case}: the processor's prompt length"
        );
        assert_eq!(
            token_ids(&v),
            vec![first, next],
            "{case}: transformers' tokens"
        );
    }
}

#[test]
fn generate_gives_transformers_greedy_ids() {
    let src = fixtures().join("tiny").join(FIXTURE);
    let reference = src.join("reference.safetensors");
    let prompt_ids = int64_tensor(&reference, "prefill.input_ids");
    let greedy = int64_tensor(&reference, "decode.ids");
    assert_eq!(prompt_ids[0], 2, "the reference prompt starts with <bos>");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(&src, &out)).unwrap();
    write_tokenizer(&out, &[]);
    let prompt: Vec<String> = prompt_ids[1..].iter().map(|i| format!("w{i}")).collect();
    let n = greedy.len().to_string();
    let model = out.to_str().unwrap();
    let args = [
        "generate",
        "-m",
        model,
        "-p",
        &prompt.join(" "),
        "-n",
        &n,
        "--json",
    ];
    let v = json_of(success(&gemma(&args, None)));
    let want: Vec<u32> = greedy.iter().map(|&i| i as u32).collect();
    assert_eq!(token_ids(&v), want);
    assert_eq!(v["prompt_tokens"], prompt_ids.len());

    // A Gemma 3n export without an audio part takes no audio.
    let clip = fixtures()
        .join("tiny")
        .join(AUDIO_FIXTURE)
        .join("clips/odd.wav");
    let args = [
        "generate",
        "-m",
        model,
        "-p",
        "w5",
        "--audio",
        clip.to_str().unwrap(),
    ];
    let err = failure(&gemma(&args, None));
    assert!(
        err.contains("--audio") && err.contains("odd.wav") && err.contains("takes no audio"),
        "{err}"
    );
}

/// A mono 16 kHz 16-bit PCM WAV of `samples` zero samples.
fn write_wav(path: &Path, samples: usize) -> PathBuf {
    let data = (samples * 2) as u32;
    let mut b = b"RIFF".to_vec();
    b.extend((36 + data).to_le_bytes());
    b.extend(b"WAVEfmt ");
    for (v, n) in [
        (16u32, 4),
        (1, 2),
        (1, 2),
        (16_000, 4),
        (32_000, 4),
        (2, 2),
        (16, 2),
    ] {
        b.extend(&v.to_le_bytes()[..n]);
    }
    b.extend(b"data");
    b.extend(data.to_le_bytes());
    b.resize(b.len() + data as usize, 0);
    std::fs::write(path, b).unwrap();
    path.to_path_buf()
}

#[test]
fn audio_prompts_give_transformers_greedy_ids_and_bad_attachments_fail() {
    let src = fixtures().join("tiny").join(AUDIO_FIXTURE);
    let reference = src.join("cli_reference.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(&src, &out)).unwrap();
    let model = out.to_str().unwrap();
    let clip = |name: &str| src.join("clips").join(format!("{name}.wav"));
    for (case, clips, text) in [
        ("odd", &["odd"][..], "w155 w213"),
        ("two_clips", &["short", "one_second"], "w21 w23 w182 w216"),
    ] {
        let prompt_ids = int64_tensor(&reference, &format!("{case}.prompt_ids"));
        let greedy = int64_tensor(&reference, &format!("{case}.greedy"));
        let n = greedy.len().to_string();
        let mut args = vec![
            "generate",
            "-m",
            model,
            "-p",
            text,
            "-n",
            &n,
            "--ignore-eos",
            "--json",
        ];
        let paths: Vec<String> = clips
            .iter()
            .map(|c| clip(c).to_str().unwrap().to_string())
            .collect();
        for p in &paths {
            args.extend(["--audio", p.as_str()]);
        }
        let v = json_of(success(&gemma(&args, None)));
        let want: Vec<u32> = greedy.iter().map(|&i| i as u32).collect();
        assert_eq!(token_ids(&v), want, "{case}");
        assert_eq!(v["prompt_tokens"], prompt_ids.len(), "{case}");
        // The same object as a text prompt's.
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let plain = json_of(success(&gemma(
            &["generate", "-m", model, "-p", text, "-n", "2", "--json"],
            None,
        )));
        assert_eq!(keys(&v), keys(&plain), "{case}");
    }

    // `gemma chat`: a clip by `/audio` (or `--audio`) goes with the next message, whose reply is the same greedy ids
    // (the turn renders the same prompt); the cache is reused on the next turn.
    let odd = clip("odd");
    let want_text = "w81 w126 w126 w84 w405";
    let stdin = format!("/audio {}\nw155 w213\nw5\n", odd.display());
    let o = gemma(&["chat", "-m", model, "-n", "5", "-v"], Some(&stdin));
    let o = success(&o);
    let (text, err) = (common::stdout(o), common::stderr(o));
    assert_eq!(text.lines().next(), Some(want_text), "{err}");
    assert!(
        err.contains("odd.wav attached") && err.contains("cached tokens reused, 8 prefilled"),
        "{err}"
    );
    let o = gemma(
        &[
            "chat",
            "-m",
            model,
            "-n",
            "5",
            "--audio",
            odd.to_str().unwrap(),
        ],
        Some("w155 w213\n"),
    );
    assert_eq!(common::stdout(success(&o)).lines().next(), Some(want_text));
    let o = gemma(
        &["chat", "-m", model, "-n", "2"],
        Some("/audio missing.wav\n/image x.png\n"),
    );
    let o = success(&o);
    let err = common::stderr(o);
    assert!(
        err.contains("missing.wav") && err.contains("x.png: the Gemma 3n export"),
        "{err}"
    );

    // Refused, exit code 1, one line naming the flag and the file.
    let png = fixtures().join("images/landscape-480x640.png");
    let empty = write_wav(&tmp.path().join("empty.wav"), 0);
    let long = write_wav(&tmp.path().join("long.wav"), 16_000 * 31);
    let config = src.join("config.json");
    for (flag, file, needle) in [
        ("--audio", config.as_path(), "not a WAV"),
        ("--audio", png.as_path(), "not a WAV"),
        ("--audio", empty.as_path(), "empty"),
        ("--audio", long.as_path(), "at most 30.00 s"),
        ("--image", odd.as_path(), "no vision part"),
    ] {
        let f = file.to_str().unwrap();
        let err = failure(&gemma(
            &["generate", "-m", model, "-p", "w5", flag, f],
            None,
        ));
        assert!(err.starts_with(&format!("error: {flag}")), "{err}");
        assert!(err.contains(f) && err.contains(needle), "{flag} {f}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
