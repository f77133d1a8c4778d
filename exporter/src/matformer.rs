//! `gemma-export --matformer SPEC`: exporting a MatFormer slice of a Gemma 3n checkpoint (docs/gemma3n.md,
//! "MatFormer"). The plan and the tensor mapping are [`gemma_models::matformer`]'s; this file applies them to an
//! export: the config every later step sees is the sliced one, the checkpoint reads as the sliced model (lazily,
//! tensor by tensor as the writer streams it), and the export's config.json and manifest describe the slice.

use std::path::Path;

use gemma_models::contract::MatformerSection;
use gemma_models::matformer::{Plan, Spec};
use gemma_models::{Checkpoint, ModelConfig};

use crate::gguf::SourceFiles;
use crate::ExportError;

/// Slices `cfg` (read from `src/config.json`) and `ckpt` as `spec` says: returns the sliced config, and records the
/// sliced config.json and the manifest section in `source`.
pub fn slice(
    spec: &Spec,
    src: &Path,
    cfg: &ModelConfig,
    ckpt: &mut Checkpoint,
    source: &mut SourceFiles,
) -> Result<ModelConfig, ExportError> {
    let plan = Plan::new(spec, &cfg.text)?;
    let path = src.join(gemma_models::contract::files::CONFIG_FILE);
    let text =
        gemma_models::files::read_regular_to_string(&path, gemma_models::files::MAX_JSON_BYTES)
            .map_err(|e| ExportError::io(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ExportError::Json {
        path: path.clone(),
        source: e,
    })?;
    let sliced = plan.slice_config(&json, &cfg.text);
    let sliced_text = serde_json::to_string_pretty(&sliced).expect("JSON values serialize");
    let sliced_cfg = ModelConfig::from_json_str(&sliced_text, &path)?;
    plan.apply(ckpt, &cfg.text, &cfg.text_prefix)?;
    source.config = Some(sliced_text);
    source.matformer = Some(MatformerSection::new(&plan));
    Ok(sliced_cfg)
}
