//! A recording, fault-injecting HTTP proxy for tests: forwards to an upstream server and can answer
//! some requests with 500, reset the connection, or stall uploads, deterministically.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

#[derive(Clone, Debug)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Every `n`th request fails: alternately a 500 and a reset connection.
    FailEvery(usize),
    /// The first blob upload (PUT/PATCH with a body) stalls for a minute.
    StallFirstUpload,
    /// Every `n`th request is throttled the way its service throttles: 400 `Throttling` (query
    /// protocols), 400 `ThrottlingException` (JSON protocols), 503 `RequestLimitExceeded` (EC2),
    /// 429 `ThrottlingException` (EFS's REST protocol), and a registry's 429 with `Retry-After`.
    ThrottleEvery(usize),
}

/// The throttling answer of the service a request is for: (status, content type, extra header,
/// body), from its signature's credential scope and its protocol.
fn throttled(
    auth: Option<&str>,
    json_target: bool,
) -> (
    u16,
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
) {
    let service = auth
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or_default();
    match (service, json_target) {
        (_, true) => (
            400,
            "application/x-amz-json-1.1",
            Some(("x-amzn-errortype", "ThrottlingException")),
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        ("ec2", _) => (
            503,
            "text/xml",
            None,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>t</RequestID></Response>",
        ),
        ("elasticfilesystem", _) => (
            429,
            "application/json",
            Some(("x-amzn-errortype", "ThrottlingException")),
            r#"{"ErrorCode":"ThrottlingException","Message":"Rate exceeded"}"#,
        ),
        ("", _) => (
            429,
            "application/json",
            Some(("retry-after", "1")),
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited"}]}"#,
        ),
        _ => (
            400,
            "text/xml",
            None,
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>",
        ),
    }
}

/// Answers a request itself (action, request body) instead of forwarding it: `Some((status, body))`.
pub type Answer = Arc<dyn Fn(&str, &[u8]) -> Option<(u16, String)> + Send + Sync>;
/// Rewrites the upstream's answer to a request (action, request body, response body).
pub type Rewrite = Arc<dyn Fn(&str, &[u8], Vec<u8>) -> Vec<u8> + Send + Sync>;

/// What a proxy does besides forwarding.
#[derive(Clone, Default)]
pub struct Hooks {
    pub answer: Option<Answer>,
    pub rewrite: Option<Rewrite>,
}

pub struct Proxy {
    pub url: String,
    /// (action, request body) of every forwarded or answered AWS request.
    pub bodies: Arc<Mutex<Vec<(String, String)>>>,
    pub faults: Arc<AtomicUsize>,
    pub stalled: Arc<tokio::sync::Notify>,
    pub log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Reset;
impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected reset")
    }
}
impl std::error::Error for Reset {}

pub async fn start(upstream: &str, mode: Mode) -> Proxy {
    start_with(upstream, mode, Hooks::default()).await
}

impl Proxy {
    /// The request bodies sent with `action`, parsed as JSON (the awsJson protocols).
    pub fn sent(&self, action: &str) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == action)
            .filter_map(|(_, b)| serde_json::from_str(b).ok())
            .collect()
    }

    /// The query-protocol form bodies sent with `action`.
    pub fn sent_form(&self, action: &str) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The actions requested, in order.
    pub fn actions(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The mutating actions among them (see [`super::MUTATING`]).
    pub fn mutations(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter(|a| super::MUTATING.iter().any(|m| a.starts_with(m)))
            .collect()
    }
}

pub async fn start_with(upstream: &str, mode: Mode, hooks: Hooks) -> Proxy {
    let bodies: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let requests = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(AtomicUsize::new(0));
    let stalled = Arc::new(tokio::sync::Notify::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let upstream = upstream.trim_end_matches('/').to_string();
    let (r, f, s, l, own) = (
        requests.clone(),
        faults.clone(),
        stalled.clone(),
        log.clone(),
        url.clone(),
    );
    let stalled_once = Arc::new(AtomicUsize::new(0));
    let (bodies_t, hooks_t) = (bodies.clone(), hooks);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream, mode) = (client.clone(), upstream.clone(), mode.clone());
            let (bodies, hooks) = (bodies_t.clone(), hooks_t.clone());
            let (r, f, s, l, own, stalled_once) = (
                r.clone(),
                f.clone(),
                s.clone(),
                l.clone(),
                own.clone(),
                stalled_once.clone(),
            );
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, mode) = (client.clone(), upstream.clone(), mode.clone());
                    let (bodies, hooks) = (bodies.clone(), hooks.clone());
                    let (r, f, s, l, own, stalled_once) = (
                        r.clone(),
                        f.clone(),
                        s.clone(),
                        l.clone(),
                        own.clone(),
                        stalled_once.clone(),
                    );
                    async move {
                        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                        let method = req.method().clone();
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let target = req
                            .headers()
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|t| t.rsplit('.').next())
                            .map(str::to_string);
                        // Requests that get a fault are logged too (they were attempted).
                        l.lock().unwrap().push(format!("{method} {path}"));
                        match mode {
                            Mode::FailEvery(k) if n % k == 0 => {
                                f.fetch_add(1, Ordering::SeqCst);
                                if (n / k) % 2 == 0 {
                                    return Err(Reset);
                                }
                                let mut resp = Response::new(Full::new(Bytes::from_static(b"{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"injected\"}]}")));
                                *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                return Ok(resp);
                            }
                            Mode::ThrottleEvery(k) if n % k == 0 => {
                                f.fetch_add(1, Ordering::SeqCst);
                                let auth = req
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .filter(|a| a.starts_with("AWS4-HMAC-SHA256"));
                                let (status, ct, extra, body) = throttled(auth, target.is_some());
                                let mut b = Response::builder()
                                    .status(status)
                                    .header("content-type", ct);
                                if let Some((k, v)) = extra {
                                    b = b.header(k, v);
                                }
                                l.lock().unwrap().push(format!("throttled {status}"));
                                return Ok(b
                                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                                    .unwrap());
                            }
                            Mode::StallFirstUpload
                                if (method == hyper::Method::PUT
                                    || method == hyper::Method::PATCH)
                                    && path.contains("/blobs/uploads/")
                                    && stalled_once.fetch_add(1, Ordering::SeqCst) == 0 =>
                            {
                                s.notify_one();
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return Err(Reset);
                            }
                            _ => {}
                        }
                        let mut fwd = client.request(method, format!("{upstream}{path}"));
                        for (k, v) in req.headers() {
                            if k != hyper::header::HOST && k != hyper::header::CONNECTION {
                                fwd = fwd.header(k, v);
                            }
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map_err(|_| Reset)?
                            .to_bytes();
                        // Name the AWS action: X-Amz-Target's last segment (JSON protocols) or the
                        // query protocols' Action= form field.
                        let action = target.or_else(|| {
                            String::from_utf8_lossy(&body)
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
                        });
                        if let Some(a) = &action {
                            let mut log = l.lock().unwrap();
                            if let Some(last) = log.last_mut() {
                                last.push(' ');
                                last.push_str(a);
                            }
                            bodies
                                .lock()
                                .unwrap()
                                .push((a.clone(), String::from_utf8_lossy(&body).into_owned()));
                        }
                        let action = action.unwrap_or_default();
                        if let Some(answer) = &hooks.answer
                            && let Some((status, text)) = answer(&action, &body)
                        {
                            let content_type = if text.starts_with('<') {
                                "text/xml"
                            } else {
                                "application/x-amz-json-1.1"
                            };
                            let resp = Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap();
                            return Ok(resp);
                        }
                        let req_body = body.clone();
                        let up = fwd.body(body).send().await.map_err(|_| Reset)?;
                        let mut resp = Response::builder().status(up.status().as_u16());
                        for (k, v) in up.headers() {
                            if k == hyper::header::LOCATION {
                                let loc = v.to_str().unwrap_or("").replace(&upstream, &own);
                                resp = resp.header(k, loc);
                            } else if k != hyper::header::CONNECTION
                                && k != hyper::header::TRANSFER_ENCODING
                                && k != hyper::header::CONTENT_LENGTH
                            {
                                resp = resp.header(k, v);
                            }
                        }
                        let mut bytes = up.bytes().await.map_err(|_| Reset)?;
                        if let Some(rewrite) = &hooks.rewrite {
                            bytes = Bytes::from(rewrite(&action, &req_body, bytes.to_vec()));
                        }
                        Ok::<_, Reset>(resp.body(Full::new(bytes)).unwrap())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Proxy {
        url,
        bodies,
        faults,
        stalled,
        log,
    }
}

/// Rewrites moto's DescribeServices the way ECS answers during a rolling deployment: the newest
/// deployment (the service's task definition) is PRIMARY, IN_PROGRESS for the first `in_progress`
/// answers with the old one ACTIVE beside it, then COMPLETED alone.
pub fn progressing(in_progress: usize) -> Hooks {
    let calls = Arc::new(AtomicUsize::new(0));
    Hooks {
        answer: None,
        rewrite: Some(Arc::new(move |action, _req, body| {
            if action != "DescribeServices" {
                return body;
            }
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let n = calls.fetch_add(1, Ordering::SeqCst);
            for s in v["services"].as_array_mut().into_iter().flatten() {
                let td = s["taskDefinition"].clone();
                let Some(d) = s["deployments"].get(0).cloned() else {
                    continue;
                };
                if d["taskDefinition"] == td {
                    continue;
                }
                let mut new = d.clone();
                new["taskDefinition"] = td;
                new["id"] = serde_json::json!("ecs-svc/new");
                if n < in_progress {
                    new["rolloutState"] = serde_json::json!("IN_PROGRESS");
                    new["runningCount"] = serde_json::json!(0);
                    new["pendingCount"] = new["desiredCount"].clone();
                    let mut old = d.clone();
                    old["status"] = serde_json::json!("ACTIVE");
                    s["deployments"] = serde_json::json!([new, old]);
                } else {
                    s["deployments"] = serde_json::json!([new]);
                }
            }
            serde_json::to_vec(&v).unwrap()
        })),
    }
}
