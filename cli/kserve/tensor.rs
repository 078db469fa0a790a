//! Tensors both ways: values encoded as the binary forms want them (little-endian, BYTES
//! length-prefixed, FP16/BF16 rounded to nearest even), and raw little-endian bytes read back as values (perf_analyzer's `{"b64": ..}` inputs,
//! Triton's binary outputs, gRPC's raw output contents), the outputs of an inference answer in
//! any of the three encodings, and the check of those outputs against an input-data file's
//! `validation_data`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{DataType, KserveError, ModelMetadata};

/// A tensor problem.
fn bad(m: impl Into<String>) -> KserveError {
    KserveError::Tensor(m.into())
}

/// The value of IEEE half-precision bits.
pub fn f16_value(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    sign * match exp {
        0 => man * 2f32.powi(-24),
        0x1f if man == 0.0 => f32::INFINITY,
        0x1f => f32::NAN,
        e => (1.0 + man / 1024.0) * 2f32.powi(e - 15),
    }
}

/// The value of bfloat16 bits.
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Raw little-endian, row-major tensor bytes as JSON values (BYTES: 4-byte length prefixes).
pub fn decode(dt: DataType, raw: &[u8]) -> Result<Vec<Value>, KserveError> {
    let Some(width) = dt.width() else {
        let mut out = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let len = raw
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| bad(format!("BYTES: {} stray bytes at the end", raw.len() - at)))?;
            at += 4;
            let s = raw.get(at..at + len).ok_or_else(|| {
                bad(format!(
                    "BYTES: an element claims {len} bytes, {} are left (is each element's 4-byte length prefix there?)",
                    raw.len() - at
                ))
            })?;
            out.push(json!(
                std::str::from_utf8(s).map_err(|_| bad("BYTES: an element is not UTF-8 text"))?
            ));
            at += len;
        }
        return Ok(out);
    };
    if !raw.len().is_multiple_of(width) {
        return Err(bad(format!(
            "{dt}: {} bytes is not a whole number of {width}-byte elements",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(width)
        .map(|c| {
            let u = |n: usize| {
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&c[..n]);
                u64::from_le_bytes(b)
            };
            match dt {
                DataType::Bool => json!(c[0] != 0),
                DataType::Uint8 => json!(c[0]),
                DataType::Int8 => json!(c[0] as i8),
                DataType::Uint16 => json!(u(2) as u16),
                DataType::Int16 => json!(u(2) as u16 as i16),
                DataType::Uint32 => json!(u(4) as u32),
                DataType::Int32 => json!(u(4) as u32 as i32),
                DataType::Uint64 => json!(u(8)),
                DataType::Int64 => json!(u(8) as i64),
                DataType::Fp16 => json!(f16_value(u(2) as u16)),
                DataType::Bf16 => json!(bf16_value(u(2) as u16)),
                DataType::Fp32 => json!(f32::from_bits(u(4) as u32)),
                DataType::Fp64 | DataType::Bytes => json!(f64::from_bits(u(8))),
            }
        })
        .collect())
}

/// One output of an answer: its datatype and flattened values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The element type.
    pub datatype: DataType,
    /// The values, flattened.
    pub data: Vec<Value>,
}

/// A tensor given in an input-data file: a (nested) list, `{"content": [..], "shape": [..]}`,
/// or `{"b64": "<raw little-endian bytes>"}`. The values, flattened, and the shape if given.
pub fn given(dt: DataType, v: &Value) -> Result<(Vec<Value>, Option<Vec<u64>>), KserveError> {
    match v {
        Value::Array(a) => Ok((flatten(a), None)),
        Value::Object(o) => {
            let shape = match o.get("shape") {
                Some(s) => Some(
                    serde_json::from_value::<Vec<u64>>(s.clone())
                        .map_err(|_| bad("\"shape\" is a list of non-negative integers"))?,
                ),
                None => None,
            };
            if let Some(b) = o.get("b64") {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().ok_or_else(|| bad("\"b64\" is a string"))?)
                    .map_err(|e| bad(format!("\"b64\": {e}")))?;
                return Ok((decode(dt, &raw)?, shape));
            }
            match o.get("content") {
                Some(Value::Array(a)) => Ok((flatten(a), shape)),
                Some(_) => Err(bad("\"content\" is a list")),
                None => Err(bad("an object needs \"content\" or \"b64\"")),
            }
        }
        _ => Err(bad(
            "neither a list, {\"content\", \"shape\"} nor {\"b64\"}",
        )),
    }
}

/// Nested lists as one flat list, in row-major order.
pub fn flatten(a: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for v in a {
        match v {
            Value::Array(inner) => out.extend(flatten(inner)),
            other => out.push(other.clone()),
        }
    }
    out
}

/// The outputs of a JSON answer, or of a binary-extension one (`header_len`: the
/// `Inference-Header-Content-Length`).
pub fn http_outputs(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<BTreeMap<String, Tensor>, KserveError> {
    let head = match header_len {
        Some(n) => body
            .get(..n)
            .ok_or_else(|| bad("the answer is shorter than its Inference-Header-Content-Length"))?,
        None => body,
    };
    let v: Value = serde_json::from_slice(head).map_err(|e| bad(format!("the answer: {e}")))?;
    let mut at = header_len.unwrap_or(0);
    let mut out = BTreeMap::new();
    for o in v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the answer has no outputs"))?
    {
        let name = o["name"]
            .as_str()
            .ok_or_else(|| bad("an output has no name"))?
            .to_string();
        let datatype: DataType = o["datatype"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| bad(format!("output {name}: {e}")))?;
        let data = match o
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
        {
            Some(n) => {
                let raw = body.get(at..at + n as usize).ok_or_else(|| {
                    bad(format!("output {name}: binary data past the answer's end"))
                })?;
                at += n as usize;
                decode(datatype, raw).map_err(|e| bad(format!("output {name}: {e}")))?
            }
            None => flatten(o["data"].as_array().map(Vec::as_slice).unwrap_or(&[])),
        };
        out.insert(name, Tensor { datatype, data });
    }
    Ok(out)
}

/// What the outputs of one request should be (`validation_data`, one entry per `data` entry).
pub type Expected = BTreeMap<String, Vec<Value>>;

/// `validation_data` of an input-data file, checked against the model's outputs: `None` when
/// the file has none.
pub fn expected(file: &Value, meta: &ModelMetadata) -> Result<Option<Vec<Expected>>, KserveError> {
    let Some(v) = file.get("validation_data") else {
        return Ok(None);
    };
    let entries = v
        .as_array()
        .ok_or_else(|| bad("\"validation_data\" is a list, one entry per \"data\" entry"))?;
    let data_len = file
        .get("data")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if entries.len() != data_len {
        return Err(bad(format!(
            "\"validation_data\" has {} entries and \"data\" {data_len}: there is one per data entry",
            entries.len()
        )));
    }
    let outputs: BTreeMap<&str, DataType> = meta
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.datatype))
        .collect();
    let mut out = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        let e = e
            .as_object()
            .ok_or_else(|| bad(format!("validation_data[{k}] is an object of outputs")))?;
        let mut want = Expected::new();
        for (name, v) in e {
            let dt = outputs.get(name.as_str()).ok_or_else(|| {
                bad(format!(
                    "validation_data[{k}]: the model has no output {name} (it has {})",
                    outputs.keys().copied().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let (values, _) =
                given(*dt, v).map_err(|e| bad(format!("validation_data[{k}].{name}: {e}")))?;
            want.insert(name.clone(), values);
        }
        out.push(want);
    }
    Ok(Some(out))
}

/// Whether `got` holds what `want` expects: integers, booleans and strings exactly, FP32/FP64
/// within a relative 1e-5, FP16/BF16 within their precision. The first difference otherwise.
pub fn check(want: &Expected, got: &BTreeMap<String, Tensor>) -> Result<(), KserveError> {
    for (name, values) in want {
        let t = got
            .get(name)
            .ok_or_else(|| bad(format!("output {name} is missing")))?;
        if t.data.len() != values.len() {
            return Err(bad(format!(
                "output {name} has {} elements, expected {}",
                t.data.len(),
                values.len()
            )));
        }
        let tol = t.datatype.tolerance();
        for (k, (g, w)) in t.data.iter().zip(values).enumerate() {
            let same = match (g.as_f64(), w.as_f64()) {
                (Some(a), Some(b)) if tol > 0.0 => (a - b).abs() <= tol * b.abs().max(1.0),
                (Some(a), Some(b)) => a == b,
                _ => g == w,
            };
            if !same {
                return Err(bad(format!("output {name}[{k}] is {g}, expected {w}")));
            }
        }
    }
    Ok(())
}

/// IEEE half precision, round to nearest even.
pub fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |v: u32, rem: u32| -> u32 {
        if rem > 0x1000 || (rem == 0x1000 && v & 1 == 1) {
            v + 1
        } else {
            v
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (man | 0x80_0000) >> (1 - e);
        return sign | round(m >> 13, m & 0x1fff) as u16;
    }
    // A carry out of the mantissa correctly bumps the exponent.
    sign | round(((e as u32) << 10) | (man >> 13), man & 0x1fff) as u16
}

/// bfloat16: the upper half of an f32, round to nearest even.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Tensor data as the binary forms want it: little-endian, row-major, BYTES length-prefixed.
pub fn encode(dt: DataType, data: &[Value], out: &mut Vec<u8>) -> Result<(), KserveError> {
    let f = |v: &Value| {
        v.as_f64()
            .ok_or_else(|| bad(format!("{dt} data must be numbers")))
    };
    let i = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_u64().map(|u| u as i64))
            .ok_or_else(|| bad(format!("{dt} data must be integers")))
    };
    for v in data {
        match dt {
            DataType::Bool => out.push(u8::from(
                v.as_bool()
                    .ok_or_else(|| bad("BOOL data must be booleans"))?,
            )),
            DataType::Uint8 | DataType::Int8 => out.push(i(v)? as u8),
            DataType::Uint16 | DataType::Int16 => out.extend((i(v)? as u16).to_le_bytes()),
            DataType::Uint32 | DataType::Int32 => out.extend((i(v)? as u32).to_le_bytes()),
            DataType::Uint64 | DataType::Int64 => out.extend((i(v)? as u64).to_le_bytes()),
            DataType::Fp16 => out.extend(f16_bits(f(v)? as f32).to_le_bytes()),
            DataType::Bf16 => out.extend(bf16_bits(f(v)? as f32).to_le_bytes()),
            DataType::Fp32 => out.extend((f(v)? as f32).to_le_bytes()),
            DataType::Fp64 => out.extend(f(v)?.to_le_bytes()),
            // Each element: a 4-byte little-endian length, then the bytes.
            DataType::Bytes => {
                let b = v
                    .as_str()
                    .ok_or_else(|| bad("BYTES data must be strings"))?
                    .as_bytes();
                out.extend((b.len() as u32).to_le_bytes());
                out.extend(b);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_decode_per_datatype() {
        let mut raw = Vec::new();
        encode(DataType::Fp16, &[json!(1.5), json!(-0.25)], &mut raw).unwrap();
        assert_eq!(
            decode(DataType::Fp16, &raw).unwrap(),
            vec![json!(1.5), json!(-0.25)]
        );
        raw.clear();
        encode(DataType::Bf16, &[json!(3.0)], &mut raw).unwrap();
        assert_eq!(decode(DataType::Bf16, &raw).unwrap(), vec![json!(3.0)]);
        raw.clear();
        encode(DataType::Int16, &[json!(-2), json!(7)], &mut raw).unwrap();
        assert_eq!(
            decode(DataType::Int16, &raw).unwrap(),
            vec![json!(-2), json!(7)]
        );
        raw.clear();
        encode(DataType::Bytes, &[json!("ab"), json!("")], &mut raw).unwrap();
        assert_eq!(
            decode(DataType::Bytes, &raw).unwrap(),
            vec![json!("ab"), json!("")]
        );
        // perf_analyzer's best-known mistake: BYTES without the length prefixes.
        let e = decode(DataType::Bytes, b"hello world")
            .unwrap_err()
            .to_string();
        assert!(e.contains("length prefix"), "{e}");
        assert!(decode(DataType::Fp32, &[0, 0, 0]).is_err());
        assert_eq!(f16_value(0x7c00), f32::INFINITY);
        assert_eq!(f16_value(0x0001), 2f32.powi(-24));
    }

    #[test]
    fn answers_in_json_and_binary_give_the_same_outputs() {
        let json_answer =
            br#"{"outputs":[{"name":"OUT","datatype":"FP32","shape":[1,2],"data":[[1.5,2.0]]}]}"#;
        let a = http_outputs(json_answer, None).unwrap();
        let head = br#"{"outputs":[{"name":"OUT","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        let mut bin = head.to_vec();
        encode(DataType::Fp32, &[json!(1.5), json!(2.0)], &mut bin).unwrap();
        let b = http_outputs(&bin, Some(head.len())).unwrap();
        assert_eq!(a, b);
        assert!(http_outputs(&bin[..bin.len() - 1], Some(head.len())).is_err());
    }

    #[test]
    fn validation_data_is_checked_against_the_model_and_the_answers() {
        let meta: ModelMetadata = serde_json::from_value(json!({"name": "m", "inputs": [],
            "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [-1, 2]}]}))
        .unwrap();
        let file = json!({"data": [{"IN": [1, 2]}],
                          "validation_data": [{"OUT": {"content": [1.5, 2.0], "shape": [2]}}]});
        let want = expected(&file, &meta).unwrap().unwrap();
        let got = |v: Vec<Value>| {
            BTreeMap::from([(
                "OUT".to_string(),
                Tensor {
                    datatype: DataType::Fp32,
                    data: v,
                },
            )])
        };
        assert!(check(&want[0], &got(vec![json!(1.5), json!(2.000001)])).is_ok());
        let e = check(&want[0], &got(vec![json!(1.5), json!(2.5)]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "output OUT[1] is 2.5, expected 2.0");
        assert!(check(&want[0], &got(vec![json!(1.5)])).is_err());
        let e = expected(
            &json!({"data": [{}], "validation_data": [{"NOPE": [1]}]}),
            &meta,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no output NOPE (it has OUT)"), "{e}");
        assert!(
            expected(&json!({"data": [{}, {}], "validation_data": [{}]}), &meta)
                .unwrap_err()
                .to_string()
                .contains("one per data entry")
        );
        assert_eq!(expected(&json!({"data": []}), &meta).unwrap(), None);
    }
}
