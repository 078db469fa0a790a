//! `triton-deploy bench` against real KServe v2 servers: MLServer (the local stack's, counting
//! requests on its own metrics endpoint) and the spec-faithful test server in tests/it/support.

use std::process::Output;
use std::sync::atomic::Ordering;

use crate::support::*;
use serde_json::{Value, json};

async fn bench(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .arg("--format")
            .arg("json")
            .arg("bench")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn doc(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

async fn mlserver_successes() -> f64 {
    let text = reqwest::get(env("TD_KSERVE_METRICS_URL"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("model_infer_request_success_total{") && l.contains("model=\"iris\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn request_counts_agree_with_mlserver_s_own_metrics() {
    let before = mlserver_successes().await;
    let out = bench(&[
        "--url",
        &env("TD_KSERVE_URL"),
        "--model",
        "iris",
        "--concurrency",
        "1:4:x2",
        "--requests",
        "200",
        "--warmup",
        "0s",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (s, c) in steps.iter().zip([1, 2, 4]) {
        assert_eq!(s["concurrency"], c);
        assert_eq!(s["requests"], 200, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        let l = &s["latency_us"];
        assert!(l["p50"].as_u64().unwrap() > 0);
        assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
    }
    let after = mlserver_successes().await;
    assert_eq!(after - before, 600.0, "MLServer counted what bench sent");
    // MLServer has neither Triton's statistics nor GPU metrics: said, and the run goes on.
    assert_eq!(steps[0]["server"]["stats"]["available"], false);
    assert!(
        steps[0]["server"]["stats"]["reason"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{}",
        steps[0]["server"]
    );
    assert_eq!(steps[0]["server"]["gpu"]["available"], false);
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn the_sla_search_finds_a_load_under_budget_and_writes_the_autoscaling_target() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("bench.json");
    let csv = dir.path().join("bench.csv");
    let out = bench(&[
        "--url",
        &env("TD_KSERVE_URL"),
        "--model",
        "iris",
        "--concurrency",
        "1",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--latency-budget",
        "2s",
        "--stability",
        "100",
        "--max-trials",
        "3",
        "--peak-rate",
        "1000",
        "--price-per-hour",
        "1.006",
        "--out",
        out_file.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    let best = &d["sla"]["best"];
    assert!(best["latency_us"].as_u64().unwrap() <= 2_000_000);
    // The best is the highest throughput among the steps under the budget.
    let top = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["latency_us"]["p99"].as_u64().unwrap() <= 2_000_000 && s["errors"] == 0)
        .map(|s| s["throughput"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(best["throughput"].as_f64().unwrap(), top);
    let a = &d["autoscaling"];
    let per_s = best["throughput"].as_f64().unwrap();
    assert_eq!(
        a["target_requests_per_task"].as_u64().unwrap(),
        (per_s * 60.0 * 0.7).floor() as u64
    );
    assert!(a["max_tasks"].as_u64().unwrap() >= 1);
    assert!(a["cost_per_million_inferences"].as_f64().unwrap() > 0.0);
    // The file is the same document, the one `autoscaling.bench_result` reads.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written["autoscaling"], d["autoscaling"]);
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv.starts_with(
            "Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency"
        ),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        d["steps"].as_array().unwrap().len() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_follow_the_metadata_and_bad_input_data_is_refused() {
    let server = kserve::start().await;
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--concurrency",
        "2",
        "--requests",
        "50",
        "--warmup",
        "0s",
        "--batch-size",
        "4",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    assert_eq!(d["steps"][0]["errors"], 0, "{d}");
    assert_eq!(server.inferences.load(Ordering::SeqCst), 50);
    // Throughput counts inferences: 4 per request.
    assert_eq!(d["batch_size"], 4);

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.json");
    std::fs::write(
        &f,
        json!({"data": [{"INPUT0": [1, 2, 3], "INPUT1": [1, 2, 3]}]}).to_string(),
    )
    .unwrap();
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--input-data",
        f.to_str().unwrap(),
        "--requests",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("input-data for INPUT0 has 3 elements"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server's configuration (Triton's /config) says add_sub batches up to 8: a larger batch is
    // refused before any request is sent, naming the limit.
    let before = server.inferences.load(Ordering::SeqCst);
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--batch-size",
        "9",
        "--requests",
        "5",
    ])
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--batch-size 9 is over model add_sub's max_batch_size 8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.inferences.load(Ordering::SeqCst), before);

    // Requests the server refuses (a shape given in the input file, over its batch limit) get 400:
    // counted per code, and a run where every request failed exits 1.
    std::fs::write(
        &f,
        json!({"data": [{"INPUT0": {"content": vec![0.5; 9 * 16], "shape": [9, 16]},
                         "INPUT1": {"content": vec![0.5; 9 * 16], "shape": [9, 16]}}]})
        .to_string(),
    )
    .unwrap();
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--input-data",
        f.to_str().unwrap(),
        "--requests",
        "5",
        "--warmup",
        "0s",
    ])
    .await;
    let d = doc(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(d["steps"][0]["errors_by_code"]["400"], 5, "{d}");

    let out = bench(&["--url", &server.url, "--model", "nope", "--requests", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_holds_its_rate() {
    let server = kserve::start().await;
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--rate",
        "2000",
        "--requests",
        "20000",
        "--warmup",
        "0s",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    let s = &d["steps"][0];
    assert_eq!(s["requests"], 20000);
    assert_eq!(s["errors"], 0);
    // The generator held the rate, and the server kept up with it.
    let sent = s["behind"]["sent_rate"].as_f64().unwrap();
    assert!((sent - 2000.0).abs() / 2000.0 < 0.02, "sent {sent}/s: {s}");
    let achieved = s["throughput"].as_f64().unwrap();
    assert!(
        (achieved - 2000.0).abs() / 2000.0 < 0.02,
        "answered {achieved}/s: {s}"
    );
    assert_eq!(server.inferences.load(Ordering::SeqCst), 20000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_statistics_and_gpu_metrics_are_read_per_step() {
    let server = kserve::start().await;
    let metrics = format!("{}/metrics", server.url);
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--concurrency",
        "1:2:x2",
        "--requests",
        "40",
        "--warmup",
        "0s",
        "--metrics-url",
        &metrics,
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    for step in d["steps"].as_array().unwrap() {
        let st = &step["server"]["stats"];
        assert_eq!(st["available"], true, "{st}");
        // The deltas cover exactly this step's requests.
        assert_eq!(st["inferences"], 40.0, "{st}");
        assert_eq!(st["queue_us"], 100.0, "{st}");
        assert_eq!(st["avg_batch"], 1.0, "{st}");
        let g = &step["server"]["gpu"];
        assert_eq!(g["utilization"], 0.42, "{g}");
        assert_eq!(g["memory_total_bytes"], 24146608128.0, "{g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium (scripts/stack.sh installs it): run ./scripts/test.sh"]
async fn the_html_report_renders_in_headless_chromium() {
    let server = kserve::start().await;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--concurrency",
        "1:4:x2",
        "--requests",
        "30",
        "--warmup",
        "0s",
        "--report",
        page.to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("file://{}", page.display());
    let chromium = |args: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("chromium")
    };
    // The DOM Chromium built: three plots with their series, and one table row per step.
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    assert_eq!(dom.matches("<svg").count(), 3, "{dom}");
    assert_eq!(dom.matches("<polyline").count(), 5);
    assert_eq!(dom.matches("<tr><td>concurrency").count(), 3);
    // And a picture of it.
    let png = dir.path().join("report.png");
    let shot = chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1400,1150",
    ]);
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 20_000,
        "a real page, not a blank one: {} bytes",
        bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensors_are_framed_as_the_extension_says() {
    let server = kserve::start().await;
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--concurrency",
        "2",
        "--requests",
        "20",
        "--warmup",
        "0s",
        "--tensor-format",
        "binary",
        "--batch-size",
        "2",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    assert_eq!(d["protocol"], "http-binary");
    // The server decoded every request from the binary framing and found the inputs valid.
    assert_eq!(d["steps"][0]["errors"], 0, "{d}");
    assert_eq!(server.binary_requests.load(Ordering::SeqCst), 20);
    assert_eq!(server.inferences.load(Ordering::SeqCst), 20);
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn grpc_inference_reaches_mlserver_and_is_counted() {
    let before = mlserver_successes().await;
    let url = format!("http://{}", env("TD_KSERVE_GRPC"));
    let out = bench(&[
        "--protocol",
        "grpc",
        "--url",
        &url,
        "--model",
        "iris",
        "--concurrency",
        "2",
        "--requests",
        "120",
        "--warmup",
        "0s",
        "--no-server-stats",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = doc(&out);
    assert_eq!(d["protocol"], "grpc");
    assert_eq!(d["steps"][0]["requests"], 120);
    assert_eq!(d["steps"][0]["errors"], 0, "{d}");
    assert_eq!(
        mlserver_successes().await - before,
        120.0,
        "MLServer counted the gRPC inferences"
    );
    // A model the server does not have: a gRPC error, said plainly.
    let out = bench(&[
        "--protocol",
        "grpc",
        "--url",
        &url,
        "--model",
        "nope",
        "--requests",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ModelMetadata"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// add_sub's input-data entry with `validation_data`: the sum and difference it must answer.
fn add_sub_data(a: &[f32], b: &[f32], wrong: bool) -> Value {
    let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let mut diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if wrong {
        diff[3] += 1.0;
    }
    // INPUT1 as perf_analyzer's {"b64": raw little-endian bytes}.
    let raw: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    use base64::Engine;
    json!({
        "data": [{"INPUT0": {"content": a, "shape": [1, 16]},
                  "INPUT1": {"b64": base64::engine::general_purpose::STANDARD.encode(raw)}}],
        "validation_data": [{"OUTPUT0": sum, "OUTPUT1": {"content": diff, "shape": [1, 16]}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_checked_against_validation_data_in_every_encoding() {
    let server = kserve::start().await;
    let a: Vec<f32> = (0..16).map(|i| i as f32 * 0.25).collect();
    let b: Vec<f32> = (0..16).map(|i| 1.0 - i as f32 * 0.125).collect();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, add_sub_data(&a, &b, false).to_string()).unwrap();
    std::fs::write(&bad, add_sub_data(&a, &b, true).to_string()).unwrap();
    // Closed loop, and the open loop (over plain HTTP its own reader, over gRPC the runtime's).
    let loads = [("--concurrency", "2"), ("--rate", "200")];
    for ((protocol, format), (load, n)) in [("http", "json"), ("http", "binary"), ("grpc", "json")]
        .into_iter()
        .flat_map(|p| loads.map(|l| (p, l)))
    {
        for (file, wrong) in [(&good, false), (&bad, true)] {
            let out = bench(&[
                "--url",
                &server.url,
                "--model",
                "add_sub",
                "--protocol",
                protocol,
                "--tensor-format",
                format,
                "--input-data",
                file.to_str().unwrap(),
                load,
                n,
                "--requests",
                "10",
                "--warmup",
                "0s",
            ])
            .await;
            let d = doc(&out);
            let v = &d["validation"];
            assert_eq!(v["checked"], 10, "{protocol}/{format} {load}: {d}");
            if wrong {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{protocol}/{format} {load}: {d}"
                );
                assert_eq!(v["failed"], 10, "{protocol}/{format} {load}: {d}");
                assert_eq!(d["steps"][0]["errors_by_code"]["validation"], 10);
                let diff3 = a[3] - b[3];
                assert_eq!(
                    v["first_mismatch"],
                    format!(
                        "output OUTPUT1[3] is {}, expected {}",
                        json!(diff3),
                        json!(diff3 + 1.0)
                    ),
                    "{protocol}/{format} {load}"
                );
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{protocol}/{format} {load}: {d}"
                );
                assert_eq!(v["failed"], 0, "{protocol}/{format} {load}: {d}");
                assert_eq!(
                    d["steps"][0]["errors"], 0,
                    "{protocol}/{format} {load}: {d}"
                );
            }
        }
    }
    // Validation data for an output the model does not have, or a count that does not match
    // the data entries: refused up front, naming the file.
    let mut doc_bad = add_sub_data(&a, &b, false);
    doc_bad["validation_data"][0]["OUTPUT9"] = json!([1]);
    std::fs::write(&bad, doc_bad.to_string()).unwrap();
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--input-data",
        bad.to_str().unwrap(),
        "--requests",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("no output OUTPUT9"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_tensors_travel_length_prefixed_over_http_and_grpc() {
    let server = kserve::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("text.json");
    // Two entries, used round-robin; the second holds three strings in a batch of 3.
    std::fs::write(
        &f,
        json!({
            "data": [
                {"TEXT": {"content": ["hello triton"], "shape": [1, 1]}},
                {"TEXT": {"content": ["a b c", "", "ünïcödé words here"], "shape": [3, 1]}}
            ],
            "validation_data": [
                {"LENGTH": [12], "WORDS": [2]},
                {"LENGTH": [5, 0, 22], "WORDS": [3, 0, 3]}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let mut strings = 0;
    for (protocol, format) in [("http", "json"), ("http", "binary"), ("grpc", "json")] {
        let out = bench(&[
            "--url",
            &server.url,
            "--model",
            "text_stats",
            "--protocol",
            protocol,
            "--tensor-format",
            format,
            "--input-data",
            f.to_str().unwrap(),
            "--concurrency",
            "1",
            "--requests",
            "10",
            "--warmup",
            "0s",
        ])
        .await;
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(0), "{protocol}/{format}: {d}");
        assert_eq!(d["steps"][0]["errors"], 0, "{protocol}/{format}: {d}");
        assert_eq!(d["validation"]["failed"], 0, "{protocol}/{format}: {d}");
        // Five requests of each entry: 5 x 1 + 5 x 3 strings reached the server.
        strings += 20;
        assert_eq!(
            server.strings.load(Ordering::SeqCst),
            strings,
            "{protocol}/{format}"
        );
    }
    assert_eq!(server.binary_requests.load(Ordering::SeqCst), 10);
    assert_eq!(server.grpc_requests.load(Ordering::SeqCst), 10);

    // Random strings from the metadata alone, batched.
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "text_stats",
        "--protocol",
        "grpc",
        "--batch-size",
        "4",
        "--requests",
        "8",
        "--warmup",
        "0s",
    ])
    .await;
    let d = doc(&out);
    assert_eq!(d["steps"][0]["errors"], 0, "{d}");
    assert_eq!(server.strings.load(Ordering::SeqCst), strings + 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reads_the_model_configuration_and_the_statistics() {
    let server = kserve::start().await;
    let metrics = format!("{}/metrics", server.url);
    for protocol in ["http", "grpc"] {
        let out = bench(&[
            "--url",
            &server.url,
            "--model",
            "add_sub",
            "--protocol",
            protocol,
            "--batch-size",
            "8",
            "--concurrency",
            "2",
            "--requests",
            "30",
            "--warmup",
            "0s",
            "--metrics-url",
            &metrics,
        ])
        .await;
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(0), "{protocol}: {d}");
        // The real config.pbtxt of model-repos/simple-onnx/add_sub, over /config or ModelConfig.
        let c = &d["model_config"];
        assert_eq!(c["available"], true, "{protocol}: {c}");
        assert_eq!(c["max_batch_size"], 8, "{protocol}: {c}");
        assert_eq!(
            c["dynamic_batching"]["preferred_batch_size"],
            json!([4, 8]),
            "{c}"
        );
        assert_eq!(c["dynamic_batching"]["max_queue_delay_us"], 100, "{c}");
        assert_eq!(
            c["instance_group"],
            json!([{"count": 1, "kind": "KIND_GPU"}]),
            "{c}"
        );
        assert!(d["steps"][0]["throughput"].as_f64().unwrap() > 0.0);
        let st = &d["steps"][0]["server"]["stats"];
        assert_eq!(st["inferences"], 30.0, "{protocol}: {st}");
    }
    assert_eq!(server.grpc_requests.load(Ordering::SeqCst), 30);
    // Over gRPC too, a batch over the limit is refused before sending.
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "add_sub",
        "--protocol",
        "grpc",
        "--batch-size",
        "16",
        "--requests",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_batch_size 8"));
    assert_eq!(server.grpc_requests.load(Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_and_the_general_http_clients_agree() {
    let server = kserve::start().await;
    for client in ["lean", "general"] {
        let before = server.inferences.load(Ordering::SeqCst);
        let out = bench(&[
            "--url",
            &server.url,
            "--model",
            "add_sub",
            "--http-client",
            client,
            "--threads",
            "1",
            "--concurrency",
            "4",
            "--requests",
            "200",
            "--warmup",
            "0s",
        ])
        .await;
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(0), "{client}: {d}");
        assert_eq!(d["steps"][0]["requests"], 200, "{client}: {d}");
        assert_eq!(d["steps"][0]["errors"], 0, "{client}: {d}");
        assert_eq!(
            server.inferences.load(Ordering::SeqCst) - before,
            200,
            "{client}"
        );
    }
    // Nobody listening: the metadata request cannot connect, said plainly (exit 2, no panic).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = bench(&[
        "--url",
        &format!("http://{closed}"),
        "--model",
        "add_sub",
        "--requests",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
}

/// Reads from `s` until a request's head is whole (what the test servers look at); `None` once
/// the connection is closed.
async fn read_head(s: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&got).to_string())
}

/// What the hand-written test servers answer to a GET: model `m`'s metadata (one FP32 input
/// and output of shape [-1, 4]), or 404; `None` for an inference (a POST).
fn get_answer(head: &str) -> Option<String> {
    if head.starts_with("GET /v2/models/m ") {
        let meta = json!({"name": "m", "versions": ["1"], "platform": "x",
            "inputs": [{"name": "IN", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [-1, 4]}]})
        .to_string();
        Some(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{meta}",
            meta.len()
        ))
    } else if head.starts_with("GET ") {
        Some("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string())
    } else {
        None
    }
}

/// A server that answers metadata properly, then misbehaves on every inference: alternately it
/// never answers (a timeout) or cuts the answer off halfway (a reset).
async fn misbehaving_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let turn = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let turn = turn.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else {
                        return;
                    };
                    if let Some(answer) = get_answer(&head) {
                        let _ = s.write_all(answer.as_bytes()).await;
                    } else if turn.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                        // Never answer; hold the connection until the client gives up.
                        let _ = s.read(&mut buf).await;
                        return;
                    } else {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"outp")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A server whose inference answers take turns: plain (`content-length`), chunked,
/// `connection: close` then closed, and plain then closed without a word (the next request on
/// that connection meets a kept-alive connection the server has dropped). It reads requests
/// slowly when `slow_reads` (the client's writes stop short). Counts inferences and connections.
async fn shifting_server(
    slow_reads: bool,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (inferences, conns) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (i2, c2) = (inferences.clone(), conns.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c2.fetch_add(1, Ordering::SeqCst);
            let inferences = i2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got: Vec<u8> = Vec::new();
                loop {
                    // One whole request: its head, then `content-length` bytes of body.
                    let (head_end, len) = loop {
                        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&got[..p]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (p + 4, len);
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    while got.len() < head_end + len {
                        if slow_reads {
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                        let want = if slow_reads { 8192 } else { buf.len() };
                        match s.read(&mut buf[..want]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                    got.drain(..head_end + len);
                    if let Some(answer) = get_answer(&head) {
                        let _ = s.write_all(answer.as_bytes()).await;
                        continue;
                    }
                    let body = r#"{"outputs":[]}"#;
                    match inferences.fetch_add(1, Ordering::SeqCst) % 4 {
                        0 => {
                            let a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(a.as_bytes()).await;
                        }
                        1 => {
                            let (x, y) = body.split_at(5);
                            let a = format!(
                                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                 {:x}\r\n{x}\r\n{:x}\r\n{y}\r\n0\r\n\r\n",
                                x.len(),
                                y.len()
                            );
                            let _ = s.write_all(a.as_bytes()).await;
                        }
                        2 => {
                            let a = format!(
                                "HTTP/1.1 200 OK\r\nconnection: close\r\n\
                                 content-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(a.as_bytes()).await;
                            return;
                        }
                        _ => {
                            let a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(a.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), inferences, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_reads_every_framing_and_reopens_closed_connections() {
    for slow_reads in [false, true] {
        let (url, inferences, conns) = shifting_server(slow_reads).await;
        let dir = tempfile::tempdir().unwrap();
        let want: u64 = if slow_reads { 8 } else { 40 };
        let n = want.to_string();
        let mut args = vec![
            "--url",
            &url,
            "--model",
            "m",
            "--rate",
            "100",
            "--requests",
            &n,
            "--warmup",
            "0s",
            "--no-server-stats",
        ];
        // Requests of 2 MB, which the slow server reads 8 KiB at a time: writes stop short.
        let data = dir.path().join("big.json");
        if slow_reads {
            let v: Vec<f32> = (0..4 * 65536).map(|i| i as f32).collect();
            std::fs::write(
                &data,
                json!({"data": [{"IN": {"content": v, "shape": [65536, 4]}}]}).to_string(),
            )
            .unwrap();
            args.extend(["--input-data", data.to_str().unwrap()]);
        }
        let out = bench(&args).await;
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(0), "slow {slow_reads}: {d}");
        let s = &d["steps"][0];
        assert_eq!(s["requests"], want, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        // Each request reached the server once: a dropped kept-alive connection was noticed
        // (or the request sent again on a new one) without a request served twice.
        assert_eq!(inferences.load(Ordering::SeqCst), want as usize, "{s}");
        // Half the answers end their connection; the other half's connections are reused
        // (with slow reads the requests overlap, each on its own connection). One more is the
        // metadata request's.
        let opened = conns.load(Ordering::SeqCst) as u64;
        let fewest = if slow_reads { 2 } else { want / 2 + 1 };
        assert!(
            (fewest..=want + 1).contains(&opened),
            "{opened} connections for {want} requests"
        );
    }
}

/// A server that takes one connection (the metadata request's, kept alive), answers on it, and
/// stops listening: every further connection is refused.
async fn one_connection_server() -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let mut buf = vec![0u8; 65536];
        loop {
            let Some(head) = read_head(&mut s, &mut buf).await else {
                return;
            };
            let answer = get_answer(&head).unwrap_or_else(|| {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
            });
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_in_either_loop() {
    for (load, n) in [("--concurrency", "2"), ("--rate", "100")] {
        let url = one_connection_server().await;
        let out = bench(&[
            "--url",
            &url,
            "--model",
            "m",
            load,
            n,
            "--requests",
            "6",
            "--warmup",
            "0s",
            "--max-error-rate",
            "1",
            "--no-server-stats",
        ])
        .await;
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(1), "{load}: {d}");
        assert_eq!(d["steps"][0]["errors_by_code"]["connect"], 6, "{load}: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cut_off_answers_are_counted_not_fatal() {
    let url = misbehaving_server().await;
    // Closed loop with either client, and the open loop (its own reader for the lean client).
    for (client, load, n) in [
        ("lean", "--concurrency", "2"),
        ("general", "--concurrency", "2"),
        ("lean", "--rate", "50"),
        ("general", "--rate", "50"),
    ] {
        let out = bench(&[
            "--url",
            &url,
            "--model",
            "m",
            "--http-client",
            client,
            load,
            n,
            "--requests",
            "10",
            "--warmup",
            "0s",
            "--timeout",
            "300ms",
            "--max-error-rate",
            "1",
            "--no-server-stats",
        ])
        .await;
        let d = doc(&out);
        // Every request failed: exit 1, each failure counted by kind.
        assert_eq!(out.status.code(), Some(1), "{client} {load}: {d}");
        let by = &d["steps"][0]["errors_by_code"];
        assert_eq!(d["steps"][0]["errors"], 10, "{client} {load}: {d}");
        assert!(
            by["timeout"].as_u64().unwrap() >= 4,
            "{client} {load}: {by}"
        );
        assert!(by["reset"].as_u64().unwrap() >= 4, "{client} {load}: {by}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_csv_prints_perf_analyzer_columns_and_is_for_bench_only() {
    let server = kserve::start().await;
    let url = server.url.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let args = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let out = run(args(&[
        "--format",
        "csv",
        "bench",
        "--url",
        &url,
        "--model",
        "add_sub",
        "--concurrency",
        "1:2:x2",
        "--requests",
        "20",
        "--warmup",
        "0s",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The test server has Triton's statistics: perf_analyzer's server columns are there.
    assert_eq!(
        lines[0],
        "Concurrency,Inferences/Second,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency",
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    let mut loads: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    loads.sort();
    assert_eq!(loads, ["1", "2"], "{text}");
    // The server's fixed 100 us queue per request.
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split(',').nth(2) == Some("100")),
        "{text}"
    );
    // `table` is the text table.
    let out = run(args(&[
        "--format",
        "table",
        "bench",
        "--url",
        &url,
        "--model",
        "add_sub",
        "--requests",
        "5",
        "--warmup",
        "0s",
    ]))
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("infer/s") && text.contains("model config: max_batch_size 8"),
        "{text}"
    );
    let out = run(args(&[
        "--format",
        "csv",
        "validate",
        "model-repos/simple-onnx",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format csv is for `bench`"));
}
