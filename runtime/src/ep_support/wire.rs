//! Just enough of the protobuf wire format to list an ONNX graph's nodes and output types without an ONNX
//! library: `ModelProto.graph` (7) → `GraphProto.node` (1) and `.output` (12); `NodeProto.input` (1) … `.name` (3),
//! `.op_type` (4), `.domain` (7) and the subgraphs of `.attribute` (5: `AttributeProto.g` 6, `.graphs` 11);
//! `ValueInfoProto.name` (1), `.type` (2) → `TypeProto.tensor_type` (1) → `.elem_type` (1). Initializers and every
//! other field are skipped by length, never decoded.

use super::{GraphOps, Node};

/// Subgraphs nested deeper than this are refused (a crafted file cannot recurse without bound).
const MAX_DEPTH: usize = 16;

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The `(field number, value)` pairs of one message.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u64, Value<'_>), String>> + '_ {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let step = (|| {
            let key = varint(&mut buf)?;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut buf)?),
                1 => advance(&mut buf, 8)?,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflow")?;
                    if len > buf.len() {
                        return Err(format!("a field of {len} bytes runs past the end"));
                    }
                    let (bytes, rest) = buf.split_at(len);
                    buf = rest;
                    Value::Bytes(bytes)
                }
                5 => advance(&mut buf, 4)?,
                w => return Err(format!("unsupported protobuf wire type {w}")),
            };
            Ok((key >> 3, value))
        })();
        if step.is_err() {
            buf = &[];
        }
        Some(step)
    })
}

/// Skips a fixed-size field of `n` bytes.
fn advance<'a>(buf: &mut &'a [u8], n: usize) -> Result<Value<'a>, String> {
    if buf.len() < n {
        return Err("a fixed-size field runs past the end".into());
    }
    *buf = &buf[n..];
    Ok(Value::Fixed)
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or("a varint runs past the end")?;
        *buf = rest;
        out |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The nodes and activation type of the model in `bytes` (an ONNX `ModelProto`).
pub(crate) fn graph_ops(bytes: &[u8]) -> Result<GraphOps, String> {
    let mut out = GraphOps::default();
    let mut found = false;
    for field in fields(bytes) {
        if let (7, Value::Bytes(graph)) = field? {
            found = true;
            let mut outputs = Vec::new();
            read_graph(graph, &mut out.nodes, Some(&mut outputs), 0)?;
            out.activation_type = outputs
                .iter()
                .find(|(name, _)| name == "logits")
                .or(outputs.first())
                .and_then(|(_, t)| *t);
        }
    }
    if !found {
        return Err("not an ONNX model (no graph)".into());
    }
    Ok(out)
}

/// Appends the nodes of `graph` (and of its subgraphs) to `nodes`; the top graph's outputs go to `outputs`.
fn read_graph(
    graph: &[u8],
    nodes: &mut Vec<Node>,
    mut outputs: Option<&mut Vec<(String, Option<i32>)>>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("subgraphs nested more than {MAX_DEPTH} deep"));
    }
    for field in fields(graph) {
        match field? {
            (1, Value::Bytes(node)) => read_node(node, nodes, depth)?,
            (12, Value::Bytes(info)) => {
                if let Some(outputs) = outputs.as_deref_mut() {
                    outputs.push(value_info(info)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_node(bytes: &[u8], nodes: &mut Vec<Node>, depth: usize) -> Result<(), String> {
    let mut node = Node::default();
    let mut subgraphs = Vec::new();
    for field in fields(bytes) {
        match field? {
            (3, Value::Bytes(b)) => node.name = text(b),
            (4, Value::Bytes(b)) => node.op_type = text(b),
            (7, Value::Bytes(b)) => node.domain = text(b),
            (5, Value::Bytes(attribute)) => {
                for f in fields(attribute) {
                    if let (6 | 11, Value::Bytes(g)) = f? {
                        subgraphs.push(g);
                    }
                }
            }
            _ => {}
        }
    }
    // The default domain has two spellings.
    if node.domain == "ai.onnx" {
        node.domain.clear();
    }
    nodes.push(node);
    for g in subgraphs {
        read_graph(g, nodes, None, depth + 1)?;
    }
    Ok(())
}

/// `(name, elem_type)` of a `ValueInfoProto`.
fn value_info(bytes: &[u8]) -> Result<(String, Option<i32>), String> {
    let (mut name, mut elem) = (String::new(), None);
    for field in fields(bytes) {
        match field? {
            (1, Value::Bytes(b)) => name = text(b),
            (2, Value::Bytes(type_proto)) => {
                for f in fields(type_proto) {
                    if let (1, Value::Bytes(tensor)) = f? {
                        for t in fields(tensor) {
                            if let (1, Value::Varint(v)) = t? {
                                elem = i32::try_from(v).ok();
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok((name, elem))
}
