//! The KServe v2 tensor datatypes (`BOOL`, `UINT8` … `FP64`, `BF16`, `BYTES`): parsed once where
//! a server's metadata or a request names them, matched as an enum everywhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A tensor element type, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half precision.
    Fp16,
    /// `BF16`: bfloat16.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: strings; in binary forms each element is a 4-byte length, then its bytes.
    Bytes,
}

/// Every datatype, in the protocol's order.
pub const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Bf16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
];

/// A datatype name the protocol does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype {0}")]
pub struct UnknownDataType(pub String);

impl DataType {
    /// The protocol's name (`FP32`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the binary forms; `None` for `BYTES` (variable length).
    pub fn width(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// Floating point (JSON numbers with a fraction).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
        )
    }

    /// Signed integers.
    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
        )
    }

    /// The relative difference within which two values of this type count as equal (the
    /// type's precision; 0 for exact types).
    pub fn tolerance(self) -> f64 {
        match self {
            DataType::Fp16 => 1e-3,
            DataType::Bf16 => 1e-2,
            DataType::Fp32 => 1e-5,
            DataType::Fp64 => 1e-9,
            _ => 0.0,
        }
    }

    /// The zero of the type as a JSON value: `0`, `0.0`, `false` or `""`.
    pub fn zero(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            DataType::Bool => json!(false),
            DataType::Bytes => json!(""),
            t if t.is_float() => json!(0.0),
            _ => json!(0),
        }
    }
}

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<DataType, UnknownDataType> {
        ALL.into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownDataType(s.to_string()))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DataType, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in ALL {
            assert_eq!(t.as_str().parse::<DataType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(
            "Q8".parse::<DataType>().unwrap_err().to_string(),
            "unknown datatype Q8"
        );
        let e = serde_json::from_str::<DataType>("\"fp32\"").unwrap_err();
        assert!(e.to_string().contains("unknown datatype fp32"), "{e}");
    }

    #[test]
    fn widths_follow_the_binary_forms() {
        let widths: Vec<Option<usize>> = ALL.iter().map(|t| t.width()).collect();
        assert_eq!(
            widths,
            [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }
}
