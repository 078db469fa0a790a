//! ONNX cross-check (TD039–TD042): the config's inputs and outputs against the graph in
//! `model.onnx`, the checks ONNX Runtime's backend makes when it loads the model.

use super::rules::*;
use super::{Cx, fs};
use crate::triton::model_config::ModelConfig;
use crate::triton::onnx::{OnnxTensor, read_io, triton_dtype};

use super::model::{dtype_name, fmt_dims};

pub fn check(cx: &mut Cx, cfg: &ModelConfig) {
    let m = cx.model;
    let name = m.name.clone();
    let file = if cfg.default_model_filename.is_empty() {
        "model.onnx".to_string()
    } else {
        cfg.default_model_filename.clone()
    };
    for v in fs::selected_versions(m, cfg) {
        let Some((_, dir)) = m.versions().into_iter().find(|(n, _)| *n == v) else {
            continue;
        };
        let mut path = m.dir.join(dir).join(&file);
        if path.is_dir() {
            path = path.join("model.onnx");
        }
        if !path.is_file() {
            continue; // TD011 reports it
        }
        let io = match read_io(&path) {
            Ok(io) => io,
            Err(e) => {
                cx.emit_path(
                    ONNX_READ,
                    super::Severity::Error,
                    &path,
                    format!("failed to read the ONNX graph of '{}': {e}", path.display()),
                );
                continue;
            }
        };
        let mbs = cfg.max_batch_size;
        let allowed_in = io
            .inputs
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let allowed_out = io
            .outputs
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (i, c) in cfg.input.iter().enumerate() {
            let path = format!("input[{i}]");
            match io.inputs.iter().find(|t| t.name == c.name) {
                None => {
                    cx.error(
                        ONNX_IO_NAME,
                        &format!("{path}.name"),
                        format!(
                            "unexpected inference input '{}', allowed inputs are: {allowed_in}",
                            c.name
                        ),
                    )
                    .help(format!("version {v}'s model.onnx has inputs: {allowed_in}"));
                }
                Some(t) => {
                    let dims = c
                        .reshape
                        .as_ref()
                        .map(|r| r.shape.clone())
                        .unwrap_or_else(|| c.dims.clone());
                    compare(cx, &name, v, &path, "input", c.data_type, &dims, mbs, t);
                }
            }
        }
        let missing: Vec<&OnnxTensor> = io
            .inputs
            .iter()
            .filter(|t| !cfg.input.iter().any(|c| c.name == t.name))
            .collect();
        if !missing.is_empty() && !cfg.input.is_empty() {
            cx.error(ONNX_IO_NAME, "input", format!("unable to load model '{name}', configuration expects {} inputs, model provides {}", cfg.input.len(), io.inputs.len()))
                .help(format!("add the graph inputs {} to the config", missing.iter().map(|t| format!("'{}'", t.name)).collect::<Vec<_>>().join(", ")));
        }
        for (i, c) in cfg.output.iter().enumerate() {
            let path = format!("output[{i}]");
            match io.outputs.iter().find(|t| t.name == c.name) {
                None => {
                    cx.error(
                        ONNX_IO_NAME,
                        &format!("{path}.name"),
                        format!(
                            "unexpected inference output '{}', allowed outputs are: {allowed_out}",
                            c.name
                        ),
                    );
                }
                Some(t) => {
                    let dims = c
                        .reshape
                        .as_ref()
                        .map(|r| r.shape.clone())
                        .unwrap_or_else(|| c.dims.clone());
                    compare(cx, &name, v, &path, "output", c.data_type, &dims, mbs, t);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    cx: &mut Cx,
    model: &str,
    version: i64,
    path: &str,
    kind: &str,
    data_type: i32,
    dims: &[i64],
    mbs: i32,
    t: &OnnxTensor,
) {
    if let Some(expect) = triton_dtype(t.elem_type)
        && dtype_name(data_type) != expect
    {
        cx.error(
            ONNX_DTYPE,
            &format!("{path}.data_type"),
            format!(
                "unexpected datatype {} for inference {kind} '{}', expecting {expect}",
                dtype_name(data_type),
                t.name
            ),
        )
        .help(format!("model.onnx of version {version} declares {expect}"));
    }
    let Some(graph) = &t.dims else { return };
    let graph: Vec<i64> = graph.iter().map(|d| d.unwrap_or(-1)).collect();
    let mut config_full: Vec<i64> = Vec::new();
    if mbs > 0 {
        config_full.push(-1);
    }
    config_full.extend(dims);
    if mbs > 0 && graph.first().is_some_and(|d| *d != -1) {
        cx.error(ONNX_DIMS, &format!("{path}.dims"), format!("model '{model}', tensor '{}': for the model to support batching the shape should have at least 1 dimension and the first dimension must be -1; but shape expected by the model is {}", t.name, fmt_dims(&graph)))
            .help("export the model with a dynamic first (batch) axis, or set max_batch_size: 0 and give the full shape in dims");
        return;
    }
    let mismatch = graph.len() != config_full.len()
        || graph
            .iter()
            .zip(&config_full)
            .any(|(g, c)| *g != -1 && g != c);
    if mismatch {
        let batch_note = if mbs > 0 {
            " (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape)"
        } else {
            ""
        };
        cx.error(ONNX_DIMS, &format!("{path}.dims"), format!("model '{model}', tensor '{}': the model expects {} dimensions (shape {}) but the model configuration specifies {} dimensions{batch_note}, making complete shape {}", t.name, graph.len(), fmt_dims(&graph), config_full.len(), fmt_dims(&config_full)));
    }
}
