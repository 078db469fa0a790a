//! BenchReport: what a benchmark measured, as JSON (the document `rollout` and the HTML report
//! read), as a table, and as CSV with perf_analyzer's columns.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{Autoscaling, Step};

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
    pub autoscaling: Option<Autoscaling>,
    /// The model's configuration as the server reports it (Triton's `/config`), or why not.
    pub model_config: Value,
    /// With `validation_data`: how many answers were checked against it and how many differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Value>,
    /// Why a sweep or search stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The report as a table with the SLA, autoscaling and server lines.
pub fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let p = r.percentile;
    let extra = ![50.0, 90.0, 99.0].contains(&p);
    let _ = writeln!(
        out,
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
        let _ = writeln!(
            out,
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
            let _ = writeln!(
                out,
                "             generator behind: {} request(s) sent over 1 ms late (worst {} us); latency counts from the intended time",
                b.late_requests, b.max_lag_us
            );
        }
        if !s.errors_by_code.is_empty() {
            let _ = writeln!(out, "             errors: {:?}", s.errors_by_code);
        }
        let st = &s.server["stats"];
        if st["available"] == true {
            let _ = writeln!(
                out,
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
            let _ = writeln!(
                out,
                "             gpu: utilization {}, memory used {} bytes",
                g["utilization"], g["memory_used_bytes"]
            );
        }
    }
    if let Some(sla) = &r.sla {
        let _ = writeln!(out, "SLA: {sla}");
    }
    if let Some(a) = &r.autoscaling {
        let _ = writeln!(
            out,
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
        let _ = writeln!(
            out,
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
        let _ = writeln!(out, "stopped early: {s}");
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
        let _ = writeln!(
            out,
            "model config: max_batch_size {}, {dynamic}, {groups}",
            c["max_batch_size"]
        );
    } else {
        let _ = writeln!(
            out,
            "model config: unavailable ({})",
            c["reason"].as_str().unwrap_or("")
        );
    }
    if let Some(first) = r.steps.first() {
        for part in ["stats", "gpu"] {
            if first.server[part]["available"] == false {
                let _ = writeln!(
                    out,
                    "server {part}: unavailable ({})",
                    first.server[part]["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    out
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

pub(crate) fn pick(s: &Step, p: f64) -> u64 {
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
