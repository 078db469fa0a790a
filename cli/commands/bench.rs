//! `triton-deploy bench`: load-test a KServe v2 endpoint over HTTP (JSON tensors), closed or open
//! loop, with stability windows, an optional SLA search, and the autoscaling target it implies.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on, parse_duration};
use crate::bench::report::{self, BenchReport};
use crate::bench::run::{Run, Sizing, Wire};
use crate::bench::search::{Budget, LoadKind, Plan};
use crate::bench::{self, InputData, Settings};
use crate::deploy::endpoint::Endpoint;
use crate::output::{CliError, ErrorKind, Global, Render, exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Http,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TensorFormat {
    Json,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpClient {
    /// Our HTTP/1.1 keep-alive client: each request encoded once, one connection per request
    /// in flight (plain http:// only).
    Lean,
    /// A general-purpose client (reqwest); always used for https://.
    General,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The endpoint: http://host:port (the load balancer, or any KServe v2 server). With -f: the
    /// deployed service's load balancer.
    #[arg(long, required_unless_present = "spec_file")]
    pub url: Option<String>,

    /// The model to load. With -f: the first model of the spec's model repository.
    #[arg(long, required_unless_present = "spec_file")]
    pub model: Option<String>,

    /// Take the endpoint, the model and the number of tasks from the service this spec deployed.
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub spec_file: Option<PathBuf>,

    /// With -f: the spec's `[env.<NAME>]` overrides.
    #[arg(long, value_name = "NAME", requires = "spec_file")]
    pub env: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,

    #[arg(long, value_name = "V")]
    pub model_version: Option<String>,

    /// Closed loop: requests in flight, a value or a sweep START:END:STEP (1:64:x2).
    #[arg(long, conflicts_with = "rate", value_parser = parse_load_range)]
    pub concurrency: Option<LoadRange>,

    /// Open loop: requests per second, a value or a sweep (100:2000:100).
    #[arg(long, value_parser = parse_load_range)]
    pub rate: Option<LoadRange>,

    /// With --rate: exponential gaps (a Poisson process) instead of even spacing.
    #[arg(long, requires = "rate")]
    pub poisson: bool,

    /// Length of one measurement window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// A fixed number of requests per step instead of timed windows (no stability search).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Warm-up before each step, not measured.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Input tensors: random, zero, or a perf_analyzer input-data JSON file.
    #[arg(long, default_value = "random", value_name = "random|zero|FILE", value_parser = parse_input_source)]
    pub input_data: InputSource,

    /// The size of an input's dynamic dimensions: NAME:D1,D2,...
    #[arg(long, value_name = "NAME:DIMS", value_parser = parse_shape)]
    pub shape: Vec<(String, Vec<i64>)>,

    /// HTTP (Triton's :8000), or gRPC (`inference.GRPCInferenceService`, Triton's :8001; tensors
    /// as raw contents).
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,

    /// Tensor encoding over HTTP: JSON, or Triton's binary tensor extension (needed for FP16/BF16 at speed;
    /// not every KServe v2 server has it).
    #[arg(long, value_enum, default_value_t = TensorFormat::Json)]
    pub tensor_format: TensorFormat,

    /// The batch size (the leading dynamic dimension).
    #[arg(long, default_value_t = 1)]
    pub batch_size: u32,

    /// The latency percentile that stability, the SLA and the report go by.
    #[arg(long, default_value_t = 99.0, value_parser = parse_percentile)]
    pub percentile: f64,

    /// Find the highest load whose percentile stays under this (e.g. 50ms).
    #[arg(long, value_parser = parse_duration)]
    pub latency_budget: Option<Duration>,

    /// Windows agree when throughput and the percentile are within this many percent.
    #[arg(long, default_value_t = 10.0)]
    pub stability: f64,

    /// Windows per step at the most (1: a single window, no stability check).
    #[arg(long, default_value_t = 10)]
    pub max_trials: u32,

    /// An HTTP header on every request, K:V.
    #[arg(long, value_name = "K:V", value_parser = parse_header)]
    pub header: Vec<(String, String)>,

    /// Tasks serving the endpoint: the capacity per task is the measured one divided by this
    /// (default 1; with -f, the service's running tasks).
    #[arg(long)]
    pub tasks: Option<u32>,

    /// The autoscaling target is this fraction of the capacity per task.
    #[arg(long, default_value_t = 0.7, value_parser = parse_fraction)]
    pub safety_margin: f64,

    /// The peak request rate to plan for (requests per second): gives the task counts.
    #[arg(long)]
    pub peak_rate: Option<f64>,

    /// The instance's price per hour (one task per instance): gives the cost per million inferences.
    #[arg(long)]
    pub price_per_hour: Option<f64>,

    /// Write the JSON result here too (what `autoscaling.bench_result` in the spec reads).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Write a self-contained HTML report here (plots inline; opens offline).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Write perf_analyzer-style CSV here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Stop a step when more than this fraction of its requests fail.
    #[arg(long, default_value_t = 0.1)]
    pub max_error_rate: f64,

    /// Prometheus metrics to read GPU utilization and memory from (Triton serves them on :8002).
    /// Default: the endpoint's host on port 8002.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Do not read server statistics or metrics.
    #[arg(long)]
    pub no_server_stats: bool,

    /// The HTTP client for plain http:// endpoints.
    #[arg(long, value_enum, default_value_t = HttpClient::Lean)]
    pub http_client: HttpClient,

    /// Runtime threads generating load (default: one per CPU); the open loop over plain http://
    /// runs on one thread of its own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A `--concurrency` or `--rate` value or sweep, expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRange(pub Vec<f64>);

fn parse_load_range(s: &str) -> Result<LoadRange, String> {
    bench::parse_range(s).map(LoadRange)
}

/// Triton's metrics port on the endpoint's host.
fn default_metrics_url(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!("{}://{}:8002/metrics", u.scheme(), u.host_str()?))
}

/// `--header K:V`: a header name and a value a header can carry.
pub fn parse_header(h: &str) -> Result<(String, String), String> {
    let (k, v) = h
        .split_once(':')
        .map(|(k, v)| (k.trim(), v.trim()))
        .ok_or_else(|| format!("`{h}`: use K:V"))?;
    reqwest::header::HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| format!("`{h}`: `{k}` is not a header name"))?;
    reqwest::header::HeaderValue::from_str(v)
        .map_err(|_| format!("`{h}`: the value has characters a header cannot carry"))?;
    Ok((k.to_ascii_lowercase(), v.to_string()))
}

/// `--shape NAME:D1,D2`: positive dimensions whose product stays under 2^31 elements.
pub fn parse_shape(s: &str) -> Result<(String, Vec<i64>), String> {
    let (name, dims) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: use NAME:D1,D2"))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<i64>().ok().filter(|d| *d > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("`{s}`: dimensions are positive integers"))?;
    let elements = dims
        .iter()
        .try_fold(1i64, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n < 1 << 31);
    if elements.is_none() {
        return Err(format!("`{s}`: at most 2^31 elements per tensor"));
    }
    Ok((name.to_string(), dims))
}

/// `--percentile`: between 0 and 100.
pub fn parse_percentile(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("`{s}`: a percentile between 0 and 100"))
}

/// `--safety-margin`: a fraction in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| *f > 0.0 && *f <= 1.0)
        .ok_or_else(|| format!("`{s}`: a fraction in (0, 1]"))
}

/// Runs `bench`: the deployment's endpoint first with `-f`, then the load, then the files asked
/// for (`--out`, `--report`, `--csv`).
pub fn run(args: BenchArgs, global: &Global) -> Result<BenchOutcome, CliError> {
    let deployed = match &args.spec_file {
        Some(file) => {
            let spec_args = SpecArgs {
                file: file.clone(),
                env: args.env.clone(),
            };
            let spec = spec_args.load()?;
            let aws = args.aws.options(spec.region.as_deref());
            let dir = spec_args.dir();
            Some(block_on(
                None,
                crate::deploy::endpoint::deployed(spec, &aws, &dir),
            )??)
        }
        None => None,
    };
    let run = settle(&args, deployed)?;
    let threads = args.threads.map(usize::from);
    let report = block_on(threads, bench::run::run(run, global.progress()))??;
    let write = |path: &std::path::Path, body: &str| {
        std::fs::write(path, body).map_err(|e| {
            CliError::new(ErrorKind::Io, format!("{}: {e}", path.display())).in_file(path)
        })
    };
    if let Some(p) = &args.out {
        let doc = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::failed(format!("cannot serialize the report: {e}")))?;
        write(p, &doc)?;
    }
    if let Some(p) = &args.report {
        write(p, &crate::bench::html::html(&report))?;
    }
    if let Some(p) = &args.csv {
        write(p, &report::csv(&report))?;
    }
    Ok(BenchOutcome(report))
}

/// A benchmark's report, as `bench` prints it.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct BenchOutcome(pub BenchReport);

impl BenchOutcome {
    fn all_failed(&self) -> bool {
        self.0
            .steps
            .iter()
            .all(|s| s.requests > 0 && s.errors == s.requests)
    }
}

impl Render for BenchOutcome {
    fn text(&self, _global: &Global) -> String {
        report::table(&self.0)
    }

    fn notes(&self) -> String {
        if self.all_failed() {
            "error: every request failed\n".into()
        } else {
            String::new()
        }
    }

    fn csv(&self) -> Option<String> {
        Some(report::csv(&self.0))
    }

    /// 1 when every request failed.
    fn exit_code(&self) -> u8 {
        if self.all_failed() {
            exit::FAILURE
        } else {
            exit::OK
        }
    }
}

impl From<bench::run::BenchError> for CliError {
    fn from(e: bench::run::BenchError) -> CliError {
        use bench::run::BenchError;
        match e {
            BenchError::Usage(m) => CliError::usage(m),
            BenchError::Input(m) => CliError::invalid(m),
            BenchError::Server(m) => CliError::failed(m),
        }
    }
}

/// Where input tensors come from: `random`, `zero`, or a perf_analyzer input-data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// Random values.
    Random,
    /// Zeros (empty strings, false).
    Zero,
    /// perf_analyzer's input-data JSON.
    File(PathBuf),
}

fn parse_input_source(s: &str) -> Result<InputSource, String> {
    Ok(match s {
        "random" => InputSource::Random,
        "zero" => InputSource::Zero,
        "" => return Err("give random, zero or an input-data file".into()),
        file => InputSource::File(PathBuf::from(file)),
    })
}

/// The input data as the run takes it: the file read and parsed here, so that its problems
/// name it.
fn input_data(source: &InputSource) -> Result<InputData, CliError> {
    Ok(match source {
        InputSource::Random => InputData::Random,
        InputSource::Zero => InputData::Zero,
        InputSource::File(path) => {
            let file = path.display();
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::new(ErrorKind::Io, format!("{file}: {e}")).in_file(path))?;
            InputData::File(serde_json::from_str(&text).map_err(|e| {
                CliError::invalid(format!("{file}: not JSON: {e}")).at(path, e.line(), e.column())
            })?)
        }
    })
}

/// The options, with the deployment's endpoint where they leave it out, as one validated run.
fn settle(args: &BenchArgs, deployed: Option<Endpoint>) -> Result<Run, CliError> {
    let from_spec = deployed.is_some();
    let (dep_url, dep_model, dep_tasks) = match deployed {
        Some(e) if args.protocol == Protocol::Grpc && args.url.is_none() => {
            let url = e.grpc_url.ok_or_else(|| {
                CliError::usage(
                    "--protocol grpc: the service has no gRPC through its load balancer (set network.grpc = true, with network.certificate_arn and network.hostname), or pass --url",
                )
            })?;
            (Some(url), e.model, e.tasks)
        }
        Some(e) => (Some(e.url), e.model, e.tasks),
        None => (None, None, None),
    };
    // The deployment's own endpoint: its load balancer, in front of its tasks.
    let behind_lb = from_spec && args.url.is_none();
    let url = args
        .url
        .clone()
        .or(dep_url)
        .ok_or_else(|| CliError::usage("no endpoint: pass --url or -f SPEC"))?;
    let model = args.model.clone().or(dep_model).ok_or_else(|| {
        CliError::usage(
            "no model: pass --model (the spec has no model repository to take one from)",
        )
    })?;
    let settings = Settings {
        url: url.clone(),
        model,
        version: args.model_version.clone(),
        window: args.duration,
        warmup: args.warmup,
        requests: args.requests,
        percentile: args.percentile,
        stability: args.stability,
        max_trials: args.max_trials,
        batch: args.batch_size,
        headers: args.header.clone(),
        timeout: args.timeout,
        max_error_rate: args.max_error_rate,
        metrics_url: if args.no_server_stats {
            None
        } else if behind_lb {
            // Triton's :8002 is not behind the load balancer.
            args.metrics_url.clone()
        } else {
            args.metrics_url
                .clone()
                .or_else(|| default_metrics_url(&url))
        },
        metrics_reason: (behind_lb && !args.no_server_stats).then(|| {
            "GPU metrics are on each task's :8002, which the load balancer does not expose: read them from a host in the VPC (--metrics-url http://<task-ip>:8002/metrics) or in CloudWatch Container Insights (`triton-deploy status` links it)".to_string()
        }),
        server_stats: !args.no_server_stats,
        tasks: if behind_lb { dep_tasks.unwrap_or(1) } else { 1 },
        started: std::time::Instant::now(),
        // Opened by the run (a channel needs the runtime).
        grpc: None,
    };
    let kind = match (&args.rate, args.poisson) {
        (None, _) => LoadKind::Concurrency,
        (Some(_), false) => LoadKind::Rate,
        (Some(_), true) => LoadKind::Poisson,
    };
    let range = args
        .rate
        .clone()
        .or(args.concurrency.clone())
        .unwrap_or_else(|| LoadRange(vec![1.0]));
    Ok(Run {
        settings,
        wire: match (args.protocol, args.tensor_format) {
            (Protocol::Grpc, _) => Wire::Grpc,
            (_, TensorFormat::Json) => Wire::HttpJson,
            (_, TensorFormat::Binary) => Wire::HttpBinary,
        },
        general_http: args.http_client == HttpClient::General,
        data: input_data(&args.input_data)?,
        data_file: match &args.input_data {
            InputSource::File(p) => Some(p.display().to_string()),
            _ => None,
        },
        shapes: args.shape.iter().cloned().collect(),
        plan: Plan {
            range: range.0,
            kind,
            max_error_rate: args.max_error_rate,
        },
        budget: args.latency_budget.map(|b| Budget {
            us: b.as_micros() as u64,
            percentile: args.percentile,
        }),
        sizing: Sizing {
            tasks: args.tasks.or(dep_tasks).unwrap_or(1),
            safety_margin: args.safety_margin,
            peak_rate: args.peak_rate,
            price_per_hour: args.price_per_hour,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_units() {
        assert_eq!(
            crate::commands::parse_duration("250ms")
                .unwrap()
                .as_millis(),
            250
        );
        assert_eq!(crate::commands::parse_duration("2s").unwrap().as_secs(), 2);
        assert_eq!(
            crate::commands::parse_duration("1.5").unwrap().as_millis(),
            1500
        );
        assert!(crate::commands::parse_duration("fast").is_err());
        assert!(crate::commands::parse_duration("5h").is_err());
    }
}
