//! `gemma-onnx.json`, the manifest `gemma-export` writes beside the graph, plus the stop tokens of
//! `generation_config.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "gemma-onnx.json";
pub const FORMAT: &str = "gemma-onnx";
/// The manifest versions this runtime reads.
pub const SUPPORTED_FORMAT_VERSIONS: &[u32] = &[1];

/// Element type of the KV cache or the logits in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
}

/// Attention type of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    SlidingAttention,
    FullAttention,
}

/// Which decoder graph the export holds (manifest `graph`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphKind {
    /// Standard ONNX ops; the whole KV cache goes in and comes out each step.
    Portable,
    /// ONNX Runtime CPU-optimized: shared in-place KV buffers, window-sized sliding caches, `num_logits_to_keep`.
    Cpu,
}

/// The `cpu` section of a `"cpu"` graph's manifest (see gemma-exporter's `CpuGraphManifest`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CpuGraph {
    /// Int64 scalar input: logits for this many trailing positions (0 = all).
    pub logits_to_keep_input: String,
    /// Past and present KV tensors are one buffer per layer, bound to both (updated in place).
    pub kv_shared_buffer: bool,
    /// A step with cached context and more than one new token needs batch 1.
    #[serde(default)]
    pub multi_token_steps_need_batch_1: bool,
}

/// The parsed manifest. Unknown fields are ignored, so newer exporters stay readable.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub family: String,
    pub architecture: String,
    pub precision: String,
    pub graph: String,
    /// File name of the decoder graph, relative to the folder.
    pub decoder: String,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub layer_types: Vec<LayerType>,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub kv_dtype: DType,
    pub logits_dtype: DType,
    /// The optional int64 scalar input of the portable graphs (the text decoder when `graph` is `"portable"`, and
    /// the image decoder): logits for the last K positions only (not fed: all positions). Absent in older exports.
    #[serde(default)]
    pub portable_logits_to_keep_input: Option<String>,
    /// Present when `graph` is `"cpu"`.
    #[serde(default)]
    pub cpu: Option<CpuGraph>,
    /// Size and sampled CRC-32 of the graph and data files, checked by [`Manifest::load`] (see
    /// [`crate::integrity`]). Empty in exports made before fingerprints existed.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, crate::integrity::FileFingerprint>,
}

impl Manifest {
    /// Reads and validates `<dir>/gemma-onnx.json`, and checks the folder against it ([`crate::integrity`]): file
    /// names inside the folder, fingerprints, sizes against config.json.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "model folder {} does not exist",
                dir.display()
            )));
        }
        if !path.is_file() {
            return Err(Error::NotAnExport {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest = Self::parse(&text, &path)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid_file(&path, format!("not valid JSON: {e}")))?;
        for (key, name) in [("decoder", &manifest.decoder)] {
            crate::integrity::inside(dir, &path, key, name)?;
        }
        let decoder = dir.join(&manifest.decoder);
        if !decoder.is_file() {
            return Err(Error::invalid_file(
                &path,
                format!(
                    "field `decoder` names {}, which does not exist",
                    decoder.display()
                ),
            ));
        }
        crate::integrity::check_folder(dir, &path, &value, &manifest)?;
        Ok(manifest)
    }

    /// Parses and validates manifest text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        // Check the format first, so that any other JSON file gets the clearer message.
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid_file(path, format!("not valid JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::invalid_file(
                    path,
                    format!("field `format` is `{other}`, expected `{FORMAT}`"),
                ))
            }
            None => {
                return Err(Error::invalid_file(
                    path,
                    format!("missing field `format` (expected `{FORMAT}`)"),
                ))
            }
        }
        let m: Manifest =
            serde_json::from_value(value).map_err(|e| Error::invalid_file(path, e.to_string()))?;
        m.validate(path)?;
        Ok(m)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, why: String| {
            Err(Error::invalid_file(path, format!("field `{field}`: {why}")))
        };
        if !SUPPORTED_FORMAT_VERSIONS.contains(&self.format_version) {
            return bad(
                "format_version",
                format!(
                    "version {} is not supported by this runtime (supported: {SUPPORTED_FORMAT_VERSIONS:?}); \
                     re-export with a matching gemma-export or update the runtime",
                    self.format_version
                ),
            );
        }
        for (field, v) in [
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("hidden_size", self.hidden_size),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(field, "must be > 0".into());
            }
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_layers {
            return bad(
                "layer_types",
                format!(
                    "has {} entries but num_layers is {}",
                    self.layer_types.len(),
                    self.num_layers
                ),
            );
        }
        if self.eos_token_ids.is_empty() {
            return bad("eos_token_ids", "must list at least one token id".into());
        }
        let vocab = self.vocab_size as u64;
        for (field, id) in std::iter::once(("bos_token_id", self.bos_token_id))
            .chain(self.eos_token_ids.iter().map(|&id| ("eos_token_ids", id)))
        {
            if id as u64 >= vocab {
                return bad(
                    field,
                    format!("token id {id} is outside the vocabulary ({vocab})"),
                );
            }
        }
        if self.decoder.is_empty() {
            return bad("decoder", "must name the decoder graph file".into());
        }
        match self.graph.as_str() {
            "portable" => {}
            "cpu" => {
                if self.cpu.is_none() {
                    return bad("cpu", "a \"cpu\" graph needs the `cpu` section".into());
                }
                if self.kv_dtype != DType::Float32 {
                    return bad("kv_dtype", "the cpu graph's KV buffers are float32".into());
                }
                if self.layer_types.is_empty() {
                    return bad("layer_types", "the cpu graph needs the type of every layer".into());
                }
                if self.layer_types.contains(&LayerType::SlidingAttention)
                    && self.sliding_window.is_none_or(|w| w == 0)
                {
                    return bad("sliding_window", "sliding layers need a window > 0".into());
                }
            }
            other => {
                return bad(
                    "graph",
                    format!("`{other}` is not a graph kind this runtime knows (portable, cpu); update the runtime"),
                )
            }
        }
        Ok(())
    }

    /// The kind of decoder graph (validated by [`Manifest::parse`]).
    pub fn graph_kind(&self) -> GraphKind {
        if self.graph == "cpu" {
            GraphKind::Cpu
        } else {
            GraphKind::Portable
        }
    }
}

/// `eos_token_id` of `<dir>/generation_config.json` (an integer or a list), empty when the file or field is absent.
pub fn generation_config_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_file(&path, format!("not valid JSON: {e}")))?;
    parse_token_ids(value.get("eos_token_id"), &path, "eos_token_id")
}

fn parse_token_ids(v: Option<&serde_json::Value>, path: &Path, field: &str) -> Result<Vec<u32>> {
    let as_id = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid_file(
                    path,
                    format!("field `{field}`: expected token ids, got {v}"),
                )
            })
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(other) => Ok(vec![as_id(other)?]),
    }
}

/// The stop tokens: the manifest's `eos_token_ids` united with generation_config.json's `eos_token_id`, in order,
/// without duplicates.
pub fn stop_token_ids(dir: &Path, manifest: &Manifest) -> Result<Vec<u32>> {
    let mut ids = manifest.eos_token_ids.clone();
    for id in generation_config_eos(dir)? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Path of the decoder graph.
pub fn decoder_path(dir: &Path, manifest: &Manifest) -> PathBuf {
    dir.join(&manifest.decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "format": "gemma-onnx", "format_version": 1, "family": "gemma3", "architecture": "Gemma3ForCausalLM",
            "precision": "fp32", "graph": "portable", "decoder": "model.onnx",
            "num_layers": 2, "num_attention_heads": 4, "num_kv_heads": 1, "head_dim": 256, "hidden_size": 640,
            "vocab_size": 262144, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 32768, "bos_token_id": 2, "pad_token_id": 0, "eos_token_ids": [1, 106],
            "kv_dtype": "float32", "logits_dtype": "float32", "some_future_field": true
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Manifest> {
        Manifest::parse(&v.to_string(), Path::new("/m/gemma-onnx.json"))
    }

    #[test]
    fn parses_the_documented_manifest() {
        let m = parse(&sample()).unwrap();
        assert_eq!(m.num_layers, 2);
        assert_eq!(
            m.layer_types,
            vec![LayerType::SlidingAttention, LayerType::FullAttention]
        );
        assert_eq!(m.eos_token_ids, vec![1, 106]);
        assert_eq!(m.kv_dtype, DType::Float32);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let mut v = sample();
        v["layer_types"] = serde_json::json!(["full_attention"]);
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains("/m/gemma-onnx.json") && e.contains("layer_types"),
            "{e}"
        );

        let mut v = sample();
        v.as_object_mut().unwrap().remove("head_dim");
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("head_dim"), "{e}");

        let mut v = sample();
        v["format_version"] = serde_json::json!(7);
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("format_version") && e.contains('7'), "{e}");

        let mut v = sample();
        v["format"] = serde_json::json!("other");
        assert!(parse(&v).unwrap_err().to_string().contains("`format`"));

        let mut v = sample();
        v["kv_dtype"] = serde_json::json!("int8");
        assert!(parse(&v).unwrap_err().to_string().contains("int8"));

        let mut v = sample();
        v["eos_token_ids"] = serde_json::json!([]);
        assert!(parse(&v).unwrap_err().to_string().contains("eos_token_ids"));
    }

    #[test]
    fn cpu_graph_needs_its_section() {
        let mut v = sample();
        v["graph"] = serde_json::json!("cpu");
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("`cpu`"), "{e}");
        v["cpu"] = serde_json::json!({
            "logits_to_keep_input": "num_logits_to_keep", "kv_shared_buffer": true,
            "global_cache_dim": "global_cache_length", "sliding_cache_dim": "sliding_cache_length",
            "multi_token_steps_need_batch_1": true
        });
        let m = parse(&v).unwrap();
        assert_eq!(m.graph_kind(), GraphKind::Cpu);
        assert_eq!(m.cpu.unwrap().logits_to_keep_input, "num_logits_to_keep");
        let mut v = sample();
        v["graph"] = serde_json::json!("tpu");
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("graph"), "{e}");
        assert_eq!(parse(&sample()).unwrap().graph_kind(), GraphKind::Portable);
    }

    #[test]
    fn folder_without_manifest_says_run_gemma_export() {
        let dir = tempfile::tempdir().unwrap();
        let e = Manifest::load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::NotAnExport { .. }));
        assert!(
            e.to_string().contains("not a gemma-onnx export folder")
                && e.to_string().contains("gemma-export")
        );
        let e = Manifest::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn missing_decoder_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), sample().to_string()).unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("decoder") && e.contains("model.onnx"), "{e}");
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        Manifest::load(dir.path()).unwrap();
    }

    #[test]
    fn stop_tokens_union_generation_config() {
        let dir = tempfile::tempdir().unwrap();
        let m = parse(&sample()).unwrap();
        assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106]);
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": [106, 1, 50]}"#,
        )
        .unwrap();
        assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106, 50]);
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": 7}"#,
        )
        .unwrap();
        assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106, 7]);
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"do_sample": true}"#,
        )
        .unwrap();
        assert_eq!(stop_token_ids(dir.path(), &m).unwrap(), vec![1, 106]);
    }
}
