//! The KServe v2 gRPC protocol's model metadata and inference, over tonic with our own messages
//! (`proto/grpc_inference.proto`).

use serde_json::{Value, json};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Types generated from `proto/grpc_inference.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kserve_grpc.rs"));
}

use proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse};

const METADATA: &str = "/inference.GRPCInferenceService/ModelMetadata";
const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const CONFIG: &str = "/inference.GRPCInferenceService/ModelConfig";

/// A lazily connecting channel to `url` (`http://host:8001`).
pub fn channel(url: &str) -> Result<Channel, String> {
    Ok(Channel::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .tcp_nodelay(true)
        .connect_lazy())
}

async fn unary<Req, Resp>(
    channel: Channel,
    path: &'static str,
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// The model's metadata, in the HTTP protocol's JSON shape.
pub async fn metadata(
    channel: Channel,
    model: &str,
    version: Option<&str>,
) -> Result<Value, String> {
    let m: ModelMetadataResponse = unary(
        channel,
        METADATA,
        ModelMetadataRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        },
    )
    .await
    .map_err(|s| format!("ModelMetadata: {:?}: {}", s.code(), s.message()))?;
    let tensors = |t: &[proto::model_metadata_response::TensorMetadata]| -> Vec<Value> {
        t.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect()
    };
    Ok(
        json!({"name": m.name, "versions": m.versions, "platform": m.platform,
              "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs)}),
    )
}

/// The model's configuration (Triton's `ModelConfig` RPC); `Err` when the server has none.
pub async fn config(
    channel: Channel,
    model: &str,
    version: Option<&str>,
) -> Result<crate::triton::model_config::ModelConfig, String> {
    let r: proto::ModelConfigResponse = unary(
        channel,
        CONFIG,
        proto::ModelConfigRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        },
    )
    .await
    .map_err(|s| format!("ModelConfig: {:?}: {}", s.code(), s.message()))?;
    prost::Message::decode(r.config.as_slice()).map_err(|e| format!("ModelConfig: {e}"))
}

/// A JSON inference request (the HTTP protocol's) as a gRPC one with raw input contents.
pub fn request(
    json_body: &[u8],
    model: &str,
    version: Option<&str>,
) -> Result<ModelInferRequest, String> {
    let v: Value = serde_json::from_slice(json_body).map_err(|e| e.to_string())?;
    let mut req = ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.unwrap_or_default().to_string(),
        ..Default::default()
    };
    for t in v["inputs"].as_array().ok_or("no inputs")? {
        let datatype = t["datatype"].as_str().unwrap_or_default().to_string();
        let mut raw = Vec::new();
        super::tensor::encode(
            &datatype,
            t["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            &mut raw,
        )?;
        req.inputs
            .push(proto::model_infer_request::InferInputTensor {
                name: t["name"].as_str().unwrap_or_default().to_string(),
                datatype,
                shape: serde_json::from_value(t["shape"].clone()).map_err(|e| e.to_string())?,
                parameters: Default::default(),
                contents: None,
            });
        req.raw_input_contents.push(raw.into());
    }
    Ok(req)
}

/// One inference; the error is the gRPC status code's name.
pub async fn infer(channel: Channel, req: ModelInferRequest) -> Result<ModelInferResponse, String> {
    unary::<_, ModelInferResponse>(channel, INFER, req)
        .await
        .map_err(|s| format!("grpc {:?}", s.code()))
}

/// The outputs of an answer, from raw output contents (one per output, in order) or typed
/// contents.
pub fn outputs(
    resp: &ModelInferResponse,
) -> Result<std::collections::BTreeMap<String, crate::kserve::tensor::Tensor>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (k, o) in resp.outputs.iter().enumerate() {
        let data = match (resp.raw_output_contents.get(k), &o.contents) {
            (Some(raw), _) => crate::kserve::tensor::decode(&o.datatype, raw)
                .map_err(|e| format!("output {}: {e}", o.name))?,
            (None, Some(c)) => match o.datatype.as_str() {
                "BOOL" => c.bool_contents.iter().map(|x| json!(x)).collect(),
                "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|x| json!(x)).collect(),
                "INT64" => c.int64_contents.iter().map(|x| json!(x)).collect(),
                "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|x| json!(x)).collect(),
                "UINT64" => c.uint64_contents.iter().map(|x| json!(x)).collect(),
                "FP32" => c.fp32_contents.iter().map(|x| json!(x)).collect(),
                "FP64" => c.fp64_contents.iter().map(|x| json!(x)).collect(),
                "BYTES" => c
                    .bytes_contents
                    .iter()
                    .map(|b| json!(String::from_utf8_lossy(b)))
                    .collect(),
                other => return Err(format!("output {}: no typed contents for {other}", o.name)),
            },
            (None, None) => Vec::new(),
        };
        out.insert(
            o.name.clone(),
            crate::kserve::tensor::Tensor {
                datatype: o.datatype.clone(),
                data,
            },
        );
    }
    Ok(out)
}
