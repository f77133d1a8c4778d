//! Prompts with attachments on Gemma 3n exports (`gemma generate --image/--audio`, `gemma chat`'s `/image` and `/audio`, `gemma serve`;
//! semantics §13.4): one user turn whose content items are the attachments, in the order given, then the text,
//! rendered through the checkpoint's chat template and expanded as `Gemma3nProcessor` does, which is what
//! `Gemma3nProcessor.apply_chat_template([{"role": "user", "content": [...]}], add_generation_prompt=True,
//! tokenize=True)` returns:
//!
//! - the template writes `<audio_soft_token>` for each `{"type": "audio"}` item and `<image_soft_token>` for each
//!   `{"type": "image"}` item;
//! - left to right, each of those placeholders becomes `"\n\n" + boa + soft × S + eoa + "\n\n"` (images: boi,
//!   soft × S, eoi), the number of placeholders equal to the number of clips and images;
//! - the text is tokenized without special tokens (the template wrote `<bos>`).
//!
//! Each clip goes through `preprocess_audio.onnx` and `audio_encoder.onnx` ([`AudioEncoder`]); its rows replace its
//! audio tokens ([`crate::gemma3n_audio::prompt_embeds`]) and the decoder prefills the whole prompt in one step.
//! Decode steps are plain ids (the decoder runs `embed_tokens.onnx` itself).
//!
//! Each image goes through `preprocess.onnx` and `vision_encoder.onnx` ([`Gemma3nImageEncoder`]) when the export
//! has the manifest's `gemma3n.vision` part. [`Gemma3nGenerator::prompt_input`] is the one place that fills the soft
//! tokens, images and clips alike ([`crate::gemma3n_prompt::attachments_embeds`]). Images are read, decoded and
//! encoded in one place for generate, chat and serve (`attachments/images.rs`). (Gemma 3 vision exports take images through
//! [`crate::VisionGenerator`].)

use std::path::{Path, PathBuf};

use gemma_models::contract::Gemma3nAudioSection;
use ndarray::{s, Array2};

use crate::audio::{AudioEncoder, AudioError};
use crate::decoder::{Decoder, LogitsMode};
use crate::error::{Error, Result};
use crate::gemma3n_prompt::{attachments_embeds, Gemma3nImageEncoder, Gemma3nPrompt};
use crate::generate::{GenerateOptions, GenerationOutput, Generator};
use crate::kv_cache::KvCache;
use crate::ort_env::RuntimeOptions;
use crate::sampling::Sampler;

mod chat;
mod images;

pub use images::image_rows;

/// What an attachment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    Image,
    Audio,
}

impl AttachmentKind {
    /// The content item type the chat template reads (`"image"`, `"audio"`).
    pub fn item_type(self) -> &'static str {
        match self {
            AttachmentKind::Image => "image",
            AttachmentKind::Audio => "audio",
        }
    }
}

/// A file shown to the model with the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub path: PathBuf,
}

/// An audio clip ready for a prompt.
#[derive(Clone, Debug)]
pub struct EncodedAudio {
    /// `audio_features` `[S, hidden]`: the rows that replace the clip's audio tokens.
    pub rows: Array2<f32>,
    /// The clip's length at the model's rate.
    pub seconds: f64,
    /// The file was not mono at the model's rate: it was mixed down and/or resampled.
    pub converted: bool,
}

/// Why an attachment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error(
        "{}: the model in {} takes no audio (its gemma-onnx.json has no `gemma3n.audio` part); only Gemma 3n exports \
         of checkpoints with an audio tower do",
        .path.display(), .dir.display()
    )]
    NoAudio { path: PathBuf, dir: PathBuf },
    #[error(
        "{}: the Gemma 3n export {} has no vision part (gemma-onnx.json: `gemma3n.towers_not_exported` lists \
         \"vision\"), so it takes no images; give it text and audio only",
        .path.display(), .dir.display()
    )]
    NoGemma3nVision { path: PathBuf, dir: PathBuf },
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Runtime(#[from] Error),
}

impl AttachmentError {
    /// A library error for the conversation's and the server's typed [`Result`] (an invalid argument, but for the
    /// runtime's own errors).
    pub fn into_runtime(self) -> Error {
        match self {
            AttachmentError::Runtime(e) => e,
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

/// A Gemma 3n export, with its audio graphs when it has them: generation from a prompt with attachments.
pub struct Gemma3nGenerator {
    generator: Generator,
    audio: Option<Gemma3nAudio>,
    vision: Option<Gemma3nVision>,
}

/// The image side: the two graphs and the processor's image sequence.
struct Gemma3nVision {
    encoder: Gemma3nImageEncoder,
    /// `<image_soft_token>`: the template's placeholder, and the token each row replaces.
    placeholder: String,
    /// `"\n\n<start_of_image>" + "<image_soft_token>" × S + "<end_of_image>\n\n"` (`full_image_sequence`).
    sequence: String,
}

/// The audio side: the two graphs, the manifest's `gemma3n.audio` part and the processor's audio sequence.
struct Gemma3nAudio {
    encoder: AudioEncoder,
    section: Gemma3nAudioSection,
    /// `<audio_soft_token>`: the template's placeholder, and the token each row replaces.
    placeholder: String,
    /// `"\n\n<start_of_audio>" + "<audio_soft_token>" × S + "<end_of_audio>\n\n"` (`full_audio_sequence`).
    sequence: String,
}

impl Gemma3nGenerator {
    /// Opens a Gemma 3n export: the text generator, and the audio graphs if the manifest has a `gemma3n.audio`
    /// part. Another family is [`Error::InvalidArgument`].
    pub fn open(
        dir: &Path,
        options: &RuntimeOptions,
    ) -> std::result::Result<Self, AttachmentError> {
        let generator = Generator::open(dir, options)?;
        let Some(section) = generator.manifest().gemma3n.clone() else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a Gemma 3n export (gemma-onnx.json has no `gemma3n` section)",
                dir.display()
            ))
            .into());
        };
        let name = |id: u32, part: &str| {
            generator.tokenizer().id_to_token(id).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{}: no token has id {id}, which gemma-onnx.json's `gemma3n.{part}` names; is it the model's own \
                     tokenizer?",
                    dir.join(crate::tokenizer::TOKENIZER_FILE).display()
                ))
            })
        };
        // `"\n\n" + begin + soft × S + end + "\n\n"`, as Gemma3nProcessor expands each placeholder.
        let sequence = |begin: &str, soft: &str, end: &str, n: usize| {
            format!("\n\n{begin}{}{end}\n\n", soft.repeat(n))
        };
        let audio = match section.audio {
            None => None,
            Some(section) => {
                let (boa, soft, eoa) = (
                    name(section.boa_token_id, "audio")?,
                    name(section.audio_token_id, "audio")?,
                    name(section.eoa_token_id, "audio")?,
                );
                Some(Gemma3nAudio {
                    encoder: AudioEncoder::open(dir, options)?,
                    sequence: sequence(&boa, &soft, &eoa, section.soft_tokens),
                    section,
                    placeholder: soft,
                })
            }
        };
        let vision = match &section.vision {
            None => None,
            Some(v) => {
                let (boi, soft, eoi) = (
                    name(v.boi_token_id, "vision")?,
                    name(v.image_token_id, "vision")?,
                    name(v.eoi_token_id, "vision")?,
                );
                Some(Gemma3nVision {
                    encoder: Gemma3nImageEncoder::open(dir, options)?,
                    sequence: sequence(&boi, &soft, &eoi, v.soft_tokens),
                    placeholder: soft,
                })
            }
        };
        Ok(Gemma3nGenerator {
            generator,
            audio,
            vision,
        })
    }

    /// The text generator (tokenizer, chat template, stop tokens, decoder).
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    pub fn generator_mut(&mut self) -> &mut Generator {
        &mut self.generator
    }

    pub fn dir(&self) -> &Path {
        self.generator.decoder_dir()
    }

    /// Whether the export takes audio.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Whether the export takes images.
    pub fn has_vision(&self) -> bool {
        self.vision.is_some()
    }

    /// Refuses, naming the file, an attachment this export cannot take (before any file is read).
    pub fn check(&self, attachment: &Attachment) -> std::result::Result<(), AttachmentError> {
        let (path, dir) = (attachment.path.clone(), self.dir().to_path_buf());
        match attachment.kind {
            AttachmentKind::Audio if self.audio.is_none() => {
                Err(AttachmentError::NoAudio { path, dir })
            }
            AttachmentKind::Image if self.vision.is_none() => {
                Err(AttachmentError::NoGemma3nVision { path, dir })
            }
            AttachmentKind::Audio | AttachmentKind::Image => Ok(()),
        }
    }

    /// [`check`](Self::check) of the first of `paths` as a `kind` attachment: the export must take that kind if
    /// any file is given.
    fn check_first(
        &self,
        kind: AttachmentKind,
        paths: &[&Path],
    ) -> std::result::Result<(), AttachmentError> {
        match paths.first() {
            Some(path) => self.check(&Attachment {
                kind,
                path: path.to_path_buf(),
            }),
            None => Ok(()),
        }
    }

    /// Token ids of one user turn: `kinds`' content items, then `prompt`, through the chat template with the
    /// generation prompt, expanded as `Gemma3nProcessor` does (module doc).
    pub fn prompt_ids(&self, prompt: &str, kinds: &[AttachmentKind]) -> Result<Vec<u32>> {
        let mut content: Vec<serde_json::Value> = kinds
            .iter()
            .map(|k| serde_json::json!({"type": k.item_type()}))
            .collect();
        content.push(serde_json::json!({"type": "text", "text": prompt}));
        let messages = serde_json::json!([{"role": "user", "content": content}]);
        let text = self.generator.text();
        let template = text.chat_template.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja), \
                 which a prompt with attachments is rendered through",
                self.dir().display()
            ))
        })?;
        let rendered = template.render_value(&messages, true)?;
        let expanded = self.expand(&rendered, Some(kinds))?;
        Ok(crate::generate::with_single_bos(
            text.tokenizer.encode(&expanded, false)?,
            text.bos_token_id,
        ))
    }

    /// `text` with each placeholder replaced by its full sequence, left to right; their kinds must be `kinds` when
    /// given.
    fn expand(&self, text: &str, kinds: Option<&[AttachmentKind]>) -> Result<String> {
        let (audio, vision) = (self.audio.as_ref(), self.vision.as_ref());
        let placeholder = |kind: AttachmentKind| match kind {
            AttachmentKind::Audio => audio.map(|a| (a.placeholder.as_str(), a.sequence.as_str())),
            AttachmentKind::Image => vision.map(|v| (v.placeholder.as_str(), v.sequence.as_str())),
        };
        let mut found = Vec::new();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        loop {
            let next = [AttachmentKind::Audio, AttachmentKind::Image]
                .into_iter()
                .filter_map(|k| placeholder(k).map(|p| (k, p)))
                .filter_map(|(k, (p, seq))| rest.find(p).map(|at| (at, k, p, seq)))
                .min_by_key(|&(at, ..)| at);
            let Some((at, kind, p, seq)) = next else {
                break;
            };
            out.push_str(&rest[..at]);
            out.push_str(seq);
            found.push(kind);
            rest = &rest[at + p.len()..];
        }
        out.push_str(rest);
        if let Some(kinds) = kinds.filter(|&k| k != found) {
            return Err(Error::InvalidArgument(format!(
                "the rendered prompt has attachment placeholders {found:?} but the attachments are {kinds:?}: the \
                 chat template must write one placeholder per attachment, and the prompt none"
            )));
        }
        Ok(out)
    }

    /// Each WAV file read (converted if need be) and encoded, the clips of one prompt padded to the longest as
    /// `Gemma3nAudioFeatureExtractor` batches them ([`AudioEncoder::encode_padded`]).
    pub fn encode_audio(
        &mut self,
        paths: &[&Path],
    ) -> std::result::Result<Vec<EncodedAudio>, AttachmentError> {
        self.check_first(AttachmentKind::Audio, paths)?;
        let Some(audio) = self.audio.as_mut() else {
            return Ok(Vec::new());
        };
        let mut clips = Vec::with_capacity(paths.len());
        for path in paths {
            clips.push(audio.encoder.read(path)?);
        }
        let longest = clips.iter().map(|c| c.samples.len()).max().unwrap_or(0);
        let rate = f64::from(audio.encoder.limits.rate);
        let mut encoded = Vec::with_capacity(paths.len());
        for (path, clip) in paths.iter().zip(clips) {
            let (seconds, converted) = (clip.samples.len() as f64 / rate, clip.converted);
            let rows = audio.encoder.encode_padded(path, clip.samples, longest)?;
            encoded.push(EncodedAudio {
                rows,
                seconds,
                converted,
            });
        }
        Ok(encoded)
    }

    /// WAV bytes (`gemma serve`'s `input_audio` parts) read as a file is read (the same formats, conversions and
    /// 30 s limit) and encoded alone, as `gemma chat` encodes each clip; `name` only names them in errors.
    pub fn audio_from_bytes(
        &mut self,
        bytes: &[u8],
        name: &Path,
    ) -> std::result::Result<EncodedAudio, AttachmentError> {
        let dir = self.dir().to_path_buf();
        let Some(audio) = self.audio.as_mut() else {
            let path = name.to_path_buf();
            return Err(AttachmentError::NoAudio { path, dir });
        };
        let clip = audio.encoder.read_bytes(bytes, name)?;
        let seconds = clip.samples.len() as f64 / f64::from(audio.encoder.limits.rate);
        Ok(EncodedAudio {
            converted: clip.converted,
            rows: audio.encoder.encode(name, clip.samples)?,
            seconds,
        })
    }

    /// Each image file read (within the default image limits) and encoded: its `[soft_tokens, hidden]` rows
    /// ([`image_from_file`](Self::image_from_file)).
    pub fn encode_images(
        &mut self,
        paths: &[&Path],
    ) -> std::result::Result<Vec<Array2<f32>>, AttachmentError> {
        self.check_first(AttachmentKind::Image, paths)?;
        let mut encoded = Vec::with_capacity(paths.len());
        for path in paths {
            encoded.push(self.image_from_file(path)?.0);
        }
        Ok(image_rows(&encoded.iter().collect::<Vec<_>>()))
    }

    /// The decoder inputs of a prompt: the embeddings of `ids` with the soft tokens filled, the images' rows over
    /// the image tokens and the clips' rows over the audio tokens, each in order. The one place both join.
    pub fn prompt_input(
        &mut self,
        ids: &[u32],
        images: &[Array2<f32>],
        clips: &[&EncodedAudio],
    ) -> Result<Gemma3nPrompt> {
        let ids = crate::decoder::ids_row(ids);
        let clips: Vec<Array2<f32>> = clips.iter().map(|c| c.rows.clone()).collect();
        attachments_embeds(self.generator.decoder(), ids.view(), images, &clips)
    }

    /// Feeds `ids` (whose image tokens take `images`' rows and audio tokens `clips`' rows, in order) after what
    /// `cache` holds, in one step, then generates until a token of `stop_ids` or `max_new_tokens`, streaming text
    /// to `on_text`.
    #[allow(clippy::too_many_arguments)]
    pub fn continue_generation(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        images: &[Array2<f32>],
        clips: &[&EncodedAudio],
        stop_ids: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<GenerationOutput> {
        let prompt = self.prompt_input(ids, images, clips)?;
        let prefill = |decoder: &mut Decoder, cache: &mut KvCache, sampler: &mut Sampler| {
            decoder.run_after_cache(prompt.input(), cache, LogitsMode::Last, |l| {
                sampler.sample(&l.slice(s![0, -1, ..]).to_vec())
            })
        };
        self.generator
            .continue_with_prefill(cache, ids, stop_ids, options, on_text, prefill)
    }
}
