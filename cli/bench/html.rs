//! BenchReport → a self-contained HTML page: the summary, every step, and two inline SVG plots
//! (latency percentiles against throughput; the chosen percentile and throughput over time). No
//! script, no external resource: it opens offline.

use serde_json::Value;

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

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The page for a bench result (the JSON document `bench --format json` prints).
pub fn html(report: &Value) -> String {
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    let p = num(&report["percentile"]);
    let mut by_thr = steps.clone();
    by_thr.sort_by(|a, b| num(&a["throughput"]).total_cmp(&num(&b["throughput"])));
    let pct = |name: &str| -> Vec<(f64, f64)> {
        by_thr
            .iter()
            .map(|s| (num(&s["throughput"]), num(&s["latency_us"][name]) / 1000.0))
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
                points: pct("p50"),
            },
            Series {
                name: "p90",
                color: "#2ca02c",
                points: pct("p90"),
            },
            Series {
                name: "p99",
                color: "#d62728",
                points: pct("p99"),
            },
        ],
    );
    let timeline: Vec<(f64, f64, f64)> = steps
        .iter()
        .flat_map(|s| s["timeline"].as_array().cloned().unwrap_or_default())
        .map(|w| (num(&w[0]), num(&w[1]), num(&w[2]) / 1000.0))
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
    for s in &steps {
        let load = s["concurrency"]
            .as_u64()
            .map(|c| format!("concurrency {c}"))
            .or_else(|| s["rate"].as_f64().map(|r| format!("{r} req/s")))
            .unwrap_or_default();
        let l = &s["latency_us"];
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&load),
            num(&s["throughput"]),
            s["requests"],
            s["errors"],
            l["p50"],
            l["p90"],
            l["p95"],
            l["p99"],
            l["max"],
            if s["stable"] == true { "yes" } else { "no" }
        ));
    }
    let mut summary = String::new();
    if let Some(b) = report["sla"]["best"].as_object() {
        summary.push_str(&format!(
            "<p><b>Capacity at the budget</b> ({} us at p{}): {:.1} inferences/s, p{} {} us.</p>",
            report["sla"]["budget_us"],
            p,
            num(&b["throughput"].clone()),
            p,
            b["latency_us"]
        ));
    }
    if let Some(a) = report["autoscaling"].as_object() {
        summary.push_str(&format!(
            "<p><b>Autoscaling</b>: ALBRequestCountPerTarget target {} requests/min per task ({}% of capacity){}{}.</p>",
            a["target_requests_per_task"],
            (num(&a["safety_margin"]) * 100.0).round(),
            a.get("max_tasks").and_then(Value::as_u64).map(|m| format!("; {m} task(s) for the peak")).unwrap_or_default(),
            a.get("cost_per_million_inferences").and_then(Value::as_f64).map(|c| format!("; ${c:.2} per million inferences")).unwrap_or_default()
        ));
    }
    if let Some(s) = report["stopped"].as_str() {
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
        model = esc(report["model"].as_str().unwrap_or("")),
        url = esc(report["url"].as_str().unwrap_or("")),
        protocol = esc(report["protocol"].as_str().unwrap_or("")),
        batch = report["batch_size"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_page_is_self_contained_and_plots_every_step() {
        let r = json!({"model": "m<1>", "url": "http://x", "protocol": "http-json", "batch_size": 1, "percentile": 99.0,
        "steps": [
            {"concurrency": 1, "throughput": 100.0, "requests": 500, "errors": 0, "stable": true,
             "latency_us": {"p50": 1000, "p90": 2000, "p95": 2500, "p99": 3000, "max": 4000}, "timeline": [[1.0, 100.0, 3000.0]]},
            {"concurrency": 2, "throughput": 180.0, "requests": 900, "errors": 0, "stable": false,
             "latency_us": {"p50": 1500, "p90": 2500, "p95": 3000, "p99": 5000, "max": 6000}, "timeline": [[2.0, 180.0, 5000.0]]}
        ]});
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
