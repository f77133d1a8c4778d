//! The text half of `Gemma3Processor` (semantics §6.4): each `<start_of_image>` placeholder of the prompt becomes the
//! image's token sequence, and `token_type_ids` mark the `<image_soft_token>` rows that the image features replace.
//!
//! Per image with `n` Pan & Scan crops (`seq` = `"\n\n<start_of_image>" + "<image_soft_token>"×T +
//! "<end_of_image>\n\n"`, T = mm_tokens_per_image):
//! - `n = 0`: `seq`;
//! - `n > 0`: `"Here is the original image " + seq + " and here are some crops to help you see better " +
//!   " ".join([seq] * n)`.
//!
//! Placeholders are replaced left to right, the i-th by the i-th image (`ProcessorMixin.get_text_with_replacements`),
//! and their number must equal the number of images (`Gemma3Processor.validate_inputs`). The expanded text is then
//! tokenized like any prompt; chat templates emit the placeholder for each `{"type": "image"}` content item.
//! `tests/fixtures/processor/gemma3-processor.json` holds transformers' own results, compared id for id in
//! `tests/tests/vision_runtime.rs`.

use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::generate::with_single_bos;
use crate::tokenizer::Tokenizer;
use gemma_models::family::VisionSystem;

/// Gemma 3's image token strings (`tokenizer.boi_token`, `eoi_token`, `image_token`) and the soft-token count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTokens {
    /// `<start_of_image>`: the placeholder of the prompt, and the first token of each image block.
    pub boi: String,
    /// `<end_of_image>`.
    pub eoi: String,
    /// `<image_soft_token>`: the rows that image features replace.
    pub soft: String,
    /// Soft tokens per image (or crop): `mm_tokens_per_image`, the processor's `image_seq_length`.
    pub tokens_per_image: usize,
}

/// The prompt text of one image's features announcement before crops (`replace_image_token`).
pub const CROPS_INTRO: &str = "Here is the original image ";
/// What joins the full image to its crops.
pub const CROPS_MIDDLE: &str = " and here are some crops to help you see better ";

impl ImageTokens {
    /// PaliGemma's: `<image>` is the placeholder and the soft token both, with no begin/end tokens (its expansion
    /// is [`super::paligemma`]'s, not [`ImageTokens::expand`]).
    pub fn paligemma(tokens_per_image: usize) -> ImageTokens {
        let image = super::paligemma::IMAGE_TOKEN.to_string();
        ImageTokens {
            boi: image.clone(),
            eoi: image.clone(),
            soft: image,
            tokens_per_image,
        }
    }

    /// The names Gemma 3's tokenizer gives the three tokens.
    pub fn gemma3(tokens_per_image: usize) -> ImageTokens {
        ImageTokens {
            boi: "<start_of_image>".into(),
            eoi: "<end_of_image>".into(),
            soft: "<image_soft_token>".into(),
            tokens_per_image,
        }
    }

    /// `"\n\n" + boi + soft × T + eoi + "\n\n"` (`Gemma3Processor.full_image_sequence`).
    pub fn full_image_sequence(&self) -> String {
        format!(
            "\n\n{}{}{}\n\n",
            self.boi,
            self.soft.repeat(self.tokens_per_image),
            self.eoi
        )
    }

    /// What one placeholder becomes for an image with `num_crops` Pan & Scan crops.
    pub fn replacement(&self, num_crops: usize) -> String {
        let seq = self.full_image_sequence();
        if num_crops == 0 {
            return seq;
        }
        let crops = vec![seq.as_str(); num_crops].join(" ");
        format!("{CROPS_INTRO}{seq}{CROPS_MIDDLE}{crops}")
    }

    /// Placeholders (`<start_of_image>`, non-overlapping) in `text`.
    pub fn count_placeholders(&self, text: &str) -> usize {
        text.matches(self.boi.as_str()).count()
    }

    /// `text` with its i-th placeholder replaced by image i's sequence (`num_crops[i]` crops). Fails when the
    /// placeholders and the images differ in number.
    pub fn expand(&self, text: &str, num_crops: &[usize]) -> Result<String> {
        let placeholders = self.count_placeholders(text);
        if placeholders != num_crops.len() {
            return Err(Error::ImagePlaceholders {
                placeholders,
                images: num_crops.len(),
                placeholder: self.boi.clone(),
            });
        }
        let mut out = String::with_capacity(
            text.len()
                + num_crops
                    .iter()
                    .map(|&n| (n + 1) * self.tokens_per_image * self.soft.len())
                    .sum::<usize>(),
        );
        let mut crops = num_crops.iter();
        let mut rest = text;
        while let Some(at) = rest.find(self.boi.as_str()) {
            out.push_str(&rest[..at]);
            out.push_str(&self.replacement(*crops.next().expect("counted above")));
            rest = &rest[at + self.boi.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `<dir>/tokenizer.json` and the image token strings, the way transformers loads Gemma 3's tokenizer: the strings
/// are `tokenizer_config.json`'s `boi_token`, `eoi_token` and `image_token` (Gemma 3's names when absent), and any
/// of them that tokenizer.json lacks is added as a special token at the next id. Gemma 3's tokenizer.json stops at
/// id 262143, so this is where `<image_soft_token>` gets its id 262144.
///
/// PaliGemma's tokenizer holds its `<image>` already ([`image_tokenizer_for`]).
pub fn image_tokenizer(dir: &Path, tokens_per_image: usize) -> Result<(Tokenizer, ImageTokens)> {
    image_tokenizer_for(dir, tokens_per_image, VisionSystem::Gemma3)
}

/// [`image_tokenizer`] for the export's vision system.
pub fn image_tokenizer_for(
    dir: &Path,
    tokens_per_image: usize,
    system: VisionSystem,
) -> Result<(Tokenizer, ImageTokens)> {
    let mut tokenizer = Tokenizer::from_dir(dir)?;
    if system == VisionSystem::PaliGemma {
        return Ok((tokenizer, ImageTokens::paligemma(tokens_per_image)));
    }
    let mut tokens = ImageTokens::gemma3(tokens_per_image);
    let config_path = dir.join("tokenizer_config.json");
    if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid_file(&config_path, format!("not valid JSON: {e}")))?;
        let name = |key: &str| {
            config.get(key).and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
                    .map(str::to_string)
            })
        };
        tokens.boi = name("boi_token").unwrap_or(tokens.boi);
        tokens.eoi = name("eoi_token").unwrap_or(tokens.eoi);
        tokens.soft = name("image_token").unwrap_or(tokens.soft);
    }
    for t in [&tokens.boi, &tokens.eoi, &tokens.soft] {
        tokenizer.ensure_special_token(t);
    }
    Ok((tokenizer, tokens))
}

/// Token ids of `text` with its placeholders expanded for `num_crops` (one entry per image). Chat-template text
/// holds `<bos>` already and is tokenized without special tokens (as `ProcessorMixin.apply_chat_template` does);
/// raw text with them. Either way the ids start with exactly one `bos`.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    tokens: &ImageTokens,
    text: &str,
    num_crops: &[usize],
    chat: bool,
    bos: u32,
) -> Result<Vec<u32>> {
    let expanded = tokens.expand(text, num_crops)?;
    Ok(with_single_bos(tokenizer.encode(&expanded, !chat)?, bos))
}

/// 1 where `ids` holds the image soft token, 0 elsewhere (`create_mm_token_type_ids`).
pub fn token_type_ids(ids: &[u32], image_token_id: u32) -> Vec<i64> {
    ids.iter().map(|&t| (t == image_token_id) as i64).collect()
}

/// The maximal runs of type-1 tokens: one per image or crop, each attending to itself in both directions.
pub fn image_blocks(token_types: &[i64]) -> Vec<Range<usize>> {
    let mut blocks = Vec::new();
    let mut start = None;
    for (i, &t) in token_types.iter().enumerate() {
        match (t == 1, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                blocks.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        blocks.push(s..token_types.len());
    }
    blocks
}

/// Prefill chunks of at most `max_chunk` tokens that never cut an image block (a block longer than `max_chunk`
/// gets a chunk of its own, whole): the decoder's bidirectional image mask only sees the current chunk.
pub fn prefill_chunks(token_types: &[i64], max_chunk: usize) -> Vec<Range<usize>> {
    let n = token_types.len();
    let max_chunk = max_chunk.max(1);
    let blocks = image_blocks(token_types);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = (start + max_chunk).min(n);
        if let Some(b) = blocks.iter().find(|b| b.start < end && end < b.end) {
            // `end` would split block b: stop before it, or take it whole if it starts the chunk.
            end = if b.start > start { b.start } else { b.end };
        }
        chunks.push(start..end);
        start = end;
    }
    chunks
}

/// A user message with `images` image items, then the text (the layout of `gemma-vision describe`); the Gemma 3
/// chat template turns each image item into a placeholder.
pub fn user_message(images: usize, text: &str) -> serde_json::Value {
    let mut content: Vec<serde_json::Value> = (0..images)
        .map(|_| serde_json::json!({"type": "image"}))
        .collect();
    if !text.is_empty() {
        content.push(serde_json::json!({"type": "text", "text": text}));
    }
    serde_json::json!({"role": "user", "content": content})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_processor() {
        let t = ImageTokens::gemma3(2);
        let seq = "\n\n<start_of_image><image_soft_token><image_soft_token><end_of_image>\n\n";
        assert_eq!(t.full_image_sequence(), seq);
        assert_eq!(
            t.expand("a<start_of_image>b", &[0]).unwrap(),
            format!("a{seq}b")
        );
        assert_eq!(
            t.expand("<start_of_image>", &[2]).unwrap(),
            format!("Here is the original image {seq} and here are some crops to help you see better {seq} {seq}")
        );
        assert_eq!(t.expand("no image", &[]).unwrap(), "no image");
        let e = t.expand("<start_of_image>", &[0, 0]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ImagePlaceholders {
                    placeholders: 1,
                    images: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("<start_of_image>"), "{e}");
    }

    #[test]
    fn blocks_and_chunks_keep_images_whole() {
        let tt = [0, 1, 1, 0, 0, 1, 1, 1, 0];
        assert_eq!(image_blocks(&tt), vec![1..3, 5..8]);
        assert_eq!(prefill_chunks(&tt, 100), vec![0..9]);
        assert_eq!(prefill_chunks(&tt, 2), vec![0..1, 1..3, 3..5, 5..8, 8..9]);
        assert_eq!(prefill_chunks(&tt, 4), vec![0..4, 4..8, 8..9]);
        for max in 1..10 {
            let chunks = prefill_chunks(&tt, max);
            assert_eq!(chunks.first().unwrap().start, 0);
            assert_eq!(chunks.last().unwrap().end, tt.len());
            for b in image_blocks(&tt) {
                assert!(
                    chunks.iter().any(|c| c.start <= b.start && b.end <= c.end),
                    "max {max}: {chunks:?}"
                );
            }
        }
        assert_eq!(image_blocks(&[1, 1]), vec![0..2]);
    }
}
