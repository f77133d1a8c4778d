//! Merging a PEFT LoRA adapter into a checkpoint: `W' = W + s·B·A` for every adapted linear layer.
//!
//! The adapter is a folder as peft's `save_pretrained` writes it: `adapter_config.json` and
//! `adapter_model.safetensors`, whose tensors are `base_model.model.<module path>.lora_A.weight` (`[r, in]`) and
//! `.lora_B.weight` (`[out, r]`). [`apply`] checks the whole adapter against the checkpoint, then registers one
//! [`LowRank`] update per module with [`Checkpoint::add_low_rank`], so every later read of that weight (by any
//! export path) returns the merged values. The scale `s` is folded into `B`.
//!
//! The rules are peft 0.21's, so that the result equals transformers +
//! `PeftModel.from_pretrained(...).merge_and_unload()`:
//! * module paths are those of the model in memory under transformers 5 (no `base_model.model.` prefix); for
//!   Gemma3ForConditionalGeneration that is `model.language_model.layers.N…` and `model.vision_tower.encoder…`, while
//!   its checkpoints name the tensors `language_model.model.…` and `vision_tower[.vision_model].…`: both namings are
//!   accepted in adapter tensor names, as peft's load-time conversion does;
//! * `target_modules` as a string is `re.fullmatch`ed against the module path; as a list, an entry matches the whole
//!   path or a dot-bounded suffix (`…​.q_proj`), and only then do `layers_to_transform` / `layers_pattern` restrict
//!   the layer index (peft's `check_target_module_exists`); `exclude_modules` is honoured the same way;
//! * `rank_pattern` / `alpha_pattern` keys match as `(.*\.)?(key)$` from the start of the path, the first key in the
//!   file's order winning (peft's `get_pattern_key`);
//! * `s = alpha / r`, or `alpha / √r` with `use_rslora`, times the caller's extra scale (`--lora-scale`); `r` must
//!   equal the row count of `lora_A` (peft refuses to load otherwise);
//! * `base_model_name_or_path` is ignored: the checkpoint being exported is the base.
//!
//! Python's `re` and the `regex` crate differ: `regex` has no look-around and no backreferences (such patterns are
//! refused with the compiler's message), and its `$` matches only at the very end (Python's also before a final
//! newline, which a module path never has). Everything a module path pattern normally uses (`.`, `*`, `?`, classes,
//! groups, alternation, `\d`, lazy quantifiers, `(?P<name>…)`) behaves the same.
//!
//! Refused, with the feature named: `peft_type` other than LORA, DoRA, `modules_to_save`, embedding / `lm_head`
//! LoRA, `lora_bias`, `bias` other than "none", `target_parameters`, `trainable_token_indices`, `layer_replication`,
//! `fan_in_fan_out`, and the LoRA variants whose forward is not `W x + s·B·A x`. Refused, with the tensor named:
//! any adapter tensor or module that does not fit the checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, LowRank};
use crate::config::ModelConfig;
use crate::error::CheckpointError;

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Prefix of every adapter tensor name (peft's `PeftModel` → `LoraModel` → the transformers model).
const TENSOR_PREFIX: &str = "base_model.model.";

/// Why an adapter cannot be merged. Every message names the file and the field, feature or tensor concerned.
///
/// A file that cannot be read is a [`CheckpointError::Io`] (through [`LoraError::Checkpoint`]), as for the
/// checkpoint's own files.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The folder has no `adapter_model.safetensors`.
    #[error(
        "{dir}: no LoRA adapter weights: expected {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}{hint}"
    )]
    NoWeights { dir: PathBuf, hint: String },

    /// `adapter_config.json` is not JSON, or a field has the wrong type or an impossible value.
    #[error("{path}: invalid adapter config: field `{field}`: {detail}")]
    Config {
        path: PathBuf,
        field: String,
        detail: String,
    },

    /// A peft feature this merge does not implement.
    #[error("{path}: refused: {feature}: {detail}")]
    Unsupported {
        path: PathBuf,
        feature: String,
        detail: String,
    },

    /// A pattern of the config that the `regex` crate cannot compile (look-around, backreferences, …).
    #[error(
        "{path}: field `{field}`: pattern {pattern:?} is not supported (Python `re` syntax that the Rust `regex` crate \
         lacks, such as look-around or backreferences, is refused): {detail}"
    )]
    Pattern {
        path: PathBuf,
        field: String,
        pattern: String,
        detail: String,
    },

    /// An adapter tensor that does not fit the checkpoint or the config.
    #[error("{path}: tensor {tensor:?}: {detail}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

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

/// How `target_modules` (or `exclude_modules`) selects module paths.
#[derive(Debug)]
enum Selector {
    /// A string: `re.fullmatch` against the path.
    Regex(Regex),
    /// A list: the whole path, or a dot-bounded suffix.
    Names(Vec<String>),
}

impl Selector {
    fn matches(&self, path: &str) -> bool {
        match self {
            Selector::Regex(re) => re.is_match(path),
            Selector::Names(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
        }
    }
}

/// The parts of `adapter_config.json` that decide which modules are adapted and how strongly.
#[derive(Debug)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    target: Selector,
    exclude: Option<Selector>,
    /// `(key, (.*\.)?(key)$, rank)` in the file's order.
    rank_pattern: Vec<(String, Regex, usize)>,
    alpha_pattern: Vec<(String, Regex, f64)>,
    layers_to_transform: Option<Vec<usize>>,
    /// Compiled `layers_pattern` entries; empty means any `…​.name.N.` segment gives the index.
    layers_pattern: Vec<Regex>,
}

impl AdapterConfig {
    /// Reads and checks `adapter_config.json`. `linear_names` are the last path segments of the checkpoint's linear
    /// layers (what `target_modules: "all-linear"` expands to).
    pub fn from_file(path: &Path, linear_names: &[String]) -> Result<AdapterConfig, LoraError> {
        let text = std::fs::read_to_string(path).map_err(|source| io_error(path, source))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| LoraError::Config {
            path: path.to_path_buf(),
            field: "(file)".into(),
            detail: format!("not JSON: {e}"),
        })?;
        let Value::Object(obj) = &json else {
            return Err(config_err(
                path,
                "(file)",
                "the top level is not a JSON object",
            ));
        };
        refuse_features(path, obj)?;

        let r = positive_int(path, obj.get("r"), "r")?.unwrap_or(8);
        let lora_alpha = match obj.get("lora_alpha") {
            None | Some(Value::Null) => 8.0,
            Some(v) => number(path, v, "lora_alpha")?,
        };
        let use_rslora = match obj.get("use_rslora") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(config_err(
                    path,
                    "use_rslora",
                    &format!("expected true or false, found {v}"),
                ))
            }
        };

        let target = match obj.get("target_modules") {
            Some(Value::String(s)) if s.eq_ignore_ascii_case("all-linear") => {
                Selector::Names(linear_names.to_vec())
            }
            None | Some(Value::Null) => {
                return Err(config_err(
                    path,
                    "target_modules",
                    "absent: peft then picks modules by model type, which this merge does not guess; list them",
                ))
            }
            Some(v) => selector(path, v, "target_modules")?,
        };
        let exclude = match obj.get("exclude_modules") {
            None | Some(Value::Null) => None,
            Some(v) => Some(selector(path, v, "exclude_modules")?),
        };

        let rank_pattern = ordered_patterns(&text, path, "rank_pattern")?
            .into_iter()
            .map(|(key, re, v)| {
                let field = format!("rank_pattern.{key}");
                let rank = positive_int(path, Some(&v), &field)?.unwrap_or(r);
                Ok((key, re, rank))
            })
            .collect::<Result<Vec<_>, LoraError>>()?;
        let alpha_pattern = ordered_patterns(&text, path, "alpha_pattern")?
            .into_iter()
            .map(|(key, re, v)| {
                let alpha = number(path, &v, &format!("alpha_pattern.{key}"))?;
                Ok((key, re, alpha))
            })
            .collect::<Result<Vec<_>, LoraError>>()?;

        let layers_to_transform = match obj.get("layers_to_transform") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_u64().map(|n| n as usize).ok_or_else(|| {
                            config_err(
                                path,
                                "layers_to_transform",
                                &format!("{v} is not a layer index"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(v) => match v.as_u64() {
                Some(n) => Some(vec![n as usize]),
                None => {
                    return Err(config_err(
                        path,
                        "layers_to_transform",
                        &format!("expected a layer index or a list of them, found {v}"),
                    ))
                }
            },
        };
        let layers_pattern = match obj.get("layers_pattern") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) if s.is_empty() => vec![],
            Some(Value::String(s)) => vec![compile(path, "layers_pattern", s, layers_regex(s))?],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) => compile(path, "layers_pattern", s, layers_regex(s)),
                    None => Err(config_err(
                        path,
                        "layers_pattern",
                        &format!("{v} is not a string"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(v) => {
                return Err(config_err(
                    path,
                    "layers_pattern",
                    &format!("expected a string or a list of strings, found {v}"),
                ))
            }
        };

        Ok(AdapterConfig {
            r,
            lora_alpha,
            use_rslora,
            target,
            exclude,
            rank_pattern,
            alpha_pattern,
            layers_to_transform,
            layers_pattern,
        })
    }

    /// Whether peft would put a LoRA layer on the module at `path` (peft's `check_target_module_exists`).
    pub fn selects(&self, path: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|e| e.matches(path)) {
            return false;
        }
        match &self.target {
            Selector::Regex(re) => re.is_match(path),
            Selector::Names(names) => {
                let found = names.iter().any(|n| path == n);
                if found {
                    // peft: a path listed exactly is taken whatever layers_to_transform says.
                    return true;
                }
                if !self.target.matches(path) {
                    return false;
                }
                let Some(layers) = &self.layers_to_transform else {
                    return true;
                };
                let index = if self.layers_pattern.is_empty() {
                    default_layers_regex().captures(path)
                } else {
                    self.layers_pattern.iter().find_map(|re| re.captures(path))
                }
                .and_then(|c| c.name("idx"))
                .and_then(|m| m.as_str().parse::<usize>().ok());
                index.is_some_and(|i| layers.contains(&i))
            }
        }
    }

    /// The rank and alpha of the module at `path`, after `rank_pattern` and `alpha_pattern`.
    pub fn rank_alpha(&self, path: &str) -> (usize, f64) {
        let r = self
            .rank_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(path))
            .map_or(self.r, |(_, _, r)| *r);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(path))
            .map_or(self.lora_alpha, |(_, _, a)| *a);
        (r, alpha)
    }

    /// peft's scaling for a module of rank `r` and alpha `alpha`.
    pub fn scaling(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
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

/// The two factor tensors of one module, by adapter tensor name.
#[derive(Debug, Default)]
struct Factors {
    a: Option<String>,
    b: Option<String>,
}

/// Groups the adapter's tensors by module path (transformers 5 naming), refusing every tensor that is not a plain
/// LoRA factor, with the feature it belongs to.
fn adapter_factors(
    adapter: &Checkpoint,
    path: &Path,
    cfg: &ModelConfig,
) -> Result<BTreeMap<String, Factors>, LoraError> {
    let refuse = |feature: &str, tensor: &str| {
        LoraError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.to_string(),
        detail: format!("the adapter holds tensor {tensor:?}; only lora_A/lora_B of linear layers can be merged"),
    }
    };
    let mut out: BTreeMap<String, Factors> = BTreeMap::new();
    for name in adapter.names() {
        if name.contains("lora_magnitude_vector") {
            return Err(refuse("DoRA (use_dora)", name));
        }
        if name.contains("lora_embedding_A") || name.contains("lora_embedding_B") {
            return Err(refuse("embedding LoRA (lora_embedding_A/B)", name));
        }
        if name.contains("modules_to_save") {
            return Err(refuse("modules_to_save", name));
        }
        if name.contains("trainable_tokens") {
            return Err(refuse("trainable_token_indices", name));
        }
        if name.ends_with(".lora_B.bias") {
            return Err(refuse("lora_bias", name));
        }
        let (module, is_a) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, true)
        } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
            (m, false)
        } else {
            return Err(LoraError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                detail: "not a LoRA factor (expected base_model.model.<module>.lora_A.weight or .lora_B.weight)"
                    .into(),
            });
        };
        let Some(module) = module.strip_prefix(TENSOR_PREFIX) else {
            return Err(LoraError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                detail: format!(
                    "does not start with {TENSOR_PREFIX:?}, as peft's save_pretrained writes"
                ),
            });
        };
        let module = memory_path(module, cfg);
        let last = module.rsplit('.').next().unwrap_or_default();
        if last == "lm_head" || last == "embed_tokens" {
            return Err(refuse("LoRA on the embedding / lm_head", name));
        }
        let entry = out.entry(module).or_default();
        let slot = if is_a { &mut entry.a } else { &mut entry.b };
        *slot = Some(name.to_string());
    }
    if out.is_empty() {
        return Err(LoraError::Tensor {
            path: path.to_path_buf(),
            tensor: "(none)".into(),
            detail: "the adapter has no lora_A/lora_B tensors".into(),
        });
    }
    Ok(out)
}

/// The checkpoint's linear layers that LoRA may adapt: module path (transformers 5 naming) → (tensor name, out,
/// in). Embeddings and the LM head are left out (their LoRA is refused).
fn checkpoint_modules(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
) -> BTreeMap<String, (String, usize, usize)> {
    let mut out = BTreeMap::new();
    for name in ckpt.names() {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let path = memory_path(module, cfg);
        let last = path.rsplit('.').next().unwrap_or_default();
        if matches!(last, "lm_head" | "embed_tokens" | "position_embedding") {
            continue;
        }
        let Ok(view) = ckpt.tensor(name) else {
            continue;
        };
        if let [o, i] = view.shape[..] {
            out.insert(path, (name.to_string(), o, i));
        }
    }
    out
}

/// A module path as transformers 5 names it in memory. The *ForCausalLM classes keep their checkpoint names;
/// Gemma3ForConditionalGeneration moves the text model to `model.language_model.` (checkpoints:
/// `language_model.model.`), the vision tower to `model.vision_tower.` without `vision_model.`, the projector to
/// `model.multi_modal_projector.` and the LM head to `lm_head`.
fn memory_path(module: &str, cfg: &ModelConfig) -> String {
    if cfg.vision_config.is_none() && !cfg.text_prefix.starts_with("language_model") {
        return module.to_string();
    }
    if let Some(rest) = module
        .strip_prefix("language_model.model.")
        .or_else(|| module.strip_prefix("model.language_model."))
    {
        return format!("model.language_model.{rest}");
    }
    if module == "language_model.lm_head" {
        return "lm_head".into();
    }
    if let Some(rest) = module
        .strip_prefix("model.vision_tower.")
        .or_else(|| module.strip_prefix("vision_tower."))
    {
        let rest = rest.strip_prefix("vision_model.").unwrap_or(rest);
        return format!("model.vision_tower.{rest}");
    }
    if let Some(rest) = module
        .strip_prefix("model.multi_modal_projector.")
        .or_else(|| module.strip_prefix("multi_modal_projector."))
    {
        return format!("model.multi_modal_projector.{rest}");
    }
    module.to_string()
}

/// Refuses the config fields of peft features that are not a plain `W + s·B·A` merge.
fn refuse_features(path: &Path, obj: &serde_json::Map<String, Value>) -> Result<(), LoraError> {
    let refuse = |feature: &str, detail: String| LoraError::Unsupported {
        path: path.to_path_buf(),
        feature: feature.to_string(),
        detail,
    };
    match obj.get("peft_type") {
        Some(Value::String(t)) if t == "LORA" => {}
        Some(v) => {
            return Err(refuse(
                &format!("peft_type {v}"),
                "only LoRA adapters (peft_type \"LORA\") can be merged".into(),
            ))
        }
        None => {
            return Err(refuse(
                "peft_type (absent)",
                "only LoRA adapters (peft_type \"LORA\") can be merged".into(),
            ))
        }
    }
    let set = |key: &str| {
        obj.get(key).is_some_and(|v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        })
    };
    let named: [(&str, &str, &str); 7] = [
        (
            "use_dora",
            "DoRA (use_dora)",
            "the weight-decomposed variant rescales each column after the update",
        ),
        (
            "modules_to_save",
            "modules_to_save",
            "the adapter replaces whole modules, which this merge does not write",
        ),
        (
            "lora_bias",
            "lora_bias",
            "lora_B has a bias, which this merge does not add",
        ),
        (
            "target_parameters",
            "target_parameters",
            "LoRA on raw parameters (MoE experts) is not merged",
        ),
        (
            "trainable_token_indices",
            "trainable_token_indices",
            "trained embedding rows are not merged",
        ),
        (
            "layer_replication",
            "layer_replication",
            "the adapter duplicates layers, which changes the model's depth",
        ),
        (
            "fan_in_fan_out",
            "fan_in_fan_out",
            "transposed (Conv1D) weights do not occur in Gemma",
        ),
    ];
    for (key, feature, why) in named {
        if set(key) {
            return Err(refuse(feature, format!("`{key}` is {}; {why}", obj[key])));
        }
    }
    if let Some(bias) = obj
        .get("bias")
        .and_then(Value::as_str)
        .filter(|b| *b != "none")
    {
        return Err(refuse(
            "bias",
            format!("`bias` is {bias:?}: the adapter trains the layers' biases, which this merge does not write"),
        ));
    }
    // LoRA variants whose forward pass is not W x + s·B·A x, so they cannot be merged as plain LoRA.
    for key in [
        "use_qalora",
        "alora_invocation_tokens",
        "arrow_config",
        "use_bdlora",
        "kasa_config",
        "velora_config",
        "monteclora_config",
    ] {
        if set(key) {
            return Err(refuse(
                key,
                format!(
                    "`{key}` is {}: a LoRA variant that is not a plain W + s·B·A merge",
                    obj[key]
                ),
            ));
        }
    }
    Ok(())
}

/// A `target_modules` / `exclude_modules` value: a regex string or a list of names.
fn selector(path: &Path, v: &Value, field: &str) -> Result<Selector, LoraError> {
    match v {
        Value::String(s) => Ok(Selector::Regex(compile(
            path,
            field,
            s,
            format!("^(?:{s})$"),
        )?)),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| config_err(path, field, &format!("{x} is not a string")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Selector::Names),
        _ => Err(config_err(
            path,
            field,
            &format!("expected a regex string or a list of names, found {v}"),
        )),
    }
}

/// `rank_pattern` / `alpha_pattern` in the file's order (serde_json's map is sorted, so the field is re-read with
/// an order-keeping visitor), each key compiled as peft's `get_pattern_key` uses it.
fn ordered_patterns(
    text: &str,
    path: &Path,
    field: &str,
) -> Result<Vec<(String, Regex, Value)>, LoraError> {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        rank_pattern: Option<Ordered>,
        #[serde(default)]
        alpha_pattern: Option<Ordered>,
    }
    let fields: Fields = serde_json::from_str(text).map_err(|e| {
        config_err(
            path,
            field,
            &format!("expected an object of pattern → number: {e}"),
        )
    })?;
    let entries = match field {
        "rank_pattern" => fields.rank_pattern,
        _ => fields.alpha_pattern,
    };
    entries
        .map(|o| o.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(key, v)| {
            let re = compile(path, field, &key, format!(r"^(?:.*\.)?(?:{key})$"))?;
            Ok((key, re, v))
        })
        .collect()
}

/// A JSON object's entries in document order.
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(vec![]))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Ordered, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// peft's `(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.`, matched from the start.
fn layers_regex(pattern: &str) -> String {
    format!(r"^(?:|.*?\.)(?:{pattern})\.(?P<idx>\d+)\.")
}

/// peft's default layer-index pattern `.*?\.[^.]*\.(?P<idx>\d+)\.`, matched from the start.
fn default_layers_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^.*?\.[^.]*\.(?P<idx>\d+)\.").expect("valid regex"))
}

fn compile(path: &Path, field: &str, pattern: &str, full: String) -> Result<Regex, LoraError> {
    Regex::new(&full).map_err(|e| LoraError::Pattern {
        path: path.to_path_buf(),
        field: field.to_string(),
        pattern: pattern.to_string(),
        detail: e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string(),
    })
}

fn config_err(path: &Path, field: &str, detail: &str) -> LoraError {
    LoraError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

fn positive_int(path: &Path, v: Option<&Value>, field: &str) -> Result<Option<usize>, LoraError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(config_err(
                path,
                field,
                &format!("expected a positive integer, found {v}"),
            )),
        },
    }
}

fn number(path: &Path, v: &Value, field: &str) -> Result<f64, LoraError> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| config_err(path, field, &format!("expected a number, found {v}")))
}

/// A file of the adapter that cannot be read.
fn io_error(path: &Path, source: std::io::Error) -> LoraError {
    LoraError::Checkpoint(CheckpointError::Io {
        path: path.to_path_buf(),
        source,
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

#[cfg(test)]
#[path = "lora_tests.rs"]
mod tests;
