//! A small Triton-protocol server for tests, faithful to the KServe v2 protocol and Triton's
//! extensions for what it serves, on one port for both HTTP/1.1 and gRPC (h2c):
//! - HTTP: health, server and model metadata, readiness, `/config` (the model's real
//!   `config.pbtxt` from `model-repos/`, as Triton's protobuf JSON), inference with JSON tensors
//!   or the binary tensor extension (requests and answers), `/stats`, and Prometheus `/metrics`;
//! - gRPC `inference.GRPCInferenceService`: `ModelMetadata`, `ModelConfig` and `ModelInfer`
//!   (raw input contents or typed contents in; raw output contents out, as Triton answers).
//!
//! Two models: `add_sub` (model-repos/simple-onnx: FP32 [-1, 16] INPUT0 and INPUT1 in, their sum
//! OUTPUT0 and difference OUTPUT1 out) and `text_stats` (model-repos/python-backend: BYTES [-1, 1]
//! TEXT in, each string's byte LENGTH and WORDS count out as INT64). Tensors are checked the way
//! Triton does (datatype, shape against the configuration and the batch limit, element count,
//! binary sizes, BYTES length prefixes); a bad request gets `{"error": ...}` with 400 (gRPC:
//! INVALID_ARGUMENT), an unknown model 404 (gRPC: NOT_FOUND).
//!
//! The tensor decoding here is written apart from the tool's own, so each checks the other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use triton_deploy::kserve::grpc::proto;

pub struct Server {
    pub url: String,
    /// Successful inference requests, all models and protocols.
    pub inferences: Arc<AtomicUsize>,
    /// Requests that came in the binary tensor extension's framing.
    pub binary_requests: Arc<AtomicUsize>,
    /// Inference requests over gRPC (successful or not).
    pub grpc_requests: Arc<AtomicUsize>,
    /// BYTES elements received, all requests.
    pub strings: Arc<AtomicUsize>,
}

/// One tensor: its datatype, shape and flattened values (BYTES as strings).
#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    datatype: String,
    shape: Vec<u64>,
    data: Vec<Value>,
}

struct Model {
    name: &'static str,
    config: triton_deploy::triton::model_config::ParsedConfig,
    meta: Value,
}

impl Model {
    fn load(name: &'static str, dir: &str) -> Model {
        let path = format!(
            "{}/model-repos/{dir}/config.pbtxt",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mut m = Model {
            name,
            config: triton_deploy::triton::model_config::parse(&text).unwrap(),
            meta: Value::Null,
        };
        m.meta = m.describe();
        m
    }

    fn max_batch(&self) -> u64 {
        self.config.config.max_batch_size as u64
    }

    fn metadata(&self) -> Value {
        self.meta.clone()
    }

    /// Metadata as Triton reports it: datatypes in the protocol's names, the batch dimension -1.
    fn describe(&self) -> Value {
        let c = &self.config.config;
        let dt = |t: i32| {
            let name = triton_deploy::triton::model_config::inference::DataType::try_from(t)
                .unwrap()
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_string();
            if name == "STRING" {
                "BYTES".into()
            } else {
                name
            }
        };
        let shape = |dims: &[i64]| {
            let mut s = Vec::new();
            if c.max_batch_size > 0 {
                s.push(-1);
            }
            s.extend(dims);
            s
        };
        json!({
            "name": self.name,
            "versions": ["1"],
            "platform": if c.backend == "onnxruntime" { "onnxruntime_onnx" } else { c.backend.as_str() },
            "inputs": c.input.iter().map(|i| json!({"name": i.name, "datatype": dt(i.data_type), "shape": shape(&i.dims)})).collect::<Vec<_>>(),
            "outputs": c.output.iter().map(|o| json!({"name": o.name, "datatype": dt(o.data_type), "shape": shape(&o.dims)})).collect::<Vec<_>>(),
        })
    }

    /// Checks the inputs against the metadata and runs the model.
    fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let meta = &self.meta;
        let mut by_name = BTreeMap::new();
        for want in meta["inputs"].as_array().unwrap() {
            let name = want["name"].as_str().unwrap();
            let t = inputs
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| format!("expected input '{name}' for model '{}'", self.name))?;
            if t.datatype != want["datatype"] {
                return Err(format!(
                    "inference input '{name}' data-type is '{}', but model '{}' expects '{}'",
                    t.datatype,
                    self.name,
                    want["datatype"].as_str().unwrap()
                ));
            }
            let dims: Vec<i64> = serde_json::from_value(want["shape"].clone()).unwrap();
            let fits = t.shape.len() == dims.len()
                && t.shape
                    .iter()
                    .zip(&dims)
                    .all(|(g, w)| *w < 0 || *g as i64 == *w)
                && (self.max_batch() == 0 || (t.shape[0] >= 1 && t.shape[0] <= self.max_batch()));
            if !fits {
                return Err(format!(
                    "unexpected shape for input '{name}' for model '{}'. Expected {dims:?}, got {:?}",
                    self.name, t.shape
                ));
            }
            if t.data.len() as u64 != t.shape.iter().product::<u64>() {
                return Err(format!(
                    "unexpected number of elements for input '{name}': {} for shape {:?}",
                    t.data.len(),
                    t.shape
                ));
            }
            by_name.insert(name, t);
        }
        let f = |t: &Tensor| -> Result<Vec<f64>, String> {
            t.data
                .iter()
                .map(|x| x.as_f64().ok_or("non-numeric FP32 data".to_string()))
                .collect()
        };
        let out = |name: &str, datatype: &str, shape: &[u64], data: Vec<Value>| Tensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            data,
        };
        Ok(match self.name {
            "add_sub" => {
                let (a, b) = (by_name["INPUT0"], by_name["INPUT1"]);
                if a.shape != b.shape {
                    return Err("INPUT0 and INPUT1 shapes differ".into());
                }
                let (x, y) = (f(a)?, f(b)?);
                // FP32 arithmetic, as the model computes it.
                let op = |g: fn(f32, f32) -> f32| -> Vec<Value> {
                    x.iter()
                        .zip(&y)
                        .map(|(p, q)| json!(g(*p as f32, *q as f32)))
                        .collect()
                };
                vec![
                    out("OUTPUT0", "FP32", &a.shape, op(|p, q| p + q)),
                    out("OUTPUT1", "FP32", &a.shape, op(|p, q| p - q)),
                ]
            }
            _ => {
                let t = by_name["TEXT"];
                let texts: Vec<&str> = t
                    .data
                    .iter()
                    .map(|x| x.as_str().ok_or("BYTES data must be strings".to_string()))
                    .collect::<Result<_, _>>()?;
                vec![
                    out(
                        "LENGTH",
                        "INT64",
                        &t.shape,
                        texts.iter().map(|s| json!(s.len())).collect(),
                    ),
                    out(
                        "WORDS",
                        "INT64",
                        &t.shape,
                        texts
                            .iter()
                            .map(|s| json!(s.split_whitespace().count()))
                            .collect(),
                    ),
                ]
            }
        })
    }
}

/// Raw little-endian bytes of `datatype` as values: FP32, INT64 and length-prefixed BYTES (the
/// datatypes of the two models).
fn from_raw(datatype: &str, raw: &[u8], name: &str) -> Result<Vec<Value>, String> {
    let bad = || {
        format!(
            "unexpected total byte size {} for input '{name}'",
            raw.len()
        )
    };
    match datatype {
        "FP32" if raw.len().is_multiple_of(4) => Ok(raw
            .chunks(4)
            .map(|c| json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()),
        "INT64" if raw.len().is_multiple_of(8) => Ok(raw
            .chunks(8)
            .map(|c| json!(i64::from_le_bytes(c.try_into().unwrap())))
            .collect()),
        "BYTES" => {
            let mut out = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(bad());
                }
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let s = rest.get(4..4 + n).ok_or_else(bad)?;
                out.push(json!(String::from_utf8(s.to_vec()).map_err(|_| bad())?));
                rest = &rest[4 + n..];
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

fn to_raw(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    for x in &t.data {
        match t.datatype.as_str() {
            "FP32" => out.extend((x.as_f64().unwrap() as f32).to_le_bytes()),
            "INT64" => out.extend(x.as_i64().unwrap().to_le_bytes()),
            _ => {
                let s = x.as_str().unwrap().as_bytes();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s);
            }
        }
    }
    out
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x.clone()),
    }
}

/// An HTTP request's inputs (JSON `data`, or the binary extension's bytes after the header),
/// whether it asked for binary outputs, and its `id`.
type HttpRequest = (Vec<Tensor>, bool, Option<Value>);

fn http_inputs(body: &[u8], header_len: Option<usize>) -> Result<HttpRequest, String> {
    let n = header_len.unwrap_or(body.len());
    let head = body
        .get(..n)
        .ok_or("Inference-Header-Content-Length exceeds the body")?;
    let v: Value = serde_json::from_slice(head)
        .map_err(|e| format!("failed to parse the request JSON buffer: {e}"))?;
    let mut rest = &body[n..];
    let mut inputs = Vec::new();
    for t in v["inputs"].as_array().ok_or("request has no inputs")? {
        let name = t["name"]
            .as_str()
            .ok_or("an input has no name")?
            .to_string();
        let datatype = t["datatype"].as_str().unwrap_or_default().to_string();
        let shape: Vec<u64> = serde_json::from_value(t["shape"].clone())
            .map_err(|_| format!("input '{name}': bad shape"))?;
        let data = match t
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
        {
            Some(size) => {
                if header_len.is_none() || rest.len() < size as usize {
                    return Err(format!(
                        "unexpected total byte size {size} for input '{name}'"
                    ));
                }
                let d = from_raw(&datatype, &rest[..size as usize], &name)?;
                rest = &rest[size as usize..];
                d
            }
            None => {
                let mut d = Vec::new();
                flatten(t.get("data").ok_or("an input has no data")?, &mut d);
                d
            }
        };
        inputs.push(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last binary input", rest.len()));
    }
    let binary_out = v.pointer("/parameters/binary_data_output") == Some(&json!(true));
    Ok((inputs, binary_out, v.get("id").cloned()))
}

fn http_answer(
    model: &str,
    outputs: &[Tensor],
    binary: bool,
    id: Option<&Value>,
) -> Response<Full<Bytes>> {
    let mut blobs = Vec::new();
    let outs: Vec<Value> = outputs
        .iter()
        .map(|t| {
            let mut o = json!({"name": t.name, "datatype": t.datatype, "shape": t.shape});
            if binary {
                let raw = to_raw(t);
                o["parameters"] = json!({"binary_data_size": raw.len()});
                blobs.extend(raw);
            } else {
                o["data"] = json!(t.data);
            }
            o
        })
        .collect();
    let mut head = json!({"model_name": model, "model_version": "1", "outputs": outs});
    if let Some(id) = id {
        head["id"] = id.clone();
    }
    let mut bytes = serde_json::to_vec(&head).unwrap();
    let n = bytes.len();
    let mut b = Response::builder();
    if binary {
        bytes.extend(blobs);
        b = b
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", n);
    } else {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(bytes))).unwrap()
}

/// Nanoseconds spent per phase, as Triton's statistics extension counts them; the test server's
/// "compute" is its own handling time, its queue a fixed 100 us per request.
#[derive(Default)]
struct Stats {
    count: AtomicU64,
    compute_ns: AtomicU64,
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

struct State {
    models: Vec<Model>,
    stats: BTreeMap<&'static str, Stats>,
    ready: Arc<AtomicBool>,
    inferences: Arc<AtomicUsize>,
    binary_requests: Arc<AtomicUsize>,
    grpc_requests: Arc<AtomicUsize>,
    strings: Arc<AtomicUsize>,
}

impl State {
    fn model(&self, name: &str, version: &str) -> Option<&Model> {
        self.models
            .iter()
            .find(|m| m.name == name && (version.is_empty() || version == "1"))
    }

    /// Runs an inference and counts it.
    fn run(
        &self,
        m: &Model,
        inputs: &[Tensor],
        started: std::time::Instant,
    ) -> Result<Vec<Tensor>, String> {
        let out = m.infer(inputs)?;
        self.strings.fetch_add(
            inputs
                .iter()
                .filter(|t| t.datatype == "BYTES")
                .map(|t| t.data.len())
                .sum(),
            Ordering::SeqCst,
        );
        self.inferences.fetch_add(1, Ordering::SeqCst);
        let st = &self.stats[m.name];
        st.count.fetch_add(1, Ordering::SeqCst);
        st.compute_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::SeqCst);
        Ok(out)
    }

    async fn http(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let header_len = req
            .headers()
            .get("inference-header-content-length")
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let Ok(body) = req.into_body().collect().await else {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "body"}));
        };
        let body = body.to_bytes();
        if header_len.is_some() {
            self.binary_requests.fetch_add(1, Ordering::SeqCst);
        }
        let ready = self.ready.load(Ordering::SeqCst);
        let post = method == Method::POST;
        match (method, path.as_str()) {
            (Method::GET, "/v2/health/live") => return reply(StatusCode::OK, json!({})),
            (Method::GET, "/v2/health/ready") if ready => return reply(StatusCode::OK, json!({})),
            (Method::GET, "/v2/health/ready") => {
                return reply(StatusCode::SERVICE_UNAVAILABLE, json!({}));
            }
            (Method::GET, "/v2") => {
                return reply(
                    StatusCode::OK,
                    json!({"name": "triton", "version": "2.50.0",
                           "extensions": ["binary_tensor_data", "statistics", "model_configuration"]}),
                );
            }
            (Method::GET, "/metrics") => {
                return Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(
                        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n# TYPE nv_gpu_utilization gauge\nnv_gpu_utilization{gpu_uuid=\"GPU-test\"} 0.42\nnv_gpu_memory_used_bytes{gpu_uuid=\"GPU-test\"} 1073741824\nnv_gpu_memory_total_bytes{gpu_uuid=\"GPU-test\"} 24146608128\n",
                    )))
                    .unwrap();
            }
            _ => {}
        }
        // /v2/models/<name>[/versions/<v>][/<action>]
        let Some(rest) = path.strip_prefix("/v2/models/") else {
            return reply(StatusCode::NOT_FOUND, json!({"error": "Not Found"}));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (name, version, action) = match parts.as_slice() {
            [n] => (*n, "", ""),
            [n, "versions", v] => (*n, *v, ""),
            [n, "versions", v, a] => (*n, *v, *a),
            [n, a] => (*n, "", *a),
            _ => return reply(StatusCode::NOT_FOUND, json!({"error": "Not Found"})),
        };
        let Some(m) = self.model(name, version) else {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"error": format!("Request for unknown model: '{name}' is not found")}),
            );
        };
        match (post, action) {
            (false, "") => reply(StatusCode::OK, m.metadata()),
            (false, "ready") if ready => reply(StatusCode::OK, json!({})),
            (false, "ready") => reply(StatusCode::BAD_REQUEST, json!({})),
            (false, "config") => reply(
                StatusCode::OK,
                triton_deploy::triton::model_config::to_canonical_json(&m.config.source),
            ),
            (false, "stats") => {
                let st = &self.stats[m.name];
                let count = st.count.load(Ordering::SeqCst);
                let ns = st.compute_ns.load(Ordering::SeqCst);
                reply(
                    StatusCode::OK,
                    json!({"model_stats": [{
                        "name": m.name, "version": "1",
                        "inference_count": count, "execution_count": count,
                        "inference_stats": {
                            "success": {"count": count, "ns": ns + count * 100_000},
                            "fail": {"count": 0, "ns": 0},
                            "queue": {"count": count, "ns": count * 100_000},
                            "compute_input": {"count": count, "ns": 0},
                            "compute_infer": {"count": count, "ns": ns},
                            "compute_output": {"count": count, "ns": 0}
                        }
                    }]}),
                )
            }
            (true, "infer") => {
                match http_inputs(&body, header_len).and_then(|(inputs, binary, id)| {
                    Ok((self.run(m, &inputs, started)?, binary, id))
                }) {
                    Ok((out, binary, id)) => http_answer(m.name, &out, binary, id.as_ref()),
                    Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e})),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, json!({"error": "Not Found"})),
        }
    }
}

// ---- gRPC ----------------------------------------------------------------------------------

/// A unary gRPC method as a closure.
struct Unary<F>(F);

impl<Req, Resp, F> tonic::server::UnaryService<Req> for Unary<F>
where
    F: Fn(Req) -> Result<Resp, tonic::Status> + Clone + Send + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Future = std::future::Ready<Result<tonic::Response<Resp>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        std::future::ready((self.0)(request.into_inner()).map(tonic::Response::new))
    }
}

impl<F: Clone> Clone for Unary<F> {
    fn clone(&self) -> Self {
        Unary(self.0.clone())
    }
}

async fn grpc_call<Req, Resp, F>(req: Request<Incoming>, f: F) -> Response<tonic::body::Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Req) -> Result<Resp, tonic::Status> + Clone + Send + 'static,
{
    let codec = tonic_prost::ProstCodec::<Resp, Req>::default();
    tonic::server::Grpc::new(codec).unary(Unary(f), req).await
}

impl State {
    fn grpc_model(&self, name: &str, version: &str) -> Result<&Model, tonic::Status> {
        self.model(name, version).ok_or_else(|| {
            tonic::Status::not_found(format!("Request for unknown model: '{name}' is not found"))
        })
    }

    fn grpc_metadata(
        &self,
        r: proto::ModelMetadataRequest,
    ) -> Result<proto::ModelMetadataResponse, tonic::Status> {
        let m = self.grpc_model(&r.name, &r.version)?;
        let meta = m.metadata();
        let tensors = |k: &str| {
            meta[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| proto::model_metadata_response::TensorMetadata {
                    name: t["name"].as_str().unwrap().into(),
                    datatype: t["datatype"].as_str().unwrap().into(),
                    shape: serde_json::from_value(t["shape"].clone()).unwrap(),
                })
                .collect()
        };
        Ok(proto::ModelMetadataResponse {
            name: m.name.into(),
            versions: vec!["1".into()],
            platform: meta["platform"].as_str().unwrap().into(),
            inputs: tensors("inputs"),
            outputs: tensors("outputs"),
        })
    }

    fn grpc_config(
        &self,
        r: proto::ModelConfigRequest,
    ) -> Result<proto::ModelConfigResponse, tonic::Status> {
        let m = self.grpc_model(&r.name, &r.version)?;
        Ok(proto::ModelConfigResponse {
            config: prost::Message::encode_to_vec(&m.config.config),
        })
    }

    fn grpc_infer(
        &self,
        r: proto::ModelInferRequest,
    ) -> Result<proto::ModelInferResponse, tonic::Status> {
        let started = std::time::Instant::now();
        self.grpc_requests.fetch_add(1, Ordering::SeqCst);
        let m = self.grpc_model(&r.model_name, &r.model_version)?;
        let raw = !r.raw_input_contents.is_empty();
        if raw && r.raw_input_contents.len() != r.inputs.len() {
            return Err(tonic::Status::invalid_argument(format!(
                "expected {} raw input contents, got {}",
                r.inputs.len(),
                r.raw_input_contents.len()
            )));
        }
        let mut inputs = Vec::new();
        for (k, t) in r.inputs.iter().enumerate() {
            let data = match (raw, &t.contents) {
                (true, Some(_)) => {
                    return Err(tonic::Status::invalid_argument(format!(
                        "contents field must not be specified when using raw_input_contents for '{}'",
                        t.name
                    )));
                }
                (true, None) => from_raw(&t.datatype, &r.raw_input_contents[k], &t.name)
                    .map_err(tonic::Status::invalid_argument)?,
                (false, Some(c)) => match t.datatype.as_str() {
                    "FP32" => c.fp32_contents.iter().map(|x| json!(x)).collect(),
                    "INT64" => c.int64_contents.iter().map(|x| json!(x)).collect(),
                    _ => c
                        .bytes_contents
                        .iter()
                        .map(|b| json!(String::from_utf8_lossy(b)))
                        .collect(),
                },
                (false, None) => Vec::new(),
            };
            inputs.push(Tensor {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.iter().map(|d| *d as u64).collect(),
                data,
            });
        }
        let out = self
            .run(m, &inputs, started)
            .map_err(tonic::Status::invalid_argument)?;
        Ok(proto::ModelInferResponse {
            model_name: m.name.into(),
            model_version: "1".into(),
            id: r.id,
            parameters: Default::default(),
            outputs: out
                .iter()
                .map(|t| proto::model_infer_response::InferOutputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.clone(),
                    shape: t.shape.iter().map(|d| *d as i64).collect(),
                    parameters: Default::default(),
                    contents: None,
                })
                .collect(),
            raw_output_contents: out.iter().map(to_raw).collect(),
        })
    }
}

type Answer = Response<
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>,
>;

async fn route(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return state
            .http(req)
            .await
            .map(|b| b.map_err(|e| match e {}).boxed_unsync());
    }
    let s = state.clone();
    let resp = match req.uri().path() {
        "/inference.GRPCInferenceService/ModelMetadata" => {
            grpc_call(req, move |r| s.grpc_metadata(r)).await
        }
        "/inference.GRPCInferenceService/ModelConfig" => {
            grpc_call(req, move |r| s.grpc_config(r)).await
        }
        "/inference.GRPCInferenceService/ModelInfer" => {
            grpc_call(req, move |r| s.grpc_infer(r)).await
        }
        _ => tonic::Status::unimplemented("").into_http(),
    };
    resp.map(|b| {
        b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed_unsync()
    })
}

pub async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let state = Arc::new(State {
        models: vec![
            Model::load("add_sub", "simple-onnx/add_sub"),
            Model::load("text_stats", "python-backend/text_stats"),
        ],
        stats: BTreeMap::from([
            ("add_sub", Stats::default()),
            ("text_stats", Stats::default()),
        ]),
        ready: Arc::new(AtomicBool::new(true)),
        inferences: Arc::new(AtomicUsize::new(0)),
        binary_requests: Arc::new(AtomicUsize::new(0)),
        grpc_requests: Arc::new(AtomicUsize::new(0)),
        strings: Arc::new(AtomicUsize::new(0)),
    });
    let server = Server {
        url: format!("http://{addr}"),
        inferences: state.inferences.clone(),
        binary_requests: state.binary_requests.clone(),
        grpc_requests: state.grpc_requests.clone(),
        strings: state.strings.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(state, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // HTTP/1.1 and gRPC's HTTP/2 (prior knowledge) on the one port.
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(io, svc)
                .await;
            });
        }
    });
    server
}
