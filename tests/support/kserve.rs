//! A small KServe v2 (Triton HTTP protocol) server for tests, faithful to the protocol for what it
//! serves: health, server and model metadata, model readiness, and JSON inference of `add_sub`
//! (model-repos/simple-onnx: two FP32 [-1, 16] inputs, their sum and difference out). Bad requests
//! get the protocol's `{"error": ...}` with 400; unknown models 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

pub struct Server {
    pub url: String,
    pub ready: Arc<AtomicBool>,
    pub inferences: Arc<AtomicUsize>,
    /// Requests that came in the binary tensor extension's framing.
    pub binary_requests: Arc<AtomicUsize>,
}

/// The request as JSON: plain, or the binary extension's header with each binary input's bytes
/// decoded back into `data` (FP32 only: the model's datatype).
fn decode(body: &[u8], header_len: Option<usize>) -> Result<Value, String> {
    let Some(n) = header_len else {
        return serde_json::from_slice(body)
            .map_err(|e| format!("failed to parse the request JSON buffer: {e}"));
    };
    let head = body
        .get(..n)
        .ok_or("Inference-Header-Content-Length exceeds the body")?;
    let mut v: Value =
        serde_json::from_slice(head).map_err(|e| format!("bad inference header: {e}"))?;
    let mut rest = &body[n..];
    for t in v["inputs"].as_array_mut().ok_or("no inputs")? {
        let Some(size) = t
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
        else {
            continue;
        };
        let size = size as usize;
        if rest.len() < size || t["datatype"] != "FP32" || !size.is_multiple_of(4) {
            return Err(format!(
                "unexpected total byte size {size} for input '{}'",
                t["name"].as_str().unwrap_or("")
            ));
        }
        let data: Vec<f64> = rest[..size]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        t["data"] = json!(data);
        rest = &rest[size..];
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last binary input", rest.len()));
    }
    Ok(v)
}

/// An answer in the binary extension's framing: outputs' data as raw FP32 after the JSON header.
fn binary_reply(mut out: Value) -> Response<Full<Bytes>> {
    let mut blobs = Vec::new();
    for o in out["outputs"].as_array_mut().unwrap() {
        let data = o.as_object_mut().unwrap().remove("data").unwrap();
        let start = blobs.len();
        for x in data.as_array().unwrap() {
            blobs.extend((x.as_f64().unwrap() as f32).to_le_bytes());
        }
        o["parameters"] = json!({"binary_data_size": blobs.len() - start});
    }
    let mut bytes = serde_json::to_vec(&out).unwrap();
    let n = bytes.len();
    bytes.extend(blobs);
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", n)
        .body(Full::new(Bytes::from(bytes)))
        .unwrap()
}

/// Nanoseconds spent per phase, as Triton's statistics extension counts them; the test server's
/// "compute" is its own handling time, its queue a fixed 100 us per request.
#[derive(Default)]
struct Stats {
    compute_ns: std::sync::atomic::AtomicU64,
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn metadata() -> Value {
    json!({
        "name": "add_sub",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
            {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]}
        ],
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]},
            {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1, 16]}
        ]
    })
}

/// INPUT0's data, INPUT1's data, their shape.
type Inputs = (Vec<f64>, Vec<f64>, Vec<u64>);

/// Checks a JSON inference request against the metadata; returns the two inputs' data and shape.
fn check(req: &Value) -> Result<Inputs, String> {
    let inputs = req["inputs"].as_array().ok_or("request has no inputs")?;
    let mut found: Vec<(Vec<f64>, Vec<u64>)> = Vec::new();
    for want in ["INPUT0", "INPUT1"] {
        let t = inputs
            .iter()
            .find(|i| i["name"] == want)
            .ok_or_else(|| format!("expected input '{want}'"))?;
        if t["datatype"] != "FP32" {
            return Err(format!(
                "inference input '{want}' data-type is '{}', but model 'add_sub' expects 'FP32'",
                t["datatype"].as_str().unwrap_or("")
            ));
        }
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .ok_or("shape is not a list")?
            .iter()
            .map(|d| d.as_u64().ok_or("bad dimension"))
            .collect::<Result<_, _>>()?;
        if shape.len() != 2 || shape[1] != 16 || shape[0] == 0 || shape[0] > 8 {
            return Err(format!(
                "unexpected shape for input '{want}' for model 'add_sub'. Expected [-1,16], got {shape:?}"
            ));
        }
        let data: Vec<f64> = t["data"]
            .as_array()
            .ok_or("data is not a list")?
            .iter()
            .map(|x| x.as_f64().ok_or("non-numeric FP32 data"))
            .collect::<Result<_, _>>()?;
        if data.len() as u64 != shape.iter().product::<u64>() {
            return Err(format!(
                "unexpected number of elements for input '{want}': {} for shape {shape:?}",
                data.len()
            ));
        }
        found.push((data, shape));
    }
    let (b, sb) = found.pop().unwrap();
    let (a, sa) = found.pop().unwrap();
    if sa != sb {
        return Err("INPUT0 and INPUT1 shapes differ".into());
    }
    Ok((a, b, sa))
}

pub async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let inferences = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(Stats::default());
    let binary_requests = Arc::new(AtomicUsize::new(0));
    let (r, n, bin) = (ready.clone(), inferences.clone(), binary_requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (r, n, st, bin) = (r.clone(), n.clone(), stats.clone(), bin.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (r, n, st, b) = (r.clone(), n.clone(), st.clone(), bin.clone());
                    async move {
                        let started = std::time::Instant::now();
                        let path = req.uri().path().to_string();
                        let method = req.method().clone();
                        let header_len = req
                            .headers()
                            .get("inference-header-content-length")
                            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                        let body = req.into_body().collect().await?.to_bytes();
                        if header_len.is_some() {
                            b.fetch_add(1, Ordering::SeqCst);
                        }
                        let ready = r.load(Ordering::SeqCst);
                        let resp = match (method, path.as_str()) {
                            (Method::GET, "/v2/health/live") => reply(StatusCode::OK, json!({})),
                            (Method::GET, "/v2/health/ready") if ready => {
                                reply(StatusCode::OK, json!({}))
                            }
                            (Method::GET, "/v2/health/ready") => {
                                reply(StatusCode::SERVICE_UNAVAILABLE, json!({}))
                            }
                            (Method::GET, "/v2") => reply(
                                StatusCode::OK,
                                json!({"name": "triton", "version": "2.50.0", "extensions": []}),
                            ),
                            (Method::GET, "/v2/models/add_sub")
                            | (Method::GET, "/v2/models/add_sub/versions/1") => {
                                reply(StatusCode::OK, metadata())
                            }
                            (Method::GET, "/v2/models/add_sub/ready") if ready => {
                                reply(StatusCode::OK, json!({}))
                            }
                            (Method::POST, "/v2/models/add_sub/infer")
                            | (Method::POST, "/v2/models/add_sub/versions/1/infer") => {
                                match decode(&body, header_len)
                                    .and_then(|v| check(&v).map(|x| (v, x)))
                                {
                                    Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e})),
                                    Ok((v, (a, b, shape))) => {
                                        n.fetch_add(1, Ordering::SeqCst);
                                        st.compute_ns.fetch_add(
                                            started.elapsed().as_nanos() as u64,
                                            Ordering::SeqCst,
                                        );
                                        let sum: Vec<f64> =
                                            a.iter().zip(&b).map(|(x, y)| x + y).collect();
                                        let diff: Vec<f64> =
                                            a.iter().zip(&b).map(|(x, y)| x - y).collect();
                                        let mut out = json!({
                                            "model_name": "add_sub",
                                            "model_version": "1",
                                            "outputs": [
                                                {"name": "OUTPUT0", "datatype": "FP32", "shape": shape, "data": sum},
                                                {"name": "OUTPUT1", "datatype": "FP32", "shape": shape, "data": diff}
                                            ]
                                        });
                                        if let Some(id) = v.get("id") {
                                            out["id"] = id.clone();
                                        }
                                        if v.pointer("/parameters/binary_data_output")
                                            == Some(&json!(true))
                                        {
                                            binary_reply(out)
                                        } else {
                                            reply(StatusCode::OK, out)
                                        }
                                    }
                                }
                            }
                            (Method::GET, "/v2/models/add_sub/stats") => {
                                let count = n.load(Ordering::SeqCst) as u64;
                                let ns = st.compute_ns.load(Ordering::SeqCst);
                                reply(
                                    StatusCode::OK,
                                    json!({"model_stats": [{
                                        "name": "add_sub", "version": "1",
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
                            (Method::GET, "/metrics") => Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(
                                    "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n# TYPE nv_gpu_utilization gauge\nnv_gpu_utilization{gpu_uuid=\"GPU-test\"} 0.42\nnv_gpu_memory_used_bytes{gpu_uuid=\"GPU-test\"} 1073741824\nnv_gpu_memory_total_bytes{gpu_uuid=\"GPU-test\"} 24146608128\n",
                                )))
                                .unwrap(),
                            (_, p) if p.starts_with("/v2/models/") => reply(
                                StatusCode::NOT_FOUND,
                                json!({"error": format!("Request for unknown model: '{}' is not found", p.trim_start_matches("/v2/models/").split('/').next().unwrap_or(""))}),
                            ),
                            _ => reply(StatusCode::NOT_FOUND, json!({"error": "Not Found"})),
                        };
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Server {
        url: format!("http://{addr}"),
        ready,
        inferences,
        binary_requests,
    }
}
