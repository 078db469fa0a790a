//! `triton-deploy bench`: load-test a KServe v2 endpoint over HTTP (JSON tensors), closed or open
//! loop, with stability windows, an optional SLA search, and the autoscaling target it implies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::{AwsArgs, SpecArgs, block_on};
use crate::bench::report::{self, BenchReport, pick};
use crate::bench::{self, InputData, Load, Settings, Step};
use crate::deploy::endpoint::Endpoint;
use crate::output::progress::Mode;
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
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<String>,

    /// Open loop: requests per second, a value or a sweep (100:2000:100).
    #[arg(long)]
    pub rate: Option<String>,

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
    #[arg(long, default_value = "random", value_name = "random|zero|FILE")]
    pub input_data: String,

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

    /// Threads generating load (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Triton's metrics port on the endpoint's host.
fn default_metrics_url(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!("{}://{}:8002/metrics", u.scheme(), u.host_str()?))
}

/// `250ms`, `5s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len()),
    );
    let v: f64 = n
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("`{s}`: give a number and a unit (ms, s, m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        "us" => v / 1e6,
        _ => return Err(format!("`{s}`: the unit is us, ms, s or m")),
    };
    // At most a day: a benchmark window, warm-up, timeout or budget longer than that is a typo.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= Duration::from_secs(86_400) => Ok(d),
        _ => Err(format!("`{s}`: at most 24h (86400s)")),
    }
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
    let threads = args.threads.map(usize::from);
    let report = block_on(threads, run_bench(&args, global, deployed))??;
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
        let value = serde_json::to_value(&report)
            .map_err(|e| CliError::failed(format!("cannot serialize the report: {e}")))?;
        write(p, &crate::bench::html::html(&value))?;
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

/// Input-data problems name the file.
fn input_file_error(input: &str, e: String) -> String {
    match input {
        "random" | "zero" => e,
        file => format!("{file}: {e}"),
    }
}

async fn run_bench(
    args: &BenchArgs,
    global: &Global,
    deployed: Option<Endpoint>,
) -> Result<BenchReport, CliError> {
    let (dep_url, dep_model, dep_tasks) = match deployed {
        Some(e) => (Some(e.url), e.model, e.tasks),
        None => (None, None, None),
    };
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
    let tasks = args.tasks.or(dep_tasks).unwrap_or(1);
    let headers = args.header.clone();
    let shapes: BTreeMap<String, Vec<i64>> = args.shape.iter().cloned().collect();
    let data = match args.input_data.as_str() {
        "random" => InputData::Random,
        "zero" => InputData::Zero,
        file => {
            let path = std::path::Path::new(file);
            let text = std::fs::read_to_string(file)
                .map_err(|e| CliError::new(ErrorKind::Io, format!("{file}: {e}")).in_file(path))?;
            InputData::File(serde_json::from_str(&text).map_err(|e| {
                CliError::invalid(format!("{file}: not JSON: {e}")).at(path, e.line(), e.column())
            })?)
        }
    };
    let settings = Arc::new(Settings {
        url: url.clone(),
        model: model.clone(),
        version: args.model_version.clone(),
        window: args.duration,
        warmup: args.warmup,
        requests: args.requests,
        percentile: args.percentile,
        stability: args.stability,
        max_trials: args.max_trials,
        batch: args.batch_size,
        headers,
        timeout: args.timeout,
        max_error_rate: args.max_error_rate,
        metrics_url: if args.no_server_stats {
            None
        } else {
            args.metrics_url
                .clone()
                .or_else(|| default_metrics_url(&url))
        },
        server_stats: !args.no_server_stats,
        started: std::time::Instant::now(),
        grpc: match args.protocol {
            Protocol::Grpc => Some(crate::kserve::grpc::channel(&url)?),
            Protocol::Http => None,
        },
    });
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let meta: Value = match &settings.grpc {
        Some(ch) => {
            crate::kserve::grpc::metadata(ch.clone(), &settings.model, settings.version.as_deref())
                .await?
        }
        None => client
            .get(settings.metadata_url())
            .send()
            .await
            .map_err(|e| format!("{}: {e}", settings.metadata_url()))?
            .error_for_status()
            .map_err(|e| format!("model metadata: {e}"))?
            .json()
            .await
            .map_err(|e| format!("model metadata is not JSON: {e}"))?,
    };
    // Triton also serves the model's configuration: whether it batches, and up to what size.
    let config = match &settings.grpc {
        Some(ch) => {
            crate::kserve::grpc::config(ch.clone(), &settings.model, settings.version.as_deref())
                .await
        }
        None => bench::http_config(&client, &settings).await,
    };
    if let Ok(c) = &config {
        bench::check_batch(c, args.batch_size).map_err(CliError::usage)?;
    }
    let batching = config.as_ref().map_or(true, |c| c.max_batch_size > 0);
    let json_bodies = bench::build_requests(&meta, &data, &shapes, args.batch_size, batching)
        .map_err(|e| CliError::invalid(input_file_error(&args.input_data, e)))?;
    let expected = match &data {
        InputData::File(v) => crate::kserve::tensor::expected(v, &meta)
            .map_err(|e| CliError::invalid(input_file_error(&args.input_data, e)))?,
        _ => None,
    };
    let mut bodies: Vec<bench::Body> = match args.tensor_format {
        TensorFormat::Json => json_bodies.iter().cloned().map(bench::Body::json).collect(),
        TensorFormat::Binary => json_bodies
            .iter()
            .map(|b| bench::to_binary(b))
            .collect::<Result<_, _>>()?,
    };
    if args.protocol == Protocol::Grpc {
        for (b, j) in bodies.iter_mut().zip(&json_bodies) {
            b.grpc = Some(crate::kserve::grpc::request(
                j,
                &settings.model,
                settings.version.as_deref(),
            )?);
        }
    }
    let transport = Arc::new(
        bench::Transport::new(
            &settings,
            client.clone(),
            bodies,
            expected,
            args.http_client == HttpClient::General,
        )
        .await?,
    );
    // On a terminal: a live line (requests answered, the rate over the last half second, time
    // running) under the lines of finished windows; plain lines otherwise.
    let shown = Arc::new(global.progress());
    let ticker = (shown.mode() == Mode::Terminal).then(|| {
        let (t, live) = (transport.clone(), shown.clone());
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
    });
    let lines = shown.clone();
    let progress = move |line: &str| lines.line(format!("  {line}"));
    let mut report = BenchReport {
        url: url.clone(),
        model: model.clone(),
        protocol: match (args.protocol, args.tensor_format) {
            (Protocol::Grpc, _) => "grpc",
            (_, TensorFormat::Json) => "http-json",
            (_, TensorFormat::Binary) => "http-binary",
        },
        percentile: args.percentile,
        batch_size: args.batch_size,
        steps: Vec::new(),
        sla: None,
        autoscaling: None,
        model_config: match &config {
            Ok(c) => bench::config_summary(c),
            Err(why) => json!({"available": false, "reason": why}),
        },
        validation: None,
        stopped: None,
    };
    let open = args.rate.is_some();
    let make = |v: f64| -> Load {
        if open {
            if args.poisson {
                Load::Poisson(v)
            } else {
                Load::Rate(v)
            }
        } else {
            Load::Concurrency(v.round().max(1.0) as u32)
        }
    };
    let range = bench::parse_range(
        args.rate
            .as_deref()
            .or(args.concurrency.as_deref())
            .unwrap_or("1"),
    )?;
    let failing =
        |s: &Step| s.requests > 0 && s.errors as f64 / s.requests as f64 > args.max_error_rate;
    match args.latency_budget {
        None => {
            for v in range {
                let step = bench::measure(&client, &settings, &transport, make(v), &progress).await;
                let bad = failing(&step);
                report.steps.push(step);
                if bad {
                    report.stopped = Some(format!(
                        "more than {}% of the requests failed at {}",
                        args.max_error_rate * 100.0,
                        make(v).label()
                    ));
                    break;
                }
            }
        }
        Some(budget) => {
            // Grow from the range's start (doubling) until over budget, then bisect.
            let budget_us = budget.as_micros() as u64;
            // The search goes up to the range's end (a single value: 64 times it).
            let end = range.last().copied().unwrap_or(range[0]);
            let limit = if range.len() == 1 { end * 64.0 } else { end };
            let mut good: Option<(f64, usize)> = None;
            let mut within_budget: Vec<usize> = Vec::new();
            let mut bad: Option<f64> = None;
            let mut v = range[0];
            loop {
                let step = bench::measure(&client, &settings, &transport, make(v), &progress).await;
                let within = !failing(&step)
                    && pick(&step, args.percentile) <= budget_us
                    && step.requests > 0;
                report.steps.push(step);
                if within {
                    good = Some((v, report.steps.len() - 1));
                    within_budget.push(report.steps.len() - 1);
                    if v >= limit {
                        break;
                    }
                    v = (v * 2.0).min(limit);
                } else {
                    bad = Some(v);
                    break;
                }
            }
            if let (Some((g, _)), Some(b)) = (good, bad) {
                let (mut lo, mut hi) = (g, b);
                let resolution = if open { (hi - lo) / 16.0 } else { 1.0 };
                while hi - lo > resolution.max(1.0) {
                    let mid = if open {
                        (lo + hi) / 2.0
                    } else {
                        ((lo + hi) / 2.0).floor()
                    };
                    if mid <= lo {
                        break;
                    }
                    let step =
                        bench::measure(&client, &settings, &transport, make(mid), &progress).await;
                    let within = !failing(&step)
                        && pick(&step, args.percentile) <= budget_us
                        && step.requests > 0;
                    report.steps.push(step);
                    if within {
                        lo = mid;
                        within_budget.push(report.steps.len() - 1);
                    } else {
                        hi = mid;
                    }
                }
            }
            // The best is the highest throughput under the budget (not always the highest load:
            // past the knee more load only adds queueing).
            let best = within_budget.iter().copied().max_by(|a, b| {
                report.steps[*a]
                    .throughput
                    .total_cmp(&report.steps[*b].throughput)
            });
            match best {
                Some(i) => {
                    let best = &report.steps[i];
                    let per_task = best.throughput / f64::from(tasks.max(1));
                    report.sla = Some(json!({
                        "budget_us": budget_us,
                        "percentile": args.percentile,
                        "best": {"concurrency": best.concurrency, "rate": best.rate, "throughput": best.throughput,
                                 "latency_us": pick(best, args.percentile)},
                        "tasks": tasks,
                        "throughput_per_task": per_task,
                    }));
                    report.autoscaling = Some(bench::autoscaling(
                        per_task,
                        args.batch_size,
                        args.safety_margin,
                        args.peak_rate,
                        args.price_per_hour,
                    ));
                }
                None => {
                    report.stopped = Some(format!(
                        "even the lowest load ({}) is over the budget of {} us at p{}",
                        make(range[0]).label(),
                        budget_us,
                        args.percentile
                    ));
                }
            }
        }
    }
    if transport.validates() {
        let failed: u64 = report
            .steps
            .iter()
            .map(|s| s.errors_by_code.get("validation").copied().unwrap_or(0))
            .sum();
        let answered: u64 = report
            .steps
            .iter()
            .map(|s| {
                s.requests - s.errors + s.errors_by_code.get("validation").copied().unwrap_or(0)
            })
            .sum();
        report.validation = Some(json!({
            "checked": answered,
            "failed": failed,
            "first_mismatch": transport.first_mismatch.get(),
        }));
    }
    if let Some(t) = ticker {
        t.abort();
    }
    shown.stop_spinner();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_units() {
        assert_eq!(super::parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(super::parse_duration("2s").unwrap().as_secs(), 2);
        assert_eq!(super::parse_duration("1.5").unwrap().as_millis(), 1500);
        assert!(super::parse_duration("fast").is_err());
        assert!(super::parse_duration("5h").is_err());
    }
}
