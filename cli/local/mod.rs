//! Running an image on this machine (`triton-deploy run`): the Docker Engine pulls (or loads)
//! it, starts Triton with the task's shm and ulimits and the host's GPUs, and `run` follows
//! Triton until every model is READY or has failed, measuring the time to ready.
//!
//! In: an image (a reference, or a `docker load` archive that `push` wrote) and [`RunSettings`].
//! Out: a [`RunReport`] (models with Triton's states and reasons, the endpoints, the time to
//! ready split into pull, start and load) or a [`RunError`]; a failed run leaves no container.
//!
//! On a host without GPUs Triton runs with explicit model control, and each model whose
//! instance groups ask for a GPU is loaded through Triton's repository API with its
//! configuration overridden to `KIND_CPU` ([`ready::cpu_override`]).

pub mod engine;
pub mod ready;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use triton_deploy_aws::Secret;

pub use engine::EngineError;
pub use ready::{ModelState, State};
pub use run::{run, stop};

/// Where the image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A reference the engine has or pulls.
    Reference(String),
    /// A `docker load` archive (a repository pushed on the fly).
    Archive(PathBuf),
}

/// `--gpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpus {
    /// The host's GPUs when the engine has NVIDIA's runtime, else none.
    Auto,
    /// None: CPU mode.
    None,
    /// Every GPU.
    All,
    /// This many.
    Count(u32),
}

/// `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    /// Pull when the engine does not have the image.
    Missing,
    /// Always pull (a tag may have moved).
    Always,
    /// Never pull: the engine must have it.
    Never,
}

/// Registry credentials for the pull (ECR's token as `push` gets it).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user (`AWS` for ECR).
    pub username: String,
    /// The password or token; never printed.
    pub password: Secret,
    /// The registry host they are for.
    pub server: String,
}

/// What `run` is asked to do.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The image.
    pub image: ImageSource,
    /// The container's name.
    pub name: String,
    /// The host address the ports are published on.
    pub bind: String,
    /// Host ports for HTTP, gRPC and metrics (0: any free one).
    pub ports: [u16; 3],
    /// `/dev/shm`, MiB.
    pub shm_mib: u32,
    /// GPUs.
    pub gpus: Gpus,
    /// Extra `tritonserver` flags, after the image's own.
    pub triton_args: Vec<String>,
    /// When to pull.
    pub pull: Pull,
    /// For the pull.
    pub credentials: Option<Credentials>,
    /// How long Triton may take to settle every model.
    pub timeout: Duration,
    /// Leave it running once ready.
    pub detach: bool,
    /// Where to write the report once ready (the measured time to ready, for `rollout`).
    pub out: Option<PathBuf>,
}

/// The host ports Triton answers on.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Endpoints {
    /// KServe v2 over HTTP.
    pub http: String,
    /// KServe v2 over gRPC (`http://host:port`, as `bench --protocol grpc --url` takes it).
    pub grpc: String,
    /// Prometheus metrics.
    pub metrics: String,
}

/// The time from nothing to every model ready, by part.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TimeToReady {
    /// Pulling (or loading) the image; 0 when the engine had it.
    pub pull_seconds: f64,
    /// Whether the image was pulled or loaded in this run.
    pub pulled: bool,
    /// The image's size on disk, bytes (what a cold host pulls).
    pub image_bytes: u64,
    /// Creating and starting the container until Triton's HTTP service is live.
    pub start_seconds: f64,
    /// From live to every model settled.
    pub load_seconds: f64,
    /// Start plus load: what a host that has the image waits (a task's health-check grace).
    pub ready_seconds: f64,
    /// Everything, pull included.
    pub total_seconds: f64,
}

/// How the foreground run ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// `--detach`: still running.
    Detached,
    /// Ctrl-C: stopped and removed.
    Interrupted,
}

/// A running (or, after Ctrl-C, removed) Triton container and how it came up.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The container's name.
    pub container: String,
    /// Its ID.
    pub id: String,
    /// The image reference it runs.
    pub image: String,
    /// The image's ID in the engine.
    pub image_id: String,
    /// `gpu` or `cpu`.
    pub mode: &'static str,
    /// GPUs requested: `none`, `all` or a count.
    pub gpus: String,
    /// What the mode means, said plainly.
    pub note: String,
    /// The command Triton runs with.
    pub command: Vec<String>,
    /// Where it answers.
    pub endpoints: Endpoints,
    /// Every model, with Triton's state.
    pub models: Vec<ModelState>,
    /// How long it took.
    pub time_to_ready: TimeToReady,
    /// How the run ended.
    pub ended: Ended,
}

/// The containers `run --stop` removed.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// Their names.
    pub removed: Vec<String>,
}

/// Why a run failed. Every failure after the container exists removes it first.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The container stopped before every model was ready.
    #[error("{}", exited_message(*.code, .during, .failures, .tail))]
    Exited {
        /// Its exit code.
        code: Option<i64>,
        /// When: `before every model was ready`, `while serving`.
        during: &'static str,
        /// The models Triton said it failed to load, with its reasons.
        failures: Vec<String>,
        /// Its last log lines.
        tail: Vec<String>,
    },
    /// Triton's model repository holds no model.
    #[error("Triton found no model in {repo} (the image's --model-repository); its last log lines:\n{}", indent(.tail))]
    NoModels {
        /// The repository directory in the container.
        repo: String,
        /// The last log lines.
        tail: Vec<String>,
    },
    /// Some models did not load.
    #[error("{}", failed_message(.0))]
    Models(Vec<ModelState>),
    /// Triton did not settle in time.
    #[error("Triton did not {what} within {seconds} s (--timeout); its last log lines:\n{}", indent(.tail))]
    Timeout {
        /// What it was waiting for.
        what: String,
        /// The limit.
        seconds: u64,
        /// The last log lines.
        tail: Vec<String>,
    },
    /// Triton's HTTP API answered badly.
    #[error("Triton's HTTP API: {0}")]
    Server(String),
    /// `--stop --name NAME` found no such container.
    #[error("no container named {0} was started by `triton-deploy run`")]
    NoContainer(String),
    /// Ctrl-C before the container was ready (it was removed).
    #[error("interrupted: the container {0} was stopped and removed")]
    Interrupted(String),
    /// The report file.
    #[error("writing {path}: {source}")]
    Out {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn exited_message(code: Option<i64>, during: &str, failures: &[String], tail: &[String]) -> String {
    let code = code.map_or("an unknown code".to_string(), |c| c.to_string());
    let mut out = format!("the container exited with code {code} {during}");
    if !failures.is_empty() {
        out.push_str(&format!("; Triton: {}", failures.join("; ")));
    }
    out.push_str("; the container was removed. Its last log lines:\n");
    out.push_str(&indent(tail));
    out
}

fn failed_message(states: &[ModelState]) -> String {
    let failed: Vec<String> = states
        .iter()
        .filter(|m| m.state != State::Ready)
        .map(|m| {
            format!(
                "model '{}' failed to load: {}",
                m.name,
                m.reason.as_deref().unwrap_or("Triton gave no reason")
            )
        })
        .collect();
    format!("{}; the container was removed", failed.join("; "))
}
