//! Which input columns of a weight matter most, estimated from the checkpoint alone (no calibration data).
//!
//! The rounding error of `W[:, k]` reaches the output multiplied by the activation `a_k`, so a block's codes should
//! minimise `Σ E[a_k²] (w_k − ŵ_k)²`, not the plain squared error (llama.cpp's importance matrix and AWQ use
//! measured `E[a_k²]`). Gemma's activations are very uneven across channels, and most of that unevenness is written in
//! the weights: every projection reads an RMS-normalised vector times the norm's gain `1 + g_k`, and those gains
//! range over three orders of magnitude (Gemma 3 270M: 0.2 to 301 in the final norm). Assuming the normalised
//! vector has unit variance per channel and the channels are independent, the second moments follow:
//!
//! - q/k/v read `input_layernorm`: `E[a_k²] = (1 + g_k)²`;
//! - gate/up read the pre-MLP norm (`pre_feedforward_layernorm`, or Gemma 1's `post_attention_layernorm`): same;
//! - the lm_head reads the final norm: same (the tied embedding table is weighted for this use, its larger one);
//! - o_proj reads the attention output, a convex mix of value vectors: `E[a_c²] ≈ E[v_c²] = Σ_j W_v[c, j]² (1 + g_j)²`
//!   for the value channel `c` its head reads;
//! - down_proj reads `gelu(gate_i) · up_i` with `gate_i ~ N(0, σ_g²)`, `up_i ~ N(0, σ_u²)` from the same formula:
//!   `E[a_i²] = E[gelu(z)²] σ_u²`, `z ~ N(0, σ_g²)`.
//!
//! The searches weigh column `k` by `E[a_k²]^½` (`--quant-spec imp=gains`; off by default). On the real Gemma 3
//! 270M it helped some tensor classes and hurt others, and all layers at 4 bits together got worse
//! (docs/benchmarks.md, "Column importance"). The assumption of unit-variance normalised inputs is the weak point:
//! Gemma's residual stream has outlier channels whose normalised values are large exactly where the gains are
//! small. Measured activations (a calibration pass) would be needed to make this reliable.

use crate::ExportError;
use gemma_models::{names, Checkpoint, ModelConfig};

/// The estimated activation RMS `E[a_k²]^½` per input column of `weight_name` (`[K]`), or `None` for a tensor
/// without an estimate (the embedding).
pub fn column_importance(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    weight_name: &str,
) -> Result<Option<Vec<f32>>, ExportError> {
    let t = &cfg.text;
    let p = cfg.text_prefix.as_str();
    let gain2 = |name: &str| -> Result<Vec<f32>, ExportError> {
        let v = ckpt.tensor(name)?.to_f32_vec();
        Ok(v.iter().map(|&g| gain_square(g)).collect())
    };
    use super::Role;
    let role = Role::of(weight_name);
    if role == Role::Embedding {
        // The table is also the embedding lookup, whose error reaches the residual stream unweighted; weighting it
        // by the final norm for the lm_head measured worse (docs/benchmarks.md).
        return Ok(None);
    }
    let Some(l) = layer_index(weight_name) else {
        return Ok(None);
    };
    let n = |s: &str| names::layer(p, l, s);
    let pre_mlp = if ckpt.contains(&n("pre_feedforward_layernorm.weight")) {
        n("pre_feedforward_layernorm.weight")
    } else {
        n("post_attention_layernorm.weight")
    };
    let v = match role {
        Role::QProj | Role::KProj | Role::VProj => gain2(&n("input_layernorm.weight"))?,
        Role::GateProj | Role::UpProj => gain2(&pre_mlp)?,
        Role::OProj => {
            let g = gain2(&n("input_layernorm.weight"))?;
            let var_v = row_variances(ckpt, &n("self_attn.v_proj.weight"), &g)?;
            let (hd, group) = (
                t.head_dim,
                t.num_attention_heads / t.num_key_value_heads.max(1),
            );
            (0..t.num_attention_heads * hd)
                .map(|c| var_v[(c / hd) / group.max(1) * hd + c % hd])
                .collect()
        }
        Role::DownProj => {
            let g = gain2(&pre_mlp)?;
            let var_gate = row_variances(ckpt, &n("mlp.gate_proj.weight"), &g)?;
            let var_up = row_variances(ckpt, &n("mlp.up_proj.weight"), &g)?;
            var_gate
                .iter()
                .zip(&var_up)
                .map(|(&sg, &su)| gelu_second_moment(sg) * su)
                .collect()
        }
        Role::Embedding => unreachable!(),
    };
    // The square root measured better than E[a²] itself (which over-weights the largest gains).
    Ok(Some(floor(
        v.into_iter().map(|x| x.max(0.0).sqrt()).collect(),
    )))
}

/// `(1 + g)²` for a norm gain `g`; a non-finite gain (only exported with `--allow-nonfinite`) or one whose square
/// overflows counts as neutral (1), so it cannot make the whole importance vector NaN or infinite.
fn gain_square(g: f32) -> f32 {
    let v = (1.0 + g) * (1.0 + g);
    if v.is_finite() {
        v
    } else {
        1.0
    }
}

/// `layers.{l}.` in a tensor name.
fn layer_index(name: &str) -> Option<usize> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    rest[..rest.find('.')?].parse().ok()
}

/// `Σ_j W[r, j]² c_j` for every row `r`: the variance of output `r` for independent inputs of variances `c`.
fn row_variances(ckpt: &Checkpoint, name: &str, c: &[f32]) -> Result<Vec<f32>, ExportError> {
    let view = ckpt.tensor(name)?;
    let k = c.len();
    let rows = view.numel() / k.max(1);
    let mut row = vec![0f32; k];
    let out = (0..rows)
        .map(|r| {
            view.read_f32(r * k, &mut row);
            row.iter()
                .zip(c)
                .map(|(w, c)| (w * w * c) as f64)
                .sum::<f64>() as f32
        })
        .collect();
    Ok(out)
}

/// `E[gelu(z)²]` for `z ~ N(0, var)` (tanh GELU), by the midpoint rule over ±8σ.
fn gelu_second_moment(var: f32) -> f32 {
    let s = (var as f64).sqrt();
    if s == 0.0 {
        return 0.0;
    }
    const N: usize = 256;
    let (lo, step) = (-8.0, 16.0 / N as f64);
    let mut acc = 0.0;
    for i in 0..N {
        let u = lo + (i as f64 + 0.5) * step;
        let z = u * s;
        let g = 0.5
            * z
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (z + 0.044715 * z * z * z)).tanh());
        acc += g * g * (-0.5 * u * u).exp();
    }
    (acc * step / (2.0 * std::f64::consts::PI).sqrt()) as f32
}

/// Keeps every column slightly important (a zero would let its weights go anywhere, and an all-zero block has no
/// least-squares solution): adds 1e-4 of the mean. A non-finite entry (from weights so large that their squares
/// overflow, or NaN weights exported with `--allow-nonfinite`) becomes the mean of the finite ones, so NaN never
/// reaches the rounding searches.
fn floor(mut v: Vec<f32>) -> Vec<f32> {
    let finite = v.iter().filter(|x| x.is_finite()).count();
    let mean = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x.max(0.0) as f64)
        .sum::<f64>()
        / finite.max(1) as f64;
    let mean = if mean.is_finite() && mean > 0.0 {
        mean
    } else {
        1.0
    };
    let eps = (mean * 1e-4) as f32;
    v.iter_mut().for_each(|x| {
        let base = if x.is_finite() {
            x.max(0.0)
        } else {
            mean as f32
        };
        *x = (base + eps).min(f32::MAX);
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_indices() {
        assert_eq!(layer_index("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(
            layer_index("model.language_model.layers.0.self_attn.o_proj.weight"),
            Some(0)
        );
        assert_eq!(layer_index("model.embed_tokens.weight"), None);
    }

    #[test]
    fn non_finite_gains_and_importances_are_neutralised() {
        assert_eq!(gain_square(f32::NAN), 1.0);
        assert_eq!(gain_square(f32::INFINITY), 1.0);
        assert_eq!(gain_square(f32::MAX), 1.0);
        assert_eq!(gain_square(1.0), 4.0);
        let v = floor(vec![1.0, f32::NAN, 3.0, f32::INFINITY]);
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{v:?}");
        // The non-finite entries take the mean of the finite ones (2), plus the floor.
        assert!((v[1] - 2.0002).abs() < 1e-4, "{v:?}");
        let v = floor(vec![f32::NAN; 4]);
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{v:?}");
    }

    #[test]
    fn gelu_moment_limits() {
        // Large σ: gelu(z) ≈ max(z, 0), so E[gelu²] → σ²/2.
        let v = gelu_second_moment(100.0);
        assert!((v / 50.0 - 1.0).abs() < 0.02, "{v}");
        // Small σ: gelu(z) ≈ z/2, so E[gelu²] → σ²/4.
        let v = gelu_second_moment(1e-4);
        assert!((v / 2.5e-5 - 1.0).abs() < 0.02, "{v}");
    }
}
