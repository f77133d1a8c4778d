//! The quantized nodes: `MatMulNBits` for linear layers and the lm_head, `GatherBlockQuantized` for the embedding
//! lookup (both ONNX Runtime contrib ops, domain `com.microsoft`).
//!
//! The tied embedding/lm_head is stored once. `MatMulNBits` needs its packed weight as `[V, blocks, blob]` and
//! `GatherBlockQuantized` (uint8 data, gather axis 0, quantized along the last axis) needs `[V, blocks · blob]`;
//! scales `[V, blocks]` and packed zero points have the same shape for both. The two views of the packed weight
//! are two initializers over one byte range of `model.onnx_data` ([`WeightWriter::alias`]). At load, ONNX Runtime
//! maps each view separately: `MatMulNBits` repacks its view and unmaps it, while the lookup only ever touches the
//! rows of the tokens it embeds, so neither the file nor the resident memory holds the table twice.
//!
//! [`WeightWriter::alias`]: crate::weights::WeightWriter::alias

use super::pack::{self, Packed};
use super::QuantConfig;
use crate::builder::{Attr, Value};
use crate::layers::Ctx;
use crate::onnx::TensorProto;
use crate::ExportError;

/// The ONNX Runtime contrib operator domain.
pub const MS_DOMAIN: &str = "com.microsoft";

/// A quantized weight's initializers in the current graph.
struct Registered {
    packed: Packed,
    b: Value,
    scales: Value,
    zero_points: Option<Value>,
}

impl Ctx<'_> {
    /// `x · Wᵀ` with `W` block-quantized: `MatMulNBits(x [N, K], B, scales, zero_points?)` → `[N, out]`.
    pub(crate) fn linear_nbits(
        &mut self,
        x: &Value,
        weight_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Value, ExportError> {
        let r = self.quantized(weight_name, cfg)?;
        let p = &r.packed;
        let mut inputs = vec![x, &r.b, &r.scales];
        if let Some(z) = &r.zero_points {
            inputs.push(z);
        }
        let attrs = [
            ("K", Attr::Int(p.k as i64)),
            ("N", Attr::Int(p.n as i64)),
            ("bits", Attr::Int(p.scheme.bits as i64)),
            ("block_size", Attr::Int(p.block_size as i64)),
            ("accuracy_level", Attr::Int(cfg.accuracy_level)),
        ];
        let mut out = self
            .g
            .op_domain(MS_DOMAIN, "MatMulNBits", "linear", &inputs, &attrs, 1);
        Ok(out.pop().expect("one output"))
    }

    /// Embedding rows `[.., K]` f32 of `ids` from the block-quantized table, sharing the lm_head's bytes.
    pub(crate) fn embedding_nbits(
        &mut self,
        ids: &Value,
        weight_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Value, ExportError> {
        let r = self.quantized(weight_name, cfg)?;
        let p = &r.packed;
        let view_name = format!("{}_rows", p.b.name.as_deref().unwrap_or(weight_name));
        let dims = [p.n as i64, (p.blocks() * p.blob()) as i64];
        let rows = self.w.alias(&p.b, &view_name, &dims);
        let rows = self.register(rows);
        let mut inputs = vec![&rows, ids, &r.scales];
        if let Some(z) = &r.zero_points {
            inputs.push(z);
        }
        let attrs = [
            ("bits", Attr::Int(p.scheme.bits as i64)),
            ("block_size", Attr::Int(p.block_size as i64)),
            ("gather_axis", Attr::Int(0)),
            ("quantize_axis", Attr::Int(1)),
        ];
        let mut e = self
            .g
            .op_domain(
                MS_DOMAIN,
                "GatherBlockQuantized",
                "gather",
                &inputs,
                &attrs,
                1,
            )
            .pop()
            .expect("one output");
        if p.blocks() * p.block_size != p.k {
            // The last block was padded: drop the padding columns.
            let zero = self.g.const_i64("zero_1d", &[0]);
            let end = self.g.const_i64("embed_width", &[p.k as i64]);
            let last = self.g.const_i64("minus_one_1d", &[-1]);
            e = self.g.op("Slice", "unpad", &[&e, &zero, &end, &last], &[]);
        }
        Ok(e)
    }

    /// Quantizes `weight_name` (once per export) and registers its initializers in this graph (once per graph).
    fn quantized(
        &mut self,
        weight_name: &str,
        cfg: &QuantConfig,
    ) -> Result<Registered, ExportError> {
        let scheme = cfg.scheme(weight_name);
        let columns = if cfg.activation_aware && scheme.rounding == super::Rounding::Search {
            // The checkpoint's own config (the graph builders do not pass theirs down to the kernels).
            let model = gemma_models::ModelConfig::from_file(&self.ckpt.dir().join("config.json"))?;
            super::importance::column_importance(self.ckpt, &model, weight_name)?
        } else {
            None
        };
        let mut stats = std::mem::take(&mut self.w.quant_stats);
        let packed = pack::quantize_matrix(
            self.w,
            self.ckpt,
            weight_name,
            scheme,
            scheme.block_size(cfg.block_size),
            columns.as_deref(),
            &mut stats,
        );
        self.w.quant_stats = stats;
        let packed = packed?;
        Ok(Registered {
            b: self.register(packed.b.clone()),
            scales: self.register(packed.scales.clone()),
            zero_points: packed.zero_points.clone().map(|z| self.register(z)),
            packed,
        })
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
