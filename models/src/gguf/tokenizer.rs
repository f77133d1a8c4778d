//! A SentencePiece BPE vocabulary from a GGUF file, rebuilt as the `tokenizer.json` transformers writes for Gemma.
//!
//! transformers converts Gemma's `tokenizer.model` with `GemmaConverter` (`convert_slow_tokenizer.py`):
//!
//! * a BPE model over the pieces, ids unchanged, `unk_token` `<unk>`, `fuse_unk`, `byte_fallback`;
//! * merges from `generate_merges`: every split of every piece into two pieces of the vocabulary, ordered by the
//!   merged piece's score (highest first), then by the longer left part. SentencePiece numbers BPE pieces in score
//!   order and Gemma's scores strictly decrease with the id, so that order is: by the merged piece's id, then by
//!   the longer left part. llama.cpp overwrote the scores of control and user-defined tokens with -1000, so the id
//!   is the only order left for them; `SpmTokenizer::new` checks that the normal tokens' scores agree with it and
//!   refuses vocabularies where they don't (a unigram model, say), whose merge order cannot be recovered;
//! * normalizer `Replace(" " → "▁")`, pre-tokenizer `Split(" ", merged_with_previous)` (a no-op after the
//!   normalizer, kept to match transformers' file), decoder `Replace("▁" → " ")`, `ByteFallback`, `Fuse`;
//! * added tokens: control pieces (type 3) as special tokens, user-defined pieces (type 4) as non-special ones,
//!   both matched in the raw text (`normalized: false`);
//! * "older gemma tokenizers had a missing tab token": without a `"\t"` piece, the byte piece `<0x09>` is renamed
//!   `"\t"`;
//! * a post-processor adding `<bos>` (and `<eos>` when `add_eos_token`), as `GemmaTokenizerFast` sets it up.
//!
//! What llama.cpp's converter changed, undone here: in user-defined tokens it replaced `▁` by a space
//! ("pre-normalize user-defined spaces"); those pieces (Gemma 3's runs of `▁`) are restored and, as in
//! transformers' file, are ordinary vocabulary pieces reached through merges, not added tokens.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use super::vocab::{token_type, GgufVocab, VocabError};

/// SentencePiece's whitespace marker.
const SPACE_MARKER: &str = "\u{2581}";

/// The longest token accepted, in bytes. Deriving merges looks up every split of every token, so the work grows with
/// the square of a token's length; Gemma's longest token is 48 bytes, and a hostile file could otherwise hold
/// megabyte-long ones.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Tokens transformers' `GemmaConverter` always makes special, whatever their SentencePiece type.
const ALWAYS_SPECIAL: [&str; 2] = ["<start_of_turn>", "<end_of_turn>"];

/// A checked SentencePiece vocabulary with its Hugging Face pieces, ready to be written as `tokenizer.json`.
pub(crate) struct SpmTokenizer<'v> {
    vocab: &'v GgufVocab,
    /// The Hugging Face vocabulary: `pieces[id]`.
    pieces: Vec<Cow<'v, str>>,
    /// `(id, special)` of the added tokens, in id order.
    added: Vec<(u32, bool)>,
    add_bos: bool,
    add_eos: bool,
}

impl<'v> SpmTokenizer<'v> {
    /// Checks `vocab` (array lengths, ids in range, no duplicate pieces, scores in SentencePiece BPE order) and
    /// computes the Hugging Face pieces and added tokens.
    pub(crate) fn new(vocab: &'v GgufVocab) -> Result<Self, VocabError> {
        let n = vocab.tokens.len();
        if n == 0 {
            return Err(VocabError::Invalid("tokenizer.ggml.tokens is empty".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(VocabError::Invalid(format!(
                "tokenizer.ggml.tokens has {n} entries, more than token ids can address"
            )));
        }
        if vocab.scores.is_empty() {
            return Err(VocabError::Unsupported(
                "no tokenizer.ggml.scores: the BPE merge order of a SentencePiece vocabulary cannot be derived"
                    .into(),
            ));
        }
        if vocab.token_types.is_empty() {
            return Err(VocabError::Unsupported(
                "no tokenizer.ggml.token_type: control and user-defined tokens cannot be told apart".into(),
            ));
        }
        for (key, len) in [
            ("tokenizer.ggml.scores", vocab.scores.len()),
            ("tokenizer.ggml.token_type", vocab.token_types.len()),
        ] {
            if len != n {
                return Err(VocabError::Invalid(format!(
                    "{key} has {len} entries but tokenizer.ggml.tokens has {n}"
                )));
            }
        }
        if vocab.add_space_prefix == Some(true) {
            return Err(VocabError::Unsupported(
                "tokenizer.ggml.add_space_prefix is true: SentencePiece's dummy prefix is not rebuilt (Gemma \
                 vocabularies have none)"
                    .into(),
            ));
        }
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", vocab.bos_id),
            ("tokenizer.ggml.eos_token_id", vocab.eos_id),
            ("tokenizer.ggml.unknown_token_id", vocab.unk_id),
            ("tokenizer.ggml.padding_token_id", vocab.pad_id),
            ("tokenizer.ggml.eot_token_id", vocab.eot_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(VocabError::Invalid(format!(
                    "{key} is {id}, outside the {n} tokens"
                )));
            }
        }
        if let Some((id, t)) = vocab
            .token_types
            .iter()
            .enumerate()
            .find(|(_, t)| !(token_type::NORMAL..=token_type::BYTE).contains(*t))
        {
            return Err(VocabError::Invalid(format!(
                "tokenizer.ggml.token_type[{id}] is {t}, not a SentencePiece token type (1 to 6)"
            )));
        }
        if let Some((id, t)) = vocab
            .tokens
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
        {
            return Err(VocabError::Unsupported(format!(
                "tokenizer.ggml.tokens[{id}] is {} bytes long (it starts {:?}); tokens over {MAX_TOKEN_BYTES} bytes \
                 are refused (SentencePiece vocabularies have short pieces: Gemma's longest is 48 bytes)",
                t.len(),
                t.chars().take(16).collect::<String>()
            )));
        }
        check_score_order(vocab)?;

        let mut pieces = Vec::with_capacity(n);
        let mut added = Vec::new();
        for (id, (token, &kind)) in vocab.tokens.iter().zip(&vocab.token_types).enumerate() {
            let id = id as u32;
            match kind {
                token_type::USER_DEFINED if token.contains(' ') => {
                    pieces.push(Cow::Owned(token.replace(' ', SPACE_MARKER)))
                }
                token_type::USER_DEFINED => {
                    added.push((id, ALWAYS_SPECIAL.contains(&token.as_str())));
                    pieces.push(Cow::Borrowed(token.as_str()));
                }
                token_type::CONTROL => {
                    added.push((id, true));
                    pieces.push(Cow::Borrowed(token.as_str()));
                }
                _ => pieces.push(Cow::Borrowed(token.as_str())),
            }
        }
        if !pieces.iter().any(|p| p == "\t") {
            if let Some(p) = pieces.iter_mut().find(|p| *p == "<0x09>") {
                *p = Cow::Borrowed("\t");
            }
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (id, piece) in pieces.iter().enumerate() {
            if let Some(first) = seen.insert(piece, id) {
                return Err(VocabError::Invalid(format!(
                    "tokenizer.ggml.tokens has {piece:?} twice (ids {first} and {id})"
                )));
            }
        }

        let add_bos = vocab.add_bos.unwrap_or(vocab.bos_id.is_some());
        let add_eos = vocab.add_eos.unwrap_or(false);
        if add_bos && vocab.bos_id.is_none() {
            return Err(VocabError::Invalid(
                "tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id"
                    .into(),
            ));
        }
        if add_eos && vocab.eos_id.is_none() {
            return Err(VocabError::Invalid(
                "tokenizer.ggml.add_eos_token is true but there is no tokenizer.ggml.eos_token_id"
                    .into(),
            ));
        }
        Ok(SpmTokenizer {
            vocab,
            pieces,
            added,
            add_bos,
            add_eos,
        })
    }

    pub(crate) fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub(crate) fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The Hugging Face piece of token `id` (checked in range by [`new`](Self::new)); `key` names the GGUF key it
    /// came from.
    pub(crate) fn piece(&self, id: u32, key: &str) -> Result<&str, VocabError> {
        self.pieces
            .get(id as usize)
            .map(|p| p.as_ref())
            .ok_or_else(|| VocabError::Invalid(format!("{key} is {id}, outside the vocabulary")))
    }

    pub(crate) fn has_piece(&self, piece: &str) -> bool {
        self.pieces.iter().any(|p| p == piece)
    }

    /// The BPE merges, as `(left id, right id)` in rank order (see the module docs).
    pub(crate) fn merges(&self) -> Vec<(u32, u32)> {
        let index: HashMap<&str, u32> = self
            .pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (p.as_ref(), id as u32))
            .collect();
        // Byte lengths some piece has: a split whose parts have other lengths is skipped without hashing them.
        let longest = self.pieces.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut has_len = vec![false; longest + 1];
        for p in &self.pieces {
            has_len[p.len()] = true;
        }
        let mut merges = Vec::new();
        for piece in &self.pieces {
            // Split points from the right: the longer left part first.
            for (at, _) in piece.char_indices().rev().filter(|&(at, _)| at > 0) {
                if !has_len[at] || !has_len[piece.len() - at] {
                    continue;
                }
                let (left, right) = piece.split_at(at);
                if let (Some(&l), Some(&r)) = (index.get(left), index.get(right)) {
                    merges.push((l, r));
                }
            }
        }
        merges
    }

    /// The `tokenizer.json` text.
    pub(crate) fn tokenizer_json(&self) -> Result<String, VocabError> {
        let merges = self.merges();
        let unk_token = match self.vocab.unk_id {
            Some(id) => Some(self.piece(id, "tokenizer.ggml.unknown_token_id")?),
            None => self
                .pieces
                .iter()
                .find(|p| *p == "<unk>")
                .map(|p| p.as_ref()),
        };
        let byte_fallback = self.vocab.token_types.contains(&token_type::BYTE);
        let file = TokenizerJson {
            version: "1.0",
            truncation: None,
            padding: None,
            added_tokens: self
                .added
                .iter()
                .map(|&(id, special)| AddedToken {
                    id,
                    content: &self.pieces[id as usize],
                    single_word: false,
                    lstrip: false,
                    rstrip: false,
                    normalized: false,
                    special,
                })
                .collect(),
            normalizer: json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARKER}),
            pre_tokenizer: json!({
                "type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false
            }),
            post_processor: self.post_processor()?,
            decoder: json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE_MARKER}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"}
            ]}),
            model: BpeModel {
                kind: "BPE",
                dropout: None,
                unk_token,
                continuing_subword_prefix: None,
                end_of_word_suffix: None,
                fuse_unk: true,
                byte_fallback,
                ignore_merges: false,
                vocab: PieceMap(&self.pieces),
                merges: MergeList {
                    pieces: &self.pieces,
                    merges: &merges,
                },
            },
        };
        serde_json::to_string(&file)
            .map_err(|e| VocabError::Invalid(format!("cannot serialize tokenizer.json: {e}")))
    }

    /// `TemplateProcessing` as `GemmaTokenizerFast.update_post_processor` builds it:
    /// single `[<bos>] $A [<eos>]`, pair `[<bos>] $A [<eos>] [<bos>] $B [<eos>]` (second sequence type id 1).
    fn post_processor(&self) -> Result<Value, VocabError> {
        let mut special = serde_json::Map::new();
        let mut token =
            |on: bool, id: Option<u32>, key: &str| -> Result<Option<String>, VocabError> {
                let (true, Some(id)) = (on, id) else {
                    return Ok(None);
                };
                let piece = self.piece(id, key)?.to_string();
                special.insert(
                    piece.clone(),
                    json!({"id": piece, "ids": [id], "tokens": [piece]}),
                );
                Ok(Some(piece))
            };
        let bos = token(
            self.add_bos,
            self.vocab.bos_id,
            "tokenizer.ggml.bos_token_id",
        )?;
        let eos = token(
            self.add_eos,
            self.vocab.eos_id,
            "tokenizer.ggml.eos_token_id",
        )?;
        let sequence = |type_id: u32, seq: &str| {
            let mut out = Vec::new();
            if let Some(b) = &bos {
                out.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
            }
            out.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
            if let Some(e) = &eos {
                out.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
            }
            out
        };
        let single = sequence(0, "A");
        let mut pair = single.clone();
        pair.extend(sequence(1, "B"));
        Ok(json!({
            "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special
        }))
    }
}

/// Normal tokens' scores must strictly decrease with the id, as in a SentencePiece BPE model, for the id order to
/// be the score order transformers ranks merges by.
fn check_score_order(vocab: &GgufVocab) -> Result<(), VocabError> {
    let mut previous: Option<(usize, f32)> = None;
    for (id, (&score, &kind)) in vocab.scores.iter().zip(&vocab.token_types).enumerate() {
        if kind != token_type::NORMAL {
            continue;
        }
        if let Some((prev_id, prev)) = previous {
            // NaN compares as unordered, so it fails too.
            if score.partial_cmp(&prev) != Some(std::cmp::Ordering::Less) {
                return Err(VocabError::Unsupported(format!(
                    "tokenizer.ggml.scores do not decrease with the id as in a SentencePiece BPE model (token \
                     {prev_id} scores {prev}, token {id} scores {score}): the merge order cannot be recovered \
                     (a unigram vocabulary?)"
                )));
            }
        }
        previous = Some((id, score));
    }
    Ok(())
}

/// `tokenizer.json` as the `tokenizers` crate reads it, fields in the order transformers writes them.
#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken<'a>>,
    normalizer: Value,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: BpeModel<'a>,
}

#[derive(Serialize)]
struct AddedToken<'a> {
    id: u32,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: Option<()>,
    end_of_word_suffix: Option<()>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: PieceMap<'a>,
    merges: MergeList<'a>,
}

/// `{"piece": id, ...}` in id order, without building a map.
struct PieceMap<'a>(&'a [Cow<'a, str>]);

impl Serialize for PieceMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, piece) in self.0.iter().enumerate() {
            map.serialize_entry(piece.as_ref(), &(id as u32))?;
        }
        map.end()
    }
}

/// `[["left", "right"], ...]` from id pairs.
struct MergeList<'a> {
    pieces: &'a [Cow<'a, str>],
    merges: &'a [(u32, u32)],
}

impl Serialize for MergeList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.merges.len()))?;
        for &(l, r) in self.merges {
            seq.serialize_element(&[
                self.pieces[l as usize].as_ref(),
                self.pieces[r as usize].as_ref(),
            ])?;
        }
        seq.end()
    }
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
