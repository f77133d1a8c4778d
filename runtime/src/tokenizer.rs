//! `tokenizer.json` through the `tokenizers` crate, and a streaming decoder that hands out text only once it is
//! complete UTF-8 (byte-fallback tokens of one character arrive one at a time).

use std::path::Path;

use crate::error::{Error, Result};

pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Tokenizer(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    /// `<dir>/tokenizer.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        Self::from_file(dir.as_ref().join(TOKENIZER_FILE))
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's post-processor runs (Gemma: a leading
    /// `<bos>`); chat-template output already contains `<bos>` and must be encoded without.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("decode: {e}")))
    }

    /// Id of a token by its string (`"<bos>"`, `"<end_of_turn>"`...).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Adds `token` as a special token unless the tokenizer has it, and returns its id (a new one is the next
    /// free id). transformers does this for the tokens `tokenizer_config.json` names but `tokenizer.json` lacks,
    /// like Gemma 3's `<image_soft_token>` (262144, one past the vocabulary of tokenizer.json).
    pub fn ensure_special_token(&mut self, token: &str) -> u32 {
        if let Some(id) = self.inner.token_to_id(token) {
            return id;
        }
        self.inner
            .add_special_tokens(&[tokenizers::AddedToken::from(token.to_string(), true)]);
        self.inner
            .token_to_id(token)
            .expect("a token just added has an id")
    }
}

/// Incremental detokenizer: [`push`](Self::push) one token at a time and get the new text, or `None` while the text
/// so far ends inside a multi-byte character. Decodes a short window (the tokens since the last emitted boundary)
/// rather than the whole history, and never fails on odd decoder output: the concatenation of everything emitted
/// plus [`finish`](Self::finish) equals decoding all tokens at once.
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context (text before `read_offset` was already emitted).
    prefix_offset: usize,
    read_offset: usize,
}

impl TextStream<'_> {
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let (prefix, text) = self.window()?;
        if text.ends_with('\u{FFFD}') || text.len() <= prefix.len() && text == prefix {
            return Ok(None);
        }
        let delta = match text.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            // The decoder rewrote the end of the earlier text (rare): emit from the first difference.
            None => text[common_prefix_len(&prefix, &text)..].to_string(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(if delta.is_empty() { None } else { Some(delta) })
    }

    /// Text still held back (an incomplete character at the end), as the lossy decoder renders it.
    pub fn finish(&mut self) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let (prefix, text) = self.window()?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        let start = if text.starts_with(prefix.as_str()) {
            prefix.len()
        } else {
            common_prefix_len(&prefix, &text)
        };
        let delta = &text[start..];
        Ok(if delta.is_empty() {
            None
        } else {
            Some(delta.to_string())
        })
    }

    /// The text of the context window before the unread tokens, and with them.
    fn window(&self) -> Result<(String, String)> {
        let decode = |ids: &[u32]| self.tokenizer.decode(ids, self.skip_special_tokens);
        Ok((
            decode(&self.ids[self.prefix_offset..self.read_offset])?,
            decode(&self.ids[self.prefix_offset..])?,
        ))
    }

    /// All tokens pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a char boundary.
pub(crate) fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map(|((i, _), _)| i)
        .unwrap_or(a.len().min(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    pub(crate) fn gemma_tokenizer() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            let path = crate::test_support::gemma3_tokenizer_dir().join("tokenizer.json");
            Tokenizer::from_file(path).expect("the Gemma 3 tokenizer")
        })
    }

    #[test]
    fn encode_adds_exactly_one_bos_with_special_tokens() {
        let t = gemma_tokenizer();
        let with = t.encode("Hello world", true).unwrap();
        let without = t.encode("Hello world", false).unwrap();
        assert_eq!(with[0], 2);
        assert_ne!(without[0], 2);
        assert_eq!(&with[1..], &without[..]);
        assert_eq!(t.token_to_id("<bos>"), Some(2));
        assert_eq!(t.token_to_id("<end_of_turn>"), Some(106));
        assert_eq!(t.token_to_id("<start_of_turn>"), Some(105));
        assert_eq!(t.id_to_token(1).as_deref(), Some("<eos>"));
        // Special tokens in the text are recognised as single tokens.
        let ids = t
            .encode("<start_of_turn>user\nHi<end_of_turn>", false)
            .unwrap();
        assert_eq!(ids[0], 105);
        assert_eq!(*ids.last().unwrap(), 106);
    }

    #[test]
    fn stream_concatenation_equals_full_decode() {
        let t = gemma_tokenizer();
        for text in [
            "Hello, world! How are you?",
            "  leading and   multiple   spaces\n\nnew lines\t tabs ",
            "Unicode: héllo wörld — “quotes” 日本語のテキスト 🦀🚀👩‍👩‍👧 ∑∫√",
            "<start_of_turn>model\nSpecial tokens inside<end_of_turn>",
        ] {
            for skip in [false, true] {
                let ids = t.encode(text, true).unwrap();
                let mut stream = t.stream(skip);
                let mut out = String::new();
                for &id in &ids {
                    if let Some(delta) = stream.push(id).unwrap() {
                        assert!(
                            !delta.contains('\u{FFFD}'),
                            "incomplete UTF-8 emitted: {delta:?}"
                        );
                        out.push_str(&delta);
                    }
                }
                if let Some(rest) = stream.finish().unwrap() {
                    out.push_str(&rest);
                }
                assert_eq!(
                    out,
                    t.decode(&ids, skip).unwrap(),
                    "text {text:?} skip {skip}"
                );
            }
        }
    }

    #[test]
    fn stream_holds_back_partial_characters() {
        let t = gemma_tokenizer();
        // Byte-fallback tokens <0xF0><0x9F><0xA6><0x80> spell one crab; nothing comes out before the last one.
        let bytes: Vec<u32> = "🦀"
            .bytes()
            .map(|b| t.token_to_id(&format!("<0x{b:02X}>")).unwrap())
            .collect();
        let mut stream = t.stream(false);
        for &id in &bytes[..3] {
            assert_eq!(stream.push(id).unwrap(), None);
        }
        assert_eq!(stream.push(bytes[3]).unwrap().as_deref(), Some("🦀"));
        // A dangling partial character is flushed lossily by finish().
        let mut stream = t.stream(false);
        stream.push(bytes[0]).unwrap();
        assert_eq!(stream.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn missing_tokenizer_is_a_clear_error() {
        let e = Tokenizer::from_file("/nonexistent/tokenizer.json")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
    }
}
