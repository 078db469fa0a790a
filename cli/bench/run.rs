//! One benchmark run, start to end: the model's metadata and configuration read from the
//! server, the requests built and encoded once, the steps measured in the order the
//! [`search`](super::search) gives, and the [`BenchReport`] put together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::inputs::{Body, InputData, build_requests, to_binary};
use super::report::{BenchReport, Validation, pick};
use super::search::{self, Budget, Found, Plan};
use super::server::{check_batch, config_summary, http_config};
use super::sizing::{Best, Sla, autoscaling};
use super::transport::Transport;
use super::{Settings, measure};
use crate::kserve::{InferRequest, ModelMetadata};
use crate::output::progress::{Mode, Progress};
use crate::triton::model_config::ModelConfig;

/// How requests travel: the report's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP with JSON tensors.
    HttpJson,
    /// HTTP with Triton's binary tensor extension.
    HttpBinary,
    /// gRPC with raw input contents.
    Grpc,
}

impl Wire {
    /// The name the report gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::HttpJson => "http-json",
            Wire::HttpBinary => "http-binary",
            Wire::Grpc => "grpc",
        }
    }
}

/// What turns a capacity into sizing: tasks, margin, peak and price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// Tasks that served the endpoint.
    pub tasks: u32,
    /// The autoscaling target's fraction of the capacity.
    pub safety_margin: f64,
    /// The peak request rate to plan the task count for.
    pub peak_rate: Option<f64>,
    /// The price per hour of one task's instance.
    pub price_per_hour: Option<f64>,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Run {
    /// Endpoint, model, windows and limits (the gRPC channel is opened by [`run`]).
    pub settings: Settings,
    /// How requests travel.
    pub wire: Wire,
    /// reqwest rather than the lean client for plain `http://`.
    pub general_http: bool,
    /// How inputs are filled.
    pub data: InputData,
    /// The input-data file, when inputs come from one (messages name it).
    pub data_file: Option<String>,
    /// Sizes of dynamic dimensions.
    pub shapes: BTreeMap<String, Vec<i64>>,
    /// The loads to measure.
    pub plan: Plan,
    /// With a budget: the SLA search instead of a sweep.
    pub budget: Option<Budget>,
    /// What the capacity is divided by and priced at.
    pub sizing: Sizing,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options do not suit the model (a batch size it cannot take).
    #[error("{0}")]
    Usage(String),
    /// The input data does not suit the model, or cannot be read.
    #[error("{0}")]
    Input(String),
    /// The server could not be reached or said something unusable.
    #[error("{0}")]
    Server(String),
}

/// What the server says about the model, read before any load.
struct Model {
    meta: ModelMetadata,
    config: Result<ModelConfig, String>,
}

async fn read_model(client: &reqwest::Client, s: &Settings) -> Result<Model, BenchError> {
    let version = s.version.as_deref();
    let (meta, config) = match &s.grpc {
        Some(ch) => (
            crate::kserve::grpc::metadata(ch.clone(), &s.model, version)
                .await
                .map_err(|e| BenchError::Server(e.to_string()))?,
            crate::kserve::grpc::config(ch.clone(), &s.model, version)
                .await
                .map_err(|e| e.to_string()),
        ),
        None => {
            let url = s.metadata_url();
            let body = client
                .get(&url)
                .send()
                .await
                .map_err(|e| BenchError::Server(format!("{url}: {e}")))?
                .error_for_status()
                .map_err(|e| BenchError::Server(format!("model metadata: {e}")))?
                .bytes()
                .await
                .map_err(|e| BenchError::Server(format!("{url}: {e}")))?;
            let meta = ModelMetadata::from_json(&body)
                .map_err(|e| BenchError::Server(format!("{url}: {e}")))?;
            // Triton also serves the model's configuration: whether it batches, and how far.
            (meta, http_config(client, s).await)
        }
    };
    Ok(Model { meta, config })
}

/// An input problem, naming the input-data file when there is one.
fn input_error(run: &Run, e: impl std::fmt::Display) -> BenchError {
    BenchError::Input(match &run.data_file {
        Some(file) => format!("{file}: {e}"),
        None => e.to_string(),
    })
}

/// The requests, encoded once for the wire.
fn bodies(run: &Run, model: &Model) -> Result<Vec<Body>, BenchError> {
    let batching = model.config.as_ref().map_or(true, |c| c.max_batch_size > 0);
    let requests: Vec<InferRequest> = build_requests(
        &model.meta,
        &run.data,
        &run.shapes,
        run.settings.batch,
        batching,
    )
    .map_err(|e| input_error(run, e))?;
    let mut bodies: Vec<Body> = match run.wire {
        Wire::HttpBinary => requests
            .iter()
            .map(to_binary)
            .collect::<Result<_, _>>()
            .map_err(|e| input_error(run, e))?,
        _ => requests.iter().map(|r| Body::json(r.to_json())).collect(),
    };
    if run.wire == Wire::Grpc {
        for (b, r) in bodies.iter_mut().zip(&requests) {
            b.grpc = Some(
                crate::kserve::grpc::request(
                    r,
                    &run.settings.model,
                    run.settings.version.as_deref(),
                )
                .map_err(|e| input_error(run, e))?,
            );
        }
    }
    Ok(bodies)
}

/// On a terminal, a live line (requests answered, the rate over the last half second) under
/// the lines of finished windows.
fn ticker(
    transport: &Arc<Transport>,
    progress: &Arc<Progress>,
) -> Option<tokio::task::JoinHandle<()>> {
    (progress.mode() == Mode::Terminal).then(|| {
        let (t, live) = (transport.clone(), progress.clone());
        tokio::spawn(async move {
            let mut last = (t.answered(), std::time::Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = (t.answered(), std::time::Instant::now());
                let rate = (now.0 - last.0) as f64 / now.1.duration_since(last.1).as_secs_f64();
                live.spin(format!("{} answered, {rate:.0} req/s", now.0));
                last = now;
            }
        })
    })
}

/// Runs the benchmark `run` describes, reporting windows on `progress`.
pub async fn run(run: Run, progress: Progress) -> Result<BenchReport, BenchError> {
    let client = reqwest::Client::builder()
        .timeout(run.settings.timeout)
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| BenchError::Server(e.to_string()))?;
    let mut settings = run.settings.clone();
    if run.wire == Wire::Grpc {
        settings.grpc = Some(
            crate::kserve::grpc::channel(&settings.url)
                .map_err(|e| BenchError::Usage(e.to_string()))?,
        );
    }
    let settings = Arc::new(settings);
    let model = read_model(&client, &settings).await?;
    if let Ok(c) = &model.config {
        check_batch(c, settings.batch).map_err(BenchError::Usage)?;
    }
    let bodies = bodies(&run, &model)?;
    let expected = match &run.data {
        InputData::File(v) => {
            crate::kserve::tensor::expected(v, &model.meta).map_err(|e| input_error(&run, e))?
        }
        _ => None,
    };
    let transport = Arc::new(
        Transport::new(
            &settings,
            client.clone(),
            bodies,
            expected,
            run.general_http,
        )
        .await
        .map_err(BenchError::Server)?,
    );
    let progress = Arc::new(progress);
    let live = ticker(&transport, &progress);
    let lines = progress.clone();
    let on_window = move |line: &str| lines.line(format!("  {line}"));
    let step = |load| {
        let (client, settings, transport) = (&client, &settings, &transport);
        let on_window = &on_window;
        async move { measure(client, settings, transport, load, on_window).await }
    };
    let found = match run.budget {
        None => search::sweep(&run.plan, step).await,
        Some(budget) => search::sla(&run.plan, budget, step).await,
    };
    if let Some(t) = live {
        t.abort();
    }
    progress.stop_spinner();
    Ok(report(&run, &model, found, &transport))
}

/// The report of a finished run.
fn report(run: &Run, model: &Model, found: Found, transport: &Transport) -> BenchReport {
    let s = &run.settings;
    let (sla, autoscaling) = match (run.budget, found.best) {
        (Some(budget), Some(i)) => {
            let best = &found.steps[i];
            let per_task = best.throughput / f64::from(run.sizing.tasks.max(1));
            let sla = Sla {
                budget_us: budget.us,
                percentile: budget.percentile,
                best: Best {
                    concurrency: best.concurrency,
                    rate: best.rate,
                    throughput: best.throughput,
                    latency_us: pick(best, budget.percentile),
                },
                tasks: run.sizing.tasks,
                throughput_per_task: per_task,
            };
            let a = autoscaling(
                per_task,
                s.batch,
                run.sizing.safety_margin,
                run.sizing.peak_rate,
                run.sizing.price_per_hour,
            );
            (Some(sla), Some(a))
        }
        _ => (None, None),
    };
    let validation = transport.validates().then(|| {
        let invalid = |st: &super::Step| st.errors_by_code.get("validation").copied().unwrap_or(0);
        Validation {
            checked: found
                .steps
                .iter()
                .map(|st| st.requests - st.errors + invalid(st))
                .sum(),
            failed: found.steps.iter().map(invalid).sum(),
            first_mismatch: transport.first_mismatch.get().cloned(),
        }
    });
    BenchReport {
        url: s.url.clone(),
        model: s.model.clone(),
        protocol: run.wire.as_str(),
        percentile: s.percentile,
        batch_size: s.batch,
        steps: found.steps,
        sla,
        autoscaling,
        model_config: model
            .config
            .as_ref()
            .map(config_summary)
            .map_err(Clone::clone)
            .into(),
        validation,
        stopped: found.stopped,
    }
}
