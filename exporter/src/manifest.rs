//! Fills `gemma-onnx.json` ([`gemma_models::contract::Manifest`], the contract shared with the runtime) from the
//! model config and the export options, and writes it.

use crate::ExportError;
use gemma_models::contract::{self, files, DType, FileFingerprint, GraphKind, Manifest, Precision};
use gemma_models::ModelConfig;
use std::path::Path;

pub use contract::files::MANIFEST_FILE;

/// The manifest of a portable-graph export of `cfg` at `precision` (quantized with the `quantization` spec),
/// whose decoder graph is `decoder`. `src` is the folder whose generation_config.json adds EOS ids. The caller
/// sets what depends on the run: `graph`/`cpu`, `source_format`, `kept_source_blocks`, `lora`,
/// `allow_nonfinite`, `vision.preprocess`, `classifier`, then `files` ([`fingerprint_files`]).
pub fn new(
    cfg: &ModelConfig,
    src: &Path,
    precision: Precision,
    quantization: Option<String>,
    decoder: &str,
) -> Result<Manifest, ExportError> {
    let t = &cfg.text;
    Ok(Manifest {
        format: contract::FORMAT.into(),
        format_version: contract::format_version_for(t.family),
        family: t.family,
        architecture: cfg.architecture.clone(),
        precision,
        quantization,
        kept_source_blocks: Vec::new(),
        source_format: None,
        graph: GraphKind::Portable,
        decoder: decoder.into(),
        num_layers: t.num_hidden_layers,
        num_attention_heads: t.num_attention_heads,
        num_kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        hidden_size: t.hidden_size,
        vocab_size: t.vocab_size,
        sliding_window: t.sliding_window,
        layer_types: t.layer_types.clone(),
        max_position_embeddings: t.max_position_embeddings,
        bos_token_id: cfg.bos_token_id,
        pad_token_id: Some(cfg.pad_token_id),
        eos_token_ids: eos_token_ids(cfg, src)?,
        kv_dtype: DType::Float32,
        logits_dtype: DType::Float32,
        exporter_version: env!("CARGO_PKG_VERSION").into(),
        files: Default::default(),
        allow_nonfinite: false,
        portable_logits_to_keep_input: Some(contract::io::LOGITS_TO_KEEP.into()),
        cpu: None,
        vision: cfg.vision_config.as_ref().map(contract::VisionSection::new),
        classifier: None,
        lora: None,
        matformer: None,
        gemma3n: None,
    })
}

/// config.json's EOS ids followed by those of `src/generation_config.json` (an integer or a list), without
/// duplicates; every one must be below `vocab_size`.
fn eos_token_ids(cfg: &ModelConfig, src: &Path) -> Result<Vec<u32>, ExportError> {
    let vocab_size = cfg.text.vocab_size;
    let mut eos = cfg.eos_token_ids.clone();
    let gen_path = src.join(files::GENERATION_CONFIG_FILE);
    if gen_path.is_file() {
        let text = std::fs::read_to_string(&gen_path).map_err(|e| ExportError::io(&gen_path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ExportError::Json {
                path: gen_path.clone(),
                source,
            })?;
        match v.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => eos.extend(n.as_u64().map(|x| x as u32)),
            Some(serde_json::Value::Array(a)) => {
                eos.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
            }
            _ => {}
        }
    }
    if let Some(&id) = eos.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ExportError::Config(gemma_models::ConfigError::Invalid {
            path: if gen_path.is_file() {
                gen_path
            } else {
                src.join(files::CONFIG_FILE)
            },
            field: "eos_token_id".into(),
            expected: format!("a token id below vocab_size ({vocab_size})"),
            found: id.to_string(),
        }));
    }
    let mut seen = std::collections::HashSet::new();
    eos.retain(|id| seen.insert(*id));
    Ok(eos)
}

/// Fingerprints every `*.onnx` and `*.onnx_data` file of the export folder `dir` and of its `onnx/` folder (the
/// transformers.js layout, where portable exports keep their weights) into `manifest.files`, the latter named
/// `onnx/NAME` (`/` on every platform).
pub fn fingerprint_files(manifest: &mut Manifest, dir: &Path) -> Result<(), ExportError> {
    let sub = dir.join(files::TRANSFORMERS_JS_DIR);
    fingerprint_folder(manifest, dir, "")?;
    if sub.is_dir() {
        fingerprint_folder(manifest, &sub, &format!("{}/", files::TRANSFORMERS_JS_DIR))?;
    }
    Ok(())
}

/// Fingerprints the graph and data files directly in `dir` as `{prefix}NAME`.
fn fingerprint_folder(
    manifest: &mut Manifest,
    dir: &Path,
    prefix: &str,
) -> Result<(), ExportError> {
    for entry in std::fs::read_dir(dir).map_err(|e| ExportError::io(dir, e))? {
        let entry = entry.map_err(|e| ExportError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".onnx") || name.ends_with(".onnx_data") {
            let path = entry.path();
            let print = FileFingerprint::of(&path).map_err(|e| ExportError::io(&path, e))?;
            manifest.files.insert(format!("{prefix}{name}"), print);
        }
    }
    Ok(())
}

/// Writes `manifest` to `dir/gemma-onnx.json` (pretty JSON and a final newline).
pub fn write(manifest: &Manifest, dir: &Path) -> Result<(), ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest).expect("manifest serializes");
    std::fs::write(&path, text + "\n").map_err(|e| ExportError::io(&path, e))
}
