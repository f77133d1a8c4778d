//! The decoder session and its one step function, [`Decoder::run`]: one forward pass on new tokens after what a
//! [`KvCache`] holds, with an explicit `attention_mask` and `position_ids` (batch ≥ 1, left padding allowed).
//! Every caller goes through it: text generation, perplexity, chat, fill-in-the-middle, `gemma bench` and the
//! image path.
//!
//! The new tokens come as a [`TokenInput`]:
//! - [`TokenInput::Ids`]: `input_ids` i64 `[b, s]` into the export's `model.onnx` ([`Decoder::open`]);
//! - [`TokenInput::Embeds`]: `inputs_embeds` f32 `[b, s, hidden]` and `token_type_ids` i64 `[b, s]` (1 on image soft
//!   tokens) into a multimodal export's `decoder_model_merged.onnx` ([`Decoder::open_on_embeds`]).
//!
//! A Gemma 3n export's decoder takes embeddings and per-layer inputs: [`Decoder::open`] then also opens its
//! `embed_tokens.onnx`, and each [`TokenInput::Ids`] step runs it first and feeds its `inputs_embeds` and
//! `per_layer_inputs` to the decoder (manifest `gemma3n`; only its first `kv_layers` layers have a KV cache).
//! A [`TokenInput::Gemma3nEmbeds`] step gives both itself: [`Decoder::embed`]'s output with audio rows written over
//! the audio tokens (`crate::gemma3n_audio`, semantics §13.4).
//!
//! Graph I/O (Optimum / transformers.js names): besides the tokens, `attention_mask` i64 `[b, past + s]`,
//! `position_ids` i64 `[b, s]` (optional in the portable graph), `past_key_values.{i}.key/value`; outputs `logits`
//! `[b, s, vocab]` and `present.{i}.key/value`.
//!
//! Two graph kinds (manifest `graph`):
//! - **portable**: the past is `[b, nkv, past, hd]` and the present `[b, nkv, past + s, hd]`, a new tensor each step
//!   that replaces the cache; logits come for every position, or for the last one only when the export has the
//!   optional `num_logits_to_keep` input. The image decoder on embeddings is always portable; Gemma 3n's decoder
//!   (on embeddings and per-layer inputs) is either kind.
//! - **cpu**: the KV tensors are preallocated buffers `[b, nkv, capacity, hd]` that this module binds (ONNX Runtime
//!   I/O binding) as both the past input and the present output, so the graph updates them in place; the extra
//!   input `num_logits_to_keep` makes the graph compute logits for the last position only when that is all the
//!   caller wants ([`LogitsMode::Last`]). A step with cached context and several new tokens needs batch 1.
//!   Gemma 3n: buffers for the `kv_layers` only; a sliding layer whose keys the shared layers read keeps every
//!   position (`Manifest::window_sized_kv`).

use gemma_models::contract::io;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView2, ArrayView3, ArrayView4};
use ort::session::Session;

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::{self, GraphKind, Manifest};
use crate::ort_env::{self, RuntimeOptions};

mod check;
mod ids;
mod run;

pub use ids::{ids_row, mask_and_positions, position_ids_from_mask, single_sequence_inputs};

pub struct Decoder {
    session: Session,
    /// Gemma 3n: `embed_tokens.onnx`, run on the ids of each step before the decoder.
    embed_tokens: Option<Session>,
    /// The export's manifest; for the decoder on embeddings, with `graph` portable (what its cache must look like).
    manifest: Manifest,
    dir: PathBuf,
    graph: GraphKind,
    /// Which [`TokenInput`] the graph takes.
    embeds: bool,
    /// Names ONNX Runtime errors: "running the decoder", "running decoder_model_merged.onnx".
    context: &'static str,
    has_position_ids: bool,
    /// Added to the positions [`run_after_cache`](Self::run_after_cache) makes: PaliGemma counts from 1.
    first_position: i64,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

/// The new tokens of one step.
#[derive(Clone, Copy, Debug)]
pub enum TokenInput<'a> {
    /// `input_ids` `[b, s]`, for the text decoder.
    Ids(ArrayView2<'a, i64>),
    /// `inputs_embeds` `[b, s, hidden]` (image soft-token rows already replaced by image features) and
    /// `token_type_ids` `[b, s]`, for the decoder on embeddings.
    Embeds {
        embeds: ArrayView3<'a, f32>,
        token_type_ids: ArrayView2<'a, i64>,
    },
    /// Gemma 3n: `inputs_embeds` `[b, s, hidden]` and `per_layer_inputs` `[b, s, layers, P]` as
    /// [`Decoder::embed`] gives them, audio soft-token rows replaced (`crate::gemma3n_audio`, semantics §13).
    Gemma3nEmbeds {
        embeds: ArrayView3<'a, f32>,
        per_layer_inputs: ArrayView4<'a, f32>,
    },
}

impl TokenInput<'_> {
    /// `(batch, new tokens)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            TokenInput::Ids(ids) => ids.dim(),
            TokenInput::Embeds { embeds, .. } | TokenInput::Gemma3nEmbeds { embeds, .. } => {
                (embeds.dim().0, embeds.dim().1)
            }
        }
    }

    /// The same views for a shorter lifetime (ndarray views are invariant in it).
    fn reborrow<'b>(self) -> TokenInput<'b>
    where
        Self: 'b,
    {
        match self {
            TokenInput::Ids(ids) => TokenInput::Ids(ids.reborrow()),
            TokenInput::Embeds {
                embeds,
                token_type_ids,
            } => TokenInput::Embeds {
                embeds: embeds.reborrow(),
                token_type_ids: token_type_ids.reborrow(),
            },
            TokenInput::Gemma3nEmbeds {
                embeds,
                per_layer_inputs,
            } => TokenInput::Gemma3nEmbeds {
                embeds: embeds.reborrow(),
                per_layer_inputs: per_layer_inputs.reborrow(),
            },
        }
    }
}

/// Which positions' logits a step returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last position of each row: `[b, 1, vocab]`.
    Last,
    /// Every position: `[b, s, vocab]`.
    All,
}

/// One step's inputs besides the cache.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub tokens: TokenInput<'a>,
    /// `[b, past + s]`: 1 for real positions, 0 for (left) padding.
    pub attention_mask: ArrayView2<'a, i64>,
    /// `[b, s]`.
    pub position_ids: ArrayView2<'a, i64>,
    pub logits: LogitsMode,
}

impl Decoder {
    /// Opens the export folder `dir`: reads the manifest, creates the session of `model.onnx` and checks the graph's
    /// inputs and outputs against it. Its steps take [`TokenInput::Ids`].
    pub fn open(dir: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Decoder> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = manifest::load(&dir)?;
        let model = manifest::decoder_path(&dir, &manifest);
        let session = ort_env::create_session(&model, options)?;
        let embed_tokens = match &manifest.gemma3n {
            Some(n) => Some(ort_env::create_session(
                &dir.join(&n.embed_tokens),
                options,
            )?),
            None => None,
        };
        let mut decoder = Decoder::new(session, manifest, dir, false);
        decoder.embed_tokens = embed_tokens;
        decoder.check_ids_graph(&model)?;
        crate::integrity::check_graph_shapes(&decoder.session, &decoder.manifest, &model)?;
        Ok(decoder)
    }

    /// Opens `model`, a multimodal export's decoder on embeddings (`decoder_model_merged.onnx`) in the folder `dir`
    /// whose manifest is `manifest`. It has the portable I/O also when `model.onnx` is the cpu graph, so its caches
    /// are portable. Its steps take [`TokenInput::Embeds`].
    pub fn open_on_embeds(
        dir: &Path,
        model: &Path,
        manifest: &Manifest,
        options: &RuntimeOptions,
    ) -> Result<Decoder> {
        let session = ort_env::create_session(model, options)?;
        let mut portable = manifest.clone();
        portable.graph = GraphKind::Portable;
        portable.cpu = None;
        let mut decoder = Decoder::new(session, portable, dir.to_path_buf(), true);
        decoder.first_position = manifest
            .vision
            .as_ref()
            .map_or(0, |v| v.system.spec().first_position);
        decoder.check_embeds_graph(model)?;
        crate::integrity::check_graph_shapes(&decoder.session, manifest, model)?;
        Ok(decoder)
    }

    fn new(session: Session, manifest: Manifest, dir: PathBuf, embeds: bool) -> Decoder {
        let layers = 0..manifest.kv_layers();
        Decoder {
            session,
            embed_tokens: None,
            graph: manifest.graph,
            past_names: layers
                .clone()
                .map(|i| (io::past_key(i), io::past_value(i)))
                .collect(),
            present_names: layers
                .map(|i| (io::present_key(i), io::present_value(i)))
                .collect(),
            manifest,
            dir,
            embeds,
            context: if embeds {
                "running decoder_model_merged.onnx"
            } else {
                "running the decoder"
            },
            has_position_ids: false,
            first_position: 0,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The export folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size
    }

    /// The kind of graph this decoder runs.
    pub fn graph_kind(&self) -> GraphKind {
        self.graph
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        KvCache::new(&self.manifest, batch)
    }

    /// An empty cache for `batch` rows sized for `positions` positions (prompt + new tokens): with the cpu graph,
    /// a run of that length then never reallocates the cache.
    pub fn new_cache_with_capacity(&self, batch: usize, positions: usize) -> Result<KvCache> {
        KvCache::with_capacity(&self.manifest, batch, positions)
    }

    /// The one step function: a forward pass on `step`, handing `f` the logits as f32 (`[b, s, vocab]` for
    /// [`LogitsMode::All`], `[b, 1, vocab]` for [`LogitsMode::Last`]; a view of ONNX Runtime's output when the graph's
    /// logits are f32), whose result is returned. On success the cache holds the step's present values; on error a
    /// portable cache is left as it was, a cpu-graph cache must be [`reset`](KvCache::reset).
    pub fn run<R>(
        &mut self,
        step: &Step<'_>,
        cache: &mut KvCache,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        self.check_step(step, cache)?;
        match self.graph {
            GraphKind::Portable => self.run_portable(step, cache, f),
            GraphKind::Cpu => self.run_in_place(step, cache, f),
        }
    }

    /// [`run`](Self::run) on one unpadded sequence after the batch-1 cache's positions (all-ones mask, positions
    /// `past..past + s`, plus the first position of the decoder on embeddings: 1 for PaliGemma).
    pub fn run_after_cache<R>(
        &mut self,
        tokens: TokenInput<'_>,
        cache: &mut KvCache,
        logits: LogitsMode,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        if cache.batch() != 1 {
            return Err(Error::InvalidArgument(format!(
                "forward_tokens needs a batch-1 cache, got batch {}",
                cache.batch()
            )));
        }
        let (mask, mut pos) = mask_and_positions(tokens.dim().1, cache.len());
        pos += self.first_position;
        let step = Step {
            tokens: tokens.reborrow(),
            attention_mask: mask.view(),
            position_ids: pos.view(),
            logits,
        };
        self.run(&step, cache, f)
    }

    fn check_step(&self, step: &Step<'_>, cache: &KvCache) -> Result<()> {
        let (batch, seq) = step.tokens.dim();
        let past = cache.len();
        let what = if self.embeds {
            io::INPUTS_EMBEDS
        } else {
            io::INPUT_IDS
        };
        if batch == 0 || seq == 0 {
            return Err(Error::InvalidArgument(format!(
                "{what} must be non-empty, got shape [{batch}, {seq}]"
            )));
        }
        match (&step.tokens, self.embeds) {
            (TokenInput::Ids(_), false) => {}
            (
                TokenInput::Gemma3nEmbeds {
                    per_layer_inputs, ..
                },
                false,
            ) if self.embed_tokens.is_some() => {
                let (b, s, layers, _) = per_layer_inputs.dim();
                if (b, s, layers) != (batch, seq, self.manifest.num_layers) {
                    return Err(Error::InvalidArgument(format!(
                        "per_layer_inputs must be [{batch}, {seq}, {}, P], got {:?}",
                        self.manifest.num_layers,
                        per_layer_inputs.shape()
                    )));
                }
            }
            (TokenInput::Embeds { token_type_ids, .. }, true) => {
                if token_type_ids.dim() != (batch, seq) {
                    return Err(Error::InvalidArgument(format!(
                        "token_type_ids must be [batch, seq] = [{batch}, {seq}], got {:?}",
                        token_type_ids.shape()
                    )));
                }
            }
            (_, true) => {
                return Err(Error::InvalidArgument(
                    "the decoder on embeddings takes inputs_embeds, not input_ids".into(),
                ))
            }
            (_, false) => return Err(Error::InvalidArgument(
                "this decoder takes input_ids; open decoder_model_merged.onnx for inputs_embeds"
                    .into(),
            )),
        }
        if cache.batch() != batch {
            return Err(Error::InvalidArgument(format!(
                "{what} has batch {batch} but the KV cache was made for batch {}",
                cache.batch()
            )));
        }
        if cache.num_layers() != self.manifest.kv_layers() {
            return Err(Error::InvalidArgument(format!(
                "the KV cache has {} layers, the model {}",
                cache.num_layers(),
                self.manifest.kv_layers()
            )));
        }
        if step.attention_mask.dim() != (batch, past + seq) {
            return Err(Error::InvalidArgument(format!(
                "attention_mask must be [batch, past + seq] = [{batch}, {}], got {:?}",
                past + seq,
                step.attention_mask.shape()
            )));
        }
        if step.position_ids.dim() != (batch, seq) {
            return Err(Error::InvalidArgument(format!(
                "position_ids must be [batch, seq] = [{batch}, {seq}], got {:?}",
                step.position_ids.shape()
            )));
        }
        Ok(())
    }
}
