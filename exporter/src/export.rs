//! The export pipeline: validate the checkpoint, build the graphs while streaming weights into a temporary folder
//! beside the destination, copy the tokenizer and configs, write the manifest, then rename the folder into place.
//! A failed or interrupted export never leaves a folder that looks complete.

use crate::builder::{model, GraphBuilder};
use crate::layers::Kernels;
use crate::manifest::Manifest;
use crate::weights::WeightWriter;
use crate::{decoder, ExportError};
use gemma_models::{Checkpoint, ModelConfig};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use std::fs;
use std::path::{Path, PathBuf};

/// Weight precision of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
        }
    }
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub src: PathBuf,
    pub out: PathBuf,
    pub precision: Precision,
    /// Replace `out` if it exists.
    pub force: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub weight_bytes: u64,
    pub nodes: usize,
}

/// Files copied verbatim from the checkpoint folder when present.
const COPIED_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
];

pub fn export(opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    let config_path = opts.src.join("config.json");
    if !config_path.is_file() {
        return Err(ExportError::NotACheckpoint(opts.src.clone()));
    }
    let cfg = ModelConfig::from_file(&config_path)?;
    let ckpt = Checkpoint::open(&opts.src)?;
    // Check every tensor (presence, shape, dtype) before writing anything.
    for (name, shape) in decoder::required_tensors(&cfg) {
        ckpt.tensor_with_shape(&name, &shape)?;
    }
    if opts.out.exists() && !opts.force {
        return Err(ExportError::OutputExists(opts.out.clone()));
    }

    let tmp = temp_dir_for(&opts.out)?;
    let result = write_export(opts, &cfg, &ckpt, &tmp);
    match result {
        Ok(mut report) => {
            if opts.out.exists() {
                let old = opts.out.with_file_name(format!(
                    ".{}.replaced-{}",
                    file_name(&opts.out),
                    std::process::id()
                ));
                fs::rename(&opts.out, &old).map_err(|e| ExportError::io(&opts.out, e))?;
                fs::rename(&tmp, &opts.out).map_err(|e| ExportError::io(&opts.out, e))?;
                fs::remove_dir_all(&old).map_err(|e| ExportError::io(&old, e))?;
            } else {
                fs::rename(&tmp, &opts.out).map_err(|e| ExportError::io(&opts.out, e))?;
            }
            report.out = opts.out.clone();
            Ok(report)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into())
}

fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temporary folder an export to `out` writes into: `.NAME.partial-PID` beside the destination, so the
/// final rename stays on one file system and a leftover never looks like a finished export.
pub fn temp_dir_path(out: &Path) -> PathBuf {
    parent_of(out).join(format!(
        ".{}.partial-{}",
        file_name(out),
        std::process::id()
    ))
}

fn temp_dir_for(out: &Path) -> Result<PathBuf, ExportError> {
    let parent = parent_of(out);
    fs::create_dir_all(&parent).map_err(|e| ExportError::io(&parent, e))?;
    let tmp = temp_dir_path(out);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
    Ok(tmp)
}

fn write_export(
    opts: &ExportOptions,
    cfg: &ModelConfig,
    ckpt: &Checkpoint,
    dir: &Path,
) -> Result<ExportReport, ExportError> {
    let total = decoder::weight_bytes(cfg);
    let progress = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    progress.set_message("writing model.onnx_data");

    let data_path = dir.join("model.onnx_data");
    let mut w = WeightWriter::create(&data_path, progress.clone())?;
    let mut g = GraphBuilder::new();
    decoder::build(&mut g, &mut w, ckpt, cfg, Kernels::PORTABLE)?;
    let weight_bytes = w.finish()?;
    progress.finish_and_clear();

    let nodes = g.node_count();
    let manifest = Manifest::new(cfg, &opts.src, opts.precision, "model.onnx")?;
    let proto = model(
        g.finish("gemma_decoder"),
        &[("", crate::onnx::OPSET)],
        &[
            ("gemma_onnx.family", manifest.family.clone()),
            ("gemma_onnx.precision", manifest.precision.clone()),
        ],
    );
    let model_path = dir.join("model.onnx");
    fs::write(&model_path, proto.encode_to_vec()).map_err(|e| ExportError::io(&model_path, e))?;

    for name in COPIED_FILES {
        let src = opts.src.join(name);
        if src.is_file() {
            let dst = dir.join(name);
            fs::copy(&src, &dst).map_err(|e| ExportError::io(&src, e))?;
        }
    }
    if !opts.src.join("generation_config.json").is_file() {
        let gen = serde_json::json!({
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": manifest.eos_token_ids,
            "pad_token_id": cfg.pad_token_id,
        });
        let path = dir.join("generation_config.json");
        fs::write(&path, serde_json::to_string_pretty(&gen).expect("json"))
            .map_err(|e| ExportError::io(&path, e))?;
    }
    manifest.write(dir)?;
    Ok(ExportReport {
        out: dir.to_path_buf(),
        manifest,
        weight_bytes,
        nodes,
    })
}
