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
pub(super) async fn model_stats(client: &reqwest::Client, s: &Settings) -> Result<Value, String> {
    if !s.server_stats {
        return Err("not read (--no-server-stats)".into());
    }
    let url = format!("{}/stats", s.metadata_url());
    let v: Value = serde_json::from_str(&get_text(client, &url).await?)
        .map_err(|e| format!("{url}: not JSON: {e}"))?;
    v.pointer("/model_stats/0")
        .cloned()
        .ok_or_else(|| format!("{url}: no model_stats"))
}

/// GPU utilization and memory from Prometheus metrics (`nv_gpu_utilization`,
/// `nv_gpu_memory_used_bytes`, `nv_gpu_memory_total_bytes`), summed or averaged over the GPUs.
pub(super) async fn gpu_metrics(client: &reqwest::Client, s: &Settings) -> Availability<Gpu> {
    let Some(url) = &s.metrics_url else {
        return Availability::Unavailable {
            reason: "not read (--no-server-stats)".into(),
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
}
