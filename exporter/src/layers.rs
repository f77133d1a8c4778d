//! The building blocks of a Gemma decoder as ONNX subgraphs: RMSNorm, linear layers, the embedding, the GeGLU MLP,
//! soft-caps and (in [`head`]) the lm_head. They are the exact maths of transformers' Gemma decoder (fp32 eager) in
//! float32; the attention blocks are in [`crate::attention`] (portable) and [`crate::decoder::cpu`].
//!
//! [`Kernels`] chooses how a block is expressed: how linear layers store their weights (fp32, fp16/bf16, or
//! block-quantized for `MatMulNBits`) and how a plain RMSNorm is written. The decoder's layer wiring is written once,
//! in [`crate::decoder`]; a [`crate::decoder::Backend`] chooses the attention and the residual/norm fusion, and these
//! blocks honour the kernels whatever the backend.

use crate::builder::{Attr, GraphBuilder, Value};
use crate::onnx::DataType;
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::names::{self, suffix};
use gemma_models::Checkpoint;

pub mod head;

/// `torch.finfo(torch.float32).min`: what eager attention adds at masked positions.
pub const MASK_MIN: f32 = f32::MIN;

/// The name of `gate_proj` and `up_proj` stacked into one quantized weight (no checkpoint has it; see
/// [`Ctx::linears`]).
pub const GATE_UP_PROJ: &str = "mlp.gate_up_proj.weight";

/// How linear layers (and the embedding table they share with the lm_head) are expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearKind {
    /// `Gemm(x[N, in], W[out, in], transB=1)`: the checkpoint layout as is, float32.
    GemmF32,
    /// The same Gemm on weights stored as fp16 or bf16 and cast to float32 in the graph (see [`crate::half`]).
    GemmHalf(crate::half::HalfType),
    /// ONNX Runtime's `MatMulNBits` on block-quantized weights; the embedding via `GatherBlockQuantized` on the
    /// same bytes (see [`crate::quant`]).
    MatMulNBits(crate::quant::QuantConfig),
}

/// How RMSNorm is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x * 1/sqrt(mean(x²) + eps) * (1 + w)` from elementary ops, float32.
    Decomposed,
    /// ONNX's `RMSNormalization` (opset 23, fp32 statistics) with the folded fp32 `(1 + w)` gain: one kernel in
    /// ONNX Runtime (the one its `SimplifiedLayerNormalization` runs).
    Fused,
}

/// The implementation choices of one graph (a decoder's come from the caller's precision and its backend's
/// [`norm_kind`](crate::decoder::Backend::norm_kind)).
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub linear: LinearKind,
    pub norm: NormKind,
}

impl Kernels {
    /// Standard ONNX ops only, float32 everywhere: the reference export.
    pub const PORTABLE: Kernels = Kernels {
        linear: LinearKind::GemmF32,
        norm: NormKind::Decomposed,
    };
}

/// Everything a block needs to emit nodes and weights.
pub struct Ctx<'a> {
    pub g: &'a mut GraphBuilder,
    pub w: &'a mut WeightWriter,
    pub ckpt: &'a Checkpoint,
    pub kernels: Kernels,
}

/// The weights of one layer's GeGLU MLP.
pub struct MlpWeights {
    pub gate: String,
    pub up: String,
    pub down: String,
    /// `gate` and `up` stacked, when the linears stack them ([`GATE_UP_PROJ`]).
    pub gate_up: String,
}

impl MlpWeights {
    /// Layer `l`'s MLP weights under text prefix `prefix`.
    pub fn of_layer(prefix: &str, l: usize) -> MlpWeights {
        let n = |s: &str| names::layer(prefix, l, s);
        MlpWeights {
            gate: n(suffix::GATE_PROJ),
            up: n(suffix::UP_PROJ),
            down: n(suffix::DOWN_PROJ),
            gate_up: n(GATE_UP_PROJ),
        }
    }
}

impl Ctx<'_> {
    /// The `(1 + w)` gain of norm weight `weight_name` as a float32 initializer `{weight_name}_plus_one`, written on
    /// first use (semantics §1.2).
    pub fn norm_gain(&mut self, weight_name: &str) -> Result<Value, ExportError> {
        let name = format!("{weight_name}_plus_one");
        if let Some(v) = self.g.existing(&name) {
            return Ok(v);
        }
        let view = self.ckpt.tensor(weight_name)?;
        let gain = self
            .w
            .f32_from_checkpoint(self.ckpt, &name, &view, Some(&|v| 1.0 + v))?;
        Ok(self.g.initializer(gain))
    }

    /// Gemma's RMSNorm over the last axis with gain `(1 + w)` folded into a float32 constant.
    pub fn rms_norm(
        &mut self,
        x: &Value,
        weight_name: &str,
        eps: f64,
    ) -> Result<Value, ExportError> {
        let gain = self.norm_gain(weight_name)?;
        let g = &mut *self.g;
        Ok(match self.kernels.norm {
            NormKind::Decomposed => {
                let sq = g.op("Mul", "norm/sq", &[x, x], &[]);
                let axes = g.const_i64("axes_last", &[-1]);
                let mean = g.op(
                    "ReduceMean",
                    "norm/mean",
                    &[&sq, &axes],
                    &[("keepdims", Attr::Int(1))],
                );
                let eps = g.scalar_f32("rms_eps", eps as f32);
                let var = g.op("Add", "norm/add_eps", &[&mean, &eps], &[]);
                let std = g.op("Sqrt", "norm/sqrt", &[&var], &[]);
                let inv = g.op("Reciprocal", "norm/rsqrt", &[&std], &[]);
                let y = g.op("Mul", "norm/scale", &[x, &inv], &[]);
                g.op("Mul", "norm/gain", &[&y, &gain], &[])
            }
            NormKind::Fused => g.rms_normalization("norm", x, &gain, eps as f32),
        })
    }

    /// `x · Wᵀ` for a checkpoint weight `[out, in]`; `x` is `[N, in]`.
    pub fn linear(&mut self, x: &Value, weight_name: &str) -> Result<Value, ExportError> {
        if let LinearKind::MatMulNBits(cfg) = self.kernels.linear {
            return self.linear_nbits(x, weight_name, &cfg, false);
        }
        let w = self.weight_f32(weight_name)?;
        Ok(gemm_t(self.g, x, &w))
    }

    /// `x · Wᵢᵀ` for several weights that read the same input (q/k/v, gate/up), one output each. With quantized
    /// linears whose schemes agree they are stacked into one `MatMulNBits` named `fused_name`; otherwise each is
    /// its own [`linear`](Self::linear).
    pub fn linears(
        &mut self,
        x: &Value,
        weight_names: &[&str],
        fused_name: &str,
    ) -> Result<Vec<Value>, ExportError> {
        if let LinearKind::MatMulNBits(cfg) = self.kernels.linear {
            let first = cfg.scheme(weight_names[0]).block_size(cfg.block_size);
            let same = weight_names.iter().all(|n| {
                cfg.scheme(n) == cfg.scheme(weight_names[0])
                    && cfg.scheme(n).block_size(cfg.block_size) == first
            });
            if same && weight_names.len() > 1 {
                return self.linear_nbits_stacked(x, weight_names, fused_name, &cfg);
            }
        }
        weight_names.iter().map(|n| self.linear(x, n)).collect()
    }

    /// Rows `ids` (int64, any shape `[..]`) of the embedding table `weight_name` `[V, H]` as float32 `[.., H]`,
    /// unscaled. The table is stored once even when the lm_head (tied) multiplies by it too. A 16-bit table is
    /// gathered first and only the rows are cast, so the runtime never materialises a float32 copy of it.
    pub fn embedding(&mut self, ids: &Value, weight_name: &str) -> Result<Value, ExportError> {
        if let LinearKind::MatMulNBits(cfg) = self.kernels.linear {
            return self.embedding_nbits(ids, weight_name, &cfg);
        }
        let table = self.weight_stored(weight_name)?;
        let rows = self.g.gather("gather", &table, ids, 0);
        Ok(self.float32_of(&rows, "gather/to_f32"))
    }

    /// A value in the linears' storage type as float32: a Cast for fp16/bf16 storage, else the value itself.
    fn float32_of(&mut self, x: &Value, label: &str) -> Value {
        match self.kernels.linear {
            LinearKind::GemmHalf(_) => self.g.cast(label, x, DataType::Float),
            _ => x.clone(),
        }
    }

    /// A checkpoint weight as a float32 value of this graph: the initializer itself (fp32 storage) or one shared
    /// Cast of its 16-bit initializer, created on first use.
    fn weight_f32(&mut self, weight_name: &str) -> Result<Value, ExportError> {
        let memo = format!("f32:{weight_name}");
        if let Some(v) = self.g.memo(&memo) {
            return Ok(v);
        }
        let stored = self.weight_stored(weight_name)?;
        let v = self.float32_of(&stored, "to_f32");
        self.g.set_memo(&memo, v.clone());
        Ok(v)
    }

    /// The initializer of a checkpoint weight in its stored type (float32, or fp16/bf16 for
    /// [`LinearKind::GemmHalf`]), written and added to this graph on first use.
    fn weight_stored(&mut self, weight_name: &str) -> Result<Value, ExportError> {
        if let Some(v) = self.g.existing(weight_name) {
            return Ok(v);
        }
        let t = self.stored_tensor(weight_name)?;
        Ok(self.g.initializer(t))
    }

    /// The written initializer of a checkpoint weight in its stored type (written on first use).
    fn stored_tensor(
        &mut self,
        weight_name: &str,
    ) -> Result<crate::onnx::TensorProto, ExportError> {
        let view = self.ckpt.tensor(weight_name)?;
        match self.kernels.linear {
            LinearKind::GemmHalf(ty) => {
                crate::half::half_from_checkpoint(self.w, self.ckpt, weight_name, &view, ty)
            }
            _ => self
                .w
                .f32_from_checkpoint(self.ckpt, weight_name, &view, None),
        }
    }

    /// `rotate_half` RoPE (semantics §1.3): `x·cos + rotate_half(x)·sin` on `[B, heads, S, hd]` with `cos`/`sin`
    /// `[B, 1, S, hd]`.
    pub fn rope(&mut self, x: &Value, cos: &Value, sin: &Value) -> Value {
        let g = &mut *self.g;
        let halves = g.split("rope/split", x, None, -1, 2);
        let neg = g.op("Neg", "rope/neg", &[&halves[1]], &[]);
        let rot = g.concat("rope/rotate_half", &[&neg, &halves[0]], -1);
        let a = g.op("Mul", "rope/cos", &[x, cos], &[]);
        let b = g.op("Mul", "rope/sin", &[&rot, sin], &[]);
        g.op("Add", "rope/add", &[&a, &b], &[])
    }

    /// `down(gelu_tanh(gate(x)) * up(x))` (semantics §1.5).
    pub fn geglu_mlp(&mut self, x: &Value, w: &MlpWeights) -> Result<Value, ExportError> {
        let [gate, up]: [Value; 2] = self
            .linears(x, &[&w.gate, &w.up], &w.gate_up)?
            .try_into()
            .expect("two outputs");
        let act = self.g.op(
            "Gelu",
            "mlp/gelu",
            &[&gate],
            &[("approximate", Attr::Str("tanh".into()))],
        );
        let prod = self.g.op("Mul", "mlp/mul", &[&act, &up], &[]);
        self.linear(&prod, &w.down)
    }

    /// `x [.., H]` as the `[N, H]` rows the linear layers take.
    pub fn flatten_rows(&mut self, x: &Value, hidden: usize) -> Value {
        let flat_h = self.g.const_i64("flat_hidden", &[-1, hidden as i64]);
        self.g.reshape("flatten", x, &flat_h)
    }

    /// The scaled embedding of `ids` `[..]` (semantics §1.1: `E[ids] · fp32(sqrt(H))`), `[.., H]`.
    pub fn scaled_embedding(
        &mut self,
        ids: &Value,
        weight_name: &str,
        hidden: usize,
    ) -> Result<Value, ExportError> {
        let emb = self.embedding(ids, weight_name)?;
        let scale = self
            .g
            .scalar_f32("embed_scale", (hidden as f64).sqrt() as f32);
        Ok(self.g.op("Mul", "scale", &[&emb, &scale], &[]))
    }

    /// `c · tanh(x / c)`.
    pub fn softcap(&mut self, x: &Value, cap: f64) -> Value {
        let g = &mut *self.g;
        let c = g.scalar_f32("softcap", cap as f32);
        let d = g.op("Div", "softcap/div", &[x, &c], &[]);
        let t = g.op("Tanh", "softcap/tanh", &[&d], &[]);
        g.op("Mul", "softcap/mul", &[&t, &c], &[])
    }
}

/// `Gemm(x, w, transB = 1)`: `x · wᵀ` for a weight in the checkpoint's `[out, in]` layout.
fn gemm_t(g: &mut GraphBuilder, x: &Value, w: &Value) -> Value {
    g.op("Gemm", "linear", &[x, w], &[("transB", Attr::Int(1))])
}

/// `inv_freq[k] = 1 / theta^(2k / hd)` in float32 as torch computes it, divided by the linear factor if any.
pub fn inv_freq(theta: f64, factor: Option<f64>, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|k| {
            let exponent = (2 * k) as f32 / head_dim as f32;
            let v = 1.0f32 / (theta as f32).powf(exponent);
            match factor {
                Some(f) => v / f as f32,
                None => v,
            }
        })
        .collect()
}
