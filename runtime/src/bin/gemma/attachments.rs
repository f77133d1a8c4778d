//! `gemma generate --image FILE --audio FILE`: the prompt becomes one user turn of the chat template, the
//! attachments first in command-line order, then the text, as the model's processor builds it:
//!
//! - a Gemma 3n export ([`Gemma3nGenerator`]): audio clips through its audio graphs (images once it has a vision
//!   part);
//! - a Gemma 3 vision export ([`VisionGenerator`]): images, as `gemma-vision describe` takes them.
//!
//! Generation stops at the chat stop tokens (`<end_of_turn>` too), as with `--chat`. Anything the model cannot take
//! is refused before any file is read, with an error that names the flag and the file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ArgMatches;
use gemma_runtime::attachments::{Attachment, AttachmentKind, Gemma3nGenerator};
use gemma_runtime::vision::EncodedImage;
use gemma_runtime::{GenerateOptions, GenerationOutput, VisionGenerator, VisionOptions};

use crate::cli::ModelArgs;

/// What `--audio` says in `--help` (and the README): how a clip is read.
pub const AUDIO_HELP: &str = "Let the model hear this WAV clip with the prompt (repeatable; Gemma 3n exports with \
an audio tower). 16-bit PCM or 32-bit float, mono 16 kHz, at most 30 s, is used as it is; stereo is averaged to \
mono and other sample rates are resampled to 16 kHz (rubato), so the features then differ slightly from a Python \
pipeline's (librosa, torchaudio)";

/// What `--image` says in `--help`.
pub const IMAGE_HELP: &str = "Show the model this image with the prompt (repeatable; Gemma 3 vision exports: \
Gemma 3 4B and up, MedGemma 4B). With --image or --audio the prompt is one user turn of the chat template: the \
attachments in command-line order, then the text";

/// The flag that gives an attachment of `kind`.
pub fn flag(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "--image",
        AttachmentKind::Audio => "--audio",
    }
}

/// `--image` and `--audio` values in the order they were given on the command line (`matches` of `generate`; without
/// them, the images, then the clips).
pub fn in_order(
    images: &[PathBuf],
    audio: &[PathBuf],
    matches: Option<&ArgMatches>,
) -> Vec<Attachment> {
    let indices = |id: &str, n: usize| -> Vec<usize> {
        let found: Option<Vec<usize>> = matches.and_then(|m| m.indices_of(id)).map(|i| i.collect());
        found
            .filter(|i| i.len() == n)
            .unwrap_or_else(|| (0..n).collect())
    };
    let mut all: Vec<(usize, Attachment)> = Vec::new();
    for (kind, id, paths, after) in [
        (AttachmentKind::Image, "images", images, 0),
        (AttachmentKind::Audio, "audio", audio, usize::MAX / 2),
    ] {
        let at = indices(id, paths.len());
        for (path, i) in paths.iter().zip(at) {
            let key = if matches.is_some() { i } else { after + i };
            all.push((
                key,
                Attachment {
                    kind,
                    path: path.clone(),
                },
            ));
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, a)| a).collect()
}

/// Generates after `prompt` with `attachments` on the export of `model`, streaming text to `on_text`.
pub fn generate(
    model: &ModelArgs,
    prompt: &str,
    attachments: &[Attachment],
    ignore_eos: bool,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<GenerationOutput> {
    let dir = &model.model;
    let manifest =
        gemma_runtime::manifest::load(dir).with_context(|| format!("opening {}", dir.display()))?;
    let runtime = model.runtime_options();
    if manifest.gemma3n.is_some() {
        // Every attachment checked before any file is read; the errors name the file, the context the flag.
        let mut gen = Gemma3nGenerator::open(dir, &runtime)
            .with_context(|| format!("opening {}", dir.display()))?;
        for a in attachments {
            gen.check(a).context(flag(a.kind))?;
        }
        let kinds: Vec<AttachmentKind> = attachments.iter().map(|a| a.kind).collect();
        let ids = gen.prompt_ids(prompt, &kinds)?;
        let of_kind = |kind| -> Vec<&std::path::Path> {
            attachments
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.path.as_path())
                .collect()
        };
        let images = gen
            .encode_images(&of_kind(AttachmentKind::Image))
            .context("--image")?;
        let clips = gen
            .encode_audio(&of_kind(AttachmentKind::Audio))
            .context("--audio")?;
        let clips: Vec<_> = clips.iter().collect();
        let stops = if ignore_eos {
            Vec::new()
        } else {
            gen.generator().chat_stop_token_ids()
        };
        let mut cache = gen.generator().new_cache()?;
        return Ok(
            gen.continue_generation(&mut cache, &ids, &images, &clips, &stops, options, on_text)?
        );
    }
    if let Some(a) = attachments.iter().find(|a| a.kind == AttachmentKind::Audio) {
        anyhow::bail!(
            "{} {}: the model in {} takes no audio: only Gemma 3n exports of checkpoints with an audio tower do",
            flag(a.kind),
            a.path.display(),
            dir.display()
        );
    }
    let first = &attachments[0];
    let mut gen = VisionGenerator::open(dir, &runtime)
        .with_context(|| format!("{} {}", flag(first.kind), first.path.display()))?;
    let paths: Vec<PathBuf> = attachments.iter().map(|a| a.path.clone()).collect();
    // The placeholders are checked before any image is read.
    let (text, chat) = gen.describe_text(prompt, paths.len(), false)?;
    let mut encoded: Vec<EncodedImage> = Vec::with_capacity(paths.len());
    for path in &paths {
        let decoded = gen.decode(path).context("--image")?;
        let image = gen.encode_image(&decoded.image, false);
        encoded.push(image.with_context(|| format!("--image {}", path.display()))?);
    }
    let crops: Vec<usize> = encoded.iter().map(|e| e.num_crops).collect();
    let ids = gen.prompt_ids(&text, &crops, chat)?;
    let stops = if ignore_eos {
        Vec::new()
    } else {
        gen.stop_token_ids(chat)
    };
    let vision_options = VisionOptions {
        generate: options.clone(),
        ..Default::default()
    };
    let mut cache = gen.new_cache()?;
    let refs: Vec<&EncodedImage> = encoded.iter().collect();
    let (out, _) =
        gen.continue_generation(&mut cache, &ids, &refs, &stops, &vision_options, on_text)?;
    Ok(out)
}
