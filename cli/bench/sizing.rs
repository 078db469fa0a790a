//! Sizing: the sustainable throughput per task turned into the autoscaling target `rollout`
//! reads, the task count for a peak, and the cost per million inferences.

use serde::Serialize;

/// The recommended autoscaling from a sustainable throughput (inferences per second per task,
/// with requests of `batch` inferences): ALB requests per minute per task at `margin`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Autoscaling {
    /// What `rollout` reads: ALB requests per minute per task.
    pub target_requests_per_task: u64,
    pub safety_margin: f64,
    pub capacity_requests_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_inferences: Option<f64>,
}

/// The autoscaling that keeps each task at `margin` of `capacity_infer_per_s`, with the task
/// count for `peak_rps` and the cost per million inferences at `price_per_hour`.
pub fn autoscaling(
    capacity_infer_per_s: f64,
    batch: u32,
    margin: f64,
    peak_rps: Option<f64>,
    price_per_hour: Option<f64>,
) -> Autoscaling {
    let req_per_s = capacity_infer_per_s / f64::from(batch.max(1));
    let target = (req_per_s * 60.0 * margin).floor().max(1.0) as u64;
    let per_task_at_target = target as f64 / 60.0;
    Autoscaling {
        target_requests_per_task: target,
        safety_margin: margin,
        capacity_requests_per_second: req_per_s,
        min_tasks: peak_rps.map(|_| 1),
        max_tasks: peak_rps.map(|p| (p / per_task_at_target).ceil().max(1.0) as u64),
        cost_per_million_inferences: price_per_hour
            .filter(|_| capacity_infer_per_s > 0.0)
            .map(|p| p / (capacity_infer_per_s * margin * 3600.0) * 1e6),
    }
}

/// The SLA search's answer: the best load within the budget and the capacity per task it gives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sla {
    /// The budget, microseconds.
    pub budget_us: u64,
    /// The percentile it applies to.
    pub percentile: f64,
    /// The step with the highest throughput within the budget.
    pub best: Best,
    /// Tasks that served it.
    pub tasks: u32,
    /// Its throughput divided among the tasks.
    pub throughput_per_task: f64,
}

/// The best step of an SLA search.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Best {
    /// Its concurrency (closed loop).
    pub concurrency: Option<u32>,
    /// Its rate (open loop).
    pub rate: Option<f64>,
    /// Inferences per second.
    pub throughput: f64,
    /// Its latency at the percentile, microseconds.
    pub latency_us: u64,
}

impl std::fmt::Display for Sla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.best;
        let load = match (b.concurrency, b.rate) {
            (Some(c), _) => format!("concurrency {c}"),
            (None, Some(r)) => format!("rate {r}/s"),
            (None, None) => "-".into(),
        };
        write!(
            f,
            "p{} within {} us: best {load} at {:.1} infer/s (p{} {} us); {:.1} infer/s per task over {} task(s)",
            self.percentile,
            self.budget_us,
            b.throughput,
            self.percentile,
            b.latency_us,
            self.throughput_per_task,
            self.tasks
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_becomes_a_request_count_target() {
        // 50 inferences/s at batch 1 and a 0.7 margin: 2100 requests per minute per task.
        let a = autoscaling(50.0, 1, 0.7, Some(200.0), Some(1.006));
        assert_eq!(a.target_requests_per_task, 2100);
        assert_eq!(a.max_tasks, Some(6)); // 200 / 35 = 5.7
        let cost = a.cost_per_million_inferences.unwrap();
        assert!(
            (cost - 1.006 / (35.0 * 3600.0) * 1e6).abs() < 1e-6,
            "{cost}"
        );
    }
}
