//! llama.cpp's tensor names → Hugging Face names, per architecture (gguf-py's `tensor_mapping.py` read backwards).
//!
//! | GGUF (`blk.N.` per layer) | gemma                      | gemma2 / gemma3              |
//! |---------------------------|----------------------------|------------------------------|
//! | `token_embd`              | `embed_tokens`             | same                         |
//! | `output_norm`             | `norm`                     | same                         |
//! | `output`                  | `lm_head` (untied head)    | same                         |
//! | `attn_norm`               | `input_layernorm`          | same                         |
//! | `attn_q/k/v/output`       | `self_attn.{q,k,v,o}_proj` | same                         |
//! | `attn_q_norm/attn_k_norm` | —                          | gemma3: `self_attn.{q,k}_norm` |
//! | `post_attention_norm`     | —                          | `post_attention_layernorm`   |
//! | `ffn_norm`                | `post_attention_layernorm` (the pre-MLP norm) | `pre_feedforward_layernorm` |
//! | `post_ffw_norm`           | —                          | `post_feedforward_layernorm` |
//! | `ffn_gate/up/down`        | `mlp.{gate,up,down}_proj`  | same                         |
//!
//! llama.cpp's converter adds 1 to every tensor whose Hugging Face name ends in `norm.weight` for all three
//! architectures (`GemmaModel`, `Gemma2Model`, `Gemma3Model.modify_tensors`), so all of those are read with an
//! offset of −1. It permutes no Q/K rows for Gemma, so the bytes are already in Hugging Face's row-major order;
//! only the dimension order differs (GGUF lists the fastest dimension first).

use super::Arch;
use crate::names::{self, suffix, PREFIX_CAUSAL};

/// What a GGUF tensor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The Hugging Face name.
    pub name: String,
    /// Stored by the converter as `1 + w`: read with an offset of −1.
    pub norm: bool,
}

/// Maps one GGUF tensor name, or says why it is not one of the architecture's text-decoder tensors.
pub fn to_hf(arch: Arch, name: &str, block_count: usize) -> Result<Mapped, String> {
    let p = PREFIX_CAUSAL;
    let plain = |name: String| Ok(Mapped { name, norm: false });
    let norm = |name: String| Ok(Mapped { name, norm: true });
    match name {
        "token_embd.weight" => return plain(names::embed_tokens(p)),
        "output_norm.weight" => return norm(names::final_norm(p)),
        "output.weight" => return plain(names::lm_head(p)),
        _ => {}
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return Err(expected_names(arch));
    };
    let Some((index, part)) = rest.split_once('.') else {
        return Err(expected_names(arch));
    };
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected_names(arch));
    }
    let index: usize = match index.parse() {
        Ok(i) if i < block_count => i,
        _ => {
            return Err(format!(
                "layer {index} is beyond {arch}.block_count = {block_count}",
                arch = arch.name()
            ))
        }
    };
    let sandwich = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
    let (suffix, is_norm) = match part {
        "attn_norm.weight" => (suffix::INPUT_LAYERNORM, true),
        "attn_q.weight" => (suffix::Q_PROJ, false),
        "attn_k.weight" => (suffix::K_PROJ, false),
        "attn_v.weight" => (suffix::V_PROJ, false),
        "attn_output.weight" => (suffix::O_PROJ, false),
        "attn_q_norm.weight" if arch == Arch::Gemma3 => (suffix::Q_NORM, true),
        "attn_k_norm.weight" if arch == Arch::Gemma3 => (suffix::K_NORM, true),
        "ffn_norm.weight" if sandwich => (suffix::PRE_FEEDFORWARD_LAYERNORM, true),
        "ffn_norm.weight" => (suffix::POST_ATTENTION_LAYERNORM, true),
        "post_attention_norm.weight" if sandwich => (suffix::POST_ATTENTION_LAYERNORM, true),
        "post_ffw_norm.weight" if sandwich => (suffix::POST_FEEDFORWARD_LAYERNORM, true),
        "ffn_gate.weight" => (suffix::GATE_PROJ, false),
        "ffn_up.weight" => (suffix::UP_PROJ, false),
        "ffn_down.weight" => (suffix::DOWN_PROJ, false),
        _ => return Err(expected_names(arch)),
    };
    Ok(Mapped {
        name: names::layer(p, index, suffix),
        norm: is_norm,
    })
}

/// The message for a name that is not one of `arch`'s.
fn expected_names(arch: Arch) -> String {
    let layer = match arch {
        Arch::Gemma => "attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down",
        Arch::Gemma2 => {
            "attn_norm, attn_q, attn_k, attn_v, attn_output, post_attention_norm, ffn_norm, ffn_gate, ffn_up, \
             ffn_down, post_ffw_norm"
        }
        Arch::Gemma3 => {
            "attn_norm, attn_q, attn_k, attn_v, attn_output, attn_q_norm, attn_k_norm, post_attention_norm, \
             ffn_norm, ffn_gate, ffn_up, ffn_down, post_ffw_norm"
        }
    };
    format!("expected token_embd, output_norm, output or blk.N.{{{layer}}} (each with .weight)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_norm_is_the_pre_mlp_norm_of_each_generation() {
        let m = to_hf(Arch::Gemma, "blk.3.ffn_norm.weight", 4).unwrap();
        assert_eq!(m.name, "model.layers.3.post_attention_layernorm.weight");
        assert!(m.norm);
        let m = to_hf(Arch::Gemma2, "blk.3.ffn_norm.weight", 4).unwrap();
        assert_eq!(m.name, "model.layers.3.pre_feedforward_layernorm.weight");
        let m = to_hf(Arch::Gemma3, "blk.0.post_attention_norm.weight", 4).unwrap();
        assert_eq!(m.name, "model.layers.0.post_attention_layernorm.weight");
        let m = to_hf(Arch::Gemma3, "blk.0.attn_q.weight", 4).unwrap();
        assert_eq!(
            (m.name.as_str(), m.norm),
            ("model.layers.0.self_attn.q_proj.weight", false)
        );
        let m = to_hf(Arch::Gemma3, "output_norm.weight", 4).unwrap();
        assert_eq!((m.name.as_str(), m.norm), ("model.norm.weight", true));
    }

    #[test]
    fn names_of_other_generations_and_layers_past_the_end_are_refused() {
        assert!(to_hf(Arch::Gemma2, "blk.0.attn_q_norm.weight", 4).is_err());
        assert!(to_hf(Arch::Gemma, "blk.0.post_ffw_norm.weight", 4).is_err());
        let e = to_hf(Arch::Gemma3, "blk.4.attn_q.weight", 4).unwrap_err();
        assert!(e.contains("block_count = 4"), "{e}");
        assert!(to_hf(Arch::Gemma3, "blk.+1.attn_q.weight", 4).is_err());
        assert!(to_hf(Arch::Gemma3, "rope_freqs.weight", 4).is_err());
    }
}
