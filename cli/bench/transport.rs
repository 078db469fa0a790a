//! How requests reach the server: the lean HTTP/1.1 client, reqwest (HTTPS, HTTP/2) or gRPC,
//! with each answer checked against `validation_data` when the input file has it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Settings;
use super::inputs::Body;

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
    pub(super) fn conn(&self) -> Option<crate::bench::http1::Conn> {
        let (target, _) = self.lean.as_ref()?;
        Some(
            self.pool
                .lock()
                .expect("lock")
                .pop()
                .unwrap_or_else(|| crate::bench::http1::Conn::new(target.addrs.clone())),
        )
    }

    pub(super) fn put_back(&self, conn: Option<crate::bench::http1::Conn>) {
        if let Some(c) = conn {
            self.pool.lock().expect("lock").push(c);
        }
    }

    /// Sends request `i` (round-robin over the bodies) and reads the whole answer: its transfer
    /// is part of the latency. `Err` is the error code the report counts.
    pub(super) async fn send(
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
            let r = c.round_trip(&requests[k], self.timeout).await;
            return self.judge(k, r, c.body(), c.header_len());
        }
        let body = &self.bodies[k];
        if let (Some(channel), Some(req)) = (&self.grpc, &body.grpc) {
            let resp = crate::kserve::grpc::infer(channel.clone(), req.clone())
                .await
                .map_err(|e| e.count_as())?;
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

    /// The lean client's target and requests (one per body, whole), for plain `http://`.
    pub(super) fn lean(&self) -> Option<(&crate::bench::http1::Target, &[bytes::Bytes])> {
        self.lean.as_ref().map(|(t, r)| (t, r.as_slice()))
    }

    /// The per-request timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Counts a lean round trip of request `i` that did not go through [`Transport::send`] (the
    /// open loop's own reader) and judges it as `send` would.
    pub(super) fn answered_lean(
        &self,
        i: usize,
        r: Result<u16, crate::bench::http1::Failure>,
        body: &[u8],
        header_len: Option<usize>,
    ) -> Result<(), String> {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.judge(i % self.bodies.len(), r, body, header_len)
    }

    /// A lean answer to body `k`: a 2xx status whose outputs match `validation_data` (when
    /// given) is a success, anything else the error code it counts under.
    fn judge(
        &self,
        k: usize,
        r: Result<u16, crate::bench::http1::Failure>,
        body: &[u8],
        header_len: Option<usize>,
    ) -> Result<(), String> {
        match r {
            Ok(status) if (200..300).contains(&status) => {
                match self.expected.as_ref().map(|e| &e[k]) {
                    Some(w) => {
                        self.validate(w, crate::kserve::tensor::http_outputs(body, header_len))
                    }
                    None => Ok(()),
                }
            }
            Ok(status) => Err(status.to_string()),
            Err(f) => Err(f.code().to_string()),
        }
    }

    /// Checks an answer's outputs against `validation_data`; a mismatch is the error
    /// `validation` (the first one's reason is kept for the report).
    fn validate(
        &self,
        want: &crate::kserve::tensor::Expected,
        got: Result<
            std::collections::BTreeMap<String, crate::kserve::tensor::Tensor>,
            crate::kserve::KserveError,
        >,
    ) -> Result<(), String> {
        match got.and_then(|g| crate::kserve::tensor::check(want, &g)) {
            Ok(()) => Ok(()),
            Err(why) => {
                let _ = self.first_mismatch.set(why.to_string());
                Err("validation".into())
            }
        }
    }
}
