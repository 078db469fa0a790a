//! The KServe v2 inference protocol, the parts the CLI speaks itself, shared by deploy's verify
//! (`rollout --smoke`) and bench.
//!
//! In: model metadata and configuration as a server reports them. Out: requests built from them
//! (here), tensors encoded and decoded ([`tensor`]), the gRPC messages and calls ([`grpc`]).

pub(crate) mod datatype;
pub mod grpc;
pub(crate) mod tensor;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use datatype::DataType;

/// What went wrong speaking KServe v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KserveError {
    /// The model's metadata is unusable.
    #[error("{0}")]
    Metadata(String),
    /// Tensor values that do not fit their datatype or shape (encoding, decoding, input files,
    /// answers).
    #[error("{0}")]
    Tensor(String),
    /// A gRPC call failed.
    #[error("{call}: {code:?}: {message}")]
    Grpc {
        /// The call (`ModelInfer`).
        call: &'static str,
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// An endpoint no channel can be opened to.
    #[error("{0}")]
    Endpoint(String),
}

impl KserveError {
    /// The error as a load generator counts it: a gRPC status by its code's name.
    pub fn count_as(&self) -> String {
        match self {
            KserveError::Grpc { code, .. } => format!("grpc {code:?}"),
            other => other.to_string(),
        }
    }
}

/// A model's metadata (`GET /v2/models/<m>[/versions/<v>]`, or gRPC's `ModelMetadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// The versions the server has loaded.
    #[serde(default)]
    pub versions: Vec<String>,
    /// The backend or platform (`python`, `onnxruntime_onnx`, …).
    #[serde(default)]
    pub platform: String,
    /// The inputs a request gives.
    pub inputs: Vec<TensorMetadata>,
    /// The outputs an answer holds.
    #[serde(default)]
    pub outputs: Vec<TensorMetadata>,
}

/// One input or output of a model: its name, datatype and shape (`-1`: any size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions, `-1` where dynamic.
    pub shape: Vec<i64>,
}

impl ModelMetadata {
    /// The metadata from the HTTP protocol's JSON; the error names what is wrong.
    pub fn from_json(body: &[u8]) -> Result<ModelMetadata, KserveError> {
        serde_json::from_slice(body)
            .map_err(|e| KserveError::Metadata(format!("the model metadata: {e}")))
    }
}

/// One input of an inference request, its values flattened in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputTensor {
    /// The input's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions (no dynamic ones left).
    pub shape: Vec<u64>,
    /// The values, as the JSON form has them.
    pub data: Vec<Value>,
}

/// An inference request (the HTTP protocol's JSON form serializes from it; the binary and gRPC
/// forms are built from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Every input of the model.
    pub inputs: Vec<InputTensor>,
}

impl InferRequest {
    /// The request as the HTTP protocol's JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a request serializes")
    }
}

/// The dims of a tensor from its metadata shape, `-1` (dynamic) taken as 1.
fn dims(shape: &[i64]) -> Result<Vec<u64>, String> {
    shape
        .iter()
        .map(|d| match *d {
            -1 => Ok(1),
            n if n >= 0 => Ok(n as u64),
            n => Err(format!("bad dimension {n}")),
        })
        .collect()
}

/// An inference request for the model described by `meta`, every input filled with zeros
/// (empty strings for BYTES, false for BOOL).
pub fn zero_request(meta: &ModelMetadata) -> Result<InferRequest, KserveError> {
    if meta.inputs.is_empty() {
        return Err(KserveError::Metadata(
            "the model metadata lists no inputs".into(),
        ));
    }
    let mut inputs = Vec::new();
    for i in &meta.inputs {
        let name = &i.name;
        let shape =
            dims(&i.shape).map_err(|e| KserveError::Metadata(format!("input {name}: {e}")))?;
        let count: u64 = shape.iter().product();
        if count > 1 << 24 {
            return Err(KserveError::Tensor(format!(
                "input {name} has {count} elements: too large for a smoke test"
            )));
        }
        inputs.push(InputTensor {
            name: name.clone(),
            datatype: i.datatype,
            shape,
            data: vec![i.datatype.zero(); count as usize],
        });
    }
    Ok(InferRequest { inputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_follow_the_metadata() {
        let meta = ModelMetadata::from_json(
            br#"{"name": "m", "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "s", "datatype": "BYTES", "shape": [2]}
            ]}"#,
        )
        .unwrap();
        let r: Value = serde_json::from_slice(&zero_request(&meta).unwrap().to_json()).unwrap();
        assert_eq!(r["inputs"][0]["shape"], json!([1, 4]));
        assert_eq!(r["inputs"][0]["data"].as_array().unwrap().len(), 4);
        assert_eq!(r["inputs"][1]["data"], json!(["", ""]));
        let e = ModelMetadata::from_json(
            br#"{"name": "m", "inputs": [{"name": "x", "datatype": "Q8", "shape": [1]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown datatype Q8"), "{e}");
        let none = ModelMetadata::from_json(br#"{"name": "m", "inputs": []}"#).unwrap();
        assert!(zero_request(&none).is_err());
    }
}
