//! The peft features this merge refuses, read from `adapter_config.json`: anything whose forward pass is not
//! `W x + s·B·A x` (DoRA, `modules_to_save`, biases, LoRA variants, ...), each named in the error.

use std::path::Path;

use serde_json::Value;

use super::LoraError;

/// Refuses the config fields of peft features that are not a plain `W + s·B·A` merge.
pub(super) fn refuse_features(
    path: &Path,
    obj: &serde_json::Map<String, Value>,
) -> Result<(), LoraError> {
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
