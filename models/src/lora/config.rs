//! Reading `adapter_config.json` into an [`AdapterConfig`]: rank, alpha, rsLoRA, which modules are targeted or
//! excluded, the per-module rank and alpha patterns and the layer restriction, each field checked with its name
//! in the error. What the selectors then match is `matching.rs`; the refused peft features are `features.rs`.

use std::path::Path;

use regex::Regex;
use serde_json::Value;

use super::error::{config_err, io_error};
use super::features::refuse_features;
use super::matching::{compile, layers_regex, ordered_patterns, selector, Selector};
use super::LoraError;

/// The parts of `adapter_config.json` that decide which modules are adapted and how strongly.
#[derive(Debug)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub(super) target: Selector,
    pub(super) exclude: Option<Selector>,
    /// `(key, (.*\.)?(key)$, rank)` in the file's order.
    pub(super) rank_pattern: Vec<(String, Regex, usize)>,
    pub(super) alpha_pattern: Vec<(String, Regex, f64)>,
    pub(super) layers_to_transform: Option<Vec<usize>>,
    /// Compiled `layers_pattern` entries; empty means any `…​.name.N.` segment gives the index.
    pub(super) layers_pattern: Vec<Regex>,
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
