//! The server's side of a run: the model's configuration (what the load depends on), Triton's
//! statistics deltas per step and GPU metrics from Prometheus, each available or not with the
//! reason.

use serde::Serialize;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use super::Settings;

/// The model's configuration over HTTP (`GET /v2/models/<m>/config`, Triton's protobuf JSON).
pub async fn http_config(
    client: &reqwest::Client,
    s: &Settings,
) -> Result<crate::triton::model_config::ModelConfig, String> {
    let url = format!("{}/config", s.metadata_url());
    let text = get_text(client, &url).await?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let msg = prost_reflect::DynamicMessage::deserialize_with_options(
        crate::triton::model_config::descriptor(),
        &mut de,
        &prost_reflect::DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| format!("{url}: not a model configuration: {e}"))?;
    msg.transcode_to()
        .map_err(|e| format!("{url}: not a model configuration: {e}"))
}

/// Something read from the server (its configuration, statistics, metrics), or why it could
/// not be: serialized as the thing's fields with `"available": true`, or as
/// `{"available": false, "reason": ..}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability<T> {
    /// Read.
    Available(T),
    /// Not read, and why.
    Unavailable {
        /// What went wrong, or why it was not asked for.
        reason: String,
    },
}

impl<T> Availability<T> {
    /// The thing, when available.
    pub fn get(&self) -> Option<&T> {
        match self {
            Availability::Available(t) => Some(t),
            Availability::Unavailable { .. } => None,
        }
    }

    /// Why it is unavailable, when it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Availability::Available(_) => None,
            Availability::Unavailable { reason } => Some(reason),
        }
    }
}

impl<T> From<Result<T, String>> for Availability<T> {
    fn from(r: Result<T, String>) -> Availability<T> {
        match r {
            Ok(t) => Availability::Available(t),
            Err(reason) => Availability::Unavailable { reason },
        }
    }
}

impl<T: Serialize> Serialize for Availability<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let v = match self {
            Availability::Available(t) => {
                let mut v = serde_json::to_value(t).map_err(S::Error::custom)?;
                if let Value::Object(m) = &mut v {
                    m.insert("available".into(), Value::Bool(true));
                }
                v
            }
            Availability::Unavailable { reason } => {
                serde_json::json!({"available": false, "reason": reason})
            }
        };
        v.serialize(s)
    }
}

/// What the load depends on in a model's configuration: batching and instances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSummary {
    /// 0: the model does not batch.
    pub max_batch_size: i32,
    /// The dynamic batcher's settings, if it has one.
    pub dynamic_batching: Option<DynamicBatching>,
    /// Instance groups: how many of what kind.
    pub instance_group: Vec<InstanceGroup>,
}

/// The dynamic batcher's settings that shape latency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicBatching {
    /// The batch sizes the batcher prefers to form.
    pub preferred_batch_size: Vec<i32>,
    /// How long a request may wait for a batch to fill.
    pub max_queue_delay_us: u64,
}

/// One instance group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceGroup {
    /// Instances in the group.
    pub count: i32,
    /// `KIND_GPU`, `KIND_CPU`, `KIND_AUTO`, ….
    pub kind: &'static str,
}

/// The summary of a model's configuration.
pub fn config_summary(c: &crate::triton::model_config::ModelConfig) -> ConfigSummary {
    use crate::triton::model_config::inference::{
        model_config::SchedulingChoice, model_instance_group::Kind,
    };
    ConfigSummary {
        max_batch_size: c.max_batch_size,
        dynamic_batching: match &c.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(d)) => Some(DynamicBatching {
                preferred_batch_size: d.preferred_batch_size.clone(),
                max_queue_delay_us: d.max_queue_delay_microseconds,
            }),
            _ => None,
        },
        instance_group: c
            .instance_group
            .iter()
            .map(|g| InstanceGroup {
                count: g.count.max(1),
                kind: Kind::try_from(g.kind)
                    .map(|k| k.as_str_name())
                    .unwrap_or("KIND_AUTO"),
            })
            .collect(),
    }
}

/// Whether `batch` suits the model's configuration.
pub fn check_batch(c: &crate::triton::model_config::ModelConfig, batch: u32) -> Result<(), String> {
    if c.max_batch_size == 0 && batch > 1 {
        return Err(format!(
            "model {} does not batch (max_batch_size 0 in its configuration): --batch-size must be 1",
            c.name
        ));
    }
    if c.max_batch_size > 0 && i64::from(batch) > i64::from(c.max_batch_size) {
        return Err(format!(
            "--batch-size {batch} is over model {}'s max_batch_size {}",
            c.name, c.max_batch_size
        ));
    }
    Ok(())
}

/// Triton's statistics extension: the model's cumulative counters, or why they are unavailable.
/// Behind a load balancer (`s.tasks` > 1) each read reaches one task: it reads until it has seen
/// every task's counters (at most 4 reads a task) and sums them; a task's counters are told apart
/// by their values, which no two tasks that served requests share. When it cannot see them all,
/// the statistics are unavailable rather than one task's taken for the service's.
pub(super) async fn model_stats(client: &reqwest::Client, s: &Settings) -> Result<Value, String> {
    if !s.server_stats {
        return Err("not read (--no-server-stats)".into());
    }
    let url = format!("{}/stats", s.metadata_url());
    let tasks = s.tasks.max(1) as usize;
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..4 * tasks {
        let v: Value = serde_json::from_str(&get_text(client, &url).await?)
            .map_err(|e| format!("{url}: not JSON: {e}"))?;
        let one = v
            .pointer("/model_stats/0")
            .cloned()
            .ok_or_else(|| format!("{url}: no model_stats"))?;
        if !seen.contains(&one) {
            seen.push(one);
        }
        if seen.len() >= tasks {
            break;
        }
    }
    match seen.len() {
        n if n == tasks => Ok(sum_stats(seen)),
        n => Err(format!(
            "{url}: {n} distinct tasks answered {} reads through the load balancer, of the {tasks} running; the statistics would mix tasks (pass --url to one task to read its own)",
            4 * tasks
        )),
    }
}

/// Several tasks' statistics as one: numbers summed field by field (counts and nanoseconds),
/// everything else the first task's; `tasks` says how many were summed.
fn sum_stats(mut all: Vec<Value>) -> Value {
    fn add(into: &mut Value, from: &Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(k) {
                        Some(x) => add(x, v),
                        None => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (x @ Value::Number(_), Value::Number(n)) => {
                // Triton reports counters as integers; u64 sums stay exact.
                *x = match (x.as_u64(), n.as_u64()) {
                    (Some(a), Some(b)) => Value::from(a.saturating_add(b)),
                    _ => serde_json::json!(x.as_f64().unwrap_or(0.0) + n.as_f64().unwrap_or(0.0)),
                };
            }
            _ => {}
        }
    }
    let tasks = all.len();
    let mut total = all.remove(0);
    for other in &all {
        add(&mut total, other);
    }
    total["tasks"] = Value::from(tasks);
    total
}

/// GPU utilization and memory from Prometheus metrics (`nv_gpu_utilization`,
/// `nv_gpu_memory_used_bytes`, `nv_gpu_memory_total_bytes`), summed or averaged over the GPUs.
pub(super) async fn gpu_metrics(client: &reqwest::Client, s: &Settings) -> Availability<Gpu> {
    let Some(url) = &s.metrics_url else {
        return Availability::Unavailable {
            reason: s
                .metrics_reason
                .clone()
                .unwrap_or_else(|| "not read (--no-server-stats)".into()),
        };
    };
    match get_text(client, url).await {
        Ok(text) => parse_gpu_metrics(&text),
        Err(reason) => Availability::Unavailable { reason },
    }
}

/// A server-side resource (configuration, statistics, metrics) as text; the error says which URL
/// and what went wrong.
async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url} answered {}", r.status()));
    }
    r.text().await.map_err(|e| format!("{url}: {e}"))
}

/// GPU figures at the end of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    /// GPUs reporting.
    pub gpus: usize,
    /// Mean utilization over the GPUs (0–1), if reported.
    pub utilization: Option<f64>,
    /// Memory in use, summed over the GPUs.
    pub memory_used_bytes: f64,
    /// Memory in all, summed over the GPUs.
    pub memory_total_bytes: f64,
}

/// The GPU figures in a Prometheus text exposition.
pub fn parse_gpu_metrics(text: &str) -> Availability<Gpu> {
    let values = |name: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect()
    };
    let util = values("nv_gpu_utilization");
    let used = values("nv_gpu_memory_used_bytes");
    let total = values("nv_gpu_memory_total_bytes");
    if util.is_empty() && used.is_empty() {
        return Availability::Unavailable {
            reason: "no nv_gpu_* metrics".into(),
        };
    }
    Availability::Available(Gpu {
        gpus: util.len().max(used.len()),
        utilization: (!util.is_empty()).then(|| util.iter().sum::<f64>() / util.len() as f64),
        memory_used_bytes: used.iter().sum(),
        memory_total_bytes: total.iter().sum(),
    })
}

/// The server's view of one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSide {
    /// Triton's statistics over the step.
    pub stats: Availability<Stats>,
    /// GPU metrics at its end.
    pub gpu: Availability<Gpu>,
}

/// Triton's statistics over one step: per-request averages in microseconds (`None` when the
/// server counted no such part).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Inferences the server ran (requests × their batch).
    pub inferences: f64,
    /// Model executions (batches).
    pub executions: f64,
    /// Inferences per execution.
    pub avg_batch: Option<f64>,
    /// Time waiting in the scheduler's queue.
    pub queue_us: Option<f64>,
    /// Time copying inputs in.
    pub compute_input_us: Option<f64>,
    /// Time in the model.
    pub compute_infer_us: Option<f64>,
    /// Time copying outputs out.
    pub compute_output_us: Option<f64>,
    /// Failed inferences.
    pub failed: f64,
    /// The tasks whose statistics are summed (each one's read through the load balancer).
    pub tasks: u64,
}

/// The server's view of a step: per-request average queue / compute-input / infer / output times
/// (microseconds) from the statistics deltas, the average batch the server executed, and GPU
/// metrics; each part says why when it is unavailable.
pub fn server_side(
    before: Result<Value, String>,
    after: Result<Value, String>,
    gpu: Availability<Gpu>,
) -> ServerSide {
    let stats = match (before, after) {
        (Ok(b), Ok(a)) => {
            let d = |path: &str| -> f64 {
                a.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)
                    - b.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)
            };
            let avg_us = |part: &str| -> Option<f64> {
                let count = d(&format!("/inference_stats/{part}/count"));
                let ns = d(&format!("/inference_stats/{part}/ns"));
                (count > 0.0).then(|| (ns / count / 1000.0).round())
            };
            let inferences = d("/inference_count");
            let executions = d("/execution_count");
            Availability::Available(Stats {
                inferences,
                executions,
                avg_batch: (executions > 0.0).then(|| inferences / executions),
                queue_us: avg_us("queue"),
                compute_input_us: avg_us("compute_input"),
                compute_infer_us: avg_us("compute_infer"),
                compute_output_us: avg_us("compute_output"),
                failed: d("/inference_stats/fail/count"),
                tasks: a.get("tasks").and_then(Value::as_u64).unwrap_or(1),
            })
        }
        (Err(reason), _) | (_, Err(reason)) => Availability::Unavailable { reason },
    };
    ServerSide { stats, gpu }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statistics_are_per_request_deltas() {
        let before = json!({"inference_count": 10, "execution_count": 10,
            "inference_stats": {"queue": {"count": 10, "ns": 1_000_000}, "compute_infer": {"count": 10, "ns": 5_000_000}}});
        let after = json!({"inference_count": 110, "execution_count": 30,
            "inference_stats": {"queue": {"count": 110, "ns": 31_000_000}, "compute_infer": {"count": 110, "ns": 55_000_000}}});
        let v = json!(server_side(
            Ok(before),
            Ok(after),
            Availability::Unavailable {
                reason: "no --metrics-url".into()
            }
        ));
        assert_eq!(v["stats"]["queue_us"], json!(300.0));
        assert_eq!(v["stats"]["compute_infer_us"], json!(500.0));
        assert_eq!(v["stats"]["avg_batch"], json!(5.0));
        assert_eq!(v["stats"]["compute_input_us"], Value::Null);
        assert_eq!(v["gpu"]["available"], false);
        let v = json!(server_side(
            Err("404".into()),
            Ok(json!({})),
            parse_gpu_metrics("")
        ));
        assert_eq!(v["stats"], json!({"available": false, "reason": "404"}));
        let m = json!(parse_gpu_metrics(
            "# HELP x\nnv_gpu_utilization{gpu_uuid=\"a\"} 0.5\nnv_gpu_utilization{gpu_uuid=\"b\"} 1\nnv_gpu_memory_used_bytes{gpu_uuid=\"a\"} 100\nnv_gpu_utilization_other 9\n",
        ));
        assert_eq!(m["utilization"], json!(0.75));
        assert_eq!(m["gpus"], 2);
        assert_eq!(m["memory_used_bytes"], json!(100.0));
        assert_eq!(m["available"], true);
    }

    /// A stand-in for a load balancer in front of tasks: each connection gets the next task's
    /// statistics, round robin.
    async fn balancer(tasks: Vec<Value>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for i in 0.. {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let body = json!({"model_stats": [tasks[i % tasks.len()].clone()]}).to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    fn settings(url: String, tasks: u32) -> Settings {
        Settings {
            url,
            model: "m".into(),
            version: None,
            window: std::time::Duration::from_secs(1),
            warmup: std::time::Duration::ZERO,
            requests: None,
            percentile: 99.0,
            stability: 0.1,
            max_trials: 1,
            batch: 1,
            headers: vec![],
            timeout: std::time::Duration::from_secs(5),
            max_error_rate: 0.0,
            metrics_url: None,
            metrics_reason: None,
            server_stats: true,
            tasks,
            started: std::time::Instant::now(),
            grpc: None,
        }
    }

    #[tokio::test]
    async fn statistics_through_a_load_balancer_are_every_task_s_summed_or_unavailable() {
        let task = |n: u64, ns: u64| {
            json!({"name": "m", "version": "1", "inference_count": n, "execution_count": n / 2,
                "inference_stats": {"queue": {"count": n, "ns": ns}}})
        };
        let client = reqwest::Client::new();
        let url = balancer(vec![task(10, 1_000), task(30, 9_000)]).await;
        let v = model_stats(&client, &settings(url.clone(), 2))
            .await
            .unwrap();
        assert_eq!(v["inference_count"], 40);
        assert_eq!(v["execution_count"], 20);
        assert_eq!(v["inference_stats"]["queue"]["ns"], 10_000);
        assert_eq!(v["name"], "m");
        assert_eq!(v["tasks"], 2);
        // Before and after a step, both summed: the service's delta, not one task's.
        let before = v;
        let after = model_stats(&client, &settings(url.clone(), 2))
            .await
            .unwrap();
        let side = server_side(Ok(before), Ok(after), parse_gpu_metrics(""));
        assert_eq!(side.stats.get().unwrap().tasks, 2);
        // A task that never answered: no statistics, and why.
        let err = model_stats(&client, &settings(url.clone(), 3))
            .await
            .unwrap_err();
        assert!(err.contains("2 distinct tasks answered 12 reads"), "{err}");
        // One task (no load balancer): one read, as it is.
        let v = model_stats(&client, &settings(url, 1)).await.unwrap();
        assert_eq!(v["tasks"], 1);
        assert!(v["inference_count"] == 10 || v["inference_count"] == 30);
    }
}
