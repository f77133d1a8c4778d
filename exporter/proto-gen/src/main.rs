//! Generates the prost code for onnx.proto into exporter/src/onnx/onnx.rs (committed, so builds need no protoc).
use std::path::PathBuf;

fn main() {
    let exporter = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto_dir = exporter.join("proto");
    let out_dir = exporter.join("src/onnx");
    let fds = protox::compile([proto_dir.join("onnx.proto")], [&proto_dir]).expect("compile onnx.proto");
    prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(fds)
        .expect("generate Rust code");
    // prost names the file after the proto package.
    println!("wrote {}", out_dir.join("onnx.rs").display());
}
