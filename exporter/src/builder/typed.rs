//! Typed helpers for the standard ONNX ops the graphs use most: each is one node whose attributes are written the
//! one way the exporter writes them, so a call reads as the operation (`g.cast("to_f32", &x, DataType::Float)`)
//! rather than as a node description. Every helper takes the node's `label` first, like [`GraphBuilder::op`].
//!
//! ONNX Runtime's contrib ops have their own typed functions, one file each, in [`crate::ops`].

use super::{Attr, GraphBuilder, Value};
use crate::onnx::DataType;

/// The opset that introduced `RMSNormalization`.
const RMS_NORMALIZATION_OPSET: i64 = 23;

impl GraphBuilder {
    /// `Cast(x, to)`.
    pub fn cast(&mut self, label: &str, x: &Value, to: DataType) -> Value {
        self.op("Cast", label, &[x], &[("to", Attr::Int(to as i64))])
    }

    /// `Reshape(x, shape)` (`shape` an int64 `[rank]` value; 0 copies a dimension, −1 infers one).
    pub fn reshape(&mut self, label: &str, x: &Value, shape: &Value) -> Value {
        self.op("Reshape", label, &[x, shape], &[])
    }

    /// `Concat(parts, axis)`.
    pub fn concat(&mut self, label: &str, parts: &[&Value], axis: i64) -> Value {
        self.op("Concat", label, parts, &[("axis", Attr::Int(axis))])
    }

    /// `Unsqueeze(x, axes)` (`axes` an int64 `[n]` value).
    pub fn unsqueeze(&mut self, label: &str, x: &Value, axes: &Value) -> Value {
        self.op("Unsqueeze", label, &[x, axes], &[])
    }

    /// `Squeeze(x, axes)` (`axes` an int64 `[n]` value).
    pub fn squeeze(&mut self, label: &str, x: &Value, axes: &Value) -> Value {
        self.op("Squeeze", label, &[x, axes], &[])
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, label: &str, x: &Value, perm: &[i64]) -> Value {
        self.op(
            "Transpose",
            label,
            &[x],
            &[("perm", Attr::Ints(perm.to_vec()))],
        )
    }

    /// `Shape(x)`: the whole shape, int64 `[rank]`.
    pub fn shape(&mut self, label: &str, x: &Value) -> Value {
        self.op("Shape", label, &[x], &[])
    }

    /// `Shape(x, start, end)`: dimensions `start .. end` of the shape (`start` omitted: from 0).
    pub fn shape_range(&mut self, label: &str, x: &Value, start: Option<i64>, end: i64) -> Value {
        let mut attrs = Vec::with_capacity(2);
        if let Some(start) = start {
            attrs.push(("start", Attr::Int(start)));
        }
        attrs.push(("end", Attr::Int(end)));
        self.op("Shape", label, &[x], &attrs)
    }

    /// `Gather(x, indices, axis)`.
    pub fn gather(&mut self, label: &str, x: &Value, indices: &Value, axis: i64) -> Value {
        self.op("Gather", label, &[x, indices], &[("axis", Attr::Int(axis))])
    }

    /// `Slice(x, starts, ends, axes)`.
    pub fn slice(&mut self, label: &str, x: &Value, [starts, ends, axes]: [&Value; 3]) -> Value {
        self.op("Slice", label, &[x, starts, ends, axes], &[])
    }

    /// `Split(x, axis)` into `n` outputs: of the widths in `sizes` (int64 `[n]`), or `n` equal parts.
    pub fn split(
        &mut self,
        label: &str,
        x: &Value,
        sizes: Option<&Value>,
        axis: i64,
        n: usize,
    ) -> Vec<Value> {
        let axis = ("axis", Attr::Int(axis));
        match sizes {
            Some(sizes) => self.node("", "Split", label, &[x, sizes], &[axis], n),
            None => {
                let attrs = [axis, ("num_outputs", Attr::Int(n as i64))];
                self.node("", "Split", label, &[x], &attrs, n)
            }
        }
    }

    /// `RMSNormalization(x, scale)` over the last axis, statistics in float32 (`stash_type` 1): `x /
    /// sqrt(mean(x²) + epsilon) · scale`. A default-domain op since opset 23, which the graph then imports.
    pub fn rms_normalization(
        &mut self,
        label: &str,
        x: &Value,
        scale: &Value,
        epsilon: f32,
    ) -> Value {
        self.require_opset(RMS_NORMALIZATION_OPSET);
        self.op(
            "RMSNormalization",
            label,
            &[x, scale],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(epsilon)),
                ("stash_type", Attr::Int(1)),
            ],
        )
    }

    /// `Where(condition, then, otherwise)`.
    pub fn where_(
        &mut self,
        label: &str,
        condition: &Value,
        then: &Value,
        otherwise: &Value,
    ) -> Value {
        self.op("Where", label, &[condition, then, otherwise], &[])
    }
}
