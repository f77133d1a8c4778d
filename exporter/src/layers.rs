//! The building blocks of a Gemma decoder as ONNX subgraphs: RMSNorm, linear layers, RoPE, masks, attention and
//! the GeGLU MLP. They are the exact maths of the reference semantics (transformers' Gemma decoder, fp32 eager) in float32.
//!
//! [`Kernels`] chooses how each block is expressed. The portable choice uses standard ONNX ops only (opset 21),
//! which every runtime and execution provider loads; faster variants (quantized MatMuls, fused ONNX Runtime
//! attention) plug in as other variants without touching the family graphs.

use crate::builder::{Attr, GraphBuilder, Value};
use crate::weights::WeightWriter;
use crate::ExportError;
use gemma_models::Checkpoint;

/// `torch.finfo(torch.float32).min`: what eager attention adds at masked positions.
pub const MASK_MIN: f32 = f32::MIN;

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

/// How attention is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// MatMul / Softmax / MatMul with an explicit additive mask; the KV cache is `Concat(past, new)`.
    Portable,
    /// ONNX Runtime's contrib `GroupQueryAttention` updating shared past/present KV buffers in place, with a
    /// window-sized cache on sliding layers. Only the CPU-optimized decoder graph uses it ([`crate::decoder_cpu`]).
    GroupQuery,
}

/// How RMSNorm is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x * 1/sqrt(mean(x²) + eps) * (1 + w)` from elementary ops, float32.
    Decomposed,
    /// ONNX Runtime's `SimplifiedLayerNormalization` (fp32 statistics) with the folded fp32 `(1 + w)` gain; the
    /// CPU graph also fuses residual adds into `SkipSimplifiedLayerNormalization` ([`crate::decoder_cpu`]).
    Fused,
}

/// The implementation choices of one export.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub linear: LinearKind,
    pub attention: AttentionKind,
    pub norm: NormKind,
}

impl Kernels {
    /// Standard ONNX ops only, float32 everywhere: the reference export.
    pub const PORTABLE: Kernels = Kernels {
        linear: LinearKind::GemmF32,
        attention: AttentionKind::Portable,
        norm: NormKind::Decomposed,
    };

    /// The CPU-optimized graph (`--graph cpu`): fused ONNX Runtime attention and norms, float32 linears.
    pub const CPU: Kernels = Kernels {
        linear: LinearKind::GemmF32,
        attention: AttentionKind::GroupQuery,
        norm: NormKind::Fused,
    };
}

/// Everything a block needs to emit nodes and weights.
pub struct Ctx<'a> {
    pub g: &'a mut GraphBuilder,
    pub w: &'a mut WeightWriter,
    pub ckpt: &'a Checkpoint,
    pub kernels: Kernels,
}

impl Ctx<'_> {
    /// Gemma's RMSNorm over the last axis with gain `(1 + w)` folded into a float32 constant.
    pub fn rms_norm(
        &mut self,
        x: &Value,
        weight_name: &str,
        eps: f64,
    ) -> Result<Value, ExportError> {
        let view = self.ckpt.tensor(weight_name)?;
        let gain = self.w.f32_from_checkpoint(
            self.ckpt,
            &format!("{weight_name}_plus_one"),
            &view,
            Some(&|v| 1.0 + v),
        )?;
        let gain = self.g.initializer(gain);
        match self.kernels.norm {
            NormKind::Decomposed => {
                let g = &mut *self.g;
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
                Ok(g.op("Mul", "norm/gain", &[&y, &gain], &[]))
            }
            NormKind::Fused => Ok(self.g.op(
                "SimplifiedLayerNormalization",
                "norm",
                &[x, &gain],
                &[
                    ("axis", Attr::Int(-1)),
                    ("epsilon", Attr::Float(eps as f32)),
                    ("stash_type", Attr::Int(1)),
                ],
            )),
        }
    }

    /// `x · Wᵀ` for a checkpoint weight `[out, in]`; `x` is `[N, in]`.
    pub fn linear(&mut self, x: &Value, weight_name: &str) -> Result<Value, ExportError> {
        if let LinearKind::MatMulNBits(cfg) = self.kernels.linear {
            return self.linear_nbits(x, weight_name, &cfg);
        }
        let w = self.weight_f32(weight_name)?;
        Ok(self
            .g
            .op("Gemm", "linear", &[x, &w], &[("transB", Attr::Int(1))]))
    }

    /// `Cast(x, to = float)`.
    fn cast_f32(&mut self, x: &Value, label: &str) -> Value {
        self.g.op(
            "Cast",
            label,
            &[x],
            &[("to", Attr::Int(crate::onnx::DataType::Float as i64))],
        )
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
        let rows = self.g.op(
            "Gather",
            "gather",
            &[&table, ids],
            &[("axis", Attr::Int(0))],
        );
        Ok(match self.kernels.linear {
            LinearKind::GemmHalf(_) => self.cast_f32(&rows, "gather/to_f32"),
            _ => rows,
        })
    }

    /// A checkpoint weight as a float32 value of this graph: the initializer itself (fp32 storage) or one shared
    /// Cast of its 16-bit initializer, created on first use.
    fn weight_f32(&mut self, weight_name: &str) -> Result<Value, ExportError> {
        let memo = format!("f32:{weight_name}");
        if let Some(v) = self.g.memo(&memo) {
            return Ok(v);
        }
        let stored = self.weight_stored(weight_name)?;
        let v = match self.kernels.linear {
            LinearKind::GemmHalf(_) => self.cast_f32(&stored, "to_f32"),
            _ => stored,
        };
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

    /// `x · Wᵀ` for the lm_head weight `[V, H]` as a few row blocks of at most [`HEAD_CHUNK_BYTES`] each, whose
    /// logits are concatenated.
    ///
    /// Each block is its own initializer over the table's bytes in the file. ONNX Runtime pre-packs a constant
    /// weight into a copy and then frees the original; with one initializer the whole table (the largest tensor of a
    /// small Gemma, 640 MiB in fp32 for 270M) is paged in next to its packed copy at load, with blocks only one block
    /// is. And when the head is tied, the embedding lookup keeps its own view of the table, which only ever pages in
    /// the rows it gathers: sharing one initializer would keep the whole table resident after loading, twice the
    /// table in memory.
    fn head_matmul(&mut self, x: &Value, weight_name: &str) -> Result<Value, ExportError> {
        if let LinearKind::MatMulNBits(cfg) = self.kernels.linear {
            return self.head_matmul_nbits(x, weight_name, &cfg);
        }
        let table = self.stored_tensor(weight_name)?;
        let rows = table.dims.first().copied().unwrap_or(0) as usize;
        let row_bytes = table.dims.iter().skip(1).product::<i64>() as usize
            * match self.kernels.linear {
                LinearKind::GemmHalf(_) => 2,
                _ => 4,
            };
        let mut parts = Vec::new();
        for (i, (start, n)) in head_chunks(rows, row_bytes).into_iter().enumerate() {
            let view =
                self.w
                    .row_view(&table, &format!("{weight_name}/lm_head_rows_{i}"), start, n);
            let stored = match self.g.existing(view.name.as_deref().unwrap_or_default()) {
                Some(v) => v,
                None => self.g.initializer(view),
            };
            let w = match self.kernels.linear {
                LinearKind::GemmHalf(_) => self.cast_f32(&stored, "to_f32"),
                _ => stored,
            };
            parts.push(
                self.g
                    .op("Gemm", "linear", &[x, &w], &[("transB", Attr::Int(1))]),
            );
        }
        Ok(concat_last(self.g, parts))
    }

    /// `rotate_half` RoPE: `x·cos + rotate_half(x)·sin` on `[B, heads, S, hd]` with `cos`/`sin` `[B, 1, S, hd]`.
    pub fn rope(&mut self, x: &Value, cos: &Value, sin: &Value) -> Value {
        let g = &mut *self.g;
        let halves = g.op_n(
            "Split",
            "rope/split",
            &[x],
            &[("axis", Attr::Int(-1)), ("num_outputs", Attr::Int(2))],
            2,
        );
        let neg = g.op("Neg", "rope/neg", &[&halves[1]], &[]);
        let rot = g.op(
            "Concat",
            "rope/rotate_half",
            &[&neg, &halves[0]],
            &[("axis", Attr::Int(-1))],
        );
        let a = g.op("Mul", "rope/cos", &[x, cos], &[]);
        let b = g.op("Mul", "rope/sin", &[&rot, sin], &[]);
        g.op("Add", "rope/add", &[&a, &b], &[])
    }

    /// `down(gelu_tanh(gate(x)) * up(x))`.
    pub fn geglu_mlp(
        &mut self,
        x: &Value,
        gate: &str,
        up: &str,
        down: &str,
    ) -> Result<Value, ExportError> {
        let fused = gate.replace("gate_proj", "gate_up_proj");
        let [gate, up]: [Value; 2] = self
            .linears(x, &[gate, up], &fused)?
            .try_into()
            .expect("two outputs");
        let act = self.g.op(
            "Gelu",
            "mlp/gelu",
            &[&gate],
            &[("approximate", Attr::Str("tanh".into()))],
        );
        let prod = self.g.op("Mul", "mlp/mul", &[&act, &up], &[]);
        self.linear(&prod, down)
    }

    /// Logits `[B, K, vocab]` from final-norm hidden states `x [B, K, H]`: the lm_head (the embedding matrix when
    /// tied, stored once) on the flattened rows, then the final soft-cap when the config has one.
    pub fn lm_head(
        &mut self,
        x: &Value,
        t: &gemma_models::TextConfig,
        prefix: &str,
    ) -> Result<Value, ExportError> {
        self.g.set_scope("/lm_head");
        let head = if t.tie_word_embeddings {
            gemma_models::names::embed_tokens(prefix)
        } else {
            gemma_models::names::lm_head(prefix)
        };
        let lead_shape = self
            .g
            .op("Shape", "lead_shape", &[x], &[("end", Attr::Int(2))]);
        let flat = self.flatten_rows(x, t.hidden_size);
        let mut logits = self.head_matmul(&flat, &head)?;
        if let Some(cap) = t.final_logit_softcapping {
            logits = self.softcap(&logits, cap);
        }
        let vocab = self.g.const_i64("vocab", &[t.vocab_size as i64]);
        let shape = self.g.op(
            "Concat",
            "logits_shape",
            &[&lead_shape, &vocab],
            &[("axis", Attr::Int(0))],
        );
        Ok(self.g.op("Reshape", "logits", &[&logits, &shape], &[]))
    }

    /// `x [.., H]` as the `[N, H]` rows the linear layers take.
    pub fn flatten_rows(&mut self, x: &Value, hidden: usize) -> Value {
        let flat_h = self.g.const_i64("flat_hidden", &[-1, hidden as i64]);
        self.g.op("Reshape", "flatten", &[x, &flat_h], &[])
    }

    /// The scaled embedding of `ids` `[..]` (spec §1.1: `E[ids] · fp32(sqrt(H))`), `[.., H]`.
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

/// RoPE cos/sin tables for one layer type, computed in the graph in float32 from `position_ids` exactly as
/// transformers does: `ang = float(pos) * inv_freq`, `emb = concat(ang, ang)`, then cos and sin; shaped
/// `[B, 1, S, hd]` to broadcast over heads.
pub fn rope_tables(
    g: &mut GraphBuilder,
    position_ids: &Value,
    label: &str,
    theta: f64,
    factor: Option<f64>,
    head_dim: usize,
) -> (Value, Value) {
    let inv_freq = inv_freq(theta, factor, head_dim);
    let inv = g.const_f32(
        &format!("/rope/{label}/inv_freq"),
        &[inv_freq.len() as i64],
        &inv_freq,
    );
    let pos = g.op(
        "Cast",
        &format!("rope_{label}/cast"),
        &[position_ids],
        &[("to", Attr::Int(crate::onnx::DataType::Float as i64))],
    );
    let axes = g.const_i64("axes_last", &[-1]);
    let pos = g.op(
        "Unsqueeze",
        &format!("rope_{label}/unsqueeze"),
        &[&pos, &axes],
        &[],
    );
    let ang = g.op("Mul", &format!("rope_{label}/freqs"), &[&pos, &inv], &[]);
    let emb = g.op(
        "Concat",
        &format!("rope_{label}/emb"),
        &[&ang, &ang],
        &[("axis", Attr::Int(-1))],
    );
    let axis1 = g.const_i64("axes_1", &[1]);
    let cos = g.op("Cos", &format!("rope_{label}/cos"), &[&emb], &[]);
    let sin = g.op("Sin", &format!("rope_{label}/sin"), &[&emb], &[]);
    let cos = g.op(
        "Unsqueeze",
        &format!("rope_{label}/cos_heads"),
        &[&cos, &axis1],
        &[],
    );
    let sin = g.op(
        "Unsqueeze",
        &format!("rope_{label}/sin_heads"),
        &[&sin, &axis1],
        &[],
    );
    (cos, sin)
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

/// The additive attention mask `[B, 1, S, T]` (0 where allowed, `MASK_MIN` elsewhere) for queries at absolute
/// KV indices `past .. past+S` and keys `0 .. T`: causal (`j ≤ i`), within the window when `window` is set
/// (`i − W < j`), and only real keys (`attention_mask[b, j] == 1`).
pub fn attention_mask(
    g: &mut GraphBuilder,
    input_ids: &Value,
    attention_mask: &Value,
    window: Option<usize>,
    label: &str,
) -> Value {
    attention_mask_with_blocks(g, input_ids, attention_mask, window, None, label)
}

/// [`attention_mask`] with Gemma 3's bidirectional image blocks (spec §5.5) when `blocks` is given:
/// `allowed(i, j) = (j ≤ i OR same_block(i, j)) AND [sliding: j > i − W] AND key_not_padded(j)`.
///
/// `blocks` is `[B, S]` int64 from [`image_blocks`]: 0 for text, k ≥ 1 for the k-th run of image tokens of the
/// current chunk. Keys from the past cache get block 0, so a block never spans chunks: the runtime must prefill
/// each image whole in one chunk. `input_ids` may be any `[B, S, ...]` tensor of the chunk (e.g.
/// `inputs_embeds`): only its sequence length is read.
pub fn attention_mask_with_blocks(
    g: &mut GraphBuilder,
    input_ids: &Value,
    attention_mask: &Value,
    window: Option<usize>,
    blocks: Option<&Value>,
    label: &str,
) -> Value {
    let l = |s: &str| format!("mask_{label}/{s}");
    let zero = g.scalar_i64("zero", 0);
    let one = g.scalar_i64("one", 1);
    let ids_shape = g.op("Shape", &l("ids_shape"), &[input_ids], &[]);
    let mask_shape = g.op("Shape", &l("mask_shape"), &[attention_mask], &[]);
    let s = g.op(
        "Gather",
        &l("seq_len"),
        &[&ids_shape, &one],
        &[("axis", Attr::Int(0))],
    );
    let t = g.op(
        "Gather",
        &l("total_len"),
        &[&mask_shape, &one],
        &[("axis", Attr::Int(0))],
    );
    let past = g.op("Sub", &l("past_len"), &[&t, &s], &[]);
    let q_idx = g.op("Range", &l("q_idx"), &[&past, &t, &one], &[]);
    let k_idx = g.op("Range", &l("k_idx"), &[&zero, &t, &one], &[]);
    let ax1 = g.const_i64("axes_1", &[1]);
    let ax0 = g.const_i64("axes_0", &[0]);
    let qi = g.op("Unsqueeze", &l("qi"), &[&q_idx, &ax1], &[]);
    let kj = g.op("Unsqueeze", &l("kj"), &[&k_idx, &ax0], &[]);
    let mut allowed = g.op("LessOrEqual", &l("causal"), &[&kj, &qi], &[]);
    if let Some(blocks) = blocks {
        // Key block ids [B, T]: 0 for the `past` cached keys, then the chunk's own ids.
        let past_1 = g.op("Unsqueeze", &l("past_1d"), &[&past, &ax0], &[]);
        let zero_1 = g.const_i64("zero_1d", &[0]);
        let pads = g.op(
            "Concat",
            &l("block_pads"),
            &[&zero_1, &past_1, &zero_1, &zero_1],
            &[("axis", Attr::Int(0))],
        );
        let k_blocks = g.op("Pad", &l("key_blocks"), &[blocks, &pads], &[]);
        let ax2 = g.const_i64("axes_2", &[2]);
        let qb = g.op("Unsqueeze", &l("q_block"), &[blocks, &ax2], &[]);
        let kb = g.op("Unsqueeze", &l("k_block"), &[&k_blocks, &ax1], &[]);
        let same = g.op("Equal", &l("same_block"), &[&qb, &kb], &[]);
        let in_image = g.op("Greater", &l("in_image"), &[&qb, &zero], &[]);
        let same = g.op("And", &l("same_image"), &[&same, &in_image], &[]);
        let same = g.op("Unsqueeze", &l("same_image_4d"), &[&same, &ax1], &[]);
        allowed = g.op("Or", &l("causal_or_block"), &[&allowed, &same], &[]);
    }
    if let Some(w) = window {
        let wv = g.scalar_i64("window", w as i64);
        let lo = g.op("Sub", &l("window_start"), &[&qi, &wv], &[]);
        let inside = g.op("Greater", &l("in_window"), &[&kj, &lo], &[]);
        allowed = g.op("And", &l("sliding"), &[&allowed, &inside], &[]);
    }
    let keys = g.op(
        "Cast",
        &l("keys_bool"),
        &[attention_mask],
        &[("to", Attr::Int(crate::onnx::DataType::Bool as i64))],
    );
    let ax12 = g.const_i64("axes_1_2", &[1, 2]);
    let keys = g.op("Unsqueeze", &l("keys_4d"), &[&keys, &ax12], &[]);
    let allowed = g.op("And", &l("allowed"), &[&allowed, &keys], &[]);
    let zero_f = g.scalar_f32("mask_zero", 0.0);
    let min_f = g.scalar_f32("mask_min", MASK_MIN);
    g.op("Where", &l("additive"), &[&allowed, &zero_f, &min_f], &[])
}

/// Image block ids `[B, S]` int64 of one chunk from `token_type_ids` `[B, S]` (1 at `<image_soft_token>`): each
/// maximal run of consecutive type-1 tokens gets its own id 1, 2, … in order, every other token 0. This is
/// transformers' `get_block_sequence_ids_for_mask` shifted by one (−1 there is 0 here).
pub fn image_blocks(g: &mut GraphBuilder, token_type_ids: &Value) -> Value {
    let l = |s: &str| format!("image_blocks/{s}");
    let one = g.scalar_i64("one", 1);
    let is_image = g.op("Equal", &l("is_image"), &[token_type_ids, &one], &[]);
    let is_image = g.op(
        "Cast",
        &l("is_image_i64"),
        &[&is_image],
        &[("to", Attr::Int(crate::onnx::DataType::Int64 as i64))],
    );
    // previous[b, i] = is_image[b, i − 1], 0 for i = 0
    let zero_1 = g.const_i64("zero_1d", &[0]);
    let minus_one = g.const_i64("minus_one_1d", &[-1]);
    let ax1 = g.const_i64("axes_1", &[1]);
    let head = g.op(
        "Slice",
        &l("all_but_last"),
        &[&is_image, &zero_1, &minus_one, &ax1],
        &[],
    );
    let shift = g.const_i64("pads_shift_right", &[0, 1, 0, 0]);
    let previous = g.op("Pad", &l("previous"), &[&head, &shift], &[]);
    let starts = g.op("Greater", &l("run_starts"), &[&is_image, &previous], &[]);
    let starts = g.op(
        "Cast",
        &l("run_starts_i64"),
        &[&starts],
        &[("to", Attr::Int(crate::onnx::DataType::Int64 as i64))],
    );
    let axis = g.scalar_i64("axis_1", 1);
    let run = g.op("CumSum", &l("run_index"), &[&starts, &axis], &[]);
    g.op("Mul", &l("blocks"), &[&run, &is_image], &[])
}

/// The largest row block of the lm_head weight that is one initializer (see [`Ctx::head_matmul`]).
pub const HEAD_CHUNK_BYTES: usize = 32 << 20;

/// `(first row, rows)` of the row blocks of a `[rows, ..]` weight with `row_bytes` bytes per row: as few as fit
/// [`HEAD_CHUNK_BYTES`], of equal size rounded up so that every block starts on a page boundary (4 KiB) of a
/// page-aligned tensor.
pub fn head_chunks(rows: usize, row_bytes: usize) -> Vec<(usize, usize)> {
    let total = rows * row_bytes;
    let count = total.div_ceil(HEAD_CHUNK_BYTES).max(1);
    // Rows per page-aligned step: 4096 / gcd(row_bytes, 4096).
    let (mut a, mut b) = (row_bytes.max(1), 4096);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let step = 4096 / a;
    let per = rows.div_ceil(count).next_multiple_of(step).min(rows.max(1));
    (0..rows)
        .step_by(per)
        .map(|start| (start, per.min(rows - start)))
        .collect()
}

/// `Concat(parts, axis = -1)`, or the single part.
pub fn concat_last(g: &mut GraphBuilder, mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let refs: Vec<&Value> = parts.iter().collect();
    g.op("Concat", "concat_chunks", &refs, &[("axis", Attr::Int(-1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_chunks_cover_the_rows_on_page_boundaries() {
        // Gemma 3 270M: 262144 rows; fp32 (2560 B/row, 640 MiB) and 4-bit packed (320 B/row, 80 MiB).
        for (rows, row_bytes, count) in [
            (262144, 2560, 20),
            (262144, 320, 3),
            (256, 256, 1),
            (1000, 1 << 20, 32),
            (50000, 1000, 2),
        ] {
            let chunks = head_chunks(rows, row_bytes);
            assert_eq!(chunks.len(), count, "{rows} × {row_bytes}");
            let mut next = 0;
            for &(start, n) in &chunks {
                assert_eq!(start, next);
                assert!(n > 0);
                assert_eq!(start * row_bytes % 4096, 0);
                next = start + n;
            }
            assert_eq!(next, rows);
            assert!(chunks
                .iter()
                .all(|&(_, n)| n * row_bytes <= HEAD_CHUNK_BYTES + 4096 * row_bytes));
        }
    }
}
