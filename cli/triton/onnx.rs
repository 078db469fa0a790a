//! Reads the inputs and outputs of an ONNX model's graph without loading its weights: a streaming
//! protobuf walk that seeks past every field except the graph's `input`, `output` and the names of
//! its initializers, so that a multi-gigabyte `model.onnx` costs a few reads.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use prost::Message;

use crate::triton::model_config::onnx_proto::ValueInfoProto;
use crate::triton::model_config::onnx_proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::triton::model_config::onnx_proto::type_proto::Value as TypeValue;

/// One graph input or output: name, ONNX element type, and dims (`None` for a symbolic or
/// unknown dimension; `dims` itself `None` when the graph records no shape).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxTensor {
    /// The tensor's name in the graph.
    pub name: String,
    /// ONNX's element type number (`TensorProto.DataType`).
    pub elem_type: i32,
    /// The dims, `None` for a symbolic one; `None` in all when the graph gives no shape.
    pub dims: Option<Vec<Option<i64>>>,
}

/// A graph's inputs (initializers left out) and outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxIo {
    /// Graph inputs that are not initializers (the ones a client feeds).
    pub inputs: Vec<OnnxTensor>,
    /// The graph's outputs.
    pub outputs: Vec<OnnxTensor>,
}

/// The Triton data type name of an ONNX `TensorProto.DataType`.
pub fn triton_dtype(elem_type: i32) -> Option<&'static str> {
    Some(match elem_type {
        1 => "TYPE_FP32",
        2 => "TYPE_UINT8",
        3 => "TYPE_INT8",
        4 => "TYPE_UINT16",
        5 => "TYPE_INT16",
        6 => "TYPE_INT32",
        7 => "TYPE_INT64",
        8 => "TYPE_STRING",
        9 => "TYPE_BOOL",
        10 => "TYPE_FP16",
        11 => "TYPE_FP64",
        12 => "TYPE_UINT32",
        13 => "TYPE_UINT64",
        16 => "TYPE_BF16",
        _ => return None,
    })
}

struct Reader<R> {
    r: R,
    pos: u64,
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read + Seek> Reader<R> {
    fn byte(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        match self.r.read(&mut b)? {
            0 => Ok(None),
            _ => {
                self.pos += 1;
                Ok(Some(b[0]))
            }
        }
    }

    fn varint(&mut self) -> std::io::Result<Option<u64>> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(b) = self.byte()? else {
                return if shift == 0 {
                    Ok(None)
                } else {
                    Err(bad("truncated varint"))
                };
            };
            if shift == 63 && b > 1 {
                return Err(bad("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Err(bad("varint too long"))
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let n = i64::try_from(n).map_err(|_| bad("length too large"))?;
        self.r.seek(SeekFrom::Current(n))?;
        self.pos += n as u64;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> std::io::Result<Vec<u8>> {
        if n > 64 << 20 {
            return Err(bad("a tensor description longer than 64 MiB"));
        }
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    /// Walks the fields of a message ending at `end`, calling `f(field, wire_type, len)` for each
    /// length-delimited field; `f` returns whether it consumed the field's bytes.
    fn fields(
        &mut self,
        end: u64,
        f: &mut dyn FnMut(&mut Self, u32, u64) -> std::io::Result<bool>,
    ) -> std::io::Result<()> {
        while self.pos < end {
            let Some(tag) = self.varint()? else {
                return Err(bad("truncated message"));
            };
            let field = (tag >> 3) as u32;
            match tag & 7 {
                0 => {
                    self.varint()?.ok_or_else(|| bad("truncated varint"))?;
                }
                1 => self.skip(8)?,
                5 => self.skip(4)?,
                2 => {
                    let len = self.varint()?.ok_or_else(|| bad("truncated length"))?;
                    if self.pos + len > end {
                        return Err(bad("a field runs past the end of its message"));
                    }
                    if !f(self, field, len)? {
                        self.skip(len)?;
                    }
                }
                w => return Err(bad(format!("unsupported wire type {w}"))),
            }
        }
        if self.pos != end {
            return Err(bad("a field runs past the end of its message"));
        }
        Ok(())
    }
}

fn tensor(v: ValueInfoProto) -> OnnxTensor {
    let (elem_type, dims) = match v.r#type.and_then(|t| t.value) {
        Some(TypeValue::TensorType(t)) => (
            t.elem_type,
            t.shape.map(|s| {
                s.dim
                    .into_iter()
                    .map(|d| match d.value {
                        Some(DimValue::DimValue(x)) if x >= 0 => Some(x),
                        _ => None,
                    })
                    .collect()
            }),
        ),
        None => (0, None),
    };
    OnnxTensor {
        name: v.name,
        elem_type,
        dims,
    }
}

/// Reads the graph inputs (minus initializers) and outputs of the ONNX model at `path`.
pub fn read_io(path: &Path) -> std::io::Result<OnnxIo> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut rd = Reader {
        r: BufReader::with_capacity(64 * 1024, file),
        pos: 0,
    };
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut initializers = std::collections::HashSet::new();
    let mut saw_graph = false;
    rd.fields(len, &mut |rd, field, flen| {
        if field != 7 {
            return Ok(false);
        }
        saw_graph = true;
        let end = rd.pos + flen;
        rd.fields(end, &mut |rd, field, flen| match field {
            11 | 12 => {
                let buf = rd.bytes(flen)?;
                let v = ValueInfoProto::decode(&buf[..]).map_err(|e| bad(e.to_string()))?;
                if field == 11 {
                    inputs.push(tensor(v));
                } else {
                    outputs.push(tensor(v));
                }
                Ok(true)
            }
            5 => {
                let end = rd.pos + flen;
                rd.fields(end, &mut |rd, field, flen| {
                    if field == 8 {
                        let buf = rd.bytes(flen)?;
                        initializers.insert(String::from_utf8_lossy(&buf).into_owned());
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(true)
    })?;
    if !saw_graph {
        return Err(bad("the file has no graph (is it an ONNX model?)"));
    }
    inputs.retain(|t: &OnnxTensor| !initializers.contains(&t.name));
    Ok(OnnxIo { inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triton::model_config::onnx_proto::{
        GraphProto, ModelProto, TensorName, TensorShapeProto, TypeProto,
        tensor_shape_proto::Dimension, type_proto,
    };

    fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(match d {
                                    Some(v) => DimValue::DimValue(*v),
                                    None => DimValue::DimParam("batch".into()),
                                }),
                            })
                            .collect(),
                    }),
                })),
            }),
        }
    }

    #[test]
    fn reads_the_example_model_io() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("model-repos/simple-onnx/add_sub/1/model.onnx");
        let io = read_io(&path).unwrap();
        let names: Vec<_> = io.inputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["INPUT0", "INPUT1"]);
        assert_eq!(io.outputs.len(), 2);
        assert_eq!(io.inputs[0].elem_type, 1);
        assert_eq!(io.inputs[0].dims, Some(vec![None, Some(16)]));
    }

    #[test]
    fn initializers_listed_as_inputs_are_not_inputs_and_weights_are_skipped() {
        let model = ModelProto {
            ir_version: 3,
            graph: Some(GraphProto {
                name: "g".into(),
                initializer: vec![TensorName { name: "W".into() }],
                input: vec![
                    value_info("x", 1, &[None, Some(3)]),
                    value_info("W", 1, &[Some(3), Some(3)]),
                ],
                output: vec![value_info("y", 7, &[None])],
            }),
        };
        let mut bytes = model.encode_to_vec();
        // A large unrelated field (like weights in field 5 of the graph) after the graph.
        bytes.extend([0x42, 0x80, 0x80, 0x04]);
        bytes.extend(std::iter::repeat_n(0u8, 65536));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.onnx");
        std::fs::write(&p, &bytes).unwrap();
        let io = read_io(&p).unwrap();
        assert_eq!(
            io.inputs
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["x"]
        );
        assert_eq!(io.outputs[0].elem_type, 7);

        // Every truncation is an error, never a panic.
        for cut in [1, 5, 17, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(read_io(&p).is_err(), "cut at {cut}");
        }
        std::fs::write(&p, b"version https://git-lfs.github.com/spec/v1\n").unwrap();
        assert!(read_io(&p).is_err());
    }
}
