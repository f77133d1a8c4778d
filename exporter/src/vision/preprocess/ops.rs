//! Small helpers for graphs with subgraphs (Loop bodies, If branches).
//!
//! Constants are `Constant` nodes, not initializers: [`GraphBuilder`]'s shared constants are all named
//! `/const/<label>`, so a subgraph's constants would clash with (shadow) the outer graph's, which ONNX forbids.
//! Node outputs are named after the builder's scope, and every (sub)graph here gets its own scope, so names stay
//! unique across the whole model.

use crate::builder::{inline_tensor, Attr, Dim, GraphBuilder, Value};
use crate::onnx::{DataType, GraphProto};

/// A `Constant` node holding `raw` (little-endian values of `elem`).
fn constant(
    g: &mut GraphBuilder,
    label: &str,
    elem: DataType,
    dims: &[i64],
    raw: Vec<u8>,
) -> Value {
    let t = inline_tensor(label, elem, dims, raw);
    g.op("Constant", label, &[], &[("value", Attr::Tensor(t))])
}

/// An int64 scalar.
pub fn i64s(g: &mut GraphBuilder, label: &str, v: i64) -> Value {
    constant(g, label, DataType::Int64, &[], v.to_le_bytes().to_vec())
}

/// An int64 vector.
pub fn i64v(g: &mut GraphBuilder, label: &str, v: &[i64]) -> Value {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    constant(g, label, DataType::Int64, &[v.len() as i64], raw)
}

/// An int32 scalar.
pub fn i32s(g: &mut GraphBuilder, label: &str, v: i32) -> Value {
    constant(g, label, DataType::Int32, &[], v.to_le_bytes().to_vec())
}

/// A float64 scalar.
pub fn f64s(g: &mut GraphBuilder, label: &str, v: f64) -> Value {
    constant(g, label, DataType::Double, &[], v.to_le_bytes().to_vec())
}

/// A float64 tensor.
pub fn f64t(g: &mut GraphBuilder, label: &str, dims: &[i64], v: &[f64]) -> Value {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    constant(g, label, DataType::Double, dims, raw)
}

/// A float32 tensor.
pub fn f32t(g: &mut GraphBuilder, label: &str, dims: &[i64], v: &[f32]) -> Value {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    constant(g, label, DataType::Float, dims, raw)
}

/// Element `index` (a scalar) of `x` along `axis`, without that axis.
pub fn at(g: &mut GraphBuilder, label: &str, x: &Value, index: &Value, axis: i64) -> Value {
    g.op("Gather", label, &[x, index], &[("axis", Attr::Int(axis))])
}

/// `x` with a new axis of length 1 at `axis`.
pub fn unsqueeze(g: &mut GraphBuilder, label: &str, x: &Value, axis: i64) -> Value {
    let axes = i64v(g, &format!("{label}_axes"), &[axis]);
    g.op("Unsqueeze", label, &[x, &axes], &[])
}

/// `Loop` with a trip count and no loop condition, whose body (built by `body` in a fresh builder with scope
/// `scope`) gets the iteration number, then `carried.len()` loop-carried values typed `carried_types`, and
/// returns the new carried values followed by the per-iteration (scan) outputs. Returns the final carried values,
/// then the scans stacked along a new first axis.
pub fn counted_loop(
    g: &mut GraphBuilder,
    label: &str,
    scope: &str,
    trips: &Value,
    carried: &[(&Value, DataType, Vec<Dim>)],
    scans: &[(DataType, Vec<Dim>)],
    body: impl FnOnce(&mut GraphBuilder, &Value, &[Value]) -> Vec<Value>,
) -> Vec<Value> {
    let mut b = GraphBuilder::new();
    b.set_scope(scope);
    let iter = b.input(&format!("{scope}/iteration"), DataType::Int64, &[]);
    let cond = b.input(&format!("{scope}/condition"), DataType::Bool, &[]);
    let ins: Vec<Value> = carried
        .iter()
        .enumerate()
        .map(|(i, (_, t, d))| b.input(&format!("{scope}/carried_in_{i}"), *t, d))
        .collect();
    let outs = body(&mut b, &iter, &ins);
    assert_eq!(
        outs.len(),
        carried.len() + scans.len(),
        "{scope}: body outputs"
    );
    b.output(
        &cond,
        &format!("{scope}/condition_out"),
        DataType::Bool,
        &[],
    );
    let types = carried
        .iter()
        .map(|(_, t, d)| (*t, d.clone()))
        .chain(scans.iter().cloned());
    for (i, (v, (t, d))) in outs.iter().zip(types).enumerate() {
        b.output(v, &format!("{scope}/out_{i}"), t, &d);
    }
    let graph = b.finish(&scope.replace('/', "_"));
    let none = Value(String::new());
    let mut inputs = vec![trips, &none];
    inputs.extend(carried.iter().map(|(v, _, _)| *v));
    g.node(
        "",
        "Loop",
        label,
        &inputs,
        &[("body", Attr::Graph(graph))],
        carried.len() + scans.len(),
    )
}

/// A subgraph with no inputs and one output (an If branch), built by `body` under scope `scope`.
pub fn branch(
    scope: &str,
    elem: DataType,
    dims: &[Dim],
    body: impl FnOnce(&mut GraphBuilder) -> Value,
) -> GraphProto {
    let mut b = GraphBuilder::new();
    b.set_scope(scope);
    let out = body(&mut b);
    b.output(&out, &format!("{scope}/out"), elem, dims);
    b.finish(&scope.replace('/', "_"))
}
