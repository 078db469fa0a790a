//! BenchReport: what a benchmark measured, as JSON (the document `rollout` and the HTML report
//! read), as a table, and as CSV with perf_analyzer's columns.

use std::fmt::Write as _;

use super::{Autoscaling, Availability, ConfigSummary, Sla, Step};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub url: String,
    pub model: String,
    pub protocol: &'static str,
    pub percentile: f64,
    pub batch_size: u32,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The model's configuration as the server reports it (Triton's `/config`), or why not.
    pub model_config: Availability<ConfigSummary>,
    /// With `validation_data`: how many answers were checked against it and how many differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Why a sweep or search stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Answers checked against an input file's `validation_data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    /// Answers checked.
    pub checked: u64,
    /// Answers that differed.
    pub failed: u64,
    /// The first difference, if any.
    pub first_mismatch: Option<String>,
}

/// A number as the table shows it: `-` when the server did not say.
fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
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
        step_lines(&mut out, s, p, extra);
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
            v.failed,
            v.checked,
            v.first_mismatch
                .as_deref()
                .map(|m| format!(" (first: {m})"))
                .unwrap_or_default()
        );
    }
    if let Some(s) = &r.stopped {
        let _ = writeln!(out, "stopped early: {s}");
    }
    server_lines(&mut out, r);
    out
}

/// One step's row, with its generator, error and server lines.
fn step_lines(out: &mut String, s: &Step, p: f64, extra: bool) {
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
    if let Some(st) = s.server.stats.get() {
        let _ = writeln!(
            out,
            "             server: queue {} us, input {} us, infer {} us, output {} us, avg batch {}{}",
            num(st.queue_us),
            num(st.compute_input_us),
            num(st.compute_infer_us),
            num(st.compute_output_us),
            st.avg_batch
                .map(|b| format!("{b:.1}"))
                .unwrap_or("-".into()),
            if st.tasks > 1 {
                format!(" (summed over {} tasks)", st.tasks)
            } else {
                String::new()
            }
        );
    }
    if let Some(g) = s.server.gpu.get() {
        let _ = writeln!(
            out,
            "             gpu: utilization {}, memory used {} bytes",
            num(g.utilization),
            g.memory_used_bytes
        );
    }
}

/// The model's configuration and what of the server's side was unavailable.
fn server_lines(out: &mut String, r: &BenchReport) {
    match &r.model_config {
        Availability::Available(c) => {
            let dynamic = match &c.dynamic_batching {
                None => "no dynamic batching".to_string(),
                Some(d) => format!(
                    "dynamic batching (preferred {:?}, max queue delay {} us)",
                    d.preferred_batch_size, d.max_queue_delay_us
                ),
            };
            let groups = if c.instance_group.is_empty() {
                "default instances".to_string()
            } else {
                c.instance_group
                    .iter()
                    .map(|g| format!("{} x {}", g.count, g.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "model config: max_batch_size {}, {dynamic}, {groups}",
                c.max_batch_size
            );
        }
        Availability::Unavailable { reason } => {
            let _ = writeln!(out, "model config: unavailable ({reason})");
        }
    }
    if let Some(first) = r.steps.first() {
        let parts = [
            ("stats", first.server.stats.reason()),
            ("gpu", first.server.gpu.reason()),
        ];
        for (part, reason) in parts {
            if let Some(reason) = reason {
                let _ = writeln!(out, "server {part}: unavailable ({reason})");
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
    let server = r.steps.iter().any(|s| s.server.stats.get().is_some());
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
            let st = s.server.stats.get();
            for v in [
                st.and_then(|t| t.queue_us),
                st.and_then(|t| t.compute_input_us),
                st.and_then(|t| t.compute_infer_us),
                st.and_then(|t| t.compute_output_us),
            ] {
                match v {
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
