//! What a Gemma 3n export does differently in the pipeline of `export.rs`: the options it refuses, whether it
//! writes the audio graphs, its manifest section, and what the user is told.

use std::path::Path;

use crate::ExportError;
use gemma_models::config::gemma3n_audio::{AudioFeatureConfig, Gemma3nAudioConfig};
use gemma_models::config::gemma3n_vision::Gemma3nVisionConfig;
use gemma_models::contract::{
    files, Gemma3nAudioSection, Gemma3nSection, Gemma3nVisionSection, GraphKind, PreprocessConfig,
};
use gemma_models::ModelConfig;

/// Refuses the options the Gemma 3n graphs cannot be built with yet: `--triton` (its folder is a Gemma 1–3 text
/// layout). A portable Gemma 3n export keeps the plain layout (no transformers.js `onnx/` folder).
pub fn check(opts: &crate::ExportOptions, cfg: &ModelConfig) -> Result<(), ExportError> {
    let refuse = |what: &str| {
        Err(ExportError::Unsupported(format!(
            "{} exports do not support {what} yet",
            cfg.text.family.spec().display
        )))
    };
    if opts.triton.is_some() {
        return refuse("--triton");
    }
    Ok(())
}

/// Whether `cfg` names the tower `t` (`"vision"`, `"audio"`): a non-null `{t}_config`.
fn has_tower(cfg: &ModelConfig, t: &str) -> bool {
    cfg.raw
        .get(format!("{t}_config"))
        .is_some_and(|v| !v.is_null())
}

/// Whether the export writes the audio graphs of the checkpoint folder `src`: it has an audio tower and the
/// feature extractor's settings (`preprocessor_config.json` or `processor_config.json`).
pub fn exports_audio(src: &Path, cfg: &ModelConfig) -> bool {
    has_tower(cfg, "audio")
        && ["preprocessor_config.json", "processor_config.json"]
            .iter()
            .any(|f| src.join(f).is_file())
}

/// Whether the export writes the image graphs of `src`: it has a vision tower and the image processor's settings
/// (an `image_processor` object in `processor_config.json`, or `preprocessor_config.json` naming an
/// `image_processor_type`; the audio feature extractor's file alone is not one).
pub fn exports_vision(src: &Path, cfg: &ModelConfig) -> bool {
    let has_key = |file: &str, key: &str| {
        gemma_models::files::read_regular_to_string(
            &src.join(file),
            gemma_models::files::MAX_JSON_BYTES,
        )
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|v| v.get(key).is_some())
    };
    has_tower(cfg, "vision")
        && (has_key("processor_config.json", "image_processor")
            || has_key("preprocessor_config.json", "image_processor_type"))
}

/// The towers of a multimodal Gemma 3n checkpoint in `src`, which the export leaves out.
fn towers_not_exported(src: &Path, cfg: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    if has_tower(cfg, "vision") && !exports_vision(src, cfg) {
        out.push("vision".to_string());
    }
    if has_tower(cfg, "audio") && !exports_audio(src, cfg) {
        out.push("audio".to_string());
    }
    out
}

/// The manifest's record of the audio graphs written by `write_audio_graphs`.
pub fn audio_section(
    cfg: &Gemma3nAudioConfig,
    features: &AudioFeatureConfig,
) -> Gemma3nAudioSection {
    Gemma3nAudioSection {
        preprocess: files::PREPROCESS_AUDIO_FILE.into(),
        encoder: files::AUDIO_ENCODER_FILE.into(),
        audio_token_id: cfg.audio_token_id,
        boa_token_id: cfg.boa_token_id,
        eoa_token_id: cfg.eoa_token_id,
        soft_tokens: cfg.soft_tokens,
        sampling_rate: features.sampling_rate as u32,
        max_samples: features.max_length,
    }
}

/// The manifest's record of the image graphs written by `write_vision_graphs`.
pub fn vision_section(cfg: &Gemma3nVisionConfig, pre: &PreprocessConfig) -> Gemma3nVisionSection {
    Gemma3nVisionSection {
        preprocess: files::PREPROCESS_FILE.into(),
        encoder: files::ENCODER_FILE.into(),
        image_token_id: cfg.image_token_id,
        boi_token_id: cfg.boi_token_id,
        eoi_token_id: cfg.eoi_token_id,
        soft_tokens: cfg.soft_tokens,
        image_size: pre.height,
    }
}

/// Sets what a Gemma 3n export's manifest says differently: its decoder is of kind `graph` (the portable one
/// without `num_logits_to_keep`; the cpu one with its `cpu` section), and the `gemma3n` section (with `audio` and
/// `vision` when those graphs were written).
pub fn fill_manifest(
    manifest: &mut gemma_models::contract::Manifest,
    (src, graph): (&Path, GraphKind),
    cfg: &ModelConfig,
    (audio, vision): (Option<Gemma3nAudioSection>, Option<Gemma3nVisionSection>),
) {
    manifest.graph = graph;
    manifest.portable_logits_to_keep_input = None;
    if graph == GraphKind::Cpu {
        manifest.cpu = Some(gemma_models::contract::CpuSection::current());
    }
    manifest.gemma3n = Gemma3nSection::new(&cfg.text, towers_not_exported(src, cfg));
    if let Some(section) = manifest.gemma3n.as_mut() {
        section.audio = audio;
        section.vision = vision;
    }
}

/// What the user should know about a Gemma 3n export, one line each.
pub fn warnings(opts: &crate::ExportOptions, cfg: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    let towers = towers_not_exported(&opts.src, cfg);
    if !towers.is_empty() {
        let audio = match (
            exports_audio(&opts.src, cfg),
            exports_vision(&opts.src, cfg),
        ) {
            (true, true) => "text, images and audio",
            (true, false) => "text and audio",
            (false, true) => "text and images",
            (false, false) => "text-only",
        };
        out.push(format!(
            "Gemma 3n: the {} tower(s) are not exported yet; the export is {audio}",
            towers.join(" and ")
        ));
    }
    if (has_tower(cfg, "audio") || has_tower(cfg, "vision"))
        && !(exports_audio(&opts.src, cfg) || exports_vision(&opts.src, cfg))
    {
        out.push(
            "Gemma 3n: no preprocessor_config.json (or processor_config.json) beside the checkpoint: \
             the audio and image graphs are left out"
                .to_string(),
        );
    }
    out
}
