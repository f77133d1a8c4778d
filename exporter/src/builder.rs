//! A small typed builder for ONNX graphs: named values, nodes with attributes, inline constants, and weights that
//! stream into the external data file (see [`crate::weights`]).
//!
//! Values are plain tensor names (`Value`); every helper returns the name of its output. Node and value names
//! follow the `/model/layers.N/attn/...` scheme of Optimum exports so graphs stay readable in Netron.

use crate::onnx::{self, DataType, NodeProto, TensorProto, ValueInfoProto};
use proto::{attribute, bytes_i64};
pub use proto::{inline_tensor, model, value_info};
use std::collections::HashSet;

mod proto;
mod typed;

/// The name of a tensor in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(pub String);

impl Value {
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl From<&Value> for Value {
    fn from(v: &Value) -> Value {
        v.clone()
    }
}

/// A dimension of a graph input or output: fixed or symbolic (`"batch"`, `"sequence"`...).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::Fixed(v)
    }
}
impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::Fixed(v as i64)
    }
}
impl From<&str> for Dim {
    fn from(v: &str) -> Dim {
        Dim::Named(v.to_string())
    }
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
    Tensor(TensorProto),
    /// A subgraph (the `body` of Loop, the branches of If). Its names must not clash with the outer graph's.
    Graph(onnx::GraphProto),
}

/// Builds one `GraphProto`.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    used_names: HashSet<String>,
    initializer_names: HashSet<String>,
    /// Inline constants already emitted, by label and contents, so repeated helpers share one initializer.
    const_cache: std::collections::HashMap<(String, Vec<u8>), Value>,
    /// Current name scope, e.g. `/model/layers.3/attn`.
    scope: String,
    /// Values computed once per graph and reused, by key (see [`GraphBuilder::memo`]).
    memo: std::collections::HashMap<String, Value>,
    /// The newest default-domain opset a node of this graph needs (0: none beyond [`onnx::OPSET`]).
    required_opset: i64,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// Sets the name scope used for the nodes created next; returns the previous one.
    pub fn set_scope(&mut self, scope: impl Into<String>) -> String {
        std::mem::replace(&mut self.scope, scope.into())
    }

    fn unique(&mut self, base: &str) -> String {
        if self.used_names.insert(base.to_string()) {
            return base.to_string();
        }
        let mut i = 1;
        loop {
            let name = format!("{base}_{i}");
            if self.used_names.insert(name.clone()) {
                return name;
            }
            i += 1;
        }
    }

    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) -> Value {
        self.used_names.insert(name.to_string());
        self.inputs.push(value_info(name, elem, dims));
        Value(name.to_string())
    }

    /// Declares a scalar graph input (a shape with no dimensions) for a small input that consumers feed with
    /// different ranks: `num_logits_to_keep` arrives as a scalar from our runtime and as `[1]` from ONNX Runtime
    /// GenAI. ONNX Runtime checks a feed's shape only against a declared shape that has dimensions, so it takes
    /// both; the graph must bring the value to one shape itself (e.g. `Reshape` to `[1]`). (Declaring no shape at
    /// all would say "any rank" too, but the ONNX checker refuses a main-graph input without one.)
    pub fn input_any_rank(&mut self, name: &str, elem: DataType) -> Value {
        self.input(name, elem, &[])
    }

    /// Declares a one-element int64 graph input `name` (fed as a scalar or `[1]`, see
    /// [`GraphBuilder::input_any_rank`]) whose value defaults to `default` when a run does not feed it: a scalar
    /// initializer of the same name (ONNX IR ≥ 4; ONNX Runtime calls these overridable initializers and never
    /// constant-folds them). Consumers that do not know the input keep the default behaviour.
    pub fn input_i64_with_default(&mut self, name: &str, default: i64) -> Value {
        let v = self.input_any_rank(name, DataType::Int64);
        self.push_initializer(inline_tensor(
            name,
            DataType::Int64,
            &[],
            default.to_le_bytes().to_vec(),
        ));
        v
    }

    /// Declares `value` as a graph output named `name` (adds an Identity when the names differ).
    pub fn output(&mut self, value: &Value, name: &str, elem: DataType, dims: &[Dim]) {
        if value.0 != name {
            self.used_names.insert(name.to_string());
            self.nodes.push(NodeProto {
                input: vec![value.0.clone()],
                output: vec![name.to_string()],
                name: Some(format!("{}/output/{name}", self.scope)),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Adds a node of the default (ONNX) domain with one output; `label` names it within the current scope.
    pub fn op(
        &mut self,
        op_type: &str,
        label: &str,
        inputs: &[&Value],
        attrs: &[(&str, Attr)],
    ) -> Value {
        self.node("", op_type, label, inputs, attrs, 1)
            .pop()
            .expect("one output")
    }

    /// Adds a node of operator domain `domain` (`""` for ONNX, [`crate::ops::MS_DOMAIN`] for ONNX Runtime's contrib
    /// ops) with `n_out` outputs. An empty input name (an omitted optional input) is written as "".
    pub fn node(
        &mut self,
        domain: &str,
        op_type: &str,
        label: &str,
        inputs: &[&Value],
        attrs: &[(&str, Attr)],
        n_out: usize,
    ) -> Vec<Value> {
        let node_name = self.unique(&format!("{}/{label}/{op_type}", self.scope));
        let outputs: Vec<String> = (0..n_out)
            .map(|i| self.unique(&format!("{node_name}_output_{i}")))
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|v| v.0.clone()).collect(),
            output: outputs.clone(),
            name: Some(node_name),
            op_type: Some(op_type.into()),
            domain: (!domain.is_empty()).then(|| domain.into()),
            attribute: attrs.iter().map(|(k, a)| attribute(k, a)).collect(),
            ..Default::default()
        });
        outputs.into_iter().map(Value).collect()
    }

    /// Adds an initializer (inline or external; see [`crate::weights`]) and returns its value.
    pub fn initializer(&mut self, tensor: TensorProto) -> Value {
        let name = tensor.name.clone().expect("initializers are named");
        assert!(
            self.used_names.insert(name.clone()),
            "initializer {name} added twice"
        );
        self.push_initializer(tensor)
    }

    fn push_initializer(&mut self, tensor: TensorProto) -> Value {
        let name = tensor.name.clone().expect("initializers are named");
        self.initializer_names.insert(name.clone());
        self.initializers.push(tensor);
        Value(name)
    }

    /// A value remembered under `key` by [`set_memo`](Self::set_memo): e.g. the one fp32 Cast of a 16-bit weight
    /// that both the embedding lookup and the tied lm_head use.
    pub fn memo(&self, key: &str) -> Option<Value> {
        self.memo.get(key).cloned()
    }

    pub fn set_memo(&mut self, key: &str, value: Value) {
        self.memo.insert(key.to_string(), value);
    }

    /// Records that a node of this graph needs default-domain opset `version` (an op introduced then).
    pub fn require_opset(&mut self, version: i64) {
        self.required_opset = self.required_opset.max(version);
    }

    /// The default-domain opset the model must import: [`onnx::OPSET`], or a newer one that one of its nodes
    /// needs ([`require_opset`](Self::require_opset)).
    pub fn onnx_opset(&self) -> i64 {
        self.required_opset.max(onnx::OPSET)
    }

    /// Whether some node of the graph is in operator domain `domain` (e.g. `"com.microsoft"`), which the model
    /// must then import.
    pub fn uses_domain(&self, domain: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.domain.as_deref() == Some(domain))
    }

    /// The initializer called `name`, if one was added.
    pub fn existing(&self, name: &str) -> Option<Value> {
        self.initializer_names
            .contains(name)
            .then(|| Value(name.to_string()))
    }

    fn cached_const(&mut self, label: &str, elem: DataType, dims: &[i64], raw: Vec<u8>) -> Value {
        let mut key_bytes = raw.clone();
        key_bytes.extend(dims.iter().flat_map(|d| d.to_le_bytes()));
        key_bytes.push(elem as u8);
        let key = (label.to_string(), key_bytes);
        if let Some(v) = self.const_cache.get(&key) {
            return v.clone();
        }
        let name = self.unique(&format!("/const/{label}"));
        let v = self.push_initializer(inline_tensor(&name, elem, dims, raw));
        self.const_cache.insert(key, v.clone());
        v
    }

    /// An inline int64 constant (shapes, axes, indices); identical constants are shared.
    pub fn const_i64(&mut self, label: &str, values: &[i64]) -> Value {
        self.cached_const(
            label,
            DataType::Int64,
            &[values.len() as i64],
            bytes_i64(values),
        )
    }

    /// An inline int64 scalar (rank 0).
    pub fn scalar_i64(&mut self, label: &str, value: i64) -> Value {
        self.cached_const(label, DataType::Int64, &[], bytes_i64(&[value]))
    }

    /// An inline float32 scalar (rank 0).
    pub fn scalar_f32(&mut self, label: &str, value: f32) -> Value {
        self.cached_const(label, DataType::Float, &[], value.to_le_bytes().to_vec())
    }

    /// An inline float32 tensor (small tables such as RoPE inverse frequencies or folded norm gains).
    pub fn const_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> Value {
        let name = self.unique(name);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(inline_tensor(&name, DataType::Float, dims, bytes))
    }

    pub fn finish(self, name: &str) -> onnx::GraphProto {
        onnx::GraphProto {
            node: self.nodes,
            name: Some(name.into()),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}
