//! Entry points for the fuzz targets of `tests/fuzz` and for their stable-Rust regression test
//! (`tests/tests/fuzz_corpus.rs`), which runs every committed seed corpus file through the same functions. The
//! `fuzzing` feature.
//!
//! Each function takes the raw bytes of one untrusted input (an export's manifest, a downloaded chat template, an
//! image given to `gemma-vision`) and returns a typed [`Error`] or `Ok`: it must never panic, hang or allocate
//! without bound, whatever the bytes. A new input kind gets one function here, one target in
//! `tests/fuzz/fuzz_targets/`, and one line in the regression test's table.

use std::path::Path;

use crate::chat_template::ChatTemplate;
use crate::error::Result;
use crate::serve::api::{chat_request, completion_request, ApiError};
use crate::vision::{decode_image, ImageLimits};

/// `gemma-onnx.json` text (not UTF-8 is read lossily), parsed and validated as the runtime loads it.
pub fn manifest(bytes: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    crate::manifest::parse(&text, Path::new("gemma-onnx.json")).map(|_| ())
}

/// A chat template and, after the first NUL byte, the messages as JSON (a list of `{role, content}` objects; when
/// absent or not JSON, a fixed system/user/assistant/user conversation). Compiled and rendered with the
/// generation prompt, under the same fuel and output limits as `gemma chat`.
pub fn chat_template(bytes: &[u8]) -> Result<()> {
    let (source, messages) = match bytes.iter().position(|&b| b == 0) {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    };
    let messages = messages
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
        .unwrap_or_else(|| {
            serde_json::json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Who are you?"},
            ])
        });
    let template = ChatTemplate::new(String::from_utf8_lossy(source), "<bos>", "<eos>")?;
    template.render_value(&messages, true).map(|_| ())
}

/// Image file bytes decoded as `gemma-vision` decodes them (format sniffing, header limits, EXIF orientation, alpha
/// over white), then checked to be the `[height, width, 3]` u8 buffer that `preprocess.onnx` takes as input.
/// The limits are smaller than the defaults (1024 px a side, 1 megapixel) so that one input stays fast; the code
/// path is the same.
pub fn image(bytes: &[u8]) -> Result<()> {
    let limits = ImageLimits {
        max_width: 1024,
        max_height: 1024,
        max_pixels: 1 << 20,
        max_file_bytes: 1 << 20,
    };
    let rgb = decode_image(bytes, Path::new("image"), &limits)?;
    let (w, h) = rgb.dimensions();
    // The oracle: a decoded image is never empty (that is `ImageErrorKind::ZeroSized`) and is exactly the buffer
    // `preprocess.onnx` reads. A failure here is a bug for the fuzzer to report, hence a panic.
    assert!(
        w > 0 && h > 0 && rgb.as_raw().len() == (w as usize) * (h as usize) * 3,
        "decoded image {w}×{h} has {} bytes, not the [height, width, 3] preprocess input",
        rgb.as_raw().len()
    );
    Ok(())
}

/// A `gemma serve` request body, validated as `/v1/chat/completions` (for an export with vision and audio, then one without)
/// and as `/v1/completions`: `Ok` when one of the three accepts it, otherwise the first refusal (an HTTP 400 with a
/// message). The body needs no prefix, so every seed is a request as a client sends it.
pub fn serve_request(bytes: &[u8]) -> std::result::Result<(), ApiError> {
    let all = crate::serve::api::Takes {
        images: true,
        audio: true,
    };
    let chat_vision = chat_request(bytes, all).map(|_| ());
    let chat_text = chat_request(bytes, Default::default()).map(|_| ());
    let completion = completion_request(bytes).map(|_| ());
    chat_vision.or(chat_text).or(completion)
}
