//! The vision runtime (`gemma_runtime::vision`) against transformers:
//! - the processor's prompt expansion, ids and `token_type_ids` equal `Gemma3Processor`'s
//!   (`fixtures/processor/gemma3-processor.json`) for 0, 1 and 2 images, with and without Pan & Scan crops, with
//!   image_seq_length 4 and 256, the crop counts coming from our `preprocess.onnx`;
//! - on the tiny Gemma3ForConditionalGeneration export (with a word-level tokenizer made here: the fixture has none),
//!   [`VisionGenerator`]'s encoder output, prompt logits, chunked prefill and decode steps equal transformers'
//!   (`vision_reference.safetensors`) within 1e-4;
//! - `describe` end to end on image files, and its refusals (bad images, text-only export, placeholder count).

use gemma_runtime::vision::{processor, ImageErrorKind, ImageTokens, Preprocessor};
use gemma_runtime::{
    ChatOptions, ChatTemplate, Conversation, Error, GenerateOptions, RuntimeOptions, StopReason,
    VisionGenerator, VisionOptions,
};
use gemma_tests::vision::max_abs_diff;
use gemma_tests::*;
use image::RgbImage;
use ndarray::{s, Ix3};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "cg-mqa-bf16-sharded-hf4";

/// A word-level tokenizer over the tiny model's 256 ids: the Gemma special tokens at their usual places (pad 0,
/// eos 1, bos 2, unk 3), the chat tokens, words `w9`…`w252`, and the fixture's image tokens 253/254/255.
fn write_tiny_tokenizer(dir: &Path) {
    let mut names: Vec<String> = (0..256).map(|i| format!("w{i}")).collect();
    let specials = [
        (0, "<pad>"),
        (1, "<eos>"),
        (2, "<bos>"),
        (3, "<unk>"),
        (4, "<mask>"),
        (5, "<start_of_turn>"),
        (6, "<end_of_turn>"),
        (253, "<start_of_image>"),
        (254, "<end_of_image>"),
        (255, "<image_soft_token>"),
    ];
    for (id, name) in specials {
        names[id] = name.into();
    }
    names[7] = "user".into();
    names[8] = "model".into();
    let vocab: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|(id, name)| {
            serde_json::json!({"id": id, "content": name, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// The tiny export with the word-level tokenizer; with `chat`, Gemma 3's chat template too.
fn tiny_export(chat: bool) -> (tempfile::TempDir, PathBuf) {
    let (tmp, out) = export_to_temp(&tiny_fixture(FIXTURE)).unwrap();
    write_tiny_tokenizer(&out);
    if chat {
        let config = gemma3_270m_dir().unwrap().join("tokenizer_config.json");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        let ours = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>",
                                      "chat_template": config["chat_template"]});
        std::fs::write(out.join("tokenizer_config.json"), ours.to_string()).unwrap();
    }
    assert!(
        out.join("preprocess.onnx").is_file(),
        "the export has no preprocess.onnx"
    );
    (tmp, out)
}

fn options() -> RuntimeOptions {
    RuntimeOptions::cpu().with_threads(Some(2))
}

/// A flat grey image (the processor fixture's images are `np.full((h, w, 3), 127)`).
fn grey(h: u32, w: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, image::Rgb([127, 127, 127]))
}

#[test]
fn processor_expansion_matches_transformers() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("processor/gemma3-processor.json")).unwrap(),
    )
    .unwrap();
    let model_dir = gemma3_270m_dir().unwrap();
    let template = ChatTemplate::from_dir(&model_dir).unwrap().unwrap();
    // The crop counts come from our preprocess.onnx at the released models' 896 px and Pan & Scan settings.
    let tmp = tempfile::tempdir().unwrap();
    gemma_exporter::vision::preprocess::write_preprocess(
        tmp.path(),
        &gemma_exporter::vision::preprocess::PreprocessConfig::gemma3_defaults(896),
    )
    .unwrap();
    let mut pre = Preprocessor::open(&tmp.path().join("preprocess.onnx"), &options()).unwrap();
    let sizes: HashMap<String, (u32, u32)> = doc["images"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32),
            )
        })
        .collect();
    let mut crops_of = HashMap::new();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let name = format!(
            "{} / {}",
            case["image_seq_length"],
            case["name"].as_str().unwrap()
        );
        let pas = case["do_pan_and_scan"].as_bool().unwrap();
        let mut crops = Vec::new();
        for image in case["images"].as_array().unwrap() {
            let image = image.as_str().unwrap().to_string();
            let n = *crops_of.entry((image.clone(), pas)).or_insert_with(|| {
                let (h, w) = sizes[&image];
                pre.run(&grey(h, w), pas).unwrap().num_crops
            });
            crops.push(n);
        }
        let expected_crops: Vec<usize> = serde_json::from_value(case["num_crops"].clone()).unwrap();
        assert_eq!(crops, expected_crops, "{name}: crop counts");

        let chat = !case["messages"].is_null();
        let rendered = if chat {
            template.render_value(&case["messages"], true).unwrap()
        } else {
            case["prompt"].as_str().unwrap().to_string()
        };
        assert_eq!(
            rendered,
            case["rendered"].as_str().unwrap(),
            "{name}: chat template"
        );
        // tokenizer.json has no <image_soft_token>: image_tokenizer adds it from tokenizer_config.json (id 262144)
        let per_image = case["image_seq_length"].as_u64().unwrap() as usize;
        let (tokenizer, tokens) = processor::image_tokenizer(&model_dir, per_image).unwrap();
        assert_eq!(tokens, ImageTokens::gemma3(per_image));
        let expanded = tokens.expand(&rendered, &crops).unwrap();
        assert_eq!(
            expanded,
            case["expanded"].as_str().unwrap(),
            "{name}: expanded text"
        );
        let ids = processor::prompt_ids(&tokenizer, &tokens, &rendered, &crops, chat, 2).unwrap();
        let expected_ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(ids, expected_ids, "{name}: input_ids");
        let types = processor::token_type_ids(&ids, 262144);
        let expected_types: Vec<i64> =
            serde_json::from_value(case["token_type_ids"].clone()).unwrap();
        assert_eq!(types, expected_types, "{name}: token_type_ids");
        eprintln!("{name}: {} ids, crops {crops:?}: equal", ids.len());
    }
}

#[test]
fn generator_logits_match_transformers() {
    let (_tmp, out) = tiny_export(false);
    let mut gen = VisionGenerator::open(&out, &options()).unwrap();
    let r = Reference::vision(&tiny_fixture(FIXTURE)).unwrap();
    let pixels = r.pixel_values().unwrap();
    let expected = r.image_features().unwrap();
    let features = gen.encode_pixels(pixels.view()).unwrap();
    let d = max_abs_diff(features.view(), expected.view());
    eprintln!("image features: max |Δ| = {d:e}");
    assert!(d <= FP32_TOLERANCE);

    for (name, images) in [("one", 1), ("two", 2)] {
        let ids: Vec<u32> = r
            .i64_2d(&format!("{name}.input_ids"))
            .unwrap()
            .iter()
            .map(|&t| t as u32)
            .collect();
        let logits = r
            .f32(&format!("{name}.logits"))
            .unwrap()
            .into_dimensionality::<Ix3>()
            .unwrap();
        let next_ids = r.i64_2d(&format!("{name}.next_ids")).unwrap();
        let next_logits = r
            .f32(&format!("{name}.next_logits"))
            .unwrap()
            .into_dimensionality::<Ix3>()
            .unwrap();
        let feats = features.slice(s![..images, .., ..]);

        let all = gen.prompt_logits(&ids, feats).unwrap();
        let d = max_abs_diff(all.view(), logits.slice(s![0, .., ..]));
        eprintln!("{name}: prompt logits, one step: max |Δ| = {d:e}");
        assert!(d <= FP32_TOLERANCE, "{name}: {d}");

        // chunked prefill (chunks of 3 never cut the 4-token image blocks), then the reference's decode steps
        for chunk in [3, 1000] {
            let mut cache = gen.new_cache().unwrap();
            let last = gen.prefill(&mut cache, &ids, feats, chunk).unwrap();
            let mut worst = max_abs_diff(
                ndarray::ArrayView1::from(&last[..]),
                logits.slice(s![0, -1, ..]),
            );
            for t in 0..next_ids.ncols() {
                let l = gen
                    .decode_step(&mut cache, next_ids[[0, t]] as u32)
                    .unwrap();
                worst = worst.max(max_abs_diff(
                    ndarray::ArrayView1::from(&l[..]),
                    next_logits.slice(s![0, t, ..]),
                ));
            }
            eprintln!(
                "{name}: prefill in chunks of ≤ {chunk} + {} decode steps: max |Δ| = {worst:e}",
                next_ids.ncols()
            );
            assert!(worst <= FP32_TOLERANCE, "{name}, chunk {chunk}: {worst}");
        }

        // greedy generation continues with the reference's ids (their argmax over the full vocabulary)
        let encoded: Vec<_> = (0..images)
            .map(|i| gemma_runtime::vision::EncodedImage {
                features: features.slice(s![i..i + 1, .., ..]).to_owned(),
                num_crops: 0,
                width: 56,
                height: 56,
                preprocess_seconds: 0.0,
                encode_seconds: 0.0,
            })
            .collect();
        let refs: Vec<_> = encoded.iter().collect();
        let opts = VisionOptions {
            generate: GenerateOptions {
                max_new_tokens: 3,
                ..Default::default()
            },
            prefill_chunk: 3,
            ..Default::default()
        };
        let mut cache = gen.new_cache().unwrap();
        let (o, ttft) = gen
            .continue_generation(&mut cache, &ids, &refs, &[1], &opts, |_| {})
            .unwrap();
        let expected: Vec<u32> = next_ids.iter().map(|&t| t as u32).collect();
        assert_eq!(o.token_ids, expected, "{name}: greedy ids");
        assert_eq!(o.stop_reason, StopReason::MaxNewTokens);
        assert!(ttft > 0.0 && o.prompt_tokens == ids.len());
    }
}

/// Two chat turns, each with a new image, reusing the KV cache: the second reply equals a fresh generation over the
/// whole rendered conversation (so the cached prefix, the images' features and their blocks line up).
#[test]
fn chat_turns_with_images_equal_a_fresh_prefill() {
    let (tmp, out) = tiny_export(true);
    let wide = RgbImage::from_fn(1000, 300, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 200) as u8, 9])
    });
    let small = RgbImage::from_fn(70, 50, |x, y| {
        image::Rgb([(x * 3) as u8, 100, (y * 5) as u8])
    });
    let paths = [
        write_png(tmp.path(), "wide.png", &wide),
        write_png(tmp.path(), "small.png", &small),
    ];
    let generate = GenerateOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    let chat_options = ChatOptions {
        generate: generate.clone(),
        system: Some("w40 w41".into()),
        pan_and_scan: true,
        ..Default::default()
    };
    let gen = VisionGenerator::open(&out, &options()).unwrap();
    let mut chat = Conversation::new(gen, chat_options).unwrap();
    assert_eq!(chat.add_image(&paths[0]).unwrap().num_crops, 3);
    let first = chat.send("w20 w21", |_| {}).unwrap();
    assert_eq!(chat.add_image(&paths[1]).unwrap().num_crops, 0);
    let second = chat.send("w30", |_| {}).unwrap();
    assert!(
        !second.reprefilled && second.reused_tokens > first.prefilled_tokens,
        "{:?}",
        second.debug
    );

    let mut fresh = VisionGenerator::open(&out, &options()).unwrap();
    let messages = serde_json::json!([
        {"role": "system", "content": "w40 w41"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w20 w21"}]},
        {"role": "assistant", "content": first.output.text},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w30"}]},
    ]);
    let text = fresh
        .text()
        .chat_template
        .as_ref()
        .unwrap()
        .render_value(&messages, true)
        .unwrap();
    let a = fresh
        .encode_image(&fresh.load_image(&paths[0]).unwrap(), true)
        .unwrap();
    let b = fresh
        .encode_image(&fresh.load_image(&paths[1]).unwrap(), true)
        .unwrap();
    let ids = fresh
        .prompt_ids(&text, &[a.num_crops, b.num_crops], true)
        .unwrap();
    assert_eq!(ids.len(), second.reused_tokens + second.prefilled_tokens);
    let mut cache = fresh.new_cache().unwrap();
    let stops = fresh.stop_token_ids(true);
    let opts = VisionOptions {
        generate,
        ..Default::default()
    };
    let (o, _) = fresh
        .continue_generation(&mut cache, &ids, &[&a, &b], &stops, &opts, |_| {})
        .unwrap();
    assert_eq!(o.token_ids, second.output.token_ids);
    eprintln!(
        "chat: turn 2 reused {} tokens, prefilled {}; reply {:?} = fresh prefill's",
        second.reused_tokens, second.prefilled_tokens, o.text
    );
}

fn write_png(dir: &Path, name: &str, img: &RgbImage) -> PathBuf {
    let path = dir.join(name);
    img.save(&path).unwrap();
    path
}

#[test]
fn describe_reads_images_and_expands_like_the_processor() {
    let (tmp, out) = tiny_export(true);
    let mut gen = VisionGenerator::open(&out, &options()).unwrap();
    // a striped 300×1000 landscape (3 crops with Pan & Scan) and a small portrait (too small to crop)
    let wide = RgbImage::from_fn(1000, 300, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let small = RgbImage::from_fn(60, 90, |x, y| {
        image::Rgb([200, (x * 3) as u8, (y * 2) as u8])
    });
    let paths = [
        write_png(tmp.path(), "wide.png", &wide),
        write_png(tmp.path(), "small.png", &small),
    ];
    for pas in [false, true] {
        let opts = VisionOptions {
            generate: GenerateOptions {
                max_new_tokens: 4,
                ..Default::default()
            },
            pan_and_scan: pas,
            ..Default::default()
        };
        let mut streamed = String::new();
        let o = gen
            .describe(&paths, "w20 w21 w22", &opts, |t| streamed.push_str(t))
            .unwrap();
        let crops: Vec<usize> = o.images.iter().map(|i| i.num_crops).collect();
        assert_eq!(crops, if pas { vec![3, 0] } else { vec![0, 0] });
        assert_eq!((o.images[0].width, o.images[0].height), (1000, 300));
        // <bos> <start_of_turn> user, per image block 4 soft tokens + boi + eoi, the prompt, <end_of_turn>
        // <start_of_turn> model; the crop wording (5 + 10 words) is unknown to the word-level vocabulary: <unk>s
        let blocks = 2 + crops.iter().sum::<usize>();
        let words = if pas { 15 } else { 0 };
        assert_eq!(o.generation.prompt_tokens, 3 + blocks * 6 + 3 + 3 + words);
        assert_eq!(o.generation.text, streamed);
        assert!(!o.generation.token_ids.is_empty() && o.generation.token_ids.len() <= 4);
        assert!(o.time_to_first_token_seconds > 0.0);
        eprintln!(
            "describe, pan & scan {pas}: crops {crops:?}, {} prompt tokens, {:?}, TTFT {:.3} s",
            o.generation.prompt_tokens, o.generation.text, o.time_to_first_token_seconds
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (tmp, out) = tiny_export(false);
    let mut gen = VisionGenerator::open(&out, &options()).unwrap();
    let opts = VisionOptions {
        generate: GenerateOptions {
            max_new_tokens: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let good = write_png(tmp.path(), "good.png", &grey(30, 40));
    let full = std::fs::read(&good).unwrap();
    let truncated = tmp.path().join("truncated.png");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let empty = tmp.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = tmp.path().join("notes.webp");
    std::fs::write(&text, b"just some text, no image").unwrap();
    // Header-only PNGs committed by `tests/fixtures/make_fixtures.py bombs`.
    let bomb = fixtures_dir().join("images/bomb-100000x100000.png");
    let zero = fixtures_dir().join("images/zero-0x5.png");
    for (path, kind, words) in [
        (&truncated, ImageErrorKind::Corrupt, "truncated"),
        (&empty, ImageErrorKind::ZeroSized, "empty"),
        (&text, ImageErrorKind::Unsupported, "not an image"),
        (&bomb, ImageErrorKind::TooLarge, "100000×100000"),
        (&zero, ImageErrorKind::ZeroSized, "0×5"),
        (
            &tmp.path().join("missing.png"),
            ImageErrorKind::Unreadable,
            "cannot read",
        ),
    ] {
        let e = gen
            .describe(std::slice::from_ref(path), "w9", &opts, |_| {})
            .unwrap_err();
        let msg = e.to_string();
        match e {
            Error::Image { kind: k, .. } => assert_eq!(k, kind, "{msg}"),
            other => panic!("{}: expected an image error, got {other}", path.display()),
        }
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains(words),
            "{msg}"
        );
    }

    // placeholders: a raw prompt must hold one per image
    let raw = VisionOptions {
        raw_prompt: true,
        ..opts.clone()
    };
    for (prompt, images) in [
        ("w9 w10", 1),
        ("<start_of_image> <start_of_image>", 1),
        ("<start_of_image>", 2),
    ] {
        let paths = vec![good.clone(); images];
        let e = gen.describe(&paths, prompt, &raw, |_| {}).unwrap_err();
        assert!(matches!(e, Error::ImagePlaceholders { .. }), "{e}");
        assert!(e.to_string().contains("<start_of_image>"), "{e}");
    }
    let o = gen
        .describe(
            std::slice::from_ref(&good),
            "<start_of_image> w9",
            &raw,
            |_| {},
        )
        .unwrap();
    assert_eq!(o.generation.prompt_tokens, 1 + 6 + 1);

    // a text-only export cannot see images
    let (_t, text_only) = export_to_temp(&tiny_fixture("mqa-f32-hf5")).unwrap();
    write_tiny_tokenizer(&text_only);
    let e = VisionGenerator::open(&text_only, &options())
        .err()
        .expect("a text-only export must be refused");
    assert!(matches!(e, Error::NoVision { .. }), "{e}");
    assert!(e.to_string().contains("text-only"), "{e}");
}
