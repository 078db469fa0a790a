//! `triton-deploy bench`: load-test a KServe v2 endpoint over HTTP (JSON tensors), closed or open
//! loop, with stability windows, an optional SLA search, and the autoscaling target it implies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Format, Global, block_on_threads, exit};
use crate::bench::{self, InputData, Load, Settings, Step};

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
    #[arg(long, value_name = "NAME:DIMS")]
    pub shape: Vec<String>,

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
    #[arg(long, default_value_t = 99.0)]
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
    #[arg(long, value_name = "K:V")]
    pub header: Vec<String>,

    /// Tasks serving the endpoint: the capacity per task is the measured one divided by this
    /// (default 1; with -f, the service's running tasks).
    #[arg(long)]
    pub tasks: Option<u32>,

    /// The autoscaling target is this fraction of the capacity per task.
    #[arg(long, default_value_t = 0.7)]
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
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

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
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub url: String,
    pub model: String,
    pub protocol: &'static str,
    pub percentile: f64,
    pub batch_size: u32,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<bench::Autoscaling>,
    /// The model's configuration as the server reports it (Triton's `/config`), or why not.
    pub model_config: Value,
    /// With `validation_data`: how many answers were checked against it and how many differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Value>,
    /// Why a sweep or search stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

pub fn run(args: BenchArgs, global: Global) -> i32 {
    if args.threads == Some(0) {
        eprintln!("error: --threads is at least 1");
        return exit::USAGE;
    }
    let Some(result) = block_on_threads(args.threads, run_bench(&args, global)) else {
        return exit::USAGE;
    };
    match result {
        Ok(r) => {
            let doc = serde_json::to_string_pretty(&r).expect("json");
            if let Some(p) = &args.out
                && let Err(e) = std::fs::write(p, &doc)
            {
                eprintln!("error: {}: {e}", p.display());
                return exit::USAGE;
            }
            if let Some(p) = &args.report {
                let page = crate::bench_report::html(&serde_json::to_value(&r).expect("json"));
                if let Err(e) = std::fs::write(p, page) {
                    eprintln!("error: {}: {e}", p.display());
                    return exit::USAGE;
                }
            }
            if let Some(p) = &args.csv
                && let Err(e) = std::fs::write(p, csv(&r))
            {
                eprintln!("error: {}: {e}", p.display());
                return exit::USAGE;
            }
            match global.format {
                Format::Json => println!("{doc}"),
                Format::Text if global.csv => print!("{}", csv(&r)),
                Format::Text => print_table(&r),
            }
            if r.steps
                .iter()
                .all(|s| s.requests > 0 && s.errors == s.requests)
            {
                eprintln!("error: every request failed");
                return exit::INVALID;
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

fn print_table(r: &BenchReport) {
    let p = r.percentile;
    let extra = ![50.0, 90.0, 99.0].contains(&p);
    println!(
        "{:>12} {:>12} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "load",
        "infer/s",
        "requests",
        "errors",
        "p50 us",
        "p90 us",
        "p99 us",
        if extra {
            format!("p{p} us")
        } else {
            "max us".into()
        },
        "stable"
    );
    for s in &r.steps {
        let load = s
            .concurrency
            .map(|c| format!("c={c}"))
            .or(s.rate.map(|x| format!("{x}/s")))
            .unwrap_or_default();
        let pv = if extra { pick(s, p) } else { s.latency_us.max };
        println!(
            "{:>12} {:>12.1} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7}",
            load,
            s.throughput,
            s.requests,
            s.errors,
            s.latency_us.p50,
            s.latency_us.p90,
            s.latency_us.p99,
            pv,
            if s.stable { "yes" } else { "no" }
        );
        if let Some(b) = &s.behind
            && b.late_requests > 0
        {
            println!(
                "             generator behind: {} request(s) sent over 1 ms late (worst {} us); latency counts from the intended time",
                b.late_requests, b.max_lag_us
            );
        }
        if !s.errors_by_code.is_empty() {
            println!("             errors: {:?}", s.errors_by_code);
        }
        let st = &s.server["stats"];
        if st["available"] == true {
            println!(
                "             server: queue {} us, input {} us, infer {} us, output {} us, avg batch {}",
                st["queue_us"],
                st["compute_input_us"],
                st["compute_infer_us"],
                st["compute_output_us"],
                st["avg_batch"]
                    .as_f64()
                    .map(|b| format!("{b:.1}"))
                    .unwrap_or("-".into())
            );
        }
        let g = &s.server["gpu"];
        if g["available"] == true {
            println!(
                "             gpu: utilization {}, memory used {} bytes",
                g["utilization"], g["memory_used_bytes"]
            );
        }
    }
    if let Some(sla) = &r.sla {
        println!("SLA: {sla}");
    }
    if let Some(a) = &r.autoscaling {
        println!(
            "autoscaling: ALBRequestCountPerTarget target {} requests/min per task ({}% of {:.1} requests/s per task){}{}",
            a.target_requests_per_task,
            (a.safety_margin * 100.0).round(),
            a.capacity_requests_per_second,
            a.max_tasks
                .map(|m| format!("; {m} task(s) for the peak"))
                .unwrap_or_default(),
            a.cost_per_million_inferences
                .map(|c| format!("; ${c:.2} per million inferences"))
                .unwrap_or_default()
        );
    }
    if let Some(v) = &r.validation {
        println!(
            "validation: {} of {} answers differed from validation_data{}",
            v["failed"],
            v["checked"],
            v["first_mismatch"]
                .as_str()
                .map(|m| format!(" (first: {m})"))
                .unwrap_or_default()
        );
    }
    if let Some(s) = &r.stopped {
        println!("stopped early: {s}");
    }
    let c = &r.model_config;
    if c["available"] == true {
        let dynamic = match &c["dynamic_batching"] {
            Value::Null => "no dynamic batching".to_string(),
            d => format!(
                "dynamic batching (preferred {}, max queue delay {} us)",
                d["preferred_batch_size"], d["max_queue_delay_us"]
            ),
        };
        let groups = c["instance_group"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|g| format!("{} x {}", g["count"], g["kind"].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default instances".into());
        println!(
            "model config: max_batch_size {}, {dynamic}, {groups}",
            c["max_batch_size"]
        );
    } else {
        println!(
            "model config: unavailable ({})",
            c["reason"].as_str().unwrap_or("")
        );
    }
    if let Some(first) = r.steps.first() {
        for part in ["stats", "gpu"] {
            if first.server[part]["available"] == false {
                println!(
                    "server {part}: unavailable ({})",
                    first.server[part]["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
}

/// perf_analyzer's CSV columns that this run measures (client-side latencies in microseconds).
pub fn csv(r: &BenchReport) -> String {
    let first = if r.steps.iter().any(|s| s.rate.is_some()) {
        "Request Rate"
    } else {
        "Concurrency"
    };
    // perf_analyzer's server columns (microseconds per request) when the server has Triton's
    // statistics, in its order: after the throughput, before the percentiles.
    let server = r
        .steps
        .iter()
        .any(|s| s.server["stats"]["available"] == true);
    let mut out = format!("{first},Inferences/Second");
    if server {
        out.push_str(
            ",Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output",
        );
    }
    out.push_str(",p50 latency,p90 latency,p95 latency,p99 latency,Avg latency\n");
    let mut steps: Vec<&Step> = r.steps.iter().collect();
    steps.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    for s in steps {
        let load = s
            .concurrency
            .map(|c| c.to_string())
            .or(s.rate.map(|x| x.to_string()))
            .unwrap_or_default();
        out.push_str(&format!("{load},{:.2}", s.throughput));
        if server {
            for k in [
                "queue_us",
                "compute_input_us",
                "compute_infer_us",
                "compute_output_us",
            ] {
                match s.server["stats"][k].as_f64() {
                    Some(v) => out.push_str(&format!(",{}", v.round())),
                    None => out.push(','),
                }
            }
        }
        out.push_str(&format!(
            ",{},{},{},{},{}\n",
            s.latency_us.p50,
            s.latency_us.p90,
            s.latency_us.p95,
            s.latency_us.p99,
            s.latency_us.mean
        ));
    }
    out
}

fn pick(s: &Step, p: f64) -> u64 {
    let l = &s.latency_us;
    match p {
        x if x <= 50.0 => l.p50,
        x if x <= 90.0 => l.p90,
        x if x <= 95.0 => l.p95,
        x if x <= 99.0 => l.p99,
        x if x <= 99.9 => l.p999,
        _ => l.max,
    }
}

/// The endpoint, model and task count of the service a spec deployed.
async fn from_deployment(
    args: &BenchArgs,
) -> Result<(Option<String>, Option<String>, Option<u32>), String> {
    let Some(file) = &args.spec_file else {
        return Ok((None, None, None));
    };
    let spec_args = super::SpecArgs {
        file: file.clone(),
        env: args.env.clone(),
    };
    let cx = super::deployment::Context::load(&spec_args, None)
        .await
        .map_err(|e| e.to_string())?;
    let infra = cx.infra().map_err(|e| e.to_string())?;
    let dns = triton_deploy_aws::elbv2::Elb::new(&cx.config)
        .dns_name(&infra.load_balancer_arn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the deployed load balancer has no DNS name")?;
    let url = crate::deploy::endpoint_url(&cx.spec, &dns);
    let model = cx.spec.model_repository.as_ref().and_then(|dir| {
        let base = file.parent().unwrap_or(std::path::Path::new("."));
        crate::model_repo::ModelRepo::read(&base.join(dir), None)
            .ok()?
            .models
            .into_iter()
            .map(|m| m.name)
            .next()
    });
    let tasks = triton_deploy_aws::ecs::Ecs::new(&cx.config)
        .describe_service(&infra.cluster, &cx.spec.service)
        .await
        .map_err(|e| e.to_string())?
        .map(|s| s.running.max(1) as u32);
    Ok((Some(url), model, tasks))
}

/// Input-data problems name the file.
fn input_file_error(input: &str, e: String) -> String {
    match input {
        "random" | "zero" => e,
        file => format!("{file}: {e}"),
    }
}

async fn run_bench(args: &BenchArgs, global: Global) -> Result<BenchReport, String> {
    let (dep_url, dep_model, dep_tasks) = from_deployment(args).await?;
    let url = args
        .url
        .clone()
        .or(dep_url)
        .ok_or("no endpoint: pass --url or -f SPEC")?;
    let model = args
        .model
        .clone()
        .or(dep_model)
        .ok_or("no model: pass --model (the spec has no model repository to take one from)")?;
    let tasks = args.tasks.or(dep_tasks).unwrap_or(1);
    if !(0.0..=100.0).contains(&args.percentile) {
        return Err("--percentile is between 0 and 100".into());
    }
    if !(0.0..=1.0).contains(&args.safety_margin) || args.safety_margin == 0.0 {
        return Err("--safety-margin is a fraction in (0, 1]".into());
    }
    let headers = args
        .header
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("--header {h}: use K:V"))?;
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("--header {h}: `{k}` is not a header name"))?;
            reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                format!("--header {h}: the value has characters a header cannot carry")
            })?;
            Ok::<_, String>((k.to_ascii_lowercase(), v.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut shapes = BTreeMap::new();
    for s in &args.shape {
        let (name, dims) = s
            .split_once(':')
            .ok_or_else(|| format!("--shape {s}: use NAME:D1,D2"))?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<i64>().ok().filter(|d| *d > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("--shape {s}: dimensions are positive integers"))?;
        shapes.insert(name.to_string(), dims);
    }
    let data = match args.input_data.as_str() {
        "random" => InputData::Random,
        "zero" => InputData::Zero,
        file => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            InputData::File(
                serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?,
            )
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
            Protocol::Grpc => Some(crate::grpc::channel(&url)?),
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
            crate::grpc::metadata(ch.clone(), &settings.model, settings.version.as_deref()).await?
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
            crate::grpc::config(ch.clone(), &settings.model, settings.version.as_deref()).await
        }
        None => bench::http_config(&client, &settings).await,
    };
    if let Ok(c) = &config {
        bench::check_batch(c, args.batch_size)?;
    }
    let batching = config.as_ref().map_or(true, |c| c.max_batch_size > 0);
    let json_bodies = bench::build_requests(&meta, &data, &shapes, args.batch_size, batching)
        .map_err(|e| input_file_error(&args.input_data, e))?;
    let expected = match &data {
        InputData::File(v) => {
            crate::tensor::expected(v, &meta).map_err(|e| input_file_error(&args.input_data, e))?
        }
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
            b.grpc = Some(crate::grpc::request(
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
    // running) under the lines of finished windows.
    let live = (global.format == Format::Text
        && std::io::IsTerminal::is_terminal(&std::io::stderr()))
    .then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}")
                .expect("template"),
        );
        bar
    });
    let ticker = live.clone().map(|bar| {
        let t = transport.clone();
        tokio::spawn(async move {
            let mut last = (t.answered(), std::time::Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = (t.answered(), std::time::Instant::now());
                let rate = (now.0 - last.0) as f64 / now.1.duration_since(last.1).as_secs_f64();
                bar.set_message(format!("{} answered, {rate:.0} req/s", now.0));
                bar.tick();
                last = now;
            }
        })
    });
    let bar = live.clone();
    let progress = move |line: &str| {
        if let Some(b) = &bar {
            b.println(format!("  {line}"));
        }
    };
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
    if let Some(b) = live {
        b.finish_and_clear();
    }
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
