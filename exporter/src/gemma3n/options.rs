//! What a Gemma 3n export does differently in the pipeline of `export.rs`: the options it refuses, its manifest
//! section, and what the user is told.

use crate::ExportError;
use gemma_models::contract::GraphKind;
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

/// The towers of a multimodal Gemma 3n checkpoint, which the export leaves out.
fn towers_not_exported(cfg: &ModelConfig) -> Vec<String> {
    ["vision", "audio"]
        .into_iter()
        .filter(|t| {
            cfg.raw
                .get(format!("{t}_config"))
                .is_some_and(|v| !v.is_null())
        })
        .map(str::to_string)
        .collect()
}

/// Sets what a Gemma 3n export's manifest says differently: portable graphs without `num_logits_to_keep`, and
/// the `gemma3n` section.
pub fn fill_manifest(manifest: &mut gemma_models::contract::Manifest, cfg: &ModelConfig) {
    manifest.graph = GraphKind::Portable;
    manifest.portable_logits_to_keep_input = None;
    manifest.gemma3n =
        gemma_models::contract::Gemma3nSection::new(&cfg.text, towers_not_exported(cfg));
}

/// What the user should know about a Gemma 3n export, one line each.
pub fn warnings(opts: &crate::ExportOptions, cfg: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    if opts.graph == GraphKind::Cpu {
        out.push(
            "Gemma 3n: the cpu graph is not built yet; the export holds the portable graphs \
             (embed_tokens.onnx + decoder_model_merged.onnx)"
                .to_string(),
        );
    }
    let towers = towers_not_exported(cfg);
    if !towers.is_empty() {
        out.push(format!(
            "Gemma 3n: the {} tower(s) are not exported yet; the export is text-only",
            towers.join(" and ")
        ));
    }
    out
}
