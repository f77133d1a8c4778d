//! A GGUF file's metadata → a transformers-style `config.json`.
//!
//! The keys are the ones llama.cpp's `convert_hf_to_gguf.py` writes for `GemmaModel`, `Gemma2Model` and
//! `Gemma3Model`, and where the converter writes nothing we assume what llama.cpp's loader (`llama-model.cpp`)
//! assumes, so that the export computes what llama.cpp computes from the same file:
//!
//! | config.json                 | GGUF (`A` = general.architecture)                     | when absent            |
//! |-----------------------------|-------------------------------------------------------|------------------------|
//! | `vocab_size`                | rows of `token_embd.weight`                           | —                      |
//! | `hidden_size`               | `A.embedding_length`                                  | —                      |
//! | `intermediate_size`         | `A.feed_forward_length`                               | —                      |
//! | `num_hidden_layers`         | `A.block_count`                                       | —                      |
//! | `num_attention_heads`       | `A.attention.head_count`                              | —                      |
//! | `num_key_value_heads`       | `A.attention.head_count_kv`                           | head_count             |
//! | `head_dim`                  | `A.attention.key_length` (= `value_length`)           | hidden / heads         |
//! | `rms_norm_eps`              | `A.attention.layer_norm_rms_epsilon`                  | —                      |
//! | `max_position_embeddings`   | `A.context_length`                                    | —                      |
//! | `rope_theta`                | `A.rope.freq_base`                                    | 10000                  |
//! | `rope_local_base_freq` (3)  | `A.rope.freq_base_swa`                                | 10000                  |
//! | `rope_scaling` (global)     | `A.rope.scaling.type` = "linear", `A.rope.scaling.factor` | none               |
//! | `sliding_window` (2, 3)     | `A.attention.sliding_window`                          | 2: 4096; 3: no sliding layers |
//! | `layer_types` (2, 3)        | `A.attention.sliding_window_pattern` (period or per-layer bools) | 2: every 2nd global; 3: every 6th |
//! | `query_pre_attn_scalar`     | llama.cpp's rule: hidden / heads for the 27B shapes (46 layers gemma2, 62 gemma3), else head_dim | |
//! | soft-caps (2)               | `A.attn_logit_softcapping`, `A.final_logit_softcapping` | 50, 30               |
//! | `final_logit_softcapping` (3) | `A.final_logit_softcapping`                         | none                   |
//! | `tie_word_embeddings`       | false when `output.weight` exists                     | true                   |
//! | bos / eos / pad ids         | `tokenizer.ggml.{bos,eos,padding}_token_id`           | 2, 1, 0                |
//!
//! Per-layer arrays (llama.cpp's `get_key_or_arr`) are accepted for the sizes when all entries agree.

use serde_json::{json, Map, Value as Json};

use super::container::{Array, Value};
use super::{Arch, GgufError, GgufFile};

/// Gemma 2 class defaults that llama.cpp's hparams share.
const GEMMA2_WINDOW: u64 = 4096;
const GEMMA2_ATTN_SOFTCAP: f64 = 50.0;
const GEMMA2_FINAL_SOFTCAP: f64 = 30.0;
/// llama.cpp's default rotary base, and its fixed base of Gemma 3's sliding layers.
const DEFAULT_THETA: f64 = 10_000.0;

/// Typed access to `{arch}.*` keys with errors naming the key.
struct Meta<'a> {
    file: &'a GgufFile,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.file.arch.name())
    }

    fn err(&self, key: &str, detail: impl Into<String>) -> GgufError {
        GgufError::Metadata {
            path: self.file.path.clone(),
            key: key.to_string(),
            detail: detail.into(),
        }
    }

    /// A non-negative integer under the full key `key`; a per-layer array whose entries all agree counts as one.
    fn uint_at(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let Some(v) = self.file.get(key) else {
            return Ok(None);
        };
        if let Some(n) = v.as_u64() {
            return Ok(Some(n));
        }
        if let Some(items) = v.as_array().and_then(Array::to_u64s) {
            if let Some(&first) = items.first() {
                if items.iter().all(|&x| x == first) {
                    return Ok(Some(first));
                }
                return Err(self.err(
                    key,
                    format!(
                        "per-layer values differ ({items:?}); Gemma layers all have the same size"
                    ),
                ));
            }
        }
        Err(self.err(
            key,
            format!("expected a non-negative integer, found {}", v.type_name()),
        ))
    }

    fn uint(&self, k: &str) -> Result<Option<u64>, GgufError> {
        self.uint_at(&self.key(k))
    }

    fn positive(&self, k: &str) -> Result<u64, GgufError> {
        match self.uint(k)? {
            Some(n) if n > 0 => Ok(n),
            Some(n) => Err(self.err(
                &self.key(k),
                format!("expected a positive integer, found {n}"),
            )),
            None => Err(self.err(&self.key(k), "missing")),
        }
    }

    fn float(&self, k: &str) -> Result<Option<f64>, GgufError> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => match v.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
                Some(x) => Ok(Some(x)),
                None => Err(self.err(
                    &key,
                    format!("expected a positive number, found {} {v:?}", v.type_name()),
                )),
            },
        }
    }

    fn token_id(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|&n| n <= u64::from(u32::MAX)) {
                Some(n) => Ok(Some(n)),
                None => Err(self.err(
                    key,
                    format!("expected a token id, found {} {v:?}", v.type_name()),
                )),
            },
        }
    }
}

/// Builds the config.json of a GGUF file (see the module table).
pub fn config_json(file: &GgufFile) -> Result<Json, GgufError> {
    let m = Meta { file };
    let arch = file.arch;
    let hidden = m.positive("embedding_length")?;
    let layers = m.positive("block_count")?;
    let ffn = m.positive("feed_forward_length")?;
    let heads = m.positive("attention.head_count")?;
    let kv_heads = m.uint("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = m.uint("attention.key_length")?.unwrap_or(hidden / heads);
    if let Some(v) = m.uint("attention.value_length")? {
        if v != head_dim {
            return Err(m.err(
                &m.key("attention.value_length"),
                format!("{v} differs from the key length {head_dim}; Gemma's keys and values have one head_dim"),
            ));
        }
    }
    let context = m.positive("context_length")?;
    let eps = m
        .float("attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| m.err(&m.key("attention.layer_norm_rms_epsilon"), "missing"))?;
    let theta = m.float("rope.freq_base")?.unwrap_or(DEFAULT_THETA);

    let embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| GgufError::BadTensor {
            path: file.path.clone(),
            tensor: "token_embd.weight".into(),
            detail: "missing: every Gemma GGUF has the token embedding".into(),
        })?;
    let vocab_size = *embd.dims.get(1).unwrap_or(&0) as u64;
    if let Some(v) = m.uint("vocab_size")? {
        if v != vocab_size {
            return Err(m.err(
                &m.key("vocab_size"),
                format!("{v} differs from the {vocab_size} rows of token_embd.weight"),
            ));
        }
    }
    let tied = file.tensor("output.weight").is_none();

    let mut c = Map::new();
    let (architecture, model_type) = match arch {
        Arch::Gemma => ("GemmaForCausalLM", "gemma"),
        Arch::Gemma2 => ("Gemma2ForCausalLM", "gemma2"),
        Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    c.insert("architectures".into(), json!([architecture]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("vocab_size".into(), json!(vocab_size));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("intermediate_size".into(), json!(ffn));
    c.insert("num_hidden_layers".into(), json!(layers));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(kv_heads));
    c.insert("head_dim".into(), json!(head_dim));
    c.insert("rms_norm_eps".into(), json!(eps));
    c.insert("max_position_embeddings".into(), json!(context));
    c.insert("rope_theta".into(), json!(theta));
    c.insert("rope_scaling".into(), rope_scaling(&m)?);
    c.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
    c.insert("tie_word_embeddings".into(), json!(tied));
    for (field, key, default) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id", 2),
        ("eos_token_id", "tokenizer.ggml.eos_token_id", 1),
        ("pad_token_id", "tokenizer.ggml.padding_token_id", 0),
    ] {
        c.insert(field.into(), json!(m.token_id(key)?.unwrap_or(default)));
    }

    // llama.cpp's attention scale: 1/sqrt(hidden/heads) for the 27B shapes, else 1/sqrt(head_dim).
    let scalar = |big_layers: u64| {
        if layers == big_layers {
            hidden / heads
        } else {
            head_dim
        }
    };
    match arch {
        Arch::Gemma => {}
        Arch::Gemma2 => {
            let window = m.uint("attention.sliding_window")?.unwrap_or(GEMMA2_WINDOW);
            c.insert("sliding_window".into(), json!(window));
            c.insert("query_pre_attn_scalar".into(), json!(scalar(46)));
            c.insert("layer_types".into(), layer_types(&m, layers, 2)?);
            let attn = m
                .float("attn_logit_softcapping")?
                .unwrap_or(GEMMA2_ATTN_SOFTCAP);
            let last = m
                .float("final_logit_softcapping")?
                .unwrap_or(GEMMA2_FINAL_SOFTCAP);
            c.insert("attn_logit_softcapping".into(), json!(attn));
            c.insert("final_logit_softcapping".into(), json!(last));
        }
        Arch::Gemma3 => {
            c.insert("query_pre_attn_scalar".into(), json!(scalar(62)));
            let local = m.float("rope.freq_base_swa")?.unwrap_or(DEFAULT_THETA);
            c.insert("rope_local_base_freq".into(), json!(local));
            match m.uint("attention.sliding_window")? {
                Some(window) => {
                    c.insert("sliding_window".into(), json!(window));
                    c.insert("layer_types".into(), layer_types(&m, layers, 6)?);
                }
                // The converter leaves the window out when every layer is global (sliding_window_pattern 1).
                None => {
                    c.insert(
                        "layer_types".into(),
                        json!(vec!["full_attention"; layers as usize]),
                    );
                }
            }
            c.insert(
                "final_logit_softcapping".into(),
                json!(m.float("final_logit_softcapping")?),
            );
        }
    }
    Ok(Json::Object(c))
}

/// `A.rope.scaling.*` → transformers' `rope_scaling` (linear only, as Gemma 3's global layers use it).
fn rope_scaling(m: &Meta<'_>) -> Result<Json, GgufError> {
    let key = m.key("rope.scaling.type");
    let kind = match m.file.get(&key) {
        None => return Ok(Json::Null),
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(m.err(&key, format!("expected a string, found {}", v.type_name()))),
    };
    match kind {
        "none" => Ok(Json::Null),
        "linear" => {
            let factor = m.float("rope.scaling.factor")?.ok_or_else(|| {
                m.err(
                    &m.key("rope.scaling.factor"),
                    "missing (rope.scaling.type is linear)",
                )
            })?;
            Ok(json!({"rope_type": "linear", "factor": factor}))
        }
        other => Err(m.err(
            &key,
            format!("unsupported rope scaling {other:?} (supported: none, linear)"),
        )),
    }
}

/// `layer_types` from `A.attention.sliding_window_pattern` (a period P: layer i slides unless (i+1) % P == 0, with
/// 0 meaning every layer slides, as llama.cpp's `set_swa_pattern`; or one bool per layer, true = sliding), else
/// from the generation's fixed period.
fn layer_types(m: &Meta<'_>, layers: u64, default_period: u64) -> Result<Json, GgufError> {
    let key = m.key("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match m.file.get(&key) {
        Some(Value::Array(Array::Bool(flags))) => {
            if flags.len() as u64 != layers {
                return Err(m.err(
                    &key,
                    format!("{} entries, expected one per layer ({layers})", flags.len()),
                ));
            }
            flags.clone()
        }
        Some(v) => {
            let period = v.as_u64().ok_or_else(|| {
                m.err(
                    &key,
                    format!(
                        "expected a u32 period or one bool per layer, found {}",
                        v.type_name()
                    ),
                )
            })?;
            (0..layers)
                .map(|i| period == 0 || (i + 1) % period != 0)
                .collect()
        }
        None => (0..layers).map(|i| (i + 1) % default_period != 0).collect(),
    };
    Ok(json!(sliding
        .iter()
        .map(|&s| if s {
            "sliding_attention"
        } else {
            "full_attention"
        })
        .collect::<Vec<_>>()))
}
