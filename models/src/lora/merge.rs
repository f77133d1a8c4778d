//! [`apply`]: checks the whole adapter against the checkpoint (every factor's module, selection, rank and shape),
//! then registers one scaled [`LowRank`] update per module, and says what was merged ([`LoraSummary`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, LowRank};
use crate::config::ModelConfig;

use super::error::{config_err, io_error};
use super::modules::{adapter_factors, checkpoint_modules};
use super::{AdapterConfig, LoraError, ADAPTER_CONFIG, ADAPTER_WEIGHTS, TENSOR_PREFIX};

/// What was merged, for the export manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSummary {
    /// The adapter folder as given.
    pub path: PathBuf,
    /// `r` of adapter_config.json (modules may differ through `rank_pattern`).
    pub r: usize,
    /// `lora_alpha` of adapter_config.json.
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// The extra factor (`--lora-scale`), 1 by default.
    pub scale: f64,
    /// The checkpoint tensors that received an update, sorted.
    pub merged: Vec<String>,
    /// Hex SHA-256 of `adapter_model.safetensors`.
    pub sha256: String,
}

/// Merges the adapter in folder `dir` into `checkpoint` (see the module docs), with `scale` multiplying every
/// module's peft scaling. Nothing is registered unless the whole adapter fits.
pub fn apply(
    checkpoint: &mut Checkpoint,
    cfg: &ModelConfig,
    dir: &Path,
    scale: f64,
) -> Result<LoraSummary, LoraError> {
    let config_path = dir.join(ADAPTER_CONFIG);
    if !config_path.is_file() {
        let source = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no adapter_config.json: expected a PEFT LoRA adapter folder as save_pretrained writes it",
        );
        return Err(io_error(&config_path, source));
    }
    if !scale.is_finite() {
        return Err(config_err(
            &config_path,
            "--lora-scale",
            &format!("{scale} is not a finite number"),
        ));
    }
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    if !weights_path.is_file() {
        let hint = if dir.join("adapter_model.bin").is_file() {
            " (adapter_model.bin is a pickle, refused because unpickling can run arbitrary code; re-save the \
             adapter with safe_serialization=True)"
        } else {
            ""
        };
        return Err(LoraError::NoWeights {
            dir: dir.to_path_buf(),
            hint: hint.into(),
        });
    }

    let modules = checkpoint_modules(checkpoint, cfg);
    let mut linear_names: Vec<String> = modules
        .keys()
        .filter_map(|p| p.rsplit('.').next())
        .map(str::to_string)
        .collect();
    linear_names.sort();
    linear_names.dedup();
    let config = AdapterConfig::from_file(&config_path, &linear_names)?;
    let adapter = Checkpoint::open_file(&weights_path)?;
    let factors = adapter_factors(&adapter, &weights_path, cfg)?;
    let tensor_err = |tensor: &str, detail: String| LoraError::Tensor {
        path: weights_path.clone(),
        tensor: tensor.to_string(),
        detail,
    };

    let mut updates = Vec::new();
    for (module, f) in &factors {
        let (Some(a_name), Some(b_name)) = (&f.a, &f.b) else {
            let (have, lacks) = if f.a.is_some() {
                (&f.a, "lora_B")
            } else {
                (&f.b, "lora_A")
            };
            return Err(tensor_err(
                have.as_deref().unwrap_or_default(),
                format!(
                    "module {module} has no {lacks} tensor; each LoRA module needs both factors"
                ),
            ));
        };
        let Some((weight_name, out_dim, in_dim)) = modules.get(module.as_str()) else {
            return Err(tensor_err(
                a_name,
                format!(
                    "adapts module {module}, but the checkpoint in {} has no linear-layer weight for it (the \
                     adapter was made for another model, or adapts a non-linear layer; only LoRA on linear layers \
                     is merged)",
                    checkpoint.dir().display()
                ),
            ));
        };
        if !config.selects(module) {
            return Err(tensor_err(
                a_name,
                format!(
                    "module {module} is not selected by {ADAPTER_CONFIG} (target_modules / exclude_modules / \
                     layers_to_transform); peft would ignore these weights, so the adapter and its config disagree"
                ),
            ));
        }
        let a = adapter.tensor(a_name)?;
        let b = adapter.tensor(b_name)?;
        let [rank, a_in] = a.shape[..] else {
            return Err(tensor_err(
                a_name,
                format!("shape {:?} is not 2-D [r, in]", a.shape),
            ));
        };
        let [b_out, b_rank] = b.shape[..] else {
            return Err(tensor_err(
                b_name,
                format!("shape {:?} is not 2-D [out, r]", b.shape),
            ));
        };
        let (r, alpha) = config.rank_alpha(module);
        if rank != r {
            return Err(tensor_err(
                a_name,
                format!(
                    "has {rank} rows, but {ADAPTER_CONFIG} gives module {module} rank {r} (r / rank_pattern); \
                     peft refuses such an adapter"
                ),
            ));
        }
        if rank == 0 {
            return Err(tensor_err(a_name, "has rank 0".into()));
        }
        if a_in != *in_dim {
            return Err(tensor_err(
                a_name,
                format!("shape {:?}: expected [{rank}, {in_dim}] for {weight_name} of shape [{out_dim}, {in_dim}]", a.shape),
            ));
        }
        if b_out != *out_dim || b_rank != rank {
            return Err(tensor_err(
                b_name,
                format!(
                    "shape {:?}: expected [{out_dim}, {rank}] for {weight_name} of shape [{out_dim}, {in_dim}]",
                    b.shape
                ),
            ));
        }
        let s = (config.scaling(r, alpha) * scale) as f32;
        let a_vals = a.to_f32_vec();
        let mut b_vals = b.to_f32_vec();
        for v in &mut b_vals {
            *v *= s;
        }
        let update = LowRank::new(rank, *out_dim, *in_dim, a_vals, b_vals)
            .expect("factor lengths follow from the checked shapes");
        updates.push((weight_name.clone(), update));
    }

    // The other direction: a module the config selects must have weights (peft would warn and leave it
    // unchanged; here it means the adapter is not the one its config describes).
    for module in modules.keys() {
        if config.selects(module) && !factors.contains_key(module) {
            return Err(tensor_err(
                &format!("{TENSOR_PREFIX}{module}.lora_A.weight"),
                format!(
                    "missing: {ADAPTER_CONFIG} selects module {module}, but the adapter has no weights for it"
                ),
            ));
        }
    }

    let mut merged = Vec::new();
    for (name, update) in updates {
        checkpoint.add_low_rank(&name, update)?;
        merged.push(name);
    }
    merged.sort();
    Ok(LoraSummary {
        path: dir.to_path_buf(),
        r: config.r,
        lora_alpha: config.lora_alpha,
        use_rslora: config.use_rslora,
        scale,
        merged,
        sha256: sha256_file(&weights_path)?,
    })
}

fn sha256_file(path: &Path) -> Result<String, LoraError> {
    let io = |source| io_error(path, source);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
