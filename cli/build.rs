//! Compiles the project's own `.proto` schemas (Triton's `ModelConfig`, the part of ONNX's `ModelProto`
//! that `validate` reads) without `protoc`: protox builds the descriptor set, prost-build the Rust types.
use std::path::PathBuf;

fn main() {
    let protos = ["model_config.proto", "onnx.proto", "grpc_inference.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("compiling proto/*.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("descriptors.bin"), bytes).expect("writing descriptors.bin");
    prost_build::Config::new()
        // The request's tensors are handed over without a copy.
        .bytes([".kserve_grpc.ModelInferRequest.raw_input_contents"])
        .compile_fds(fds)
        .expect("generating Rust types from proto/*.proto");
}
