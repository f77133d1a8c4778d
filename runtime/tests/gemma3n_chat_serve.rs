//! `gemma chat` and `gemma serve` with images (and clips) on the tiny Gemma 3n with all three towers
//! (`../tests/fixtures/tiny/gemma3n-f32`, its own tokenizer and chat template), exported here.
//!
//! No ids or texts are written down: the fixture's weights may be regenerated. Every check is self-consistency:
//! - a chat's first turn with `--image` (and `--audio`, in either order) gives `gemma generate --json`'s greedy ids
//!   for the same prompt and attachments, and prefills the same number of tokens: the chat template's rendering of
//!   the attachments in the order given, expanded here as Gemma3nProcessor expands it;
//! - a later turn's `/image` renders the conversation as the chat template does (rendered and expanded here, as
//!   Gemma3nProcessor expands it): the KV cache holds exactly those tokens, then the reply; and the reply equals a
//!   fresh conversation's on the same messages (cache reuse changes nothing);
//! - `gemma serve` answers an `image_url` request with `gemma generate`'s text and prompt length, and a multi-turn
//!   request with the library conversation's reply;
//! - `gemma serve` answers `input_audio` parts (with or without an image) with `gemma generate --audio`'s text and
//!   prompt length;
//! - an image on a Gemma 3n export without a vision tower, audio on one without audio: errors that name the flag
//!   (or part) and the model.

mod common;
#[path = "common/serve.rs"]
mod serve_support;

use std::path::{Path, PathBuf};

use common::{failure, fixtures, gemma, json_of, stderr, stdout, success, token_ids};
use gemma_runtime::attachments::Gemma3nGenerator;
use gemma_runtime::{
    ChatOptions, ChatTemplate, Conversation, GenerateOptions, RuntimeOptions, Tokenizer,
};
use serde_json::{json, Value};
use serve_support::{base64, Server};

const FIXTURE: &str = "gemma3n-f32";
const MAX_NEW: usize = 4;

/// The export of `tiny/<name>` in a temporary folder, and the fixture folder.
fn export(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let src = fixtures().join("tiny").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    gemma_exporter::export(&gemma_exporter::ExportOptions::new(&src, &out)).unwrap();
    (tmp, out, src)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `gemma generate -p PROMPT ATTACHMENTS -n MAX_NEW --json` (attachments as `["--image", path, ...]`).
fn generate(model: &Path, prompt: &str, attachments: &[&str]) -> Value {
    let n = MAX_NEW.to_string();
    let mut args = vec!["generate", "-m", s(model), "-p", prompt];
    args.extend_from_slice(attachments);
    args.extend(["-n", &n, "--json"]);
    json_of(success(&gemma(&args, None)))
}

/// A library conversation on the export, greedy, `MAX_NEW` tokens per reply.
fn conversation(model: &Path) -> Conversation<Gemma3nGenerator> {
    let gen = Gemma3nGenerator::open(model, &RuntimeOptions::cpu().with_threads(Some(1))).unwrap();
    let options = ChatOptions {
        generate: GenerateOptions {
            max_new_tokens: MAX_NEW,
            ..GenerateOptions::default()
        },
        ..ChatOptions::default()
    };
    Conversation::new(gen, options).unwrap()
}

/// The `N` of `-v`'s `[... , N prefilled at ...]` lines, in order.
fn prefilled(err: &str) -> Vec<usize> {
    err.lines()
        .filter_map(|l| l.split(" cached tokens reused, ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn chat_first_turn_with_attachments_equals_generate() {
    let (_tmp, model, src) = export(FIXTURE);
    let (image, clip) = (src.join("image.png"), src.join("clip.wav"));
    let prompt = "Describe the picture.";
    let n = MAX_NEW.to_string();
    for attachments in [
        vec!["--image", s(&image)],
        vec!["--image", s(&image), "--audio", s(&clip)],
        vec!["--audio", s(&clip), "--image", s(&image)],
        vec!["--image", s(&image), "--image", s(&image)],
    ] {
        let want = generate(&model, prompt, &attachments);
        let case = attachments.join(" ");

        // The CLI: the same reply, the same prompt length.
        let mut args = vec!["chat", "-m", s(&model), "-n", &n, "-v"];
        args.extend_from_slice(&attachments);
        let o = gemma(&args, Some(&format!("{prompt}\n")));
        let (out, err) = (stdout(success(&o)), stderr(&o));
        assert_eq!(
            out,
            format!("{}\n", want["text"].as_str().unwrap()),
            "{case}: {err}"
        );
        assert_eq!(
            prefilled(&err),
            vec![want["prompt_tokens"].as_u64().unwrap() as usize],
            "{case}"
        );

        // The library, attachments in the same order: the same ids.
        let mut conv = conversation(&model);
        for pair in attachments.chunks(2) {
            match pair[0] {
                "--image" => {
                    conv.add_image(Path::new(pair[1])).unwrap();
                }
                _ => conv.add_audio(Path::new(pair[1])).unwrap(),
            }
        }
        let report = conv.send(prompt, |_| {}).unwrap();
        assert_eq!(report.output.token_ids, token_ids(&want), "{case}");
        assert_eq!(
            report.prefilled_tokens as u64,
            want["prompt_tokens"].as_u64().unwrap(),
            "{case}"
        );
        // ... and the prompt is the template's, the attachments as content items in the order given.
        let mut items: Vec<Value> = attachments
            .chunks(2)
            .map(|pair| json!({"type": if pair[0] == "--image" { "image" } else { "audio" }}))
            .collect();
        items.push(json!({"type": "text", "text": prompt}));
        let rendered = rendered_ids(&model, &json!([{"role": "user", "content": items}]));
        assert_eq!(
            &conv.cached_tokens()[..rendered.len()],
            &rendered[..],
            "{case}"
        );
        assert_eq!(rendered.len(), report.prefilled_tokens, "{case}");
    }
}

/// The conversation `messages` (content items as the template takes them) rendered by the export's chat template
/// with the generation prompt, each placeholder expanded as Gemma3nProcessor does, tokenized without special tokens.
fn rendered_ids(model: &Path, messages: &Value) -> Vec<u32> {
    let template = ChatTemplate::from_dir(model)
        .unwrap()
        .expect("the fixture has a chat template");
    let text = template.render_value(messages, true).unwrap();
    let manifest = gemma_runtime::manifest::load(model).unwrap();
    let g = manifest.gemma3n.unwrap();
    let tokenizer = Tokenizer::from_dir(model).unwrap();
    let name = |id: u32| tokenizer.id_to_token(id).unwrap();
    let (v, a) = (g.vision.unwrap(), g.audio.unwrap());
    let (image_soft, audio_soft) = (name(v.image_token_id), name(a.audio_token_id));
    let image = format!(
        "\n\n{}{}{}\n\n",
        name(v.boi_token_id),
        image_soft.repeat(v.soft_tokens),
        name(v.eoi_token_id)
    );
    let audio = format!(
        "\n\n{}{}{}\n\n",
        name(a.boa_token_id),
        audio_soft.repeat(a.soft_tokens),
        name(a.eoa_token_id)
    );
    // One pass each: the expansions hold the placeholder themselves.
    let text = text
        .replace(&image_soft, "\u{1}")
        .replace(&audio_soft, "\u{2}");
    let text = text.replace('\u{1}', &image).replace('\u{2}', &audio);
    tokenizer.encode(&text, false).unwrap()
}

#[test]
fn image_in_a_later_turn_renders_the_template() {
    let (_tmp, model, src) = export(FIXTURE);
    let (image, clip) = (src.join("image.png"), src.join("clip.wav"));
    let (first, second) = ("Describe the picture.", "And what do you hear now?");

    let mut conv = conversation(&model);
    let r1 = conv.send(first, |_| {}).unwrap();
    // A clip, then an image: they render in that order (a chat that put images first would not match below).
    conv.add_audio(&clip).unwrap();
    conv.add_image(&image).unwrap();
    let r2 = conv.send(second, |_| {}).unwrap();

    // The cache holds the template's rendering of the conversation, then the reply (but its last token).
    let messages = json!([
        {"role": "user", "content": [{"type": "text", "text": first}]},
        {"role": "assistant", "content": r1.output.text},
        {"role": "user", "content": [{"type": "audio"}, {"type": "image"}, {"type": "text", "text": second}]},
    ]);
    let want = rendered_ids(&model, &messages);
    let cached = conv.cached_tokens();
    assert_eq!(
        &cached[..want.len().min(cached.len())],
        &want[..],
        "{:?}",
        r2.debug
    );
    assert_eq!(cached.len(), want.len() + r2.output.token_ids.len() - 1);
    assert_eq!(r2.reused_tokens + r2.prefilled_tokens, want.len());

    // The reply equals a fresh conversation's on the same messages, prefilled at once.
    let turns = conv.turns()[..3].to_vec();
    let mut fresh = conversation(&model);
    let messages: Vec<_> = turns.iter().map(|t| t.message.clone()).collect();
    let media: Vec<_> = turns.iter().map(|t| t.media.clone()).collect();
    fresh.set_messages_with_media(&messages, media).unwrap();
    let again = fresh.respond(|_| {}).unwrap();
    assert_eq!(again.output.token_ids, r2.output.token_ids);
    assert_eq!(again.prefilled_tokens, want.len());

    // The terminal: `/image` and `/audio` before the second message give the same two replies.
    let n = MAX_NEW.to_string();
    let stdin = format!(
        "{first}\n/audio {}\n/image {}\n{second}\n",
        clip.display(),
        image.display()
    );
    let o = gemma(&["chat", "-m", s(&model), "-n", &n, "-v"], Some(&stdin));
    let (out, err) = (stdout(success(&o)), stderr(&o));
    assert_eq!(
        out,
        format!("{}\n{}\n", r1.output.text, r2.output.text),
        "{err}"
    );
    assert!(
        err.contains("image.png attached") && err.contains("clip.wav attached"),
        "{err}"
    );
    assert_eq!(
        prefilled(&err),
        vec![r1.prefilled_tokens, r2.prefilled_tokens],
        "{err}"
    );
}

#[test]
fn attachments_a_gemma3n_export_cannot_take_are_refused() {
    let src = fixtures().join("tiny").join(FIXTURE);
    let (image, clip) = (src.join("image.png"), src.join("clip.wav"));

    // No vision tower: `--image` names the flag, the file and the export.
    let (_a, audio_only, _) = export("gemma3n-audio-f32");
    let err = failure(&gemma(
        &[
            "chat",
            "-m",
            s(&audio_only),
            "--audio",
            s(&clip),
            "--image",
            s(&image),
        ],
        None,
    ));
    assert!(err.starts_with("error: --image"), "{err}");
    assert!(
        err.contains(s(&image)) && err.contains(s(&audio_only)) && err.contains("no vision part"),
        "{err}"
    );
    // Refused before any file is read or encoded: the clip given first is not reported as attached.
    assert!(!err.contains("attached"), "{err}");

    // No audio tower: `--audio` likewise.
    let (_t, text_only, _) = export("gemma3n-text-f32");
    common::write_tokenizer(&text_only, &[]);
    let err = failure(&gemma(
        &["chat", "-m", s(&text_only), "--audio", s(&clip)],
        None,
    ));
    assert!(err.starts_with("error: --audio"), "{err}");
    assert!(
        err.contains(s(&clip)) && err.contains(s(&text_only)) && err.contains("takes no audio"),
        "{err}"
    );

    // Pan & Scan is Gemma 3's.
    let (_f, full, _) = export(FIXTURE);
    let err = failure(&gemma(
        &[
            "chat",
            "-m",
            s(&full),
            "--image",
            s(&image),
            "--pan-and-scan",
        ],
        None,
    ));
    assert!(
        err.contains("--pan-and-scan") && err.contains("Gemma 3n"),
        "{err}"
    );
}

fn audio_part(path: &Path) -> Value {
    let data = base64(&std::fs::read(path).unwrap());
    json!({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
}

fn image_part(path: &Path) -> Value {
    let url = format!(
        "data:image/png;base64,{}",
        base64(&std::fs::read(path).unwrap())
    );
    json!({"type": "image_url", "image_url": {"url": url}})
}

#[test]
fn serve_image_requests_equal_generate_and_chat() {
    let (_tmp, model, src) = export(FIXTURE);
    let image = src.join("image.png");
    let prompt = "Describe the picture.";
    let want = generate(&model, prompt, &["--image", s(&image)]);

    let server = Server::start(&model, &[]);
    let body = json!({"messages": [{"role": "user", "content": [image_part(&image), {"type": "text", "text": prompt}]}],
        "max_tokens": MAX_NEW, "temperature": 0});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        want["text"],
        "{}",
        server.log()
    );
    assert_eq!(v["usage"]["prompt_tokens"], want["prompt_tokens"]);
    assert_eq!(server.chat_stream(&body).0, want["text"].as_str().unwrap());

    // An image in an earlier turn, and one in the last: the library conversation's reply.
    let mut conv = conversation(&model);
    conv.add_image(&image).unwrap();
    let r1 = conv.send("w1", |_| {}).unwrap();
    conv.add_image(&image).unwrap();
    let r2 = conv.send("w2", |_| {}).unwrap();
    let body = json!({"messages": [
        {"role": "user", "content": [image_part(&image), {"type": "text", "text": "w1"}]},
        {"role": "assistant", "content": r1.output.text},
        {"role": "user", "content": [image_part(&image), {"type": "text", "text": "w2"}]}],
        "max_tokens": MAX_NEW, "temperature": 0});
    assert_eq!(server.chat_text(&body), r2.output.text);

    // An image and a clip: `gemma generate --image --audio`'s text and prompt length.
    let clip = src.join("clip.wav");
    let want = generate(&model, prompt, &["--image", s(&image), "--audio", s(&clip)]);
    let body = json!({"messages": [{"role": "user", "content": [
        image_part(&image), audio_part(&clip), {"type": "text", "text": prompt}]}],
        "max_tokens": MAX_NEW, "temperature": 0});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], want["text"]);
    assert_eq!(r.json()["usage"]["prompt_tokens"], want["prompt_tokens"]);

    // Refused with a 400 that says why: a clip that is not WAV, an undecodable image.
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, {"type": "text", "text": "hi"}]}]});
    let r = server.post("/v1/chat/completions", &audio);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("input_audio"), "{}", r.body);
    let bad = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    let r = server.post("/v1/chat/completions", &bad);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn serve_on_gemma3n_exports_without_a_tower() {
    let (_tmp, model, _) = export("gemma3n-audio-f32");
    let full = fixtures().join("tiny").join(FIXTURE);
    let (image, clip) = (full.join("image.png"), full.join("clip.wav"));
    let server = Server::start(&model, &[]);

    // Audio without vision: `gemma generate --audio`'s text and prompt length.
    let want = generate(&model, "What do you hear?", &["--audio", s(&clip)]);
    let heard = json!({"messages": [{"role": "user", "content": [
        audio_part(&clip), {"type": "text", "text": "What do you hear?"}]}],
        "max_tokens": MAX_NEW, "temperature": 0});
    let r = server.post("/v1/chat/completions", &heard);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], want["text"]);
    assert_eq!(r.json()["usage"]["prompt_tokens"], want["prompt_tokens"]);

    let body = json!({"messages": [{"role": "user", "content": [image_part(&image), {"type": "text", "text": "hi"}]}]});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("takes no images") && r.body.contains("Gemma 3n"),
        "{}",
        r.body
    );
    // Text alone is still served, as `gemma generate --chat` answers it.
    let want = json_of(success(&gemma(
        &[
            "generate",
            "-m",
            s(&model),
            "--chat",
            "-p",
            "hi",
            "-n",
            "2",
            "--json",
        ],
        None,
    )));
    let text =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0});
    assert_eq!(server.chat_text(&text), want["text"].as_str().unwrap());

    // No audio tower: an audio part is refused, naming it.
    let (_t, text_only, _) = export("gemma3n-text-f32");
    common::write_tokenizer(&text_only, &[]);
    let server = Server::start(&text_only, &[]);
    let r = server.post("/v1/chat/completions", &heard);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("input_audio") && r.body.contains("takes no audio"),
        "{}",
        r.body
    );
}
