//! Inputs: request tensors built from the model's metadata (random, zeros, or perf_analyzer's
//! input-data file, with `--shape` for dynamic dimensions), and their bodies as JSON or
//! Triton's binary tensor extension.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::load::Rng;
use crate::kserve::tensor::encode;
use crate::kserve::{DataType, InferRequest, InputTensor, ModelMetadata, TensorMetadata};

/// How input tensors are filled.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    Random,
    Zero,
    /// perf_analyzer's input-data JSON: `{"data": [{"INPUT0": [..] | {"content": [..], "shape": [..]}}, ..]}`.
    File(Value),
}

/// Requests for a model, from its metadata: one per `--input-data` entry (round-robin), or a
/// few random ones.
pub fn build_requests(
    meta: &ModelMetadata,
    data: &InputData,
    shapes: &BTreeMap<String, Vec<i64>>,
    batch: u32,
    batching: bool,
) -> Result<Vec<InferRequest>, String> {
    if meta.inputs.is_empty() {
        return Err("the model metadata lists no inputs".into());
    }
    let entries: Vec<Value> = match data {
        InputData::File(v) => v
            .get("data")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .cloned()
            .ok_or("the input-data file has no \"data\" list")?,
        InputData::Random => vec![Value::Null; 4],
        InputData::Zero => vec![Value::Null],
    };
    let mut rng = Rng::new(0x5eed);
    let mut out = Vec::new();
    for entry in &entries {
        let mut inputs = Vec::new();
        for i in &meta.inputs {
            let name = &i.name;
            let (content, explicit_shape) = match entry.get(name) {
                Some(v) => {
                    let (values, shape) = crate::kserve::tensor::given(i.datatype, v)
                        .map_err(|e| format!("input-data entry for {name}: {e}"))?;
                    (Some(values), shape)
                }
                None if matches!(data, InputData::File(_)) => {
                    return Err(format!("the input-data file has no data for input {name}"));
                }
                None => (None, None),
            };
            let shape = match explicit_shape {
                Some(s) => s,
                None => concrete_shape(i, shapes.get(name), batch, batching)?,
            };
            let count: u64 = shape.iter().product();
            if count > 1 << 26 {
                return Err(format!("input {name} would have {count} elements"));
            }
            let values = match content {
                Some(flat) => {
                    if flat.len() as u64 != count {
                        return Err(format!(
                            "input-data for {name} has {} elements, its shape {shape:?} needs {count}",
                            flat.len()
                        ));
                    }
                    flat
                }
                None => (0..count)
                    .map(|_| sample(i.datatype, data, &mut rng))
                    .collect(),
            };
            inputs.push(InputTensor {
                name: name.clone(),
                datatype: i.datatype,
                shape,
                data: values,
            });
        }
        out.push(InferRequest { inputs });
    }
    Ok(out)
}

/// The shape of input `i` in a request: its fixed dimensions, the `--shape` given for it, and a
/// leading dynamic dimension of a batching model taken as the batch size.
fn concrete_shape(
    i: &TensorMetadata,
    wanted: Option<&Vec<i64>>,
    batch: u32,
    batching: bool,
) -> Result<Vec<u64>, String> {
    let meta_shape = &i.shape;
    let mut dims = Vec::new();
    for (k, d) in meta_shape.iter().enumerate() {
        dims.push(match (*d, wanted) {
            (d, _) if d >= 0 => d as u64,
            (_, Some(w)) if w.len() == meta_shape.len() && w[k] > 0 => w[k] as u64,
            // The leading dynamic dimension of a batching model is the batch
            // (without a configuration to say, a leading -1 is taken for it).
            (_, _) if k == 0 && batching => u64::from(batch.max(1)),
            _ => {
                let dims = meta_shape
                    .iter()
                    .map(|d| if *d < 0 { "N".into() } else { d.to_string() })
                    .collect::<Vec<_>>()
                    .join(",");
                return Err(format!(
                    "input {} has a dynamic dimension {k}: give its size with --shape {}:{dims}",
                    i.name, i.name
                ));
            }
        });
    }
    Ok(dims)
}

fn sample(dt: DataType, data: &InputData, rng: &mut Rng) -> Value {
    if *data == InputData::Zero {
        return dt.zero();
    }
    match dt {
        DataType::Bool => json!(rng.next_u64() & 1 == 1),
        DataType::Bytes => json!(format!("{:x}", rng.next_u64())),
        t if t.is_float() => json!((rng.next_f64() * 2.0 - 1.0) as f32 as f64),
        DataType::Int8 => json!((rng.next_u64() % 256) as i64 - 128),
        DataType::Uint8 => json!(rng.next_u64() % 256),
        t if t.is_signed_int() => json!((rng.next_u64() % 1000) as i64),
        _ => json!(rng.next_u64() % 1000),
    }
}

/// One request body: JSON, or Triton's binary tensor extension (JSON header of `header_len`
/// bytes, then the tensors' raw bytes).
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: bytes::Bytes,
    pub header_len: Option<usize>,
    /// The same request for the gRPC protocol.
    pub grpc: Option<crate::kserve::grpc::proto::ModelInferRequest>,
}

impl Body {
    /// The headers that say how the body is encoded.
    pub fn content_headers(&self) -> Vec<(&'static str, String)> {
        match self.header_len {
            None => vec![("content-type", "application/json".into())],
            Some(n) => vec![
                ("content-type", "application/octet-stream".into()),
                ("inference-header-content-length", n.to_string()),
            ],
        }
    }

    pub fn json(bytes: Vec<u8>) -> Body {
        Body {
            bytes: bytes.into(),
            header_len: None,
            grpc: None,
        }
    }
}

/// A request in the binary tensor extension's framing, asking for binary outputs too.
pub fn to_binary(req: &InferRequest) -> Result<Body, String> {
    let mut blobs = Vec::new();
    let mut inputs = Vec::new();
    for t in &req.inputs {
        let start = blobs.len();
        encode(t.datatype, &t.data, &mut blobs).map_err(|e| format!("input {}: {e}", t.name))?;
        inputs.push(
            json!({"name": t.name, "datatype": t.datatype, "shape": t.shape,
                           "parameters": {"binary_data_size": blobs.len() - start}}),
        );
    }
    let head = json!({"inputs": inputs, "parameters": {"binary_data_output": true}});
    let mut bytes = serde_json::to_vec(&head).expect("json");
    let header_len = bytes.len();
    bytes.extend(blobs);
    Ok(Body {
        bytes: bytes.into(),
        header_len: Some(header_len),
        grpc: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kserve::tensor::{bf16_bits, f16_bits};

    #[test]
    fn requests_follow_metadata_shapes_and_input_files() {
        let meta: ModelMetadata = serde_json::from_value(json!({"name": "m", "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "s", "datatype": "BYTES", "shape": [-1, -1]}]}))
        .unwrap();
        let mut shapes = BTreeMap::new();
        shapes.insert("s".to_string(), vec![2, 3]);
        let r = build_requests(&meta, &InputData::Zero, &shapes, 2, true).unwrap();
        let v: Value = serde_json::from_slice(&r[0].to_json()).unwrap();
        assert_eq!(v["inputs"][0]["shape"], json!([2, 4]));
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 8);
        assert_eq!(v["inputs"][1]["shape"], json!([2, 3]));
        let file =
            json!({"data": [{"x": [[1, 2, 3, 4]], "s": {"content": ["a"], "shape": [1, 1]}}]});
        let r = build_requests(&meta, &InputData::File(file), &BTreeMap::new(), 1, true).unwrap();
        let v: Value = serde_json::from_slice(&r[0].to_json()).unwrap();
        assert_eq!(v["inputs"][0]["data"], json!([1, 2, 3, 4]));
        assert_eq!(v["inputs"][1]["shape"], json!([1, 1]));
        let wrong = json!({"data": [{"x": [1, 2], "s": ["a"]}]});
        assert!(build_requests(&meta, &InputData::File(wrong), &BTreeMap::new(), 1, true).is_err());
        // A second dynamic dimension needs --shape.
        assert!(
            build_requests(&meta, &InputData::Zero, &BTreeMap::new(), 1, true)
                .unwrap_err()
                .contains("--shape s:")
        );
    }

    #[test]
    fn binary_tensors_follow_the_extension() {
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00);
        assert_eq!(f16_bits(1e-7), 0x0002);
        assert_eq!(f16_bits(0.1), 0x2e66);
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(-0.5), 0xbf00);
        let req = json!({"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, -2.0]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ab", ""]},
            {"name": "h", "datatype": "FP16", "shape": [1], "data": [1.0]}
        ]});
        let b = to_binary(&serde_json::from_value(req).unwrap()).unwrap();
        let n = b.header_len.unwrap();
        let header: Value = serde_json::from_slice(&b.bytes[..n]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(
            header["inputs"][1]["parameters"]["binary_data_size"],
            4 + 2 + 4
        );
        assert!(header["inputs"][0].get("data").is_none());
        assert_eq!(header["parameters"]["binary_data_output"], true);
        let blob = &b.bytes[n..];
        assert_eq!(&blob[..8], &[0, 0, 128, 63, 0, 0, 0, 192]);
        assert_eq!(&blob[8..18], &[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(&blob[18..], &[0x00, 0x3c]);
    }
}
