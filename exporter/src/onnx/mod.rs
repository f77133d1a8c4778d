//! The ONNX protobuf messages (generated from `exporter/proto/onnx.proto`, ONNX 1.17, by
//! `cargo run --manifest-path exporter/proto-gen/Cargo.toml`; committed so builds need no protoc) and small helpers.
#![allow(clippy::all, missing_docs, rustdoc::all)]

include!("onnx.rs");

/// `TensorProto.DataType` values used by the exporter.
pub use tensor_proto::DataType;

/// IR version written by the exporter (ONNX 1.15+: 10; ONNX Runtime 1.31 loads ≤ 13).
pub const IR_VERSION: i64 = 10;
/// Default-domain opset written by the exporter (ONNX Runtime 1.31 loads ≤ 26; the portable export stays ≤ 21).
pub const OPSET: i64 = 21;
