//! The protobuf side of the builder: the `ModelProto` wrapper, value infos, inline tensors and attributes.

use super::{Attr, Dim};
use crate::onnx::{
    self, attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto,
    AttributeProto, DataType, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Wraps a graph into a model with the exporter's IR version and opset imports.
pub fn model(
    graph: onnx::GraphProto,
    opsets: &[(&str, i64)],
    metadata: &[(&str, String)],
) -> onnx::ModelProto {
    onnx::ModelProto {
        ir_version: Some(onnx::IR_VERSION),
        opset_import: opsets
            .iter()
            .map(|(domain, version)| onnx::OperatorSetIdProto {
                domain: Some(domain.to_string()),
                version: Some(*version),
            })
            .collect(),
        producer_name: Some("gemma-onnx".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| onnx::StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| onnx::tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Named(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn inline_tensor(name: &str, elem: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem as i32),
        name: Some(name.into()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

pub(super) fn bytes_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(super) fn attribute(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    match a {
        Attr::Int(v) => {
            p.i = Some(*v);
            p.r#type = Some(AttributeType::Int as i32);
        }
        Attr::Float(v) => {
            p.f = Some(*v);
            p.r#type = Some(AttributeType::Float as i32);
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            p.r#type = Some(AttributeType::Ints as i32);
        }
        Attr::Str(v) => {
            p.s = Some(v.as_bytes().to_vec());
            p.r#type = Some(AttributeType::String as i32);
        }
        Attr::Tensor(t) => {
            p.t = Some(t.clone());
            p.r#type = Some(AttributeType::Tensor as i32);
        }
        Attr::Graph(g) => {
            p.g = Some(g.clone());
            p.r#type = Some(AttributeType::Graph as i32);
        }
    }
    p
}
