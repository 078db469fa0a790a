//! The run itself: image, container, Triton live, models settled, then detach or wait for
//! Ctrl-C. Every failure after the container exists removes it before returning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::engine::{self, ContainerSpec, Engine, EngineError};
use super::ready::{self, IndexEntry, LogEvent, ModelState, State};
use super::{Ended, Endpoints, Gpus, ImageSource, Pull, RunError, RunReport, RunSettings};
use super::{StopReport, TimeToReady};
use crate::output::Progress;

/// The container ports Triton listens on: HTTP, gRPC, metrics.
const PORTS: [u16; 3] = [8000, 8001, 8002];
const PORT_FLAGS: [&str; 3] = ["--http-port", "--grpc-port", "--metrics-port"];
/// Log lines kept for an error message.
const TAIL: usize = 15;
/// Seconds Triton gets to stop before the engine kills it.
const STOP_GRACE: i32 = 10;

/// What the log said so far.
#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    /// Model → Triton's reason, for models it refused or failed.
    failures: BTreeMap<String, String>,
    /// Error lines naming no model (an ensemble's missing member, a backend).
    errors: Vec<String>,
    /// Print every line on stderr (the foreground run, once ready).
    echo: bool,
}

type Shared = Arc<Mutex<LogState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, LogState> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Runs the image of `s` until every model has settled; then returns (`--detach`) or waits for
/// Ctrl-C or the container's end.
pub async fn run(s: &RunSettings, progress: Arc<Progress>) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let engine = Engine::connect().await?;
    if engine.status(&s.name).await?.is_some() {
        return Err(EngineError::NameTaken(s.name.clone()).into());
    }
    check_ports(s)?;

    // 1. The image: loaded, found or pulled.
    let (image, pulled) = image(&engine, s, &progress).await?;
    let pull_seconds = if pulled {
        seconds(started.elapsed())
    } else {
        0.0
    };
    let local = engine
        .image(&image)
        .await?
        .ok_or_else(|| EngineError::ImageNotFound {
            image: image.clone(),
            reason: "the engine does not have it after the pull".into(),
        })?;

    // 2. GPUs, and the command that follows from them.
    let gpu = match s.gpus {
        Gpus::None => false,
        Gpus::All | Gpus::Count(_) => true,
        Gpus::Auto => engine.has_gpus().await?,
    };
    let base_cmd = if local.cmd.is_empty() {
        vec![
            "tritonserver".to_string(),
            "--model-repository=/models".to_string(),
        ]
    } else {
        local.cmd.clone()
    };
    let mut cmd = if gpu {
        base_cmd.clone()
    } else {
        ready::cpu_command(&base_cmd)
    };
    cmd.extend(s.triton_args.iter().cloned());
    let gpus = match s.gpus {
        Gpus::Count(n) => Some(i64::from(n)),
        _ if gpu => Some(-1),
        _ => None,
    };
    let mut spec = ContainerSpec {
        name: s.name.clone(),
        image: image.clone(),
        cmd: cmd.clone(),
        bind: s.bind.clone(),
        ports: PORTS.iter().copied().zip(s.ports).collect(),
        shm_bytes: i64::from(s.shm_mib) << 20,
        // As in the task definition: pinned memory unlimited, 64 MiB stacks.
        ulimits: vec![("memlock", -1), ("stack", 67_108_864)],
        gpus,
        labels: HashMap::from([(engine::LABEL.to_string(), image.clone())]),
    };
    // An image this run loaded goes when its container goes.
    let loaded = matches!(s.image, ImageSource::Archive(_)).then(|| image.clone());
    if loaded.is_some() {
        spec.labels
            .insert(engine::LOADED.to_string(), "true".to_string());
    }
    // The container (when there is one) and the image this run loaded.
    let discard = async |id: Option<&str>| {
        if let Some(id) = id {
            let _ = engine.remove(id, STOP_GRACE).await;
        }
        if let Some(i) = &loaded {
            engine.remove_image(i).await;
        }
    };

    // 3. The container; from here on a failure removes it.
    let create_started = Instant::now();
    progress.spin(format!("starting {} ({image})", s.name));
    let (id, dropped) = match create_and_start(&engine, s, &mut spec).await {
        Ok(v) => v,
        Err(e) => {
            discard(None).await;
            return Err(e);
        }
    };
    let logs: Shared = Arc::default();
    let up = bring_up(&engine, &id, s, &spec, gpu, &logs, &progress);
    let outcome = tokio::select! {
        r = up => r,
        _ = tokio::signal::ctrl_c() => Err(RunError::Interrupted(s.name.clone())),
    };
    progress.stop_spinner();
    let (endpoints, models, live_at) = match outcome {
        Ok(v) => v,
        Err(e) => {
            discard(Some(&id)).await;
            return Err(e);
        }
    };
    let settled_at = Instant::now();
    let start_seconds = seconds(live_at - create_started);
    let load_seconds = seconds(settled_at - live_at);
    let mut report = RunReport {
        container: s.name.clone(),
        id: id.clone(),
        image,
        image_id: local.id.clone(),
        mode: if gpu { "gpu" } else { "cpu" },
        gpus: match gpus {
            None => "none".into(),
            Some(-1) => "all".into(),
            Some(n) => n.to_string(),
        },
        note: mode_note(gpu, &models, &dropped),
        command: cmd,
        endpoints,
        models,
        time_to_ready: TimeToReady {
            pull_seconds,
            pulled,
            image_bytes: local.size,
            start_seconds,
            load_seconds,
            ready_seconds: seconds(settled_at - create_started),
            total_seconds: seconds(started.elapsed()),
        },
        ended: Ended::Detached,
    };
    if let Some(path) = &s.out {
        let body = serde_json::to_vec_pretty(&report).expect("a report serializes");
        if let Err(e) = std::fs::write(path, body) {
            discard(Some(&id)).await;
            return Err(RunError::Out {
                path: path.clone(),
                source: e,
            });
        }
    }
    if s.detach {
        return Ok(report);
    }
    let ended = foreground(&engine, &id, &report, &logs, &progress).await;
    // foreground removed the container; the image goes too.
    discard(None).await;
    ended?;
    report.ended = Ended::Interrupted;
    Ok(report)
}

/// The host ports asked for are free (when the engine is this machine's).
fn check_ports(s: &RunSettings) -> Result<(), RunError> {
    let local_engine = std::env::var("DOCKER_HOST").map_or(true, |h| h.starts_with("unix://"));
    if !local_engine {
        return Ok(());
    }
    for (port, flag) in s.ports.iter().zip(PORT_FLAGS) {
        if *port == 0 {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind((s.bind.as_str(), *port)) {
            return Err(EngineError::PortInUse {
                port: *port,
                flag,
                reason: e.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// The image reference to run, and whether this run pulled or loaded it.
async fn image(
    engine: &Engine,
    s: &RunSettings,
    progress: &Progress,
) -> Result<(String, bool), RunError> {
    match &s.image {
        ImageSource::Archive(path) => {
            progress.spin("loading the image into the Docker Engine");
            let r = engine.load(path).await?;
            progress.stop_spinner();
            Ok((r, true))
        }
        ImageSource::Reference(r) => {
            let have = engine.image(r).await?.is_some();
            let pull = match s.pull {
                Pull::Always => true,
                Pull::Missing => !have,
                Pull::Never if have => false,
                Pull::Never => {
                    return Err(EngineError::ImageNotFound {
                        image: r.clone(),
                        reason: "the engine does not have it and --pull never forbids pulling"
                            .into(),
                    }
                    .into());
                }
            };
            if pull {
                progress.spin(format!("pulling {r}"));
                let log = |line: &str| tracing::info!(target: "triton_deploy::docker", "{line}");
                let creds = s
                    .credentials
                    .as_ref()
                    .map(|c| (c.username.as_str(), &c.password, c.server.as_str()));
                let pulled = engine.pull(r, creds, &log).await;
                progress.stop_spinner();
                pulled?;
            }
            Ok((r.clone(), pull))
        }
    }
}

/// Starts the container and waits for Triton to be live and every model to settle: the
/// endpoints, the models' states and when Triton became live.
async fn bring_up(
    engine: &Engine,
    id: &str,
    s: &RunSettings,
    spec: &ContainerSpec,
    gpu: bool,
    logs: &Shared,
    progress: &Arc<Progress>,
) -> Result<(Endpoints, Vec<ModelState>, Instant), RunError> {
    let deadline = Instant::now() + s.timeout;
    tokio::spawn(follow(
        engine.clone(),
        id.to_string(),
        logs.clone(),
        progress.clone(),
    ));
    let published = engine.published(id).await?;
    let host = match s.bind.as_str() {
        "0.0.0.0" | "::" | "" => "127.0.0.1".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    let url = |port: u16, scheme: &str| {
        let p = published.get(&port).copied().unwrap_or(port);
        format!("{scheme}://{host}:{p}")
    };
    let endpoints = Endpoints {
        http: url(8000, "http"),
        grpc: url(8001, "http"),
        metrics: url(8002, "http"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| RunError::Server(e.to_string()))?;
    let waiter = Waiter {
        engine,
        id,
        logs,
        deadline,
        timeout: s.timeout,
    };
    // Live: the HTTP service answers.
    loop {
        let live = client
            .get(format!("{}/v2/health/live", endpoints.http))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if live {
            break;
        }
        waiter.check("start its HTTP service").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live_at = Instant::now();
    progress.spin(format!(
        "Triton is live at {}; loading models",
        endpoints.http
    ));
    let triton = Triton {
        client: &client,
        http: &endpoints.http,
    };
    let models = if gpu {
        settle(&triton, &waiter).await?
    } else {
        load_each(&triton, &waiter, &spec.cmd, progress).await?
    };
    if models.iter().any(|m| m.state != State::Ready) {
        return Err(RunError::Models(models));
    }
    Ok((endpoints, models, live_at))
}

/// Creates and starts the container. A resource limit the engine may not set (a sandboxed
/// engine refuses `memlock=unlimited`) is dropped and the container made again: the limits
/// dropped are returned, and the report says so.
async fn create_and_start(
    engine: &Engine,
    s: &RunSettings,
    spec: &mut ContainerSpec,
) -> Result<(String, Vec<String>), RunError> {
    let flags: Vec<(u16, u16, &'static str)> = PORTS
        .iter()
        .zip(s.ports)
        .zip(PORT_FLAGS)
        .map(|((c, h), f)| (*c, h, f))
        .collect();
    let mut dropped = Vec::new();
    loop {
        let id = engine.create(spec).await?;
        match engine.start(&id, &flags).await {
            Ok(()) => return Ok((id, dropped)),
            Err(e) => {
                let _ = engine.remove(&id, STOP_GRACE).await;
                match e {
                    EngineError::Limit { limit, .. }
                        if spec.ulimits.iter().any(|u| u.0 == limit) =>
                    {
                        tracing::info!(
                            "the engine may not set the {limit} limit; running without it"
                        );
                        spec.ulimits.retain(|u| u.0 != limit);
                        dropped.push(limit.to_string());
                    }
                    e => return Err(e.into()),
                }
            }
        }
    }
}

/// Reads the container's log into `logs`, saying what happens to each model.
async fn follow(engine: Engine, id: String, logs: Shared, progress: Arc<Progress>) {
    engine
        .follow(&id, |line| {
            let mut l = lock(&logs);
            if l.echo {
                eprintln!("{line}");
            }
            match ready::event(&line) {
                Some(LogEvent::Loading { model, version }) => {
                    progress.line(format!("  {model}: loading version {version}"));
                }
                Some(LogEvent::Loaded { model }) => progress.line(format!("  {model}: READY")),
                Some(LogEvent::Failed { model, reason, .. })
                | Some(LogEvent::PollFailed { model, reason }) => {
                    let reason = reason.trim().trim_end_matches(';').trim().to_string();
                    // Triton repeats a failure with less detail (an ensemble retrying its
                    // members): keep the first reason that says something.
                    if !reason.is_empty() && !l.failures.contains_key(&model) {
                        progress.line(format!("  {model}: failed: {reason}"));
                        l.failures.insert(model, reason);
                    }
                }
                Some(LogEvent::Error { message }) => l.errors.push(message),
                _ => {}
            }
            if l.tail.len() == TAIL {
                l.tail.pop_front();
            }
            l.tail.push_back(line);
        })
        .await;
}

/// Checks between polls: the container still runs, the time is not up.
struct Waiter<'a> {
    engine: &'a Engine,
    id: &'a str,
    logs: &'a Shared,
    deadline: Instant,
    timeout: Duration,
}

impl Waiter<'_> {
    async fn check(&self, what: &str) -> Result<(), RunError> {
        let status = self.engine.status(self.id).await?;
        if !status.is_some_and(|s| s.running) {
            // The log may lag the exit by a moment: read it from the engine. Triton's complaint
            // may be far from the end (it prints its usage after a bad flag).
            let mut tail = self.engine.tail(self.id, None).await;
            let l = lock(self.logs);
            let mut failures: Vec<String> = l
                .failures
                .iter()
                .map(|(m, r)| format!("failed to load '{m}': {r}"))
                .collect();
            failures.extend(l.errors.iter().take(3).cloned());
            if failures.is_empty() {
                failures.extend(tail.iter().filter(|l| ready::complaint(l)).take(3).cloned());
            }
            tail.drain(..tail.len().saturating_sub(TAIL));
            return Err(RunError::Exited {
                code: status.and_then(|s| s.exit_code),
                during: "before every model was ready",
                failures,
                tail: if tail.is_empty() {
                    l.tail.iter().cloned().collect()
                } else {
                    tail
                },
            });
        }
        if Instant::now() > self.deadline {
            return Err(RunError::Timeout {
                what: what.to_string(),
                seconds: self.timeout.as_secs(),
                tail: lock(self.logs).tail.iter().cloned().collect(),
            });
        }
        Ok(())
    }

    fn failures(&self) -> BTreeMap<String, String> {
        lock(self.logs).failures.clone()
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Triton's repository API.
struct Triton<'a> {
    client: &'a reqwest::Client,
    http: &'a str,
}

impl Triton<'_> {
    async fn index(&self) -> Result<Vec<IndexEntry>, RunError> {
        let r = self
            .client
            .post(format!("{}/v2/repository/index", self.http))
            .json(&json!({}))
            .send()
            .await
            .map_err(|e| RunError::Server(format!("repository index: {e}")))?;
        if !r.status().is_success() {
            return Err(RunError::Server(format!(
                "repository index answered {}",
                r.status()
            )));
        }
        r.json()
            .await
            .map_err(|e| RunError::Server(format!("repository index: {e}")))
    }

    /// Loads `model` (with `config` replacing its own when given); Triton's reason on failure.
    async fn load(
        &self,
        model: &str,
        config: Option<&Value>,
        timeout: Duration,
    ) -> Result<Result<(), String>, RunError> {
        let body = match config {
            Some(c) => json!({"parameters": {"config": c.to_string()}}),
            None => json!({}),
        };
        let r = self
            .client
            .post(format!("{}/v2/repository/models/{model}/load", self.http))
            .timeout(timeout.max(Duration::from_secs(1)))
            .json(&body)
            .send()
            .await
            .map_err(|e| RunError::Server(format!("loading {model}: {e}")))?;
        if r.status().is_success() {
            return Ok(Ok(()));
        }
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("{status}: {text}"));
        Ok(Err(reason.trim().trim_end_matches(';').trim().to_string()))
    }
}

/// GPU mode: Triton loads its models itself; poll its index (and read its log) until each is
/// READY or UNAVAILABLE.
async fn settle(t: &Triton<'_>, w: &Waiter<'_>) -> Result<Vec<ModelState>, RunError> {
    loop {
        // The index fails while the server is still reading its repository.
        if let Ok(index) = t.index().await {
            let states = ready::fold(&index, &w.failures());
            if ready::settled(&states) {
                return Ok(states);
            }
        }
        w.check("settle every model").await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// CPU mode: load each model through the repository API, with its instance groups overridden
/// to KIND_CPU where they ask for a GPU; ensembles last.
async fn load_each(
    t: &Triton<'_>,
    w: &Waiter<'_>,
    cmd: &[String],
    progress: &Progress,
) -> Result<Vec<ModelState>, RunError> {
    let repo = ready::model_repository(cmd);
    let index = t.index().await?;
    if index.is_empty() {
        return Err(RunError::NoModels {
            repo,
            tail: lock(w.logs).tail.iter().cloned().collect(),
        });
    }
    let mut configs: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut kinds = Vec::new();
    for e in &index {
        let path = format!("{}/{}/config.pbtxt", repo.trim_end_matches('/'), e.name);
        let text = w.engine.read_file(w.id, &path, 4 << 20).await?;
        // A missing or unparsable config loads as it is: Triton then says what it thinks.
        let json = text
            .and_then(|t| String::from_utf8(t).ok())
            .and_then(|t| crate::triton::model_config::parse(&t).ok())
            .map(|p| crate::triton::model_config::to_canonical_json(&p.source));
        let ensemble = json
            .as_ref()
            .and_then(|j| j.get("platform"))
            .and_then(Value::as_str)
            == Some("ensemble");
        kinds.push((e.name.clone(), ensemble));
        configs.insert(
            e.name.clone(),
            json.and_then(|j| ready::cpu_override(&e.name, &j)),
        );
    }
    let mut results: BTreeMap<String, (Result<(), String>, f64)> = BTreeMap::new();
    for name in ready::load_order(&kinds) {
        let config = configs.get(&name).and_then(Option::as_ref);
        progress.spin(match config {
            Some(_) => format!("loading {name} (instance groups as KIND_CPU)"),
            None => format!("loading {name}"),
        });
        let t0 = Instant::now();
        let outcome = match t.load(&name, config, w.remaining()).await {
            Ok(r) => r,
            Err(e) => {
                // A refused connection is most often the container's end: say that instead.
                w.check("load every model").await?;
                return Err(e);
            }
        };
        results.insert(name, (outcome, seconds(t0.elapsed())));
        w.check("load every model").await?;
    }
    let index = t.index().await?;
    let mut states = ready::fold(&index, &w.failures());
    for m in &mut states {
        m.cpu_override = configs.get(&m.name).is_some_and(Option::is_some);
        if let Some((outcome, secs)) = results.get(&m.name) {
            m.load_seconds = Some(*secs);
            if let Err(reason) = outcome {
                m.state = State::Unavailable;
                if m.reason.is_none() {
                    m.reason = Some(reason.clone());
                }
            }
        }
    }
    Ok(states)
}

/// What the mode means, in a sentence.
fn mode_note(gpu: bool, models: &[ModelState], dropped: &[String]) -> String {
    let limits = if dropped.is_empty() {
        String::new()
    } else {
        format!(
            "; the engine may not set the {} limit, so it runs without (a GPU host sets it)",
            dropped.join(" and ")
        )
    };
    if gpu {
        return format!(
            "Triton loads the models with their own configuration, on the host's GPUs{limits}"
        );
    }
    let overridden: Vec<&str> = models
        .iter()
        .filter(|m| m.cpu_override)
        .map(|m| m.name.as_str())
        .collect();
    let mut note = "no GPU on this host: Triton runs with --model-control-mode=explicit and each model is loaded through its repository API".to_string();
    if overridden.is_empty() {
        note.push_str(" with its own configuration (none asks for a GPU)");
    } else {
        note.push_str(&format!(
            "; instance groups overridden to KIND_CPU for {}",
            overridden.join(", ")
        ));
    }
    note.push_str(&limits);
    note
}

/// The foreground run once ready: Triton's log on stderr until Ctrl-C (then the container is
/// stopped and removed) or the container's own end (an error).
async fn foreground(
    engine: &Engine,
    id: &str,
    report: &RunReport,
    logs: &Shared,
    progress: &Progress,
) -> Result<(), RunError> {
    progress.line(format!(
        "ready in {:.1} s: {} (HTTP), {} (gRPC), {}/metrics; Ctrl-C stops and removes {}",
        report.time_to_ready.total_seconds,
        report.endpoints.http,
        report.endpoints.grpc,
        report.endpoints.metrics,
        report.container
    ));
    lock(logs).echo = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                lock(logs).echo = false;
                engine.remove(id, STOP_GRACE).await?;
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let status = engine.status(id).await?;
                if !status.is_some_and(|s| s.running) {
                    let tail = engine.tail(id, Some(TAIL)).await;
                    let _ = engine.remove(id, STOP_GRACE).await;
                    return Err(RunError::Exited {
                        code: status.and_then(|s| s.exit_code),
                        during: "while serving",
                        failures: Vec::new(),
                        tail,
                    });
                }
            }
        }
    }
}

/// Removes the containers `run` started: the one named `name`, or all of them.
pub async fn stop(name: Option<&str>) -> Result<StopReport, RunError> {
    let engine = Engine::connect().await?;
    let found = engine.ours(name).await?;
    if let (Some(n), true) = (name, found.is_empty()) {
        return Err(RunError::NoContainer(n.to_string()));
    }
    let mut removed = Vec::new();
    for (id, name, image, loaded) in found {
        engine.remove(&id, STOP_GRACE).await?;
        if loaded {
            engine.remove_image(&image).await;
        }
        removed.push(name);
    }
    Ok(StopReport { removed })
}
