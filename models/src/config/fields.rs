//! Typed access to the fields of one JSON object of a config.json, with error messages that name the file and the
//! full field path (e.g. `text_config.head_dim`).
//!
//! Conventions used by every getter:
//! * an **absent** key gives `Ok(None)`, so the caller can apply the class default;
//! * a key set to **`null`** where a value is needed is an error ("found null") — transformers would carry the
//!   `None` into the model and fail later, so we fail early. Fields where `null` is meaningful (soft-caps,
//!   `rope_scaling`) have their own getters.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// One JSON object of a config file, plus where it lives (file and key prefix) for error messages.
#[derive(Clone)]
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a Path,
    /// Prefix of every field path in messages: "" at the top level, "text_config." inside it, and so on.
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        map: &'a Map<String, Value>,
        origin: &'a Path,
        prefix: impl Into<String>,
    ) -> Self {
        Fields {
            map,
            origin,
            prefix: prefix.into(),
        }
    }

    /// The file the object was read from.
    pub(crate) fn origin(&self) -> &'a Path {
        self.origin
    }

    /// The underlying JSON map.
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// The field path of this object itself ("" at the top level, "text_config" inside it, …).
    pub(crate) fn own_path(&self) -> &str {
        self.prefix.strip_suffix('.').unwrap_or(&self.prefix)
    }

    /// The full field path of `key`, as shown in messages.
    pub(crate) fn path_of(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Whether `key` is present (even if `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The value of `key` unless it is absent or `null`.
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An [`ConfigError::Invalid`] for `key`.
    pub(crate) fn invalid(
        &self,
        key: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_path_buf(),
            field: self.path_of(key),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// A [`ConfigError::Missing`] for `key`.
    pub(crate) fn missing(&self, key: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::Missing {
            path: self.origin.to_path_buf(),
            field: self.path_of(key),
            expected: expected.into(),
        }
    }

    /// A non-negative integer.
    pub(crate) fn usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.invalid(key, "a non-negative integer", describe(v))),
            },
        }
    }

    /// A positive integer, falling back to `default` when the key is absent; `Missing` when there is no default.
    pub(crate) fn positive(&self, key: &str, default: Option<usize>) -> Result<usize, ConfigError> {
        match self.usize(key)?.or(default) {
            Some(0) => Err(self.invalid(key, "a positive integer", "0")),
            Some(n) => Ok(n),
            None => Err(self.missing(
                key,
                "a positive integer; required, no class default is applied",
            )),
        }
    }

    /// [`positive`](Self::positive), at most `max`: a sanity limit checked before anything is sized from the
    /// value (a config asking for 10⁹ layers must fail here, not when the layer list is allocated).
    pub(crate) fn bounded(
        &self,
        key: &str,
        default: Option<usize>,
        max: usize,
    ) -> Result<usize, ConfigError> {
        let n = self.positive(key, default)?;
        self.at_most(key, n, max)
    }

    /// `n` (the value of `key`) if it is at most `max`, else an error naming the key and the limit.
    pub(crate) fn at_most(&self, key: &str, n: usize, max: usize) -> Result<usize, ConfigError> {
        if n > max {
            return Err(self.invalid(
                key,
                format!("at most {max} (a sanity limit of gemma-onnx)"),
                n.to_string(),
            ));
        }
        Ok(n)
    }

    /// A finite number (JSON integers are accepted).
    pub(crate) fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64().filter(|x| x.is_finite()) {
                Some(x) => Ok(Some(x)),
                None => Err(self.invalid(key, "a number", describe(v))),
            },
        }
    }

    /// A strictly positive finite number, falling back to `default` when the key is absent.
    pub(crate) fn positive_f64(&self, key: &str, default: Option<f64>) -> Result<f64, ConfigError> {
        match self.f64(key)?.or(default) {
            Some(x) if x > 0.0 => Ok(x),
            Some(x) => Err(self.invalid(key, "a positive number", x.to_string())),
            None => Err(self.missing(
                key,
                "a positive number; required, no class default is applied",
            )),
        }
    }

    /// A number or `null`, for fields where `null` means "off" (the soft-caps).
    /// Absent → `Ok(None)`; `null` → `Ok(Some(None))`; a positive number → `Ok(Some(Some(x)))`.
    pub(crate) fn nullable_positive_f64(
        &self,
        key: &str,
    ) -> Result<Option<Option<f64>>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => match v.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
                Some(x) => Ok(Some(Some(x))),
                None => Err(self.invalid(key, "a positive number or null", describe(v))),
            },
        }
    }

    /// A string.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.invalid(key, "a string", describe(v))),
        }
    }

    /// A boolean.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(key, "true or false", describe(v))),
        }
    }

    /// A nested object; absent or `null` → `Ok(None)`.
    pub(crate) fn object(&self, key: &str) -> Result<Option<Fields<'a>>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields::new(
                m,
                self.origin,
                format!("{}{}.", self.prefix, key),
            ))),
            Some(v) => Err(self.invalid(key, "an object", describe(v))),
        }
    }

    /// A token id or a list of token ids; absent or `null` → `Ok(None)`.
    pub(crate) fn token_ids(&self, key: &str) -> Result<Option<Vec<u32>>, ConfigError> {
        let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.value(key) {
            None => Ok(None),
            Some(v @ Value::Array(items)) => {
                let ids: Option<Vec<u32>> = items.iter().map(as_id).collect();
                match ids {
                    Some(ids) if !ids.is_empty() => Ok(Some(ids)),
                    _ => Err(self.invalid(
                        key,
                        "a token id or a non-empty list of token ids",
                        describe(v),
                    )),
                }
            }
            Some(v) => match as_id(v) {
                Some(id) => Ok(Some(vec![id])),
                None => Err(self.invalid(key, "a token id or a list of token ids", describe(v))),
            },
        }
    }
}

/// A short description of a JSON value for "found …" in messages (long values are cut).
pub(crate) fn describe(v: &Value) -> String {
    const MAX: usize = 80;
    let text = match v {
        Value::Null => return "null".to_string(),
        Value::Object(_) => return "an object".to_string(),
        v => v.to_string(),
    };
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text
    }
}
