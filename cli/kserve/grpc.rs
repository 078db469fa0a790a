//! The KServe v2 gRPC protocol's model metadata and inference, over tonic with our own messages
//! (`proto/grpc_inference.proto`).

use serde_json::json;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Types generated from `proto/grpc_inference.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kserve_grpc.rs"));
}

use super::{DataType, InferRequest, KserveError, ModelMetadata, TensorMetadata};

/// A failed call as an error.
fn status(call: &'static str, s: tonic::Status) -> KserveError {
    KserveError::Grpc {
        call,
        code: s.code(),
        message: s.message().to_string(),
    }
}
use proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse};

const METADATA: &str = "/inference.GRPCInferenceService/ModelMetadata";
const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const CONFIG: &str = "/inference.GRPCInferenceService/ModelConfig";

/// A lazily connecting channel to `url`: `http://host:8001` (Triton's port, plaintext HTTP/2), or
/// `https://name[:port]` (a load balancer's HTTPS listener, the system's roots verifying it).
pub fn channel(url: &str) -> Result<Channel, KserveError> {
    let bad = |e: &dyn std::fmt::Display| KserveError::Endpoint(format!("{url}: {e}"));
    let mut endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| bad(&e))?
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
            .map_err(|e| bad(&e))?;
    }
    Ok(endpoint.connect_lazy())
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

/// The model's metadata.
pub async fn metadata(
    channel: Channel,
    model: &str,
    version: Option<&str>,
) -> Result<ModelMetadata, KserveError> {
    let m: ModelMetadataResponse = unary(
        channel,
        METADATA,
        ModelMetadataRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        },
    )
    .await
    .map_err(|s| status("ModelMetadata", s))?;
    let tensors = |t: Vec<proto::model_metadata_response::TensorMetadata>| {
        t.into_iter()
            .map(|t| {
                Ok(TensorMetadata {
                    datatype: t.datatype.parse().map_err(|e| {
                        KserveError::Metadata(format!("ModelMetadata: tensor {}: {e}", t.name))
                    })?,
                    name: t.name,
                    shape: t.shape,
                })
            })
            .collect::<Result<Vec<_>, KserveError>>()
    };
    Ok(ModelMetadata {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: tensors(m.inputs)?,
        outputs: tensors(m.outputs)?,
    })
}

/// The model's configuration (Triton's `ModelConfig` RPC); `Err` when the server has none.
pub async fn config(
    channel: Channel,
    model: &str,
    version: Option<&str>,
) -> Result<crate::triton::model_config::ModelConfig, KserveError> {
    let r: proto::ModelConfigResponse = unary(
        channel,
        CONFIG,
        proto::ModelConfigRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        },
    )
    .await
    .map_err(|s| status("ModelConfig", s))?;
    prost::Message::decode(r.config.as_slice())
        .map_err(|e| KserveError::Metadata(format!("ModelConfig: {e}")))
}

/// An inference request as a gRPC one with raw input contents.
pub fn request(
    request: &InferRequest,
    model: &str,
    version: Option<&str>,
) -> Result<ModelInferRequest, KserveError> {
    let mut req = ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.unwrap_or_default().to_string(),
        ..Default::default()
    };
    for t in &request.inputs {
        let mut raw = Vec::new();
        super::tensor::encode(t.datatype, &t.data, &mut raw)
            .map_err(|e| KserveError::Tensor(format!("input {}: {e}", t.name)))?;
        req.inputs
            .push(proto::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype.as_str().to_string(),
                shape: t.shape.iter().map(|d| *d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            });
        req.raw_input_contents.push(raw.into());
    }
    Ok(req)
}

/// One inference; the error is the gRPC status code's name.
pub async fn infer(
    channel: Channel,
    req: ModelInferRequest,
) -> Result<ModelInferResponse, KserveError> {
    unary::<_, ModelInferResponse>(channel, INFER, req)
        .await
        .map_err(|s| status("ModelInfer", s))
}

/// The outputs of an answer, from raw output contents (one per output, in order) or typed
/// contents.
pub fn outputs(
    resp: &ModelInferResponse,
) -> Result<std::collections::BTreeMap<String, crate::kserve::tensor::Tensor>, KserveError> {
    let mut out = std::collections::BTreeMap::new();
    for (k, o) in resp.outputs.iter().enumerate() {
        let datatype: DataType = o
            .datatype
            .parse()
            .map_err(|e| KserveError::Tensor(format!("output {}: {e}", o.name)))?;
        let data = match (resp.raw_output_contents.get(k), &o.contents) {
            (Some(raw), _) => crate::kserve::tensor::decode(datatype, raw)
                .map_err(|e| KserveError::Tensor(format!("output {}: {e}", o.name)))?,
            (None, Some(c)) => match datatype {
                DataType::Bool => c.bool_contents.iter().map(|x| json!(x)).collect(),
                DataType::Int8 | DataType::Int16 | DataType::Int32 => {
                    c.int_contents.iter().map(|x| json!(x)).collect()
                }
                DataType::Int64 => c.int64_contents.iter().map(|x| json!(x)).collect(),
                DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => {
                    c.uint_contents.iter().map(|x| json!(x)).collect()
                }
                DataType::Uint64 => c.uint64_contents.iter().map(|x| json!(x)).collect(),
                DataType::Fp32 => c.fp32_contents.iter().map(|x| json!(x)).collect(),
                DataType::Fp64 => c.fp64_contents.iter().map(|x| json!(x)).collect(),
                DataType::Bytes => c
                    .bytes_contents
                    .iter()
                    .map(|b| json!(String::from_utf8_lossy(b)))
                    .collect(),
                other => {
                    return Err(KserveError::Tensor(format!(
                        "output {}: no typed contents for {other}",
                        o.name
                    )));
                }
            },
            (None, None) => Vec::new(),
        };
        out.insert(
            o.name.clone(),
            crate::kserve::tensor::Tensor { datatype, data },
        );
    }
    Ok(out)
}
