//! The quantized nodes: `MatMulNBits` for linear layers and the lm_head, `GatherBlockQuantized` for the embedding
//! lookup (both ONNX Runtime contrib ops: [`crate::ops::matmul_nbits`], [`crate::ops::gather_block_quantized`]).
//!
//! The tied embedding/lm_head is stored once. `MatMulNBits` needs its packed weight as `[V, blocks, blob]` and
//! `GatherBlockQuantized` (uint8 data, gather axis 0, quantized along the last axis) needs `[V, blocks · blob]`;
//! scales `[V, blocks]` and packed zero points have the same shape for both. The two views of the packed weight
//! are two initializers over one byte range of `model.onnx_data` ([`WeightWriter::alias`]). At load, ONNX Runtime
//! maps each view separately: `MatMulNBits` repacks its view and unmaps it, while the lookup only ever touches the
//! rows of the tokens it embeds, so neither the file nor the resident memory holds the table twice. The lm_head
//! reads its weight, scales and zero points as a few row blocks (views again), so that loading pages in one block
//! at a time (see `Ctx::head_matmul` in `layers/head.rs`).
//!
//! [`WeightWriter::alias`]: crate::weights::WeightWriter::alias

use super::pack::{self, Packed};
use super::QuantConfig;
use crate::builder::Value;
use crate::layers::head::{concat_last, head_chunks};
use crate::layers::Ctx;
use crate::onnx::TensorProto;
use crate::ops::gather_block_quantized::gather_block_quantized;
use crate::ops::matmul_nbits::{matmul_nbits, NBits};
use crate::ExportError;

/// A quantized weight's initializers in the current graph.
struct Registered {
    b: Value,
    scales: Value,
    zero_points: Option<Value>,
}

impl Ctx<'_> {
    /// `x · Wᵀ` with `W` block-quantized: `MatMulNBits(x [N, K], B, scales, zero_points?)` → `[N, out]`. With
    /// `row_blocks` (the lm_head, see `Ctx::head_matmul` in `layers/head.rs`) one `MatMulNBits` per row block of the
    /// packed weight, over views of its bytes, scales and zero points, and the logits concatenated.
    pub(crate) fn linear_nbits(
        &mut self,
        x: &Value,
        weight_name: &str,
        cfg: &QuantConfig,
        row_blocks: bool,
    ) -> Result<Value, ExportError> {
        let p = self.quantize_once(weight_name, &[weight_name], cfg)?;
        if !row_blocks {
            let r = self.register_all(&p);
            return Ok(self.matmul_nbits(x, &r, &p, p.n, cfg, "linear"));
        }
        let chunks = head_chunks(p.n, p.blocks() * p.blob());
        let mut parts = Vec::new();
        for (i, &(start, rows)) in chunks.iter().enumerate() {
            let mut view = |t: &TensorProto| {
                let name = format!("{}_head_{i}", t.name.as_deref().unwrap_or(weight_name));
                let v = self.w.row_view(t, &name, start, rows);
                self.register(v)
            };
            let r = Registered {
                b: view(&p.b),
                scales: view(&p.scales),
                zero_points: p.zero_points.as_ref().map(&mut view),
            };
            parts.push(self.matmul_nbits(x, &r, &p, rows, cfg, "linear"));
        }
        Ok(concat_last(self.g, parts))
    }

    /// `x · [W₁; W₂; …]ᵀ` for weights of one input width and one scheme, quantized stacked as the one weight
    /// `fused_name` ([`pack::quantize_stacked`]) and computed by a single `MatMulNBits`, then split back into one
    /// output per weight. Fewer, larger kernels: a decode step's cost is dominated by per-kernel overhead at these
    /// sizes (q/k/v of Gemma 3 270M are 1024, 256 and 256 wide).
    pub(crate) fn linear_nbits_stacked(
        &mut self,
        x: &Value,
        weight_names: &[&str],
        fused_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Vec<Value>, ExportError> {
        let p = self.quantize_once(fused_name, weight_names, cfg)?;
        let mut widths = Vec::with_capacity(weight_names.len());
        for name in weight_names {
            widths.push(self.ckpt.tensor(name)?.shape[0] as i64);
        }
        let r = self.register_all(&p);
        let y = self.matmul_nbits(x, &r, &p, p.n, cfg, "linear_stacked");
        let label: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
        let sizes = self
            .g
            .const_i64(&format!("split_widths_{}", label.join("_")), &widths);
        Ok(self
            .g
            .split("split_stacked", &y, Some(&sizes), -1, weight_names.len()))
    }

    /// One `MatMulNBits` node over registered initializers of `p`'s layout with `n` outputs.
    fn matmul_nbits(
        &mut self,
        x: &Value,
        r: &Registered,
        p: &Packed,
        n: usize,
        cfg: &QuantConfig,
        label: &str,
    ) -> Value {
        let shape = NBits {
            k: p.k,
            n,
            bits: p.scheme.bits,
            block_size: p.block_size,
            accuracy_level: cfg.accuracy_level,
        };
        let z = r.zero_points.as_ref();
        matmul_nbits(self.g, label, x, [&r.b, &r.scales], z, &shape)
    }

    /// Embedding rows `[.., K]` f32 of `ids` from the block-quantized table, sharing the lm_head's bytes.
    pub(crate) fn embedding_nbits(
        &mut self,
        ids: &Value,
        weight_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Value, ExportError> {
        let packed = self.quantize_once(weight_name, &[weight_name], cfg)?;
        let p = &packed;
        let view_name = format!("{}_rows", p.b.name.as_deref().unwrap_or(weight_name));
        let dims = [p.n as i64, (p.blocks() * p.blob()) as i64];
        let rows = self.w.alias(&p.b, &view_name, &dims);
        let rows = self.register(rows);
        let scales = self.register(p.scales.clone());
        let zero_points = p.zero_points.clone().map(|z| self.register(z));
        let (bits, block) = (p.scheme.bits, p.block_size);
        let tensors = [&rows, ids, &scales];
        let z = zero_points.as_ref();
        let mut e = gather_block_quantized(self.g, "gather", tensors, z, bits, block);
        if p.blocks() * p.block_size != p.k {
            // The last block was padded: drop the padding columns.
            let zero = self.g.const_i64("zero_1d", &[0]);
            let end = self.g.const_i64("embed_width", &[p.k as i64]);
            let last = self.g.const_i64("minus_one_1d", &[-1]);
            e = self.g.slice("unpad", &e, [&zero, &end, &last]);
        }
        Ok(e)
    }

    /// The initializers of `p` in this graph (each added the first time).
    fn register_all(&mut self, p: &Packed) -> Registered {
        Registered {
            b: self.register(p.b.clone()),
            scales: self.register(p.scales.clone()),
            zero_points: p.zero_points.clone().map(|z| self.register(z)),
        }
    }

    /// Quantizes `sources` stacked as the weight `name` into the weight file (once per export; later calls return
    /// the written tensors). A single weight is `quantize_once(w, &[w], cfg)`.
    fn quantize_once(
        &mut self,
        name: &str,
        sources: &[&str],
        cfg: &QuantConfig,
    ) -> Result<Packed, ExportError> {
        let scheme = cfg.scheme(sources[0]);
        let columns = self.column_importance(sources[0], cfg)?;
        let mut stats = std::mem::take(&mut self.w.quant_stats);
        let packed = pack::quantize_stacked(
            self.w,
            self.ckpt,
            name,
            sources,
            scheme,
            scheme.block_size(cfg.block_size),
            columns.as_deref(),
            cfg.keep_source_blocks,
            &mut stats,
        );
        self.w.quant_stats = stats;
        packed
    }

    /// The estimated input-column importance of `weight_name` when the config asks for activation-aware searches.
    fn column_importance(
        &self,
        weight_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Option<Vec<f32>>, ExportError> {
        let scheme = cfg.scheme(weight_name);
        if !(cfg.activation_aware && scheme.rounding == super::Rounding::Search) {
            return Ok(None);
        }
        // The checkpoint's own config (the graph builders do not pass theirs down to the kernels).
        let model = gemma_models::ModelConfig::from_file(&self.ckpt.dir().join("config.json"))?;
        super::importance::column_importance(self.ckpt, &model, weight_name)
    }

    /// The initializer `t` in this graph, added the first time.
    fn register(&mut self, t: TensorProto) -> Value {
        let name = t.name.clone().expect("initializers are named");
        match self.g.existing(&name) {
            Some(v) => v,
            None => self.g.initializer(t),
        }
    }
}
