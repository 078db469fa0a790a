//! The load generator: a step's load ([`Load`], from a `--concurrency`/`--rate` range), its
//! measurement windows (closed or open loop), and a step measured until stable ([`measure`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::server::{gpu_metrics, model_stats, server_side};
use super::transport::Transport;
use super::{Behind, Latency, Settings, Step};

/// The load of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Closed loop: this many requests in flight.
    Concurrency(u32),
    /// Open loop: requests per second, evenly spaced.
    Rate(f64),
    /// Open loop: requests per second, exponential gaps.
    Poisson(f64),
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Concurrency(c) => format!("concurrency {c}"),
            Load::Rate(r) => format!("rate {r}/s"),
            Load::Poisson(r) => format!("poisson {r}/s"),
        }
    }
}

/// `1:64:x2` (doubling) or `100:2000:100` (adding) or a single value.
pub fn parse_range(s: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |x: &str| -> Result<f64, String> {
        x.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("`{s}`: `{x}` is not a positive number"))
    };
    match parts.as_slice() {
        [one] => Ok(vec![num(one)?]),
        [a, b] | [a, b, _] => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(format!("`{s}`: the end is below the start"));
            }
            let step = parts.get(2).copied().unwrap_or("x2");
            let mut out = Vec::new();
            let mut v = start;
            if let Some(f) = step.strip_prefix('x') {
                let f = num(f)?;
                if f <= 1.0 {
                    return Err(format!("`{s}`: the factor must be above 1"));
                }
                while v <= end * (1.0 + 1e-9) {
                    out.push(v);
                    v *= f;
                }
            } else {
                let d = num(step)?;
                while v <= end * (1.0 + 1e-9) {
                    out.push(v);
                    v += d;
                }
            }
            if out.len() > 1000 {
                return Err(format!("`{s}`: more than 1000 steps"));
            }
            Ok(out)
        }
        _ => Err(format!(
            "`{s}`: use START:END:STEP, e.g. 1:64:x2 or 100:2000:100"
        )),
    }
}

/// A small, fast PRNG (xorshift64*): random input data and Poisson gaps need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean() as u64,
    }
}

fn percentile(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p / 100.0)
    }
}

/// The counters the request tasks share during one window.
pub(super) struct Window {
    hist: std::sync::Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
    late: AtomicU64,
    max_lag: AtomicU64,
    /// Open loop: requests sent, and the time from the start to the last send.
    sent: AtomicU64,
    send_span_us: AtomicU64,
}

impl Window {
    fn new() -> Window {
        Window {
            hist: std::sync::Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            ),
            ok: AtomicU64::new(0),
            errors: std::sync::Mutex::new(BTreeMap::new()),
            late: AtomicU64::new(0),
            max_lag: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_span_us: AtomicU64::new(0),
        }
    }
    pub(super) fn record(&self, us: u64) {
        let _ = self.hist.lock().expect("lock").record(us.max(1));
        self.ok.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn error(&self, code: String) {
        *self.errors.lock().expect("lock").entry(code).or_insert(0) += 1;
    }
    /// Open loop: a request intended at `at` goes out now (late when over 1 ms after it).
    pub(super) fn sent_one(&self, at: Instant, started: Instant) {
        let lag = Instant::now().saturating_duration_since(at).as_micros() as u64;
        if lag > 1000 {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        self.max_lag.fetch_max(lag, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.send_span_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// An open loop's intended send times: evenly spaced at `rate` per second (exponential gaps
/// when `poisson`), from `started` until `deadline` or `count` requests.
pub(super) struct Schedule {
    rng: Rng,
    rate: f64,
    poisson: bool,
    started: Instant,
    intended: Instant,
    deadline: Instant,
    count: Option<u64>,
    i: usize,
}

impl Schedule {
    pub(super) fn new(
        rate: f64,
        poisson: bool,
        started: Instant,
        deadline: Instant,
        count: Option<u64>,
        seed: u64,
    ) -> Schedule {
        Schedule {
            rng: Rng::new(seed),
            rate,
            poisson,
            started,
            intended: started,
            deadline,
            count,
            i: 0,
        }
    }

    /// When the window started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// The next request: its intended send time and its index; `None` once the window is over.
    pub(super) fn next(&mut self) -> Option<(Instant, usize)> {
        let gap = if self.poisson {
            -(1.0 - self.rng.next_f64()).ln() / self.rate
        } else {
            1.0 / self.rate
        };
        self.intended += Duration::from_secs_f64(gap);
        if self.intended >= self.deadline || self.count.is_some_and(|c| self.i as u64 >= c) {
            return None;
        }
        self.i += 1;
        Some((self.intended, self.i - 1))
    }
}

/// How long before a send the open loop stops sleeping and spins: the kernel's wake-up
/// (with this thread's timer slack tightened, else the default slack of 50 µs too).
fn spin_margin() -> Duration {
    // With the kernel's default timer slack (50 µs) the sleep ends up to 80 µs early and the rest
    // is spun; with 1 µs only the wake-up itself is left to cover.
    if tighten_timer_slack() {
        Duration::from_micros(15)
    } else {
        Duration::from_micros(80)
    }
}

/// Asks the kernel to wake this thread on time (a timer slack of 1 µs instead of the default
/// 50 µs), through `/proc` (no `unsafe`). Returns whether it took: the pacer then needs next to
/// no spinning.
fn tighten_timer_slack() -> bool {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    std::fs::write(Path::new("/proc").join(me).join("timerslack_ns"), "1000").is_ok()
}

/// Sleeps until `t`: the kernel's sleep to within `slack` (its timer slack plus the wake-up),
/// then a short spin, so that sends are on time without burning a core between them.
fn sleep_until_precisely(t: Instant, slack: Duration) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > slack {
            std::thread::sleep(left - slack);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The open-loop pacer for the runtime's transports (gRPC, HTTPS; on its own thread): each
/// request spawned on the runtime at its intended time and timed from it.
fn pace(
    handle: &tokio::runtime::Handle,
    t: &Arc<Transport>,
    w: &Arc<Window>,
    inflight: &Arc<AtomicU64>,
    mut schedule: Schedule,
) {
    // In-flight cap: beyond it the generator is behind, and says so.
    let cap = 20_000u64;
    let slack = spin_margin();
    while let Some((at, k)) = schedule.next() {
        sleep_until_precisely(at, slack);
        while inflight.load(Ordering::Acquire) >= cap {
            std::thread::sleep(Duration::from_micros(100));
        }
        w.sent_one(at, schedule.started());
        let (t, w, inflight) = (t.clone(), w.clone(), inflight.clone());
        inflight.fetch_add(1, Ordering::AcqRel);
        handle.spawn(async move {
            let mut conn = t.conn();
            match t.send(&mut conn, k).await {
                // From the intended send time: a late send is latency the user would see.
                Ok(()) => w.record(at.elapsed().as_micros() as u64),
                Err(code) => w.error(code),
            }
            t.put_back(conn);
            inflight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Runs one window of `load` for `length` (or `count` requests), recording into a new window.
async fn run_window(
    t: &Arc<Transport>,
    load: Load,
    length: Duration,
    count: Option<u64>,
    seed: u64,
) -> Arc<Window> {
    let w = Arc::new(Window::new());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    match load {
        Load::Concurrency(c) => {
            for k in 0..c {
                let (t, w, issued) = (t.clone(), w.clone(), issued.clone());
                tasks.spawn(async move {
                    // One connection per request in flight, kept for the whole window.
                    let mut conn = t.conn();
                    let mut i = k as usize;
                    let mut hist =
                        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
                    let mut ok = 0u64;
                    loop {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|c| n >= c) {
                            break;
                        }
                        let start = Instant::now();
                        match t.send(&mut conn, i).await {
                            Ok(()) => {
                                let _ = hist.record((start.elapsed().as_micros() as u64).max(1));
                                ok += 1;
                            }
                            Err(code) => w.error(code),
                        }
                        i += c as usize;
                    }
                    // Each task keeps its own histogram: nothing shared per request.
                    let _ = w.hist.lock().expect("lock").add(&hist);
                    w.ok.fetch_add(ok, Ordering::Relaxed);
                    t.put_back(conn);
                });
            }
        }
        Load::Rate(r) | Load::Poisson(r) => {
            let poisson = matches!(load, Load::Poisson(_));
            let schedule = Schedule::new(r, poisson, started, deadline, count, seed);
            // The pacer is an OS thread: it sleeps with the kernel's precision (tokio's timer
            // ticks in milliseconds). With the lean client it also sends and reads, with no
            // runtime (`open_loop`); otherwise it hands each request to the runtime.
            let (t, w) = (t.clone(), w.clone());
            if t.lean().is_some() {
                let pacer = std::thread::Builder::new()
                    .name("bench-open-loop".into())
                    .spawn(move || super::open_loop::run(&t, schedule, &w, spin_margin()))
                    .expect("a thread for the open loop");
                let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
            } else {
                let handle = tokio::runtime::Handle::current();
                let inflight = Arc::new(AtomicU64::new(0));
                let pacer = {
                    let inflight = inflight.clone();
                    std::thread::Builder::new()
                        .name("bench-pacer".into())
                        .spawn(move || pace(&handle, &t, &w, &inflight, schedule))
                        .expect("a thread for the pacer")
                };
                let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
                // The requests still in flight finish (or time out) before the window closes.
                while inflight.load(Ordering::Acquire) > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    w
}

/// Measures one step: warm-up, then windows until the last three agree (or `max_trials`).
pub async fn measure(
    client: &reqwest::Client,
    s: &Arc<Settings>,
    transport: &Arc<Transport>,
    load: Load,
    on_window: &(dyn Fn(&str) + Sync),
) -> Step {
    if !s.warmup.is_zero() {
        run_window(transport, load, s.warmup, None, 1).await;
    }
    let stats_before = model_stats(client, s).await;
    let mut timeline = Vec::new();
    let mut results: Vec<(f64, u64, Arc<Window>, Duration)> = Vec::new();
    let mut stable = false;
    let trials = if s.requests.is_some() {
        1
    } else {
        s.max_trials.max(1)
    };
    for t in 0..trials {
        let started = Instant::now();
        let length = if s.requests.is_some() {
            Duration::from_secs(3600)
        } else {
            s.window
        };
        let w = run_window(transport, load, length, s.requests, 7 + u64::from(t)).await;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let ok = w.ok.load(Ordering::Relaxed);
        let thr = ok as f64 * f64::from(s.batch.max(1)) / secs;
        let p = percentile(&w.hist.lock().expect("lock"), s.percentile);
        on_window(&format!(
            "{}: window {}: {:.1} infer/s, p{} {} us",
            load.label(),
            t + 1,
            thr,
            s.percentile,
            p
        ));
        let errors: u64 = w.errors.lock().expect("lock").values().sum();
        timeline.push([s.started.elapsed().as_secs_f64(), thr, p as f64]);
        results.push((thr, p, w, started.elapsed()));
        let total = ok + errors;
        if total > 0 && errors as f64 / total as f64 > s.max_error_rate {
            break;
        }
        if results.len() >= 3 {
            let last = &results[results.len() - 3..];
            let within = |v: Vec<f64>| {
                let (mn, mx) = v
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
                mn > 0.0 && mx / mn <= 1.0 + s.stability / 100.0
            };
            if within(last.iter().map(|r| r.0).collect())
                && within(last.iter().map(|r| r.1 as f64).collect())
            {
                stable = true;
                break;
            }
        }
    }
    // The step's figures: the last three windows (or all, if fewer) merged.
    let take = results.len().min(3);
    let last = &results[results.len() - take..];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut errors = BTreeMap::new();
    let (mut ok, mut secs, mut late, mut max_lag) = (0u64, 0f64, 0u64, 0u64);
    let (mut sent, mut send_secs) = (0u64, 0f64);
    for (_, _, w, d) in last {
        let _ = hist.add(&*w.hist.lock().expect("lock"));
        for (k, v) in w.errors.lock().expect("lock").iter() {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
        ok += w.ok.load(Ordering::Relaxed);
        late += w.late.load(Ordering::Relaxed);
        max_lag = max_lag.max(w.max_lag.load(Ordering::Relaxed));
        sent += w.sent.load(Ordering::Relaxed);
        send_secs += w.send_span_us.load(Ordering::Relaxed) as f64 / 1e6;
        secs += d.as_secs_f64();
    }
    let errors_total: u64 = errors.values().sum();
    Step {
        concurrency: match load {
            Load::Concurrency(c) => Some(c),
            _ => None,
        },
        rate: match load {
            Load::Rate(r) | Load::Poisson(r) => Some(r),
            _ => None,
        },
        throughput: ok as f64 * f64::from(s.batch.max(1)) / secs.max(1e-9),
        requests: ok + errors_total,
        errors: errors_total,
        errors_by_code: errors,
        latency_us: latency(&hist),
        windows: results.len() as u32,
        stable: stable || s.requests.is_some(),
        behind: match load {
            Load::Concurrency(_) => None,
            _ => Some(Behind {
                // n evenly spaced sends span n gaps from the start.
                sent_rate: sent as f64 / send_secs.max(1e-9),
                late_requests: late,
                max_lag_us: max_lag,
            }),
        },
        timeline,
        server: server_side(
            stats_before,
            model_stats(client, s).await,
            gpu_metrics(client, s).await,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_double_or_add() {
        assert_eq!(
            parse_range("1:64:x2").unwrap(),
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
        );
        assert_eq!(
            parse_range("100:300:100").unwrap(),
            vec![100.0, 200.0, 300.0]
        );
        assert_eq!(parse_range("8").unwrap(), vec![8.0]);
        assert!(parse_range("8:1").is_err());
        assert!(parse_range("1:8:x1").is_err());
        assert!(parse_range("a:b").is_err());
        assert!(parse_range("1:1000000:1").is_err());
    }
}
