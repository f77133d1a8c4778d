//! Unit tests of the `lora` module.

use super::*;

fn config(json: &str) -> Result<AdapterConfig, LoraError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ADAPTER_CONFIG);
    std::fs::write(&path, json).unwrap();
    AdapterConfig::from_file(&path, &["q_proj".into(), "v_proj".into()])
}

/// Asserts that the adapter config `json` selects every path of `yes` and none of `no`.
fn check_selects(json: &str, yes: &[&str], no: &[&str]) {
    let c = config(json).unwrap();
    for path in yes {
        assert!(c.selects(path), "{json}: should select {path}");
    }
    for path in no {
        assert!(!c.selects(path), "{json}: should not select {path}");
    }
}

#[test]
fn list_targets_match_whole_path_or_dot_suffix() {
    check_selects(
        r#"{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "mlp.up_proj"]}"#,
        &[
            "model.layers.0.self_attn.q_proj",
            "q_proj",
            "model.layers.3.mlp.up_proj",
        ],
        &[
            "model.layers.0.self_attn.xq_proj",
            "model.layers.0.self_attn.q_proj.extra",
        ],
    );
}

#[test]
fn string_target_is_fullmatched() {
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": ".*layers\\.[13]\\.self_attn\\.(q|v)_proj"}"#,
        &[
            "model.layers.1.self_attn.q_proj",
            "model.layers.3.self_attn.v_proj",
        ],
        // fullmatch: a trailing segment breaks the match.
        &[
            "model.layers.2.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj.base_layer",
        ],
    );
}

#[test]
fn layers_to_transform_takes_the_first_index() {
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [1]}"#,
        &["model.layers.1.self_attn.q_proj"],
        &["model.layers.2.self_attn.q_proj"],
    );
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": 2, "layers_pattern": "layers"}"#,
        &["model.language_model.layers.2.self_attn.q_proj"],
        &["model.language_model.layers.1.self_attn.q_proj"],
    );
}

#[test]
fn exclude_modules_and_all_linear() {
    // all-linear is the checkpoint's linear names (here q_proj and v_proj), as a list.
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": "all-linear", "exclude_modules": ["layers.0.self_attn.v_proj"]}"#,
        &[
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj",
        ],
        &[
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.mlp.up_proj",
        ],
    );
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": ["q_proj"], "exclude_modules": ".*vision_tower.*"}"#,
        &["model.language_model.layers.0.self_attn.q_proj"],
        &["model.vision_tower.encoder.layers.0.self_attn.q_proj"],
    );
}

#[test]
fn default_layer_index_is_the_first_numbered_segment() {
    check_selects(
        r#"{"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [1]}"#,
        &["model.vision_tower.encoder.layers.1.self_attn.q_proj"],
        // No numbered segment: peft leaves the module out.
        &[
            "model.vision_tower.encoder.layers.0.self_attn.q_proj",
            "q_proj.sub.q_proj",
        ],
    );
}

#[test]
fn first_pattern_in_file_order_wins() {
    // Sorted, "q_proj" would come before "self_attn.q_proj"; the file lists the other one first.
    let c = config(
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
            "rank_pattern": {"self_attn.q_proj": 2, "q_proj": 6}, "alpha_pattern": {"layers.1.self_attn.q_proj": 3}}"#,
    )
    .unwrap();
    assert_eq!(c.rank_alpha("model.layers.1.self_attn.q_proj"), (2, 3.0));
    assert_eq!(c.rank_alpha("model.layers.0.self_attn.q_proj"), (2, 8.0));
    assert_eq!(c.rank_alpha("model.layers.0.self_attn.v_proj"), (4, 8.0));
    // `(.*\.)?(key)$`: a key must end at a dot boundary at its start.
    assert_eq!(c.rank_alpha("model.layers.0.self_attn.xq_proj"), (4, 8.0));
    assert_eq!(c.scaling(4, 8.0), 2.0);
}

#[test]
fn rslora_divides_by_the_root() {
    let c = config(r#"{"peft_type": "LORA", "r": 16, "lora_alpha": 8, "use_rslora": true, "target_modules": ["q_proj"]}"#)
        .unwrap();
    assert_eq!(c.scaling(16, 8.0), 2.0);
}

#[test]
fn refusals_name_the_feature() {
    let cases = [
        (r#""peft_type": "IA3""#, "peft_type \"IA3\""),
        (r#""use_dora": true"#, "DoRA"),
        (r#""modules_to_save": ["lm_head"]"#, "modules_to_save"),
        (r#""lora_bias": true"#, "lora_bias"),
        (
            r#""target_parameters": ["experts.w1"]"#,
            "target_parameters",
        ),
        (
            r#""trainable_token_indices": [5]"#,
            "trainable_token_indices",
        ),
        (r#""layer_replication": [[0, 2]]"#, "layer_replication"),
        (r#""bias": "all""#, "bias"),
        (r#""target_modules": "(?=q)q_proj""#, "not supported"),
        (r#""target_modules": "(q)_proj\\1""#, "not supported"),
        (r#""target_modules": ".*q_proj\\Z""#, "not supported"),
        (r#""rank_pattern": {"q_proj{": 2}"#, "not supported"),
    ];
    for (field, fragment) in cases {
        let json = format!(r#"{{"peft_type": "LORA", "target_modules": ["q_proj"], {field}}}"#);
        let err = config(&json).unwrap_err().to_string();
        assert!(err.contains(fragment), "{field}: {err}");
    }
}
