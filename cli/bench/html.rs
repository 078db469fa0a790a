//! BenchReport → a self-contained HTML page: the summary, every step, and two inline SVG plots
//! (latency percentiles against throughput; the chosen percentile and throughput over time). No
//! script, no external resource: it opens offline.

use super::report::BenchReport;
use super::{Latency, Step};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound and tick step for an axis from 0 to `max`.
fn ticks(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One line series: a name, a color, and points.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

fn plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (640.0, 320.0, 70.0, 20.0, 30.0, 50.0);
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (xmax, xstep) = ticks(xmax);
    let (ymax, ystep) = ticks(ymax);
    let x = |v: f64| l + v / xmax * (w - l - r);
    let y = |v: f64| h - b - v / ymax * (h - t - b);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\
         <text x=\"{}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(title),
        l,
        esc(title)
    );
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        svg.push_str(&format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            w - r,
            l - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            y0 = y(v)
        ));
        v += ystep;
    }
    let mut v = 0.0;
    while v <= xmax + xstep / 2.0 {
        svg.push_str(&format!(
            "<line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{x0:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            h - b,
            h - b + 4.0,
            h - b + 17.0,
            fmt_num(v),
            x0 = x(v)
        ));
        v += xstep;
    }
    svg.push_str(&format!(
        "<line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{l}\" x2=\"{}\" y1=\"{yb}\" y2=\"{yb}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{}</text>",
        h - b,
        w - r,
        (l + w - r) / 2.0,
        h - 10.0,
        esc(x_label),
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        esc(y_label),
        yb = h - b
    ));
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            s.color,
            pts.join(" ")
        ));
        for (px, py) in &s.points {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                x(*px),
                y(*py),
                s.color
            ));
        }
        let lx = w - r - 120.0;
        let ly = t + 14.0 * i as f64 + 6.0;
        svg.push_str(&format!(
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            ly - 9.0,
            s.color,
            lx + 14.0,
            ly,
            esc(s.name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The page for a bench report.
pub fn html(report: &BenchReport) -> String {
    let steps = &report.steps;
    let p = report.percentile;
    let mut by_thr: Vec<&Step> = steps.iter().collect();
    by_thr.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    let pct = |pick: fn(&Latency) -> u64| -> Vec<(f64, f64)> {
        by_thr
            .iter()
            .map(|s| (s.throughput, pick(&s.latency_us) as f64 / 1000.0))
            .collect()
    };
    let latency_plot = plot(
        "Latency against throughput",
        "throughput (inferences/s)",
        "latency (ms)",
        &[
            Series {
                name: "p50",
                color: "#1f77b4",
                points: pct(|l| l.p50),
            },
            Series {
                name: "p90",
                color: "#2ca02c",
                points: pct(|l| l.p90),
            },
            Series {
                name: "p99",
                color: "#d62728",
                points: pct(|l| l.p99),
            },
        ],
    );
    let timeline: Vec<(f64, f64, f64)> = steps
        .iter()
        .flat_map(|s| s.timeline.iter())
        .map(|w| (w[0], w[1], w[2] / 1000.0))
        .collect();
    let time_plot = plot(
        &format!("p{p} latency over time"),
        "seconds since the start",
        "latency (ms)",
        &[Series {
            name: &format!("p{p}"),
            color: "#d62728",
            points: timeline.iter().map(|t| (t.0, t.2)).collect(),
        }],
    );
    let thr_plot = plot(
        "Throughput over time",
        "seconds since the start",
        "inferences/s",
        &[Series {
            name: "throughput",
            color: "#1f77b4",
            points: timeline.iter().map(|t| (t.0, t.1)).collect(),
        }],
    );
    let mut rows = String::new();
    for s in steps {
        let load = s
            .concurrency
            .map(|c| format!("concurrency {c}"))
            .or_else(|| s.rate.map(|r| format!("{r} req/s")))
            .unwrap_or_default();
        let l = &s.latency_us;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&load),
            s.throughput,
            s.requests,
            s.errors,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.max,
            if s.stable { "yes" } else { "no" }
        ));
    }
    let mut summary = String::new();
    if let Some(sla) = &report.sla {
        summary.push_str(&format!(
            "<p><b>Capacity at the budget</b> ({} us at p{}): {:.1} inferences/s, p{} {} us.</p>",
            sla.budget_us, p, sla.best.throughput, p, sla.best.latency_us
        ));
    }
    if let Some(a) = &report.autoscaling {
        summary.push_str(&format!(
            "<p><b>Autoscaling</b>: ALBRequestCountPerTarget target {} requests/min per task ({}% of capacity){}{}.</p>",
            a.target_requests_per_task,
            (a.safety_margin * 100.0).round(),
            a.max_tasks.map(|m| format!("; {m} task(s) for the peak")).unwrap_or_default(),
            a.cost_per_million_inferences.map(|c| format!("; ${c:.2} per million inferences")).unwrap_or_default()
        ));
    }
    if let Some(s) = &report.stopped {
        summary.push_str(&format!("<p><b>Stopped early</b>: {}</p>", esc(s)));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>bench: {model}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}\
         .plots{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>\
         <h1>triton-deploy bench: {model}</h1><p>{url} &middot; {protocol} &middot; batch {batch}</p>{summary}\
         <div class=\"plots\">{latency_plot}{time_plot}{thr_plot}</div>\
         <h2>Steps</h2><table><tr><th>load</th><th>infer/s</th><th>requests</th><th>errors</th>\
         <th>p50 us</th><th>p90 us</th><th>p95 us</th><th>p99 us</th><th>max us</th><th>stable</th></tr>{rows}</table>\
         </body></html>\n",
        model = esc(&report.model),
        url = esc(&report.url),
        protocol = esc(report.protocol),
        batch = report.batch_size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Availability;
    use crate::bench::server::ServerSide;

    #[test]
    fn the_page_is_self_contained_and_plots_every_step() {
        let step = |c: u32, thr: f64, stable: bool, l: [u64; 5], t: [f64; 3]| Step {
            concurrency: Some(c),
            rate: None,
            throughput: thr,
            requests: 500,
            errors: 0,
            errors_by_code: Default::default(),
            latency_us: Latency {
                p50: l[0],
                p90: l[1],
                p95: l[2],
                p99: l[3],
                p999: l[3],
                max: l[4],
                mean: l[0],
            },
            windows: 1,
            stable,
            behind: None,
            server: ServerSide {
                stats: Availability::Unavailable { reason: "-".into() },
                gpu: Availability::Unavailable { reason: "-".into() },
            },
            timeline: vec![t],
        };
        let r = BenchReport {
            url: "http://x".into(),
            model: "m<1>".into(),
            protocol: "http-json",
            percentile: 99.0,
            batch_size: 1,
            steps: vec![
                step(
                    1,
                    100.0,
                    true,
                    [1000, 2000, 2500, 3000, 4000],
                    [1.0, 100.0, 3000.0],
                ),
                step(
                    2,
                    180.0,
                    false,
                    [1500, 2500, 3000, 5000, 6000],
                    [2.0, 180.0, 5000.0],
                ),
            ],
            sla: None,
            autoscaling: None,
            model_config: Availability::Unavailable { reason: "-".into() },
            validation: None,
            stopped: None,
        };
        let page = html(&r);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script") && !page.contains("http://x/") && !page.contains("src="));
        assert!(page.contains("m&lt;1&gt;"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("<tr><td>").count(), 2);
        // Three latency series of two points, one point per window in each timeline.
        assert_eq!(page.matches("<circle").count(), 3 * 2 + 2 + 2);
    }

    #[test]
    fn axes_get_round_ticks() {
        assert_eq!(ticks(4200.0), (5000.0, 1000.0));
        assert_eq!(ticks(0.0), (1.0, 0.2));
        assert_eq!(ticks(37.0), (40.0, 10.0));
    }
}
