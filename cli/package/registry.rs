//! A client of the OCI distribution API (the registry data plane): blob HEAD, cross-repository
//! mount, streamed uploads (one PUT, or one PATCH and a PUT for large blobs) retried as whole
//! transfers, registry-to-registry streaming,
//! manifests. Authentication answers the registry's `WWW-Authenticate` challenge: Basic (ECR) or a
//! Bearer token fetched from the named realm (Docker Hub, NGC, GHCR...). Credentials are never logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use triton_deploy_aws::Secret;
use url::Url;

/// Every manifest media type we read; registries only return OCI manifests when asked for them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What went wrong talking to a registry (OCI distribution API).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No connection, or it broke.
    #[error("cannot reach the registry at {url}: {detail}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the connection said.
        detail: String,
    },
    /// 401: the credentials were refused.
    #[error("the registry at {0} refused the credentials (401 unauthorized)")]
    Unauthorized(String),
    /// 403: the credentials do not allow it.
    #[error("access denied by the registry (403) for {0}")]
    Denied(String),
    /// 404.
    #[error("{what} not found in the registry ({url})")]
    NotFound {
        /// What was looked for (a manifest, a blob).
        what: String,
        /// The URL asked.
        url: String,
    },
    /// Any other unexpected status.
    #[error("the registry answered {status} to {method} {url}: {body}")]
    Status {
        /// The request's method.
        method: String,
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// How long the registry asked to wait before a retry (`Retry-After`, with 429 or 503).
        retry_after: Option<Duration>,
    },
    /// Content that does not match its digest.
    #[error("blob {digest}: {detail}")]
    Integrity {
        /// The digest expected.
        digest: String,
        /// What differed.
        detail: String,
    },
    /// A local file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The longest `Retry-After` a push waits for before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A `Retry-After` header's delay: seconds (`120`), or an HTTP date in the future.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Retries for transient failures: 5xx, 429, resets and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles with each retry.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        // Exponential backoff with a deterministic jitter from the attempt number.
        let exp = self.base_delay.saturating_mul(1 << attempt.min(6));
        exp + Duration::from_millis(u64::from(attempt) * 37 % 100)
    }
}

#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A registry, e.g. `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`.
#[derive(Clone)]
pub struct Registry {
    /// The registry's base URL.
    pub base: Url,
    http: reqwest::Client,
    credentials: Option<(String, Secret)>,
    auth: Arc<Mutex<Auth>>,
    tokens: Arc<Mutex<HashMap<String, Secret>>>,
    /// Retries for transient failures.
    pub retry: RetryPolicy,
    /// Size above which a blob is sent as Docker sends every layer (one streamed PATCH, then an
    /// empty PUT with the digest) rather than in one streamed PUT.
    pub patch_threshold: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn retriable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(stripped) = v.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            (
                stripped[..end].to_string(),
                stripped.get(end + 1..).unwrap_or(""),
            )
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        params.insert(k, val);
        rest = after.trim_start_matches([',', ' ']);
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The sha256 digest string of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A registry client. `insecure` accepts self-signed certificates.
    pub fn new(
        base: Url,
        credentials: Option<(String, Secret)>,
        insecure: bool,
    ) -> Result<Registry, RegistryError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("triton-deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: base.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Registry {
            base,
            http,
            credentials,
            auth: Arc::new(Mutex::new(Auth::None)),
            tokens: Arc::new(Mutex::new(HashMap::new())),
            retry: RetryPolicy::default(),
            patch_threshold: 512 << 20,
        })
    }

    /// The user and password this client presents (for handing to the Docker Engine).
    pub fn credentials(&self) -> Option<&(String, Secret)> {
        self.credentials.as_ref()
    }

    /// The registry's host (and port), as image names spell it.
    pub fn host(&self) -> String {
        match self.base.port() {
            Some(p) => format!("{}:{p}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_string(),
        }
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid URLs")
    }

    /// Adds the credentials the registry asked for (if any) to a request.
    async fn authorize(
        &self,
        req: RequestBuilder,
        scope: &str,
    ) -> Result<RequestBuilder, RegistryError> {
        let auth = self.auth.lock().expect("auth").clone();
        Ok(match auth {
            Auth::None => req,
            Auth::Basic => match &self.credentials {
                Some((u, p)) => req.basic_auth(u, Some(p.expose())),
                None => req,
            },
            Auth::Bearer { realm, service } => {
                let cached = self.tokens.lock().expect("tokens").get(scope).cloned();
                let token = match cached {
                    Some(t) => t,
                    None => {
                        let t = self.fetch_token(&realm, service.as_deref(), scope).await?;
                        self.tokens
                            .lock()
                            .expect("tokens")
                            .insert(scope.to_string(), t.clone());
                        t
                    }
                };
                req.bearer_auth(token.expose())
            }
        })
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Secret, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Unreachable {
            url: realm.to_string(),
            detail: format!("bad token realm: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url.clone());
        if let Some((u, p)) = &self.credentials {
            req = req.basic_auth(u, Some(p.expose()));
        }
        let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
            url: realm.to_string(),
            detail: e.to_string(),
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized(self.base.to_string()));
        }
        let body: serde_json::Value =
            resp.json().await.map_err(|e| RegistryError::Unreachable {
                url: realm.to_string(),
                detail: format!("token response: {e}"),
            })?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(Secret::new)
            .ok_or_else(|| RegistryError::Unauthorized(self.base.to_string()))
    }

    /// Sends a request built by `build`, answering auth challenges and retrying transient failures.
    /// `scope` is the token scope (`repository:<name>:pull,push`).
    pub async fn send(
        &self,
        scope: &str,
        build: &(dyn Fn() -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let req = self.authorize(build(), scope).await?;
            let req = req.build().map_err(|e| RegistryError::Unreachable {
                url: self.base.to_string(),
                detail: e.to_string(),
            })?;
            let (method, url) = (req.method().clone(), req.url().clone());
            let result = self.http.execute(req).await;
            match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let h = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let (scheme, params) = parse_challenge(&h);
                    let new = match scheme.as_str() {
                        "bearer" => Auth::Bearer {
                            realm: params.get("realm").cloned().unwrap_or_default(),
                            service: params.get("service").cloned(),
                        },
                        _ if self.credentials.is_some() => Auth::Basic,
                        _ => return Err(RegistryError::Unauthorized(self.base.to_string())),
                    };
                    *self.auth.lock().expect("auth") = new;
                    self.tokens.lock().expect("tokens").remove(scope);
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    return Err(RegistryError::Unauthorized(self.base.to_string()));
                }
                Ok(resp) if retriable(resp.status()) && attempt + 1 < self.retry.attempts => {
                    // A registry that says how long to wait (429, 503) is taken at its word, up
                    // to a limit; otherwise the backoff.
                    let wait = retry_after(resp.headers())
                        .map(|d| d.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| self.retry.delay(attempt));
                    tracing::debug!(%method, %url, status = resp.status().as_u16(), attempt, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt + 1 < self.retry.attempts && !e.is_builder() => {
                    tracing::debug!(%method, %url, error = %e, attempt, "retrying after a transport error");
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(RegistryError::Unreachable {
                        url: url.to_string(),
                        detail: error_chain(&e),
                    });
                }
            }
        }
    }

    /// Checks that the registry answers and accepts the credentials (`GET /v2/`).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/");
        let resp = self
            .send("registry:catalog:*", &|| self.http.get(url.clone()))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(RegistryError::Status {
                method: "GET".into(),
                url: url.to_string(),
                status: 404,
                body: "this does not look like an OCI registry (no /v2/ endpoint)".into(),
                retry_after: None,
            }),
            _ => Err(status_error("GET", &url, resp).await),
        }
    }

    fn scope(repo: &str) -> String {
        format!("repository:{repo}:pull,push")
    }

    fn pull_scope(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    /// Whether `repo` already has the blob `digest` (HEAD).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&Self::scope(repo), &|| self.http.head(url.clone()))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error("HEAD", &url, resp).await),
        }
    }

    /// Asks the registry to mount `digest` from `from` into `repo`. `false` when it will not.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let resp = self
            .send(&Self::scope(repo), &|| self.http.post(url.clone()))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload instead: cancel it.
                if let Some(loc) = location(&resp, &self.base) {
                    let _ = self.http.delete(loc).send().await;
                }
                Ok(false)
            }
            s if s.is_client_error() => Ok(false),
            _ => Err(status_error("POST", &url, resp).await),
        }
    }

    async fn start_upload(&self, repo: &str) -> Result<Url, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        let resp = self
            .send(&Self::scope(repo), &|| self.http.post(url.clone()))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error("POST", &url, resp).await);
        }
        location(&resp, &self.base).ok_or_else(|| RegistryError::Status {
            method: "POST".into(),
            url: url.to_string(),
            status: 202,
            body: "no Location header on the upload session".into(),
            retry_after: None,
        })
    }

    /// Uploads the file at `path` as blob `digest`, reporting progress through `progress(bytes)`.
    /// Small blobs go in one streamed PUT; large ones in one streamed PATCH and an empty PUT with
    /// the digest, as Docker pushes. Never in several PATCHes: ECR keeps only the first PATCH of a
    /// chunked upload and answers the others 201 all the same (AWS containers-roadmap issue 2831),
    /// so a chunked "resume" would end in a digest mismatch. A failed transfer is started again
    /// in a new session; memory stays flat either way.
    pub async fn upload_file(
        &self,
        repo: &str,
        digest: &str,
        path: &Path,
        size: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        self.retry_transient(|| async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| RegistryError::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
            self.send_stream(
                repo,
                digest,
                size,
                Box::pin(file_stream(file, size)),
                progress,
            )
            .await
        })
        .await
    }

    /// Uploads blob `digest` of `size` bytes from the stream `open()` returns (called again for
    /// each attempt), as [`Registry::upload_file`] does.
    pub async fn upload_stream<S>(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        open: &(dyn Fn() -> S + Sync),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
    {
        self.retry_transient(|| async {
            self.send_stream(repo, digest, size, Box::pin(open()), progress)
                .await
        })
        .await
    }

    /// Uploads a blob whose digest is still being computed (an uncompressed layer, streamed while
    /// it is hashed): one streamed PATCH of its `size` bytes, then the PUT with the digest once
    /// `digest` has given it. When the digest comes first and the registry already has the blob,
    /// the upload is cancelled. Returns the digest and whether the blob was sent (`false`: it
    /// was there). One attempt: a caller falls back to [`Registry::upload_stream`] with the
    /// digest known. `digest` giving `None` (the hashing failed) cancels the upload with an error.
    pub async fn upload_unhashed<S, D>(
        &self,
        repo: &str,
        size: u64,
        source: S,
        digest: D,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(String, bool), RegistryError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
        D: std::future::Future<Output = Option<String>>,
    {
        let url = self.start_upload(repo).await?;
        let cancel = |url: Url| async move {
            let _ = self.http.delete(url).send().await;
        };
        let no_digest = |url: &Url| RegistryError::Integrity {
            digest: String::new(),
            detail: format!("the layer streamed to {url} could not be hashed"),
        };
        let patch = self.stream_body(
            reqwest::Method::PATCH,
            url.clone(),
            repo,
            size,
            source,
            progress,
        );
        tokio::pin!(patch, digest);
        let mut known: Option<String> = None;
        let resp = loop {
            tokio::select! {
                d = &mut digest, if known.is_none() => {
                    let Some(d) = d else {
                        cancel(url.clone()).await;
                        return Err(no_digest(&url));
                    };
                    if self.blob_exists(repo, &d).await? {
                        cancel(url.clone()).await;
                        return Ok((d, false));
                    }
                    known = Some(d);
                }
                resp = &mut patch => break resp?,
            }
        };
        let d = match known {
            Some(d) => d,
            None => match digest.await {
                Some(d) => d,
                None => {
                    cancel(url.clone()).await;
                    return Err(no_digest(&url));
                }
            },
        };
        self.finish_patch(repo, &url, &d, resp).await?;
        Ok((d, true))
    }

    /// Runs a whole transfer again (a new upload session) after a transport error, a 5xx or a 429
    /// (after the `Retry-After` the registry asked for, if it did).
    async fn retry_transient<F, Fut>(&self, mut attempt_once: F) -> Result<(), RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), RegistryError>>,
    {
        let mut attempt = 0;
        loop {
            match attempt_once().await {
                Err(RegistryError::Unreachable { .. })
                | Err(RegistryError::Status {
                    status: 500..=599 | 429,
                    retry_after: None,
                    ..
                }) if attempt + 1 < self.retry.attempts => {
                    attempt += 1;
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Err(RegistryError::Status {
                    status: 500..=599 | 429,
                    retry_after: Some(wait),
                    ..
                }) if attempt + 1 < self.retry.attempts => {
                    attempt += 1;
                    tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
                }
                other => return other,
            }
        }
    }

    /// Opens an upload session and sends `source` as blob `digest` in one streamed request (a PUT
    /// with the digest, or above `patch_threshold` a PATCH and then an empty PUT), so memory stays
    /// flat whatever the size. The body cannot be replayed: callers retry whole transfers.
    async fn send_stream<S>(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        source: S,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let how = if size <= self.patch_threshold {
            Send::Put
        } else {
            Send::PatchThenPut
        };
        let mut url = self.start_upload(repo).await?;
        let method = match how {
            Send::Put => {
                url.query_pairs_mut().append_pair("digest", digest);
                reqwest::Method::PUT
            }
            Send::PatchThenPut => reqwest::Method::PATCH,
        };
        let resp = self
            .stream_body(method, url.clone(), repo, size, source, progress)
            .await?;
        match how {
            Send::Put if resp.status() == StatusCode::CREATED => Ok(()),
            Send::Put => Err(status_error("PUT", &url, resp).await),
            Send::PatchThenPut => self.finish_patch(repo, &url, digest, resp).await,
        }
    }

    /// Sends `source` (`size` bytes) as the body of one `method` request to `url`, reporting
    /// progress as the bytes go.
    async fn stream_body<S>(
        &self,
        method: reqwest::Method,
        url: Url,
        repo: &str,
        size: u64,
        mut source: S,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Response, RegistryError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let pump = async move {
            while let Some(item) = source.next().await {
                let ok = item.is_ok();
                if let Ok(b) = &item {
                    progress(b.len() as u64);
                }
                if tx.send(item).await.is_err() || !ok {
                    break;
                }
            }
        };
        let req = self
            .http
            .request(method, url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)));
        let scope = Self::scope(repo);
        let send = async {
            self.authorize(req, &scope)
                .await?
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    url: url.to_string(),
                    detail: error_chain(&e),
                })
        };
        let ((), resp) = tokio::join!(pump, send);
        resp
    }

    /// Completes an upload whose bytes went in a PATCH (answered `resp`): the empty PUT with
    /// the digest.
    async fn finish_patch(
        &self,
        repo: &str,
        url: &Url,
        digest: &str,
        resp: Response,
    ) -> Result<(), RegistryError> {
        // ECR answers the PATCH 201 where the spec says 202; both mean the bytes were taken.
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::CREATED {
            return Err(status_error("PATCH", url, resp).await);
        }
        let mut url = location(&resp, &self.base).unwrap_or_else(|| url.clone());
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .send(&Self::scope(repo), &|| {
                self.http.put(url.clone()).header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error("PUT", &url, resp).await);
        }
        Ok(())
    }

    /// Streams blob `digest` from `src`/`src_repo` into this registry's `repo` without holding it
    /// in memory, verifying the digest on the way.
    pub async fn copy_blob_from(
        &self,
        src: &Registry,
        src_repo: &str,
        repo: &str,
        digest: &str,
        size: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        self.retry_transient(|| self.try_copy_blob(src, src_repo, repo, digest, size, progress))
            .await
    }

    async fn try_copy_blob(
        &self,
        src: &Registry,
        src_repo: &str,
        repo: &str,
        digest: &str,
        size: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let get_url = src.url(&format!("v2/{src_repo}/blobs/{digest}"));
        let resp = src
            .send(&Self::pull_scope(src_repo), &|| {
                src.http.get(get_url.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error("GET", &get_url, resp).await);
        }
        let hasher = Mutex::new(Sha256::new());
        let chunks = resp.bytes_stream().map(|chunk| {
            let b = chunk.map_err(std::io::Error::other)?;
            hasher.lock().expect("hash").update(&b);
            Ok(b)
        });
        self.send_stream(repo, digest, size, Box::pin(chunks), progress)
            .await?;
        let got = format!(
            "sha256:{}",
            hex::encode(hasher.lock().expect("hash").clone().finalize())
        );
        if got != digest {
            return Err(RegistryError::Integrity {
                digest: digest.into(),
                detail: format!("the source registry served content with digest {got}"),
            });
        }
        Ok(())
    }

    /// Fetches a manifest: (bytes, media type, digest of the bytes).
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String), RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send(&Self::pull_scope(repo), &|| {
                self.http
                    .get(url.clone())
                    .header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    what: format!("manifest {repo}:{reference}"),
                    url: url.to_string(),
                });
            }
            StatusCode::FORBIDDEN => {
                return Err(RegistryError::Denied(format!("{repo}:{reference}")));
            }
            _ => return Err(status_error("GET", &url, resp).await),
        }
        let media = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::Integrity {
                digest: reference.into(),
                detail: format!("the registry served a manifest with digest {digest}"),
            });
        }
        Ok((bytes.to_vec(), media, digest))
    }

    /// Whether a manifest exists (HEAD), returning its digest.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send(&Self::pull_scope(repo), &|| {
                self.http
                    .head(url.clone())
                    .header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error("HEAD", &url, resp).await),
        }
    }

    /// Fetches a small blob (an image config) into memory, checking its digest.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&Self::pull_scope(repo), &|| self.http.get(url.clone()))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: format!("blob {digest} in {repo}"),
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error("GET", &url, resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        if sha256_digest(&bytes) != digest {
            return Err(RegistryError::Integrity {
                digest: digest.into(),
                detail: "content does not match its digest".into(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Writes the file `path` of a blob to disk from the registry (for `--output`).
    pub async fn download_blob(
        &self,
        repo: &str,
        digest: &str,
        dest: &Path,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&Self::pull_scope(repo), &|| self.http.get(url.clone()))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error("GET", &url, resp).await);
        }
        let io_err = |e| RegistryError::Io {
            path: dest.display().to_string(),
            source: e,
        };
        let tmp = dest.with_extension("partial");
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
        let mut h = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Unreachable {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
            h.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                .await
                .map_err(io_err)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut f)
            .await
            .map_err(io_err)?;
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        if got != digest {
            return Err(RegistryError::Integrity {
                digest: digest.into(),
                detail: format!("downloaded content has digest {got}"),
            });
        }
        tokio::fs::rename(&tmp, dest).await.map_err(io_err)?;
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag or digest); returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .send(&Self::scope(repo), &|| {
                self.http
                    .put(url.clone())
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error("PUT", &url, resp).await);
        }
        Ok(resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| sha256_digest(bytes)))
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// How a blob's bytes go to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// One PUT with the digest and the bytes.
    Put,
    /// One PATCH with the bytes, then a PUT with the digest and no body.
    PatchThenPut,
}

/// The first `size` bytes of `file`, in 256 KiB reads; a read error ends the stream with it.
fn file_stream(
    file: tokio::fs::File,
    size: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((file, 0u64)), move |state| async move {
        let (mut f, sent) = state?;
        if sent >= size {
            return None;
        }
        let mut buf = vec![0u8; (size - sent).min(256 * 1024) as usize];
        match f.read_exact(&mut buf).await {
            Ok(_) => {
                let n = buf.len() as u64;
                Some((Ok(Bytes::from(buf)), Some((f, sent + n))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn location(resp: &Response, base: &Url) -> Option<Url> {
    let loc = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    base.join(loc).ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn status_error(method: &str, url: &Url, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    match status {
        401 => RegistryError::Unauthorized(url.origin().ascii_serialization()),
        403 => RegistryError::Denied(url.path().to_string()),
        _ => RegistryError::Status {
            method: method.into(),
            url: url.to_string(),
            status,
            body: body.trim().to_string(),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/ubuntu:pull");
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "basic-realm"));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let r = RetryPolicy::default();
        assert!(r.delay(1) < r.delay(3));
        assert!(r.delay(30) < Duration::from_secs(20));
    }
}
