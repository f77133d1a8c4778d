//! Which module paths an [`AdapterConfig`] adapts and how strongly, by peft 0.21's rules (see the module docs):
//! `target_modules` / `exclude_modules` selectors, `layers_to_transform` / `layers_pattern`, and the ordered
//! `rank_pattern` / `alpha_pattern` keys, compiled for the `regex` crate.

use std::path::Path;

use regex::Regex;
use serde_json::Value;

use super::error::config_err;
use super::{AdapterConfig, LoraError};

/// How `target_modules` (or `exclude_modules`) selects module paths.
#[derive(Debug)]
pub(super) enum Selector {
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

impl AdapterConfig {
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

/// A `target_modules` / `exclude_modules` value: a regex string or a list of names.
pub(super) fn selector(path: &Path, v: &Value, field: &str) -> Result<Selector, LoraError> {
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
pub(super) fn ordered_patterns(
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
pub(super) fn layers_regex(pattern: &str) -> String {
    format!(r"^(?:|.*?\.)(?:{pattern})\.(?P<idx>\d+)\.")
}

/// peft's default layer-index pattern `.*?\.[^.]*\.(?P<idx>\d+)\.`, matched from the start.
fn default_layers_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^.*?\.[^.]*\.(?P<idx>\d+)\.").expect("valid regex"))
}

pub(super) fn compile(
    path: &Path,
    field: &str,
    pattern: &str,
    full: String,
) -> Result<Regex, LoraError> {
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
