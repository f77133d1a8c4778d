//! The lm_head (semantics §1.7): final-norm hidden states to logits, the weight read as row blocks, then the optional
//! final soft-cap.

use super::{gemm_t, Ctx, LinearKind};
use crate::builder::{GraphBuilder, Value};
use crate::ExportError;
use gemma_models::{names, TextConfig};

impl Ctx<'_> {
    /// Logits `[B, K, vocab]` from final-norm hidden states `x [B, K, H]`: the lm_head (the embedding matrix when
    /// tied, stored once) on the flattened rows, then the final soft-cap when the config has one.
    pub fn lm_head(
        &mut self,
        x: &Value,
        t: &TextConfig,
        prefix: &str,
    ) -> Result<Value, ExportError> {
        self.g.set_scope("/lm_head");
        let head = if t.tie_word_embeddings {
            names::embed_tokens(prefix)
        } else {
            names::lm_head(prefix)
        };
        let lead_shape = self.g.shape_range("lead_shape", x, None, 2);
        let flat = self.flatten_rows(x, t.hidden_size);
        let mut logits = self.head_matmul(&flat, &head)?;
        if let Some(cap) = t.final_logit_softcapping {
            logits = self.softcap(&logits, cap);
        }
        let vocab = self.g.const_i64("vocab", &[t.vocab_size as i64]);
        let shape = self.g.concat("logits_shape", &[&lead_shape, &vocab], 0);
        Ok(self.g.reshape("logits", &logits, &shape))
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
            return self.linear_nbits(x, weight_name, &cfg, true);
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
            let w = self.float32_of(&stored, "to_f32");
            parts.push(gemm_t(self.g, x, &w));
        }
        Ok(concat_last(self.g, parts))
    }
}

/// The largest row block of the lm_head weight that is one initializer (see `Ctx::head_matmul`).
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
    g.concat("concat_chunks", &refs, -1)
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
