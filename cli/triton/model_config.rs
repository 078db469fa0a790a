//! Triton's `ModelConfig` (our schema in `proto/model_config.proto`), read from `config.pbtxt` text.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor, SerializeOptions};

use crate::triton::pbtxt::{self, ParseError, Parsed};

/// Types generated from `proto/model_config.proto`.
pub mod inference {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// Types generated from `proto/onnx.proto`.
pub mod onnx_proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use inference::ModelConfig;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..])
        .expect("the descriptor set built by build.rs decodes")
});

/// The descriptor of `inference.ModelConfig`.
pub fn descriptor() -> MessageDescriptor {
    POOL.get_message_by_name("inference.ModelConfig")
        .expect("inference.ModelConfig is in the schema")
}

/// The descriptor pool of the project's schemas.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

/// A `config.pbtxt` read with Triton's parser semantics: the typed config plus the source spans.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    /// The configuration as Triton's protobuf message.
    pub config: ModelConfig,
    /// The parse it came from: spans for every field, notes.
    pub source: Parsed,
}

/// Parses `config.pbtxt` text.
pub fn parse(text: &str) -> Result<ParsedConfig, ParseError> {
    let source = pbtxt::parse(text, &descriptor())?;
    let config = source
        .message
        .transcode_to::<ModelConfig>()
        .expect("a message built from the ModelConfig descriptor transcodes to ModelConfig");
    Ok(ParsedConfig { config, source })
}

/// The canonical protobuf JSON of a parsed config (proto field names, 64-bit integers as strings,
/// enums by name, default values left out): the form `protobuf`'s `MessageToJson` prints.
pub fn to_canonical_json(parsed: &Parsed) -> serde_json::Value {
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    parsed
        .message
        .serialize_with_options(&mut ser, &opts)
        .expect("serializing a DynamicMessage to JSON cannot fail");
    serde_json::from_slice(&ser.into_inner()).expect("valid JSON")
}
