//! The text half of `PaliGemmaProcessor` (semantics §8.2): the prompt layout and its `token_type_ids`.
//!
//! `PaliGemmaProcessor(text=P, images=[one or more])` builds, when `P` holds no `<image>`,
//! `"<image>" × images + bos + P + "\n"`; when it does, bos goes right after its last `<image>` and `"\n"` at the
//! end. Each `<image>` then becomes `<image>` × `image_seq_length` (one per SigLIP patch), and the text is tokenized
//! without special tokens (the processor sets `add_bos_token = False`: the bos is in the text). Every prompt token
//! has `token_type_ids` 0: the whole prefix, image and prompt, attends to itself in both directions, so it is
//! prefilled in one step; generated tokens have type 1 and attend causally.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// PaliGemma's image token: the prompt's placeholder and the rows the image features replace.
pub const IMAGE_TOKEN: &str = "<image>";

/// The processor's text for `prompt` and `images` images, before the placeholders are expanded; `bos` is the
/// tokenizer's bos string. A prompt that writes `<image>` itself must write one per image.
pub fn prompt_text(prompt: &str, images: usize, bos: &str) -> Result<String> {
    let placeholders = prompt.matches(IMAGE_TOKEN).count();
    if placeholders == 0 {
        return Ok(format!("{}{bos}{prompt}\n", IMAGE_TOKEN.repeat(images)));
    }
    if placeholders != images {
        return Err(Error::ImagePlaceholders {
            placeholders,
            images,
            placeholder: IMAGE_TOKEN.into(),
        });
    }
    let end = prompt.rfind(IMAGE_TOKEN).expect("counted above") + IMAGE_TOKEN.len();
    Ok(format!("{}{bos}{}\n", &prompt[..end], &prompt[end..]))
}

/// `text` with each `<image>` repeated `tokens_per_image` times (`replace_image_token`).
pub fn expand(text: &str, tokens_per_image: usize) -> String {
    text.replace(IMAGE_TOKEN, &IMAGE_TOKEN.repeat(tokens_per_image))
}

/// Token ids of the processor's text (from [`prompt_text`], or a raw prompt), expanded and tokenized without
/// special tokens, as `PaliGemmaProcessor` does.
pub fn prompt_ids(tokenizer: &Tokenizer, text: &str, tokens_per_image: usize) -> Result<Vec<u32>> {
    tokenizer.encode(&expand(text, tokens_per_image), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_processor() {
        assert_eq!(
            prompt_text("caption en", 1, "<bos>").unwrap(),
            "<image><bos>caption en\n"
        );
        assert_eq!(
            prompt_text("detect cat ; dog", 2, "<bos>").unwrap(),
            "<image><image><bos>detect cat ; dog\n"
        );
        assert_eq!(
            prompt_text("<image>x<image> answer en why", 2, "<bos>").unwrap(),
            "<image>x<image><bos> answer en why\n"
        );
        let e = prompt_text("<image> ocr", 2, "<bos>").unwrap_err();
        assert!(e.to_string().contains("<image>"), "{e}");
        assert_eq!(expand("<image><bos>a", 3), "<image><image><image><bos>a");
    }
}
