//! The KServe v2 inference protocol, the parts the CLI speaks itself, shared by deploy's verify
//! (`rollout --smoke`) and bench.
//!
//! In: model metadata and configuration as a server reports them. Out: requests built from them
//! (here), tensors encoded and decoded ([`tensor`]), the gRPC messages and calls ([`grpc`]).

pub mod grpc;
pub mod tensor;

use serde_json::{Value, json};

/// The dims of a tensor from its metadata shape, `-1` (dynamic) taken as 1.
fn dims(shape: &Value) -> Result<Vec<u64>, String> {
    shape
        .as_array()
        .ok_or("shape is not a list")?
        .iter()
        .map(|d| match d.as_i64() {
            Some(-1) => Ok(1),
            Some(n) if n >= 0 => Ok(n as u64),
            _ => Err(format!("bad dimension {d}")),
        })
        .collect()
}

/// A JSON inference request for the model described by `meta` (`GET /v2/models/<m>`), every input
/// filled with zeros (empty strings for BYTES, false for BOOL).
pub fn zero_request(meta: &Value) -> Result<Value, String> {
    let inputs = meta
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the model metadata lists no inputs")?;
    let mut out = Vec::new();
    for i in inputs {
        let name = i
            .get("name")
            .and_then(Value::as_str)
            .ok_or("an input has no name")?;
        let datatype = i
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("input {name} has no datatype"))?;
        let shape = dims(i.get("shape").unwrap_or(&Value::Null))
            .map_err(|e| format!("input {name}: {e}"))?;
        let count: u64 = shape.iter().product();
        if count > 1 << 24 {
            return Err(format!(
                "input {name} has {count} elements: too large for a smoke test"
            ));
        }
        let zero = match datatype {
            "BYTES" => json!(""),
            "BOOL" => json!(false),
            "FP16" | "FP32" | "FP64" | "BF16" => json!(0.0),
            "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                json!(0)
            }
            other => return Err(format!("input {name}: unknown datatype {other}")),
        };
        out.push(json!({
            "name": name,
            "datatype": datatype,
            "shape": shape,
            "data": vec![zero; count as usize],
        }));
    }
    Ok(json!({"inputs": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_metadata() {
        let meta = json!({"name": "m", "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "s", "datatype": "BYTES", "shape": [2]}
        ]});
        let r = zero_request(&meta).unwrap();
        assert_eq!(r["inputs"][0]["shape"], json!([1, 4]));
        assert_eq!(r["inputs"][0]["data"].as_array().unwrap().len(), 4);
        assert_eq!(r["inputs"][1]["data"], json!(["", ""]));
        assert!(
            zero_request(&json!({"inputs": [{"name": "x", "datatype": "Q8", "shape": [1]}]}))
                .is_err()
        );
    }
}
