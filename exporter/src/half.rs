//! 16-bit float storage for `--precision fp16|bf16`: weights are written as fp16 or bf16 and the graph casts them to
//! fp32 right away, so every operation still runs in fp32 (ONNX Runtime folds that Cast into an fp32 initializer at
//! load time).
//!
//! Why not fp16 compute: Gemma's residual stream and MLP activations exceed fp16's ±65504 (semantics §9.2: ~1e5 in the
//! 270M), and ONNX Runtime's CPU provider has no fp16 or bf16 GEMM on x86 anyway (it inserts Casts back to fp32).
//! The gain is the file size; run-time memory and speed are those of fp32.

use crate::onnx::{DataType, TensorProto};
use crate::weights::{WeightWriter, INLINE_LIMIT};
use crate::ExportError;
use gemma_models::{Checkpoint, TensorView};

/// The 16-bit storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HalfType {
    /// IEEE half: 11-bit significand, range ±65504. Exact for bf16 checkpoints whose values are in range.
    F16,
    /// bfloat16: 8-bit significand, fp32's range. Exact for bf16 checkpoints.
    Bf16,
}

impl HalfType {
    pub fn data_type(&self) -> DataType {
        match self {
            HalfType::F16 => DataType::Float16,
            HalfType::Bf16 => DataType::Bfloat16,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            HalfType::F16 => "fp16",
            HalfType::Bf16 => "bf16",
        }
    }

    /// Rounds to nearest even; `None` when a finite value rounds to infinity (fp16 beyond ±65504, bf16 beyond
    /// ±3.3895e38, e.g. `f32::MAX`). Non-finite inputs stay what they are: they are refused earlier unless
    /// `--allow-nonfinite` (see [`crate::finite`]).
    #[inline]
    fn bits(&self, v: f32) -> Option<u16> {
        match self {
            HalfType::F16 => {
                let h = half::f16::from_f32(v);
                (h.is_finite() || !v.is_finite()).then(|| h.to_bits())
            }
            HalfType::Bf16 => {
                let h = half::bf16::from_f32(v);
                (h.is_finite() || !v.is_finite()).then(|| h.to_bits())
            }
        }
    }
}

/// Elements converted per chunk.
const CHUNK: usize = 1 << 16;

/// Streams a checkpoint tensor into a 16-bit initializer `name`. Fails, naming the tensor, if a value is not finite
/// (unless the writer allows it) or overflows the 16-bit type.
pub fn half_from_checkpoint(
    w: &mut WeightWriter,
    ckpt: &Checkpoint,
    name: &str,
    view: &TensorView<'_>,
    ty: HalfType,
) -> Result<TensorProto, ExportError> {
    if let Some(t) = w.written(name) {
        return Ok(t);
    }
    let dims: Vec<i64> = view.shape.iter().map(|&d| d as i64).collect();
    let numel = view.numel();
    let mut buf = vec![0f32; CHUNK.min(numel)];
    let mut out = vec![0u16; CHUNK.min(numel)];
    let inline = numel * 2 < INLINE_LIMIT;
    let mut inline_bytes = Vec::new();
    let start = if inline { 0 } else { w.begin_tensor()? };
    let mut done = 0;
    while done < numel {
        let n = CHUNK.min(numel - done);
        view.read_f32(done, &mut buf[..n]);
        ckpt.release_elements(view, done, done + n);
        crate::finite::check(view, done, &buf[..n], w.allow_nonfinite)?;
        for (o, &v) in out[..n].iter_mut().zip(&buf[..n]) {
            *o = ty.bits(v).ok_or_else(|| ExportError::OutOfRange {
                tensor: view.name.to_string(),
                value: v,
                precision: ty.name(),
            })?;
        }
        let bytes: &[u8] = bytemuck::cast_slice(&out[..n]);
        if inline {
            inline_bytes.extend_from_slice(bytes);
        } else {
            w.append(bytes)?;
        }
        w.advance((n * 4) as u64);
        done += n;
    }
    ckpt.release(view);
    Ok(if inline {
        w.raw_values(name, ty.data_type(), &dims, &inline_bytes)?
    } else {
        w.end_tensor(name, ty.data_type(), &dims, start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(HalfType::F16.bits(1.0), Some(0x3c00));
        assert_eq!(HalfType::F16.bits(65504.0), Some(0x7bff));
        assert_eq!(HalfType::F16.bits(1e5), None);
        assert_eq!(HalfType::F16.bits(-7e4), None);
        // Non-finite inputs stay what they are (they were already broken in the checkpoint).
        assert!(HalfType::F16.bits(f32::INFINITY).is_some());
        assert_eq!(
            HalfType::Bf16.bits(1e30),
            Some(half::bf16::from_f32(1e30).to_bits())
        );
        // f32::MAX rounds up to bf16's infinity: refused like fp16's overflow.
        assert_eq!(HalfType::Bf16.bits(f32::MAX), None);
        assert_eq!(HalfType::Bf16.bits(-f32::MAX), None);
        assert!(HalfType::Bf16.bits(3.38e38).is_some());
        // bf16 → fp16 is exact for in-range values with bf16's 8-bit significand.
        let v = half::bf16::from_bits(0x3e9a).to_f32();
        let h = half::f16::from_bits(HalfType::F16.bits(v).unwrap()).to_f32();
        assert_eq!(h, v);
    }
}
