//! What loads to measure, in what order: a sweep over a range, or the SLA search (the highest
//! throughput whose percentile stays under a latency budget). Both are pure over a `measure`
//! function (a load in, a measured [`Step`] out), so the search is tested with a fake server.

use std::future::Future;

use super::Load;
use super::Step;
use super::report::pick;

/// The kind of load a range is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// `--concurrency`: requests in flight.
    Concurrency,
    /// `--rate`: evenly spaced requests per second.
    Rate,
    /// `--rate --poisson`: exponential gaps.
    Poisson,
}

impl LoadKind {
    /// The load at `v` (a concurrency is rounded, at least 1).
    pub fn at(self, v: f64) -> Load {
        match self {
            LoadKind::Concurrency => Load::Concurrency(v.round().max(1.0) as u32),
            LoadKind::Rate => Load::Rate(v),
            LoadKind::Poisson => Load::Poisson(v),
        }
    }

    fn open(self) -> bool {
        self != LoadKind::Concurrency
    }
}

/// The loads to offer and when to stop.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The range's values, in order (at least one).
    pub range: Vec<f64>,
    /// What the values are.
    pub kind: LoadKind,
    /// A step with more failed requests than this fraction stops the run.
    pub max_error_rate: f64,
}

/// A latency budget: the percentile `percentile` at most `us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The budget, microseconds.
    pub us: u64,
    /// The percentile it applies to.
    pub percentile: f64,
}

/// The steps measured, in order; with a budget, which of them is the best within it.
#[derive(Debug, Clone)]
pub struct Found {
    /// Every step measured.
    pub steps: Vec<Step>,
    /// The step with the highest throughput within the budget.
    pub best: Option<usize>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

impl Plan {
    fn failing(&self, s: &Step) -> bool {
        s.requests > 0 && s.errors as f64 / s.requests as f64 > self.max_error_rate
    }

    fn too_many_errors(&self, load: Load) -> String {
        format!(
            "more than {}% of the requests failed at {}",
            self.max_error_rate * 100.0,
            load.label()
        )
    }
}

/// Every value of the range in turn, stopping at the first step with too many errors.
pub async fn sweep<F, Fut>(plan: &Plan, mut measure: F) -> Found
where
    F: FnMut(Load) -> Fut,
    Fut: Future<Output = Step>,
{
    let mut found = Found {
        steps: Vec::new(),
        best: None,
        stopped: None,
    };
    for v in &plan.range {
        let load = plan.kind.at(*v);
        let step = measure(load).await;
        let bad = plan.failing(&step);
        found.steps.push(step);
        if bad {
            found.stopped = Some(plan.too_many_errors(load));
            break;
        }
    }
    found
}

/// The SLA search: from the range's start, double the load while the step stays within the
/// budget (up to the range's end; a single value: up to 64 times it), then bisect between the
/// last load within and the first over it (to 1 for a concurrency, 1/16 of the gap for a
/// rate). The best is the step with the highest throughput within the budget — not always the
/// highest load: past the knee more load only adds queueing.
pub async fn sla<F, Fut>(plan: &Plan, budget: Budget, mut measure: F) -> Found
where
    F: FnMut(Load) -> Fut,
    Fut: Future<Output = Step>,
{
    let within =
        |s: &Step| !plan.failing(s) && s.requests > 0 && pick(s, budget.percentile) <= budget.us;
    let start = plan.range[0];
    let end = plan.range.last().copied().unwrap_or(start);
    let limit = if plan.range.len() == 1 {
        end * 64.0
    } else {
        end
    };
    let mut steps: Vec<Step> = Vec::new();
    let mut inside: Vec<usize> = Vec::new();
    let (mut good, mut bad) = (None, None);
    let mut v = start;
    loop {
        let step = measure(plan.kind.at(v)).await;
        let ok = within(&step);
        steps.push(step);
        if !ok {
            bad = Some(v);
            break;
        }
        good = Some(v);
        inside.push(steps.len() - 1);
        if v >= limit {
            break;
        }
        v = (v * 2.0).min(limit);
    }
    if let (Some(mut lo), Some(mut hi)) = (good, bad) {
        let open = plan.kind.open();
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
            let step = measure(plan.kind.at(mid)).await;
            let ok = within(&step);
            steps.push(step);
            if ok {
                lo = mid;
                inside.push(steps.len() - 1);
            } else {
                hi = mid;
            }
        }
    }
    let best = inside
        .iter()
        .copied()
        .max_by(|a, b| steps[*a].throughput.total_cmp(&steps[*b].throughput));
    let stopped = best.is_none().then(|| {
        format!(
            "even the lowest load ({}) is over the budget of {} us at p{}",
            plan.kind.at(start).label(),
            budget.us,
            budget.percentile
        )
    });
    Found {
        steps,
        best,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::server::ServerSide;
    use crate::bench::{Availability, Latency};

    /// A step as a server with `capacity` requests/s and a base latency would give it:
    /// throughput grows with concurrency up to the capacity, latency with the queue beyond it.
    fn fake(load: Load, capacity: f64, base_us: u64, errors: u64) -> Step {
        let Load::Concurrency(c) = load else {
            panic!("the fake serves concurrency only")
        };
        let offered = f64::from(c) * 1e6 / base_us as f64;
        // Past the capacity, contention costs a little throughput.
        let throughput = if offered <= capacity {
            offered
        } else {
            capacity - (offered - capacity) * 0.01
        };
        let latency = (f64::from(c) / throughput * 1e6) as u64;
        Step {
            concurrency: Some(c),
            rate: None,
            throughput,
            requests: 1000,
            errors,
            errors_by_code: Default::default(),
            latency_us: Latency {
                p50: latency,
                p90: latency,
                p95: latency,
                p99: latency,
                p999: latency,
                max: latency,
                mean: latency,
            },
            windows: 3,
            stable: true,
            behind: None,
            server: ServerSide {
                stats: unavailable(),
                gpu: unavailable(),
            },
            timeline: Vec::new(),
        }
    }

    fn unavailable<T>() -> Availability<T> {
        Availability::Unavailable {
            reason: "fake".into(),
        }
    }

    fn plan(range: &[f64]) -> Plan {
        Plan {
            range: range.to_vec(),
            kind: LoadKind::Concurrency,
            max_error_rate: 0.1,
        }
    }

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn loads(f: &Found) -> Vec<u32> {
        f.steps.iter().filter_map(|s| s.concurrency).collect()
    }

    #[test]
    fn the_search_doubles_then_bisects_to_the_knee() {
        // 1 ms per request, 4000 req/s at most: latency stays 1 ms up to concurrency 4, then
        // grows with the queue (concurrency 8: 2.02 ms, 11: 2.80 ms, 12: 3.06 ms).
        let budget = Budget {
            us: 3000,
            percentile: 99.0,
        };
        let found = block(sla(&plan(&[1.0]), budget, |l| async move {
            fake(l, 4000.0, 1000, 0)
        }));
        // Doubling: 1, 2, 4, 8, 16 (over); bisecting 8..16: 12 (over), 10, 11 (within).
        assert_eq!(loads(&found), [1, 2, 4, 8, 16, 12, 10, 11]);
        let best = &found.steps[found.best.unwrap()];
        // The best is the highest throughput within the budget (concurrency 4), not the
        // highest load within it (11).
        assert_eq!(best.throughput, 4000.0);
        assert_eq!(best.concurrency, Some(4));
        assert_eq!(found.stopped, None);
    }

    #[test]
    fn the_search_stops_at_the_range_end_and_says_when_nothing_fits() {
        let budget = Budget {
            us: 3000,
            percentile: 99.0,
        };
        let found = block(sla(&plan(&[1.0, 2.0, 4.0]), budget, |l| async move {
            fake(l, 4000.0, 1000, 0)
        }));
        assert_eq!(loads(&found), [1, 2, 4]);
        let tight = Budget {
            us: 500,
            percentile: 99.0,
        };
        let found = block(sla(&plan(&[1.0]), tight, |l| async move {
            fake(l, 4000.0, 1000, 0)
        }));
        assert_eq!(loads(&found), [1]);
        assert_eq!(found.best, None);
        assert_eq!(
            found.stopped.as_deref(),
            Some("even the lowest load (concurrency 1) is over the budget of 500 us at p99")
        );
        // Errors count as over the budget, however fast.
        let found = block(sla(&plan(&[1.0]), budget, |l| async move {
            fake(l, 4000.0, 1000, 500)
        }));
        assert_eq!(found.best, None);
    }

    #[test]
    fn a_sweep_stops_at_the_first_failing_step() {
        let found = block(sweep(&plan(&[1.0, 2.0, 4.0, 8.0]), |l| async move {
            let errors = if l == Load::Concurrency(4) { 200 } else { 0 };
            fake(l, 4000.0, 1000, errors)
        }));
        assert_eq!(loads(&found), [1, 2, 4]);
        assert_eq!(
            found.stopped.as_deref(),
            Some("more than 10% of the requests failed at concurrency 4")
        );
        let rates: Vec<Load> = [1.5, 2.5].map(|v| LoadKind::Poisson.at(v)).to_vec();
        assert_eq!(rates, [Load::Poisson(1.5), Load::Poisson(2.5)]);
        assert_eq!(LoadKind::Concurrency.at(0.2), Load::Concurrency(1));
    }
}
