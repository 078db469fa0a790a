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
pub mod inputs;
pub mod load;
mod open_loop;
pub mod report;
pub mod run;
pub mod search;
pub mod server;
pub mod sizing;
pub mod transport;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use inputs::InputData;
pub use load::{Load, measure, parse_range};
pub use server::{Availability, ConfigSummary};
pub use sizing::{Autoscaling, Sla};

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
    pub server: server::ServerSide,
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
    /// Why GPU metrics are not read when `metrics_url` is not set (else `--no-server-stats`).
    pub metrics_reason: Option<String>,
    /// Read the server's statistics extension around each step.
    pub server_stats: bool,
    /// The tasks behind `url` (a deployed service's load balancer): the statistics are read
    /// from each and summed.
    pub tasks: u32,
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
