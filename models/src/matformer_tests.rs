//! MatFormer spec parsing, plan checks, and slicing the tiny Gemma 3n fixture.

use std::path::Path;

use super::*;
use crate::config::ModelConfig;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/tiny/gemma3n-text-f32"
);

fn fixture() -> (Value, ModelConfig) {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("config.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let cfg = ModelConfig::from_json_str(&text, Path::new("config.json")).unwrap();
    (json, cfg)
}

#[test]
fn presets_are_the_labs_e4b_slices() {
    let e2b = Spec::parse("E2B").unwrap();
    assert_eq!(e2b.skip, [20, 21, 22, 23, 24]);
    assert_eq!(e2b.ffn, Ffn::PerLayer(vec![8192; 30]));
    let mut w = vec![8192; 30];
    w[4] = 16_384;
    assert_eq!(Spec::parse("e1.96b").unwrap().ffn, Ffn::PerLayer(w));
    let e254 = Spec::parse("E2.54B").unwrap();
    assert!(e254.skip.is_empty());
    let Ffn::PerLayer(w) = e254.ffn else { panic!() };
    let wide: Vec<usize> = (0..35).filter(|&i| w[i] == 16_384).collect();
    assert_eq!(wide, [4, 20, 21, 22, 23, 24]);
    assert!(matches!(
        Spec::parse("E3B"),
        Err(MatformerError::UnknownPreset(_))
    ));
}

#[test]
fn explicit_specs() {
    let s = Spec::parse("skip=20-24,ffn=8192").unwrap();
    assert_eq!((s.skip, s.ffn), ((20..25).collect(), Ffn::All(8192)));
    let s = Spec::parse("skip=7,3,5-6,ffn=8*2,16:4").unwrap();
    assert_eq!(
        (s.skip, s.ffn),
        (vec![3, 5, 6, 7], Ffn::PerLayer(vec![8, 8, 16, 4]))
    );
    assert_eq!(Spec::parse("skip=1").unwrap().ffn, Ffn::Keep);
    for bad in [
        "skip=a",
        "ffn=0",
        "skip=4-2",
        "size=3",
        "skip=1,skip=2",
        "ffn=",
    ] {
        assert!(
            matches!(Spec::parse(bad), Err(MatformerError::Syntax(_))),
            "{bad}"
        );
    }
}

#[test]
fn plans_check_layers_sharing_and_widths() {
    let (_, cfg) = fixture();
    // The fixture: 6 layers, the last 2 share the keys and values of layers 3 and 2; widths 96 96 128 128 96 64.
    let plan = |s: &str| Plan::new(&Spec::parse(s).unwrap(), &cfg.text);
    let p = plan("skip=1,ffn=64").unwrap();
    assert_eq!(
        (p.kept.clone(), p.ffn.clone(), p.kv_shared_layers),
        (vec![0, 2, 3, 4, 5], vec![64; 5], 2)
    );
    assert_eq!(p.label, "skip=1,ffn=64*5");
    assert_eq!(plan("skip=5").unwrap().kv_shared_layers, 1);
    assert_eq!(
        plan("skip=3"),
        Err(MatformerError::KvSource {
            layer: 3,
            shared: 4
        })
    );
    assert_eq!(plan("skip=4,3").unwrap().kept, [0, 1, 2, 5]);
    assert_eq!(
        plan("skip=6"),
        Err(MatformerError::LayerOutOfRange { layer: 6, last: 5 })
    );
    assert_eq!(plan("skip=0-5"), Err(MatformerError::NothingLeft));
    assert_eq!(
        plan("ffn=96"),
        Err(MatformerError::FfnTooLarge {
            size: 96,
            layer: 5,
            original: 5,
            max: 64
        })
    );
    assert_eq!(
        plan("skip=0,ffn=8,8"),
        Err(MatformerError::FfnCount { given: 2, kept: 5 })
    );
    assert!(matches!(
        plan("E2B"),
        Err(MatformerError::PresetNeedsE4B { layers: 6, .. })
    ));
}

#[test]
fn sliced_checkpoint_reads_as_the_sliced_config() {
    let (json, cfg) = fixture();
    let p = Plan::new(
        &Spec::parse("skip=1,ffn=64,32,64,48,64").unwrap(),
        &cfg.text,
    )
    .unwrap();
    let sliced_json = p.slice_config(&json, &cfg.text);
    let sliced = ModelConfig::from_json_str(&sliced_json.to_string(), Path::new("c")).unwrap();
    let g = sliced.text.gemma3n.as_ref().unwrap();
    assert_eq!(sliced.text.num_hidden_layers, 5);
    assert_eq!(g.intermediate_sizes, [64, 32, 64, 48, 64]);
    assert_eq!(g.activation_sparsity, [0.95, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(g.num_kv_shared_layers, 2);
    let kept_types: Vec<_> = p.kept.iter().map(|&l| cfg.text.layer_types[l]).collect();
    assert_eq!(sliced.text.layer_types, kept_types);

    let original = crate::Checkpoint::open(Path::new(FIXTURE)).unwrap();
    let mut ckpt = crate::Checkpoint::open(Path::new(FIXTURE)).unwrap();
    p.apply(&mut ckpt, &cfg.text, &cfg.text_prefix).unwrap();
    let want = names::gemma3n::text_tensors(&sliced.text, &sliced.text_prefix);
    for (name, shape) in &want {
        ckpt.tensor_with_shape(name, shape).unwrap();
    }
    names::check_layer_tensors(&sliced, &ckpt).unwrap();
    // New layer 1 is old layer 2; its down_proj keeps the first 32 columns of each row.
    let pre = "model.";
    let down = ckpt
        .tensor(&names::layer(pre, 1, suffix::DOWN_PROJ))
        .unwrap()
        .to_f32_vec();
    let old = original
        .tensor(&names::layer(pre, 2, suffix::DOWN_PROJ))
        .unwrap();
    let (rows, cols) = (old.shape[0], old.shape[1]);
    let old = old.to_f32_vec();
    let want: Vec<f32> = (0..rows)
        .flat_map(|r| old[r * cols..r * cols + 32].to_vec())
        .collect();
    assert_eq!(down, want);
    // The per-layer table keeps the column blocks of layers 0, 2, 3, 4, 5 (P = 8).
    let table = ckpt.tensor(&n3::embed_tokens_per_layer(pre)).unwrap();
    let old = original.tensor(&n3::embed_tokens_per_layer(pre)).unwrap();
    let (v, w) = (old.shape[0], old.shape[1]);
    let (table, old) = (table.to_f32_vec(), old.to_f32_vec());
    let want: Vec<f32> = (0..v)
        .flat_map(|r| [&old[r * w..r * w + 8], &old[r * w + 16..r * w + w]].concat())
        .collect();
    assert_eq!(table, want);
}

/// Gemma 3n E4B's text config (its fields that have no class default, and those slicing changes).
fn e4b() -> (Value, ModelConfig) {
    let types: Vec<&str> = (0..35)
        .map(|i| {
            if i % 5 == 4 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    let mut sparsity = vec![0.95; 10];
    sparsity.extend([0.0; 25]);
    let json = serde_json::json!({
        "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text",
        "num_hidden_layers": 35, "intermediate_size": vec![16_384; 35], "layer_types": types,
        "num_kv_shared_layers": 15, "activation_sparsity_pattern": sparsity,
        "hidden_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
        "vocab_size": 262_400, "vocab_size_per_layer_input": 262_144, "hidden_size_per_layer_input": 256,
        "sliding_window": 512, "max_position_embeddings": 32_768, "rms_norm_eps": 1e-6,
    });
    let cfg = ModelConfig::from_json_str(&json.to_string(), Path::new("e4b")).unwrap();
    (json, cfg)
}

#[test]
fn e2b_preset_gives_the_released_e2b_config() {
    let (json, cfg) = e4b();
    let plan = Plan::new(&Spec::parse("E2B").unwrap(), &cfg.text).unwrap();
    let sliced = plan.slice_config(&json, &cfg.text);
    let e2b = ModelConfig::from_json_str(&sliced.to_string(), Path::new("e2b")).unwrap();
    let g = e2b.text.gemma3n.as_ref().unwrap();
    // google/gemma-3n-E2B's text config: 30 layers of width 8192, the same 4-sliding-1-full period, the last 10
    // sharing, sparsity on the first 10.
    assert_eq!(e2b.text.num_hidden_layers, 30);
    assert_eq!(g.intermediate_sizes, vec![8192; 30]);
    assert_eq!(g.num_kv_shared_layers, 10);
    assert_eq!(e2b.text.layer_types, cfg.text.layer_types[..30]);
    let mut sparsity = vec![0.95; 10];
    sparsity.extend([0.0; 20]);
    assert_eq!(g.activation_sparsity, sparsity);
    // Layers 25..35 (new 20..30) reuse layers 18 and 19, now as before.
    assert_eq!(plan.kept[18..20], [18, 19]);
    let sources: Vec<usize> = (20..30)
        .map(|l| g.kv_source(&e2b.text.layer_types, l))
        .collect();
    assert_eq!(sources, [18, 18, 18, 18, 19, 18, 18, 18, 18, 19]);
    assert_eq!(plan.label, "E2B");
    // The Lab's reserved layers.
    for reserved in [18, 19] {
        let spec = Spec::parse(&format!("skip={reserved},ffn=8192")).unwrap();
        assert!(
            matches!(Plan::new(&spec, &cfg.text), Err(MatformerError::KvSource { layer, .. }) if layer == reserved)
        );
    }
    let p254 = Plan::new(&Spec::parse("E2.54B").unwrap(), &cfg.text).unwrap();
    assert_eq!((p254.kept.len(), p254.kv_shared_layers), (35, 15));
}
