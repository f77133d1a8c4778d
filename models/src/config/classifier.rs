//! The classifier fields of a wrapper class's `config.json` (ShieldGemma 2, [`crate::family::ClassifierSpec`]).

use super::fields::Fields;
use crate::error::ConfigError;
use crate::family::ModelClass;

/// The two answer tokens whose last-position logits a classifier compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// `yes_token_index` ("Yes": the content violates the policy).
    pub yes_token_id: u32,
    /// `no_token_index`.
    pub no_token_id: u32,
}

/// `Some` for a classifier class: its ids from the top level of config.json, else the class defaults (as the model's
/// `getattr(config, "yes_token_index", 10_784)` does).
pub(super) fn parse(
    top: &Fields<'_>,
    class: &ModelClass,
) -> Result<Option<ClassifierConfig>, ConfigError> {
    let Some(spec) = class.classifier() else {
        return Ok(None);
    };
    let id = |key: &str, default: u32| -> Result<u32, ConfigError> {
        match top.token_ids(key)? {
            None => Ok(default),
            Some(v) if v.len() == 1 => Ok(v[0]),
            Some(v) => Err(top.invalid(key, "a single token id", format!("{v:?}"))),
        }
    };
    Ok(Some(ClassifierConfig {
        yes_token_id: id("yes_token_index", spec.yes_token_default)?,
        no_token_id: id("no_token_index", spec.no_token_default)?,
    }))
}
