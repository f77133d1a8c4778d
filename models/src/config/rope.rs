//! RoPE parameters from either config form (semantics §4.3).
//!
//! * transformers 4.x: `rope_theta`, `rope_local_base_freq` (Gemma 3 only) and `rope_scaling`
//!   (`{"rope_type" | "type": ..., "factor": ...}` or `null`).
//! * transformers 5.x: `rope_parameters`, nested per layer type for Gemma 3
//!   (`{"full_attention": {...}, "sliding_attention": {...}}`) and flat (`{"rope_type", "rope_theta"}`) for
//!   Gemma 1 and 2, which have a single rotary embedding.
//!
//! Both are folded the way `Gemma3TextConfig.convert_rope_params_to_dict` does it: start from `rope_parameters` (or
//! `{"rope_type": "default"}` per layer type), merge `rope_scaling` into the **full-attention** entry only, and take
//! each entry's `rope_theta` from the entry, else from the legacy key, else from the class default.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{describe, Fields};
use super::RopeParams;
use crate::error::ConfigError;
use crate::family::RopeLayout;

/// One rope entry while it is being assembled from one or more JSON objects.
#[derive(Default)]
struct Entry<'a> {
    /// key → (value, full field path it came from).
    keys: BTreeMap<&'a str, (&'a Value, String)>,
    /// Field path of the last object merged in (e.g. "rope_scaling"), for "missing" messages.
    source: String,
}

impl<'a> Entry<'a> {
    /// Adds the keys of a JSON object, overriding keys already present (Python's `dict.update`).
    fn merge(&mut self, obj: &Fields<'a>) {
        for (k, v) in obj.map() {
            self.keys.insert(k.as_str(), (v, obj.path_of(k)));
        }
        self.source = obj.own_path().to_string();
    }

    /// A positive number stored under `key`, if present.
    fn positive(&self, f: &Fields<'_>, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.keys.get(key) {
            None => Ok(None),
            Some((v, field)) => match v.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
                Some(x) => Ok(Some(x)),
                None => Err(invalid_at(f, field, "a positive number", describe(v))),
            },
        }
    }
}

/// Resolves the rope parameters of (full-attention layers, sliding-attention layers), with the class defaults of
/// `layout`. For a [`RopeLayout::Single`] family (Gemma 1 and 2) both are the same.
pub(super) fn resolve(
    f: &Fields<'_>,
    layout: &RopeLayout,
) -> Result<(RopeParams, RopeParams), ConfigError> {
    let rope_parameters = f.object("rope_parameters")?;
    let rope_scaling = f.object("rope_scaling")?;
    let nested = |rp: &Fields<'_>| rp.has("full_attention") || rp.has("sliding_attention");

    match *layout {
        RopeLayout::PerLayerType {
            full_theta,
            sliding_theta,
        } => {
            let (mut full, mut sliding) = (Entry::default(), Entry::default());
            if let Some(rp) = &rope_parameters {
                if !nested(rp) {
                    return Err(f.invalid(
                        "rope_parameters",
                        "an object keyed by layer type (\"full_attention\", \"sliding_attention\") for Gemma 3",
                        "a flat rope object",
                    ));
                }
                for (key, entry) in [
                    ("full_attention", &mut full),
                    ("sliding_attention", &mut sliding),
                ] {
                    let obj = rp
                        .object(key)?
                        .ok_or_else(|| rp.missing(key, "a rope object for this layer type"))?;
                    entry.merge(&obj);
                }
            }
            if let Some(rs) = &rope_scaling {
                full.merge(rs);
            }
            let full_theta = f.positive_f64("rope_theta", Some(full_theta))?;
            let local_theta = f.positive_f64("rope_local_base_freq", Some(sliding_theta))?;
            Ok((
                finish(f, &full, full_theta)?,
                finish(f, &sliding, local_theta)?,
            ))
        }
        RopeLayout::Single { theta } => {
            let mut entry = Entry::default();
            if let Some(rp) = &rope_parameters {
                if nested(rp) {
                    return Err(f.invalid(
                        "rope_parameters",
                        "a flat rope object {\"rope_type\", \"rope_theta\"} (Gemma 1 and 2 have one rotary embedding)",
                        "an object keyed by layer type",
                    ));
                }
                entry.merge(rp);
            }
            if let Some(rs) = &rope_scaling {
                entry.merge(rs);
            }
            let params = finish(f, &entry, f.positive_f64("rope_theta", Some(theta))?)?;
            Ok((params.clone(), params))
        }
    }
}

/// Turns an assembled entry into [`RopeParams`]. An empty entry (neither `rope_parameters` nor `rope_scaling`)
/// is the default rope with `fallback_theta`.
fn finish(
    f: &Fields<'_>,
    entry: &Entry<'_>,
    fallback_theta: f64,
) -> Result<RopeParams, ConfigError> {
    let theta = entry.positive(f, "rope_theta")?.unwrap_or(fallback_theta);
    if entry.keys.is_empty() {
        return Ok(RopeParams {
            theta,
            linear_factor: None,
        });
    }

    // 5.x writes "rope_type"; old 4.x configs wrote "type".
    let Some((type_value, type_field)) = entry
        .keys
        .get("rope_type")
        .or_else(|| entry.keys.get("type"))
    else {
        return Err(ConfigError::Missing {
            path: f.origin().to_path_buf(),
            field: format!("{}.rope_type", entry.source),
            expected: "\"default\" or \"linear\"".to_string(),
        });
    };
    let Value::String(rope_type) = type_value else {
        return Err(invalid_at(f, type_field, "a string", describe(type_value)));
    };
    match rope_type.as_str() {
        "default" => Ok(RopeParams {
            theta,
            linear_factor: None,
        }),
        "linear" => match entry.positive(f, "factor")? {
            Some(factor) => Ok(RopeParams {
                theta,
                linear_factor: Some(factor),
            }),
            None => Err(ConfigError::Missing {
                path: f.origin().to_path_buf(),
                field: format!(
                    "{}.factor",
                    type_field.rsplit_once('.').map_or("", |(parent, _)| parent)
                ),
                expected: "a positive number (required by rope_type \"linear\")".to_string(),
            }),
        },
        other => Err(ConfigError::UnsupportedRope {
            path: f.origin().to_path_buf(),
            field: type_field.clone(),
            rope_type: other.to_string(),
        }),
    }
}

fn invalid_at(f: &Fields<'_>, field: &str, expected: &str, found: String) -> ConfigError {
    ConfigError::Invalid {
        path: f.origin().to_path_buf(),
        field: field.to_string(),
        expected: expected.to_string(),
        found,
    }
}
