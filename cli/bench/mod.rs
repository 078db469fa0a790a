//! Stage 4, measurement: endpoint → [`report::BenchReport`].
//!
//! In: a KServe v2 endpoint and model (given, or the one [`crate::deploy::endpoint`] found) and
//! the load to offer. Out: a `BenchReport` (steps, SLA, autoscaling target, server statistics),
//! rendered as a table, CSV ([`report`]) or an HTML page ([`html`]).
//!
//! A KServe v2 load generator. Requests are built from the model's
//! metadata; load is closed-loop (fixed concurrency) or open-loop (a constant or Poisson rate,
//! latency measured from the *intended* send time, so queueing the generator cannot hide is
//! counted); every step runs measurement windows until the last three agree within the stability
//! percentage (perf_analyzer's rule) or the trials run out. An SLA search finds the highest load
//! whose percentile stays under a budget, and turns it into the autoscaling target `rollout` reads.

pub mod html;
pub mod http1;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::kserve::tensor::encode;
#[cfg(test)]
use crate::kserve::tensor::{bf16_bits, f16_bits};

/// The load of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Closed loop: this many requests in flight.
    Concurrency(u32),
    /// Open loop: requests per second, evenly spaced.
    Rate(f64),
    /// Open loop: requests per second, exponential gaps.
    Poisson(f64),
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Concurrency(c) => format!("concurrency {c}"),
            Load::Rate(r) => format!("rate {r}/s"),
            Load::Poisson(r) => format!("poisson {r}/s"),
        }
    }
}

/// `1:64:x2` (doubling) or `100:2000:100` (adding) or a single value.
pub fn parse_range(s: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |x: &str| -> Result<f64, String> {
        x.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("`{s}`: `{x}` is not a positive number"))
    };
    match parts.as_slice() {
        [one] => Ok(vec![num(one)?]),
        [a, b] | [a, b, _] => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(format!("`{s}`: the end is below the start"));
            }
            let step = parts.get(2).copied().unwrap_or("x2");
            let mut out = Vec::new();
            let mut v = start;
            if let Some(f) = step.strip_prefix('x') {
                let f = num(f)?;
                if f <= 1.0 {
                    return Err(format!("`{s}`: the factor must be above 1"));
                }
                while v <= end * (1.0 + 1e-9) {
                    out.push(v);
                    v *= f;
                }
            } else {
                let d = num(step)?;
                while v <= end * (1.0 + 1e-9) {
                    out.push(v);
                    v += d;
                }
            }
            if out.len() > 1000 {
                return Err(format!("`{s}`: more than 1000 steps"));
            }
            Ok(out)
        }
        _ => Err(format!(
            "`{s}`: use START:END:STEP, e.g. 1:64:x2 or 100:2000:100"
        )),
    }
}

/// A small, fast PRNG (xorshift64*): random input data and Poisson gaps need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How input tensors are filled.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    Random,
    Zero,
    /// perf_analyzer's input-data JSON: `{"data": [{"INPUT0": [..] | {"content": [..], "shape": [..]}}, ..]}`.
    File(Value),
}

/// Request bodies for a model, from its metadata: one per `--input-data` entry (round-robin), or
/// a few random ones.
pub fn build_requests(
    meta: &Value,
    data: &InputData,
    shapes: &BTreeMap<String, Vec<i64>>,
    batch: u32,
    batching: bool,
) -> Result<Vec<Vec<u8>>, String> {
    let inputs = meta
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the model metadata lists no inputs")?;
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
        let mut tensors = Vec::new();
        for i in inputs {
            let name = i
                .get("name")
                .and_then(Value::as_str)
                .ok_or("an input has no name")?;
            let dt = i
                .get("datatype")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("input {name} has no datatype"))?;
            let meta_shape: Vec<i64> = i
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("input {name} has no shape"))?
                .iter()
                .map(|d| {
                    d.as_i64()
                        .ok_or_else(|| format!("input {name}: bad dimension {d}"))
                })
                .collect::<Result<_, _>>()?;
            let (content, explicit_shape) = match entry.get(name) {
                Some(v) => {
                    let (values, shape) = crate::kserve::tensor::given(dt, v)
                        .map_err(|e| format!("input-data entry for {name}: {e}"))?;
                    (Some(values), shape)
                }
                None if matches!(data, InputData::File(_)) => {
                    return Err(format!("the input-data file has no data for input {name}"));
                }
                None => (None, None),
            };
            let shape: Vec<u64> = match explicit_shape {
                Some(s) => s,
                None => {
                    let wanted = shapes.get(name);
                    let mut dims = Vec::new();
                    for (k, d) in meta_shape.iter().enumerate() {
                        dims.push(match (*d, wanted) {
                            (d, _) if d >= 0 => d as u64,
                            (_, Some(w)) if w.len() == meta_shape.len() && w[k] > 0 => w[k] as u64,
                            // The leading dynamic dimension of a batching model is the batch
                            // (without a configuration to say, a leading -1 is taken for it).
                            (_, _) if k == 0 && batching => u64::from(batch.max(1)),
                            _ => {
                                return Err(format!(
                                    "input {name} has a dynamic dimension {k}: give its size with --shape {name}:{}",
                                    meta_shape.iter().map(|d| if *d < 0 { "N".into() } else { d.to_string() }).collect::<Vec<_>>().join(",")
                                ));
                            }
                        });
                    }
                    dims
                }
            };
            let count: u64 = shape.iter().product();
            if count > 1 << 26 {
                return Err(format!("input {name} would have {count} elements"));
            }
            let values: Value = match content {
                Some(flat) => {
                    if flat.len() as u64 != count {
                        return Err(format!(
                            "input-data for {name} has {} elements, its shape {shape:?} needs {count}",
                            flat.len()
                        ));
                    }
                    Value::Array(flat)
                }
                None => Value::Array(
                    (0..count)
                        .map(|_| sample(dt, data, &mut rng))
                        .collect::<Result<_, _>>()?,
                ),
            };
            tensors.push(json!({"name": name, "datatype": dt, "shape": shape, "data": values}));
        }
        out.push(serde_json::to_vec(&json!({"inputs": tensors})).expect("json"));
    }
    Ok(out)
}

fn sample(dt: &str, data: &InputData, rng: &mut Rng) -> Result<Value, String> {
    let zero = *data == InputData::Zero;
    Ok(match dt {
        "BOOL" => json!(!zero && rng.next_u64() & 1 == 1),
        "BYTES" => json!(if zero {
            String::new()
        } else {
            format!("{:x}", rng.next_u64())
        }),
        "FP16" | "BF16" | "FP32" | "FP64" => json!(if zero {
            0.0
        } else {
            (rng.next_f64() * 2.0 - 1.0) as f32 as f64
        }),
        "INT8" => json!(if zero {
            0
        } else {
            (rng.next_u64() % 256) as i64 - 128
        }),
        "UINT8" => json!(if zero { 0 } else { rng.next_u64() % 256 }),
        "INT16" | "INT32" | "INT64" => json!(if zero {
            0
        } else {
            (rng.next_u64() % 1000) as i64
        }),
        "UINT16" | "UINT32" | "UINT64" => json!(if zero { 0 } else { rng.next_u64() % 1000 }),
        other => return Err(format!("unknown datatype {other}")),
    })
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

/// A JSON inference request turned into the binary tensor extension's framing, asking for binary
/// outputs too.
pub fn to_binary(json_body: &[u8]) -> Result<Body, String> {
    let mut req: Value = serde_json::from_slice(json_body).map_err(|e| e.to_string())?;
    let mut blobs = Vec::new();
    for t in req["inputs"].as_array_mut().ok_or("no inputs")? {
        let dt = t["datatype"].as_str().unwrap_or_default().to_string();
        let data = t
            .as_object_mut()
            .and_then(|o| o.remove("data"))
            .and_then(|d| d.as_array().cloned())
            .ok_or("an input has no data")?;
        let start = blobs.len();
        encode(&dt, &data, &mut blobs)?;
        t["parameters"] = json!({"binary_data_size": blobs.len() - start});
    }
    req["parameters"] = json!({"binary_data_output": true});
    let mut bytes = serde_json::to_vec(&req).expect("json");
    let header_len = bytes.len();
    bytes.extend(blobs);
    Ok(Body {
        bytes: bytes.into(),
        header_len: Some(header_len),
        grpc: None,
    })
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean() as u64,
    }
}

fn percentile(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p / 100.0)
    }
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Successful inferences per second (× batch size).
    pub throughput: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub latency_us: Latency,
    /// Measurement windows run, and whether the last three agreed.
    pub windows: u32,
    pub stable: bool,
    /// Open loop: requests sent more than 1 ms after their intended time, and the worst lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<Behind>,
    /// Server-side figures when the server has them; otherwise why not.
    pub server: Value,
    /// Each window: [seconds since the run started (its end), infer/s, the percentile in us].
    pub timeline: Vec<[f64; 3]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Behind {
    /// Requests sent per second, from the start to the last send: how closely the generator
    /// held the rate (what the server made of it is `throughput`).
    pub sent_rate: f64,
    pub late_requests: u64,
    pub max_lag_us: u64,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub model: String,
    pub version: Option<String>,
    pub window: Duration,
    pub warmup: Duration,
    /// Stop after this many requests per step (no stability search).
    pub requests: Option<u64>,
    pub percentile: f64,
    pub stability: f64,
    pub max_trials: u32,
    pub batch: u32,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Stop a step when this fraction of requests fail.
    pub max_error_rate: f64,
    /// Prometheus metrics (Triton's :8002/metrics), read at the end of each step.
    pub metrics_url: Option<String>,
    /// Read the server's statistics extension around each step.
    pub server_stats: bool,
    /// When the run started: the timeline's origin.
    pub started: Instant,
    /// The gRPC channel when the protocol is gRPC.
    pub grpc: Option<tonic::transport::Channel>,
}

impl Settings {
    /// The inference URL (built once per run: requests reuse it).
    pub fn infer_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match &self.version {
            Some(v) => format!("{base}/v2/models/{}/versions/{v}/infer", self.model),
            None => format!("{base}/v2/models/{}/infer", self.model),
        }
    }
    pub fn metadata_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match &self.version {
            Some(v) => format!("{base}/v2/models/{}/versions/{v}", self.model),
            None => format!("{base}/v2/models/{}", self.model),
        }
    }
}

/// The counters the request tasks share during one window.
struct Window {
    hist: std::sync::Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
    late: AtomicU64,
    max_lag: AtomicU64,
    /// Open loop: requests sent, and the time from the start to the last send.
    sent: AtomicU64,
    send_span_us: AtomicU64,
}

impl Window {
    fn new() -> Window {
        Window {
            hist: std::sync::Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            ),
            ok: AtomicU64::new(0),
            errors: std::sync::Mutex::new(BTreeMap::new()),
            late: AtomicU64::new(0),
            max_lag: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_span_us: AtomicU64::new(0),
        }
    }
    fn record(&self, us: u64) {
        let _ = self.hist.lock().expect("lock").record(us.max(1));
        self.ok.fetch_add(1, Ordering::Relaxed);
    }
    fn error(&self, code: String) {
        *self.errors.lock().expect("lock").entry(code).or_insert(0) += 1;
    }
}

/// How requests reach the server, and the requests themselves (encoded once per run).
pub struct Transport {
    bodies: Vec<Body>,
    /// Plain `http://`: the lean HTTP/1.1 client, each body already a whole request.
    lean: Option<(crate::bench::http1::Target, Vec<bytes::Bytes>)>,
    /// Idle lean connections for the open loop's request tasks.
    pool: std::sync::Mutex<Vec<crate::bench::http1::Conn>>,
    client: reqwest::Client,
    url: reqwest::Url,
    grpc: Option<tonic::transport::Channel>,
    headers: Vec<(String, String)>,
    timeout: Duration,
    /// `validation_data`: what each body's answer must hold (same order as `bodies`).
    expected: Option<Vec<crate::kserve::tensor::Expected>>,
    /// The first answer that failed validation, and why.
    pub first_mismatch: std::sync::OnceLock<String>,
    /// Answers received so far, ok or not (for the live progress line).
    answered: AtomicU64,
}

impl Transport {
    /// The transport for `s`: gRPC when `s.grpc` is set, else the lean HTTP/1.1 client for
    /// `http://` URLs (unless `general` asks for reqwest), else reqwest.
    pub async fn new(
        s: &Settings,
        client: reqwest::Client,
        bodies: Vec<Body>,
        expected: Option<Vec<crate::kserve::tensor::Expected>>,
        general: bool,
    ) -> Result<Transport, String> {
        if let Some(e) = &expected
            && e.len() != bodies.len()
        {
            return Err(format!(
                "{} validation entries for {} requests",
                e.len(),
                bodies.len()
            ));
        }
        let url = reqwest::Url::parse(&s.infer_url()).map_err(|e| format!("{}: {e}", s.url))?;
        let lean = if s.grpc.is_none() && !general && url.scheme() == "http" {
            let target = crate::bench::http1::Target::new(&url).await?;
            let requests = bodies
                .iter()
                .map(|b| {
                    let mut h: Vec<(&str, String)> = b.content_headers();
                    h.extend(s.headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    target.post(&h, &b.bytes)
                })
                .collect();
            Some((target, requests))
        } else {
            None
        };
        Ok(Transport {
            bodies,
            lean,
            pool: std::sync::Mutex::new(Vec::new()),
            client,
            url,
            grpc: s.grpc.clone(),
            headers: s.headers.clone(),
            timeout: s.timeout,
            expected,
            first_mismatch: std::sync::OnceLock::new(),
            answered: AtomicU64::new(0),
        })
    }

    /// Answers received so far in the run, successful or not.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether answers are checked against `validation_data`.
    pub fn validates(&self) -> bool {
        self.expected.is_some()
    }

    /// A connection for one request task (the lean client's; none otherwise).
    fn conn(&self) -> Option<crate::bench::http1::Conn> {
        let (target, _) = self.lean.as_ref()?;
        Some(
            self.pool
                .lock()
                .expect("lock")
                .pop()
                .unwrap_or_else(|| crate::bench::http1::Conn::new(target.addrs.clone())),
        )
    }

    fn put_back(&self, conn: Option<crate::bench::http1::Conn>) {
        if let Some(c) = conn {
            self.pool.lock().expect("lock").push(c);
        }
    }

    /// Sends request `i` (round-robin over the bodies) and reads the whole answer: its transfer
    /// is part of the latency. `Err` is the error code the report counts.
    async fn send(
        &self,
        conn: &mut Option<crate::bench::http1::Conn>,
        i: usize,
    ) -> Result<(), String> {
        let r = self.exchange(conn, i).await;
        self.answered.fetch_add(1, Ordering::Relaxed);
        r
    }

    async fn exchange(
        &self,
        conn: &mut Option<crate::bench::http1::Conn>,
        i: usize,
    ) -> Result<(), String> {
        let k = i % self.bodies.len();
        let want = self.expected.as_ref().map(|e| &e[k]);
        if let (Some((_, requests)), Some(c)) = (&self.lean, conn.as_mut()) {
            return match c.round_trip(&requests[k], self.timeout).await {
                Ok(status) if (200..300).contains(&status) => match want {
                    Some(w) => self.validate(
                        w,
                        crate::kserve::tensor::http_outputs(c.body(), c.header_len()),
                    ),
                    None => Ok(()),
                },
                Ok(status) => Err(status.to_string()),
                Err(f) => Err(f.code().to_string()),
            };
        }
        let body = &self.bodies[k];
        if let (Some(channel), Some(req)) = (&self.grpc, &body.grpc) {
            let resp = crate::kserve::grpc::infer(channel.clone(), req.clone()).await?;
            return match want {
                Some(w) => self.validate(w, crate::kserve::grpc::outputs(&resp)),
                None => Ok(()),
            };
        }
        let mut req = self.client.post(self.url.clone()).body(body.bytes.clone());
        for (k, v) in body.content_headers() {
            req = req.header(k, v);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let header_len = r
                    .headers()
                    .get("inference-header-content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                // A failure reading the answer: it timed out, or the connection broke.
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| if e.is_timeout() { "timeout" } else { "reset" }.to_string())?;
                match want {
                    Some(w) => {
                        self.validate(w, crate::kserve::tensor::http_outputs(&bytes, header_len))
                    }
                    None => Ok(()),
                }
            }
            Ok(r) => {
                let code = r.status().as_u16().to_string();
                let _ = r.bytes().await;
                Err(code)
            }
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(e) if e.is_connect() => Err("connect".into()),
            Err(_) => Err("reset".into()),
        }
    }

    /// Checks an answer's outputs against `validation_data`; a mismatch is the error
    /// `validation` (the first one's reason is kept for the report).
    fn validate(
        &self,
        want: &crate::kserve::tensor::Expected,
        got: Result<std::collections::BTreeMap<String, crate::kserve::tensor::Tensor>, String>,
    ) -> Result<(), String> {
        match got.and_then(|g| crate::kserve::tensor::check(want, &g)) {
            Ok(()) => Ok(()),
            Err(why) => {
                let _ = self.first_mismatch.set(why);
                Err("validation".into())
            }
        }
    }
}

/// Runs one window of `load` for `length` (or `count` requests), recording into a new window.
async fn run_window(
    t: &Arc<Transport>,
    load: Load,
    length: Duration,
    count: Option<u64>,
    seed: u64,
) -> Arc<Window> {
    let w = Arc::new(Window::new());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    match load {
        Load::Concurrency(c) => {
            for k in 0..c {
                let (t, w, issued) = (t.clone(), w.clone(), issued.clone());
                tasks.spawn(async move {
                    // One connection per request in flight, kept for the whole window.
                    let mut conn = t.conn();
                    let mut i = k as usize;
                    let mut hist =
                        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
                    let mut ok = 0u64;
                    loop {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|c| n >= c) {
                            break;
                        }
                        let start = Instant::now();
                        match t.send(&mut conn, i).await {
                            Ok(()) => {
                                let _ = hist.record((start.elapsed().as_micros() as u64).max(1));
                                ok += 1;
                            }
                            Err(code) => w.error(code),
                        }
                        i += c as usize;
                    }
                    // Each task keeps its own histogram: nothing shared per request.
                    let _ = w.hist.lock().expect("lock").add(&hist);
                    w.ok.fetch_add(ok, Ordering::Relaxed);
                    t.put_back(conn);
                });
            }
        }
        Load::Rate(r) | Load::Poisson(r) => {
            let poisson = matches!(load, Load::Poisson(_));
            let mut rng = Rng::new(seed);
            let mut intended = started;
            let mut i = 0usize;
            // In-flight cap: beyond it the generator is behind, and says so.
            let cap = 20_000usize;
            loop {
                let gap = if poisson {
                    -(1.0 - rng.next_f64()).ln() / r
                } else {
                    1.0 / r
                };
                intended += Duration::from_secs_f64(gap);
                if intended >= deadline || count.is_some_and(|c| i as u64 >= c) {
                    break;
                }
                // The timer ticks in milliseconds: sleep to just before the intended time, then
                // yield (letting the requests in flight run) until it comes.
                let early = intended.checked_sub(Duration::from_millis(1));
                if let Some(e) = early.filter(|e| *e > Instant::now()) {
                    tokio::time::sleep_until(e.into()).await;
                }
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
                let lag = Instant::now()
                    .saturating_duration_since(intended)
                    .as_micros() as u64;
                if lag > 1000 {
                    w.late.fetch_add(1, Ordering::Relaxed);
                }
                w.max_lag.fetch_max(lag, Ordering::Relaxed);
                w.sent.fetch_add(1, Ordering::Relaxed);
                w.send_span_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                while tasks.len() >= cap {
                    let _ = tasks.join_next().await;
                }
                while tasks.try_join_next().is_some() {}
                let (t, w) = (t.clone(), w.clone());
                let at = intended;
                let k = i;
                i += 1;
                tasks.spawn(async move {
                    let mut conn = t.conn();
                    match t.send(&mut conn, k).await {
                        // From the intended send time: a late send is latency the user would see.
                        Ok(()) => w.record(at.elapsed().as_micros() as u64),
                        Err(code) => w.error(code),
                    }
                    t.put_back(conn);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    w
}

/// Measures one step: warm-up, then windows until the last three agree (or `max_trials`).
pub async fn measure(
    client: &reqwest::Client,
    s: &Arc<Settings>,
    transport: &Arc<Transport>,
    load: Load,
    on_window: &(dyn Fn(&str) + Sync),
) -> Step {
    if !s.warmup.is_zero() {
        run_window(transport, load, s.warmup, None, 1).await;
    }
    let stats_before = model_stats(client, s).await;
    let mut timeline = Vec::new();
    let mut results: Vec<(f64, u64, Arc<Window>, Duration)> = Vec::new();
    let mut stable = false;
    let trials = if s.requests.is_some() {
        1
    } else {
        s.max_trials.max(1)
    };
    for t in 0..trials {
        let started = Instant::now();
        let length = if s.requests.is_some() {
            Duration::from_secs(3600)
        } else {
            s.window
        };
        let w = run_window(transport, load, length, s.requests, 7 + u64::from(t)).await;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let ok = w.ok.load(Ordering::Relaxed);
        let thr = ok as f64 * f64::from(s.batch.max(1)) / secs;
        let p = percentile(&w.hist.lock().expect("lock"), s.percentile);
        on_window(&format!(
            "{}: window {}: {:.1} infer/s, p{} {} us",
            load.label(),
            t + 1,
            thr,
            s.percentile,
            p
        ));
        let errors: u64 = w.errors.lock().expect("lock").values().sum();
        timeline.push([s.started.elapsed().as_secs_f64(), thr, p as f64]);
        results.push((thr, p, w, started.elapsed()));
        let total = ok + errors;
        if total > 0 && errors as f64 / total as f64 > s.max_error_rate {
            break;
        }
        if results.len() >= 3 {
            let last = &results[results.len() - 3..];
            let within = |v: Vec<f64>| {
                let (mn, mx) = v
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
                mn > 0.0 && mx / mn <= 1.0 + s.stability / 100.0
            };
            if within(last.iter().map(|r| r.0).collect())
                && within(last.iter().map(|r| r.1 as f64).collect())
            {
                stable = true;
                break;
            }
        }
    }
    // The step's figures: the last three windows (or all, if fewer) merged.
    let take = results.len().min(3);
    let last = &results[results.len() - take..];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut errors = BTreeMap::new();
    let (mut ok, mut secs, mut late, mut max_lag) = (0u64, 0f64, 0u64, 0u64);
    let (mut sent, mut send_secs) = (0u64, 0f64);
    for (_, _, w, d) in last {
        let _ = hist.add(&*w.hist.lock().expect("lock"));
        for (k, v) in w.errors.lock().expect("lock").iter() {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
        ok += w.ok.load(Ordering::Relaxed);
        late += w.late.load(Ordering::Relaxed);
        max_lag = max_lag.max(w.max_lag.load(Ordering::Relaxed));
        sent += w.sent.load(Ordering::Relaxed);
        send_secs += w.send_span_us.load(Ordering::Relaxed) as f64 / 1e6;
        secs += d.as_secs_f64();
    }
    let errors_total: u64 = errors.values().sum();
    Step {
        concurrency: match load {
            Load::Concurrency(c) => Some(c),
            _ => None,
        },
        rate: match load {
            Load::Rate(r) | Load::Poisson(r) => Some(r),
            _ => None,
        },
        throughput: ok as f64 * f64::from(s.batch.max(1)) / secs.max(1e-9),
        requests: ok + errors_total,
        errors: errors_total,
        errors_by_code: errors,
        latency_us: latency(&hist),
        windows: results.len() as u32,
        stable: stable || s.requests.is_some(),
        behind: match load {
            Load::Concurrency(_) => None,
            _ => Some(Behind {
                // n evenly spaced sends span n gaps from the start.
                sent_rate: sent as f64 / send_secs.max(1e-9),
                late_requests: late,
                max_lag_us: max_lag,
            }),
        },
        timeline,
        server: server_side(
            stats_before,
            model_stats(client, s).await,
            gpu_metrics(client, s).await,
        ),
    }
}

/// The model's configuration over HTTP (`GET /v2/models/<m>/config`, Triton's protobuf JSON).
pub async fn http_config(
    client: &reqwest::Client,
    s: &Settings,
) -> Result<crate::triton::model_config::ModelConfig, String> {
    let url = format!("{}/config", s.metadata_url());
    let text = get_text(client, &url).await?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let msg = prost_reflect::DynamicMessage::deserialize_with_options(
        crate::triton::model_config::descriptor(),
        &mut de,
        &prost_reflect::DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| format!("{url}: not a model configuration: {e}"))?;
    msg.transcode_to()
        .map_err(|e| format!("{url}: not a model configuration: {e}"))
}

/// What the load depends on in a model's configuration: batching and instances.
pub fn config_summary(c: &crate::triton::model_config::ModelConfig) -> Value {
    let instances: Vec<Value> = c
        .instance_group
        .iter()
        .map(|g| {
            json!({"count": g.count.max(1),
                   "kind": crate::triton::model_config::inference::model_instance_group::Kind::try_from(g.kind)
                       .map(|k| k.as_str_name())
                       .unwrap_or("KIND_AUTO")})
        })
        .collect();
    json!({
        "available": true,
        "max_batch_size": c.max_batch_size,
        "dynamic_batching": match &c.scheduling_choice {
            Some(crate::triton::model_config::inference::model_config::SchedulingChoice::DynamicBatching(d)) => Some(json!({
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_delay_us": d.max_queue_delay_microseconds,
            })),
            _ => None,
        },
        "instance_group": instances,
    })
}

/// Whether `batch` suits the model's configuration.
pub fn check_batch(c: &crate::triton::model_config::ModelConfig, batch: u32) -> Result<(), String> {
    if c.max_batch_size == 0 && batch > 1 {
        return Err(format!(
            "model {} does not batch (max_batch_size 0 in its configuration): --batch-size must be 1",
            c.name
        ));
    }
    if c.max_batch_size > 0 && i64::from(batch) > i64::from(c.max_batch_size) {
        return Err(format!(
            "--batch-size {batch} is over model {}'s max_batch_size {}",
            c.name, c.max_batch_size
        ));
    }
    Ok(())
}

/// Triton's statistics extension: the model's cumulative counters, or why they are unavailable.
async fn model_stats(client: &reqwest::Client, s: &Settings) -> Result<Value, String> {
    if !s.server_stats {
        return Err("not read (--no-server-stats)".into());
    }
    let url = format!("{}/stats", s.metadata_url());
    let v: Value = serde_json::from_str(&get_text(client, &url).await?)
        .map_err(|e| format!("{url}: not JSON: {e}"))?;
    v.pointer("/model_stats/0")
        .cloned()
        .ok_or_else(|| format!("{url}: no model_stats"))
}

/// GPU utilization and memory from Prometheus metrics (`nv_gpu_utilization`,
/// `nv_gpu_memory_used_bytes`, `nv_gpu_memory_total_bytes`), summed or averaged over the GPUs.
async fn gpu_metrics(client: &reqwest::Client, s: &Settings) -> Result<Value, String> {
    let Some(url) = &s.metrics_url else {
        return Err("not read (--no-server-stats)".into());
    };
    Ok(parse_gpu_metrics(&get_text(client, url).await?))
}

/// A server-side resource (configuration, statistics, metrics) as text; the error says which URL
/// and what went wrong.
async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url} answered {}", r.status()));
    }
    r.text().await.map_err(|e| format!("{url}: {e}"))
}

pub fn parse_gpu_metrics(text: &str) -> Value {
    let values = |name: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect()
    };
    let util = values("nv_gpu_utilization");
    let used = values("nv_gpu_memory_used_bytes");
    let total = values("nv_gpu_memory_total_bytes");
    if util.is_empty() && used.is_empty() {
        return json!({"available": false, "reason": "no nv_gpu_* metrics"});
    }
    json!({
        "available": true,
        "gpus": util.len().max(used.len()),
        "utilization": if util.is_empty() { Value::Null } else { json!(util.iter().sum::<f64>() / util.len() as f64) },
        "memory_used_bytes": used.iter().sum::<f64>(),
        "memory_total_bytes": total.iter().sum::<f64>(),
    })
}

/// The server's view of a step: per-request average queue / compute-input / infer / output times
/// (microseconds) from the statistics deltas, the average batch the server executed, and GPU
/// metrics; each part says why when it is unavailable.
pub fn server_side(
    before: Result<Value, String>,
    after: Result<Value, String>,
    gpu: Result<Value, String>,
) -> Value {
    let stats = match (before, after) {
        (Ok(b), Ok(a)) => {
            let d = |path: &str| -> f64 {
                a.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)
                    - b.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)
            };
            let avg_us = |part: &str| -> Value {
                let count = d(&format!("/inference_stats/{part}/count"));
                let ns = d(&format!("/inference_stats/{part}/ns"));
                if count > 0.0 {
                    json!((ns / count / 1000.0).round())
                } else {
                    Value::Null
                }
            };
            let inferences = d("/inference_count");
            let executions = d("/execution_count");
            json!({
                "available": true,
                "inferences": inferences,
                "executions": executions,
                "avg_batch": if executions > 0.0 { json!(inferences / executions) } else { Value::Null },
                "queue_us": avg_us("queue"),
                "compute_input_us": avg_us("compute_input"),
                "compute_infer_us": avg_us("compute_infer"),
                "compute_output_us": avg_us("compute_output"),
                "failed": d("/inference_stats/fail/count"),
            })
        }
        (Err(e), _) | (_, Err(e)) => json!({"available": false, "reason": e}),
    };
    let gpu = gpu.unwrap_or_else(|e| json!({"available": false, "reason": e}));
    json!({"stats": stats, "gpu": gpu})
}

/// The recommended autoscaling from a sustainable throughput (inferences per second per task,
/// with requests of `batch` inferences): ALB requests per minute per task at `margin`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Autoscaling {
    /// What `rollout` reads: ALB requests per minute per task.
    pub target_requests_per_task: u64,
    pub safety_margin: f64,
    pub capacity_requests_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_inferences: Option<f64>,
}

pub fn autoscaling(
    capacity_infer_per_s: f64,
    batch: u32,
    margin: f64,
    peak_rps: Option<f64>,
    price_per_hour: Option<f64>,
) -> Autoscaling {
    let req_per_s = capacity_infer_per_s / f64::from(batch.max(1));
    let target = (req_per_s * 60.0 * margin).floor().max(1.0) as u64;
    let per_task_at_target = target as f64 / 60.0;
    Autoscaling {
        target_requests_per_task: target,
        safety_margin: margin,
        capacity_requests_per_second: req_per_s,
        min_tasks: peak_rps.map(|_| 1),
        max_tasks: peak_rps.map(|p| (p / per_task_at_target).ceil().max(1.0) as u64),
        cost_per_million_inferences: price_per_hour
            .filter(|_| capacity_infer_per_s > 0.0)
            .map(|p| p / (capacity_infer_per_s * margin * 3600.0) * 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_double_or_add() {
        assert_eq!(
            parse_range("1:64:x2").unwrap(),
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
        );
        assert_eq!(
            parse_range("100:300:100").unwrap(),
            vec![100.0, 200.0, 300.0]
        );
        assert_eq!(parse_range("8").unwrap(), vec![8.0]);
        assert!(parse_range("8:1").is_err());
        assert!(parse_range("1:8:x1").is_err());
        assert!(parse_range("a:b").is_err());
        assert!(parse_range("1:1000000:1").is_err());
    }

    #[test]
    fn requests_follow_metadata_shapes_and_input_files() {
        let meta = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                                     {"name": "s", "datatype": "BYTES", "shape": [-1, -1]}]});
        let mut shapes = BTreeMap::new();
        shapes.insert("s".to_string(), vec![2, 3]);
        let r = build_requests(&meta, &InputData::Zero, &shapes, 2, true).unwrap();
        let v: Value = serde_json::from_slice(&r[0]).unwrap();
        assert_eq!(v["inputs"][0]["shape"], json!([2, 4]));
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 8);
        assert_eq!(v["inputs"][1]["shape"], json!([2, 3]));
        let file =
            json!({"data": [{"x": [[1, 2, 3, 4]], "s": {"content": ["a"], "shape": [1, 1]}}]});
        let r = build_requests(&meta, &InputData::File(file), &BTreeMap::new(), 1, true).unwrap();
        let v: Value = serde_json::from_slice(&r[0]).unwrap();
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
    fn server_statistics_are_per_request_deltas() {
        let before = json!({"inference_count": 10, "execution_count": 10,
            "inference_stats": {"queue": {"count": 10, "ns": 1_000_000}, "compute_infer": {"count": 10, "ns": 5_000_000}}});
        let after = json!({"inference_count": 110, "execution_count": 30,
            "inference_stats": {"queue": {"count": 110, "ns": 31_000_000}, "compute_infer": {"count": 110, "ns": 55_000_000}}});
        let v = server_side(Ok(before), Ok(after), Err("no --metrics-url".into()));
        assert_eq!(v["stats"]["queue_us"], json!(300.0));
        assert_eq!(v["stats"]["compute_infer_us"], json!(500.0));
        assert_eq!(v["stats"]["avg_batch"], json!(5.0));
        assert_eq!(v["stats"]["compute_input_us"], Value::Null);
        assert_eq!(v["gpu"]["available"], false);
        let v = server_side(Err("404".into()), Ok(json!({})), Ok(json!({})));
        assert_eq!(v["stats"], json!({"available": false, "reason": "404"}));
        let m = parse_gpu_metrics(
            "# HELP x\nnv_gpu_utilization{gpu_uuid=\"a\"} 0.5\nnv_gpu_utilization{gpu_uuid=\"b\"} 1\nnv_gpu_memory_used_bytes{gpu_uuid=\"a\"} 100\nnv_gpu_utilization_other 9\n",
        );
        assert_eq!(m["utilization"], json!(0.75));
        assert_eq!(m["gpus"], 2);
        assert_eq!(m["memory_used_bytes"], json!(100.0));
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
        let b = to_binary(&serde_json::to_vec(&req).unwrap()).unwrap();
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

    #[test]
    fn capacity_becomes_a_request_count_target() {
        // 50 inferences/s at batch 1 and a 0.7 margin: 2100 requests per minute per task.
        let a = autoscaling(50.0, 1, 0.7, Some(200.0), Some(1.006));
        assert_eq!(a.target_requests_per_task, 2100);
        assert_eq!(a.max_tasks, Some(6)); // 200 / 35 = 5.7
        let cost = a.cost_per_million_inferences.unwrap();
        assert!(
            (cost - 1.006 / (35.0 * 3600.0) * 1e6).abs() < 1e-6,
            "{cost}"
        );
    }
}
