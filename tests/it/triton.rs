//! Against the real Triton: NVIDIA's tritonserver 2.51 (CPU, python backend) in the base image
//! `scripts/stack.sh up` builds from Debian packages and the nvidia-pytriton wheel
//! (`TD_TRITON_BASE`, in the upstream registry). The image `push` makes on it is loaded into the
//! Docker Engine and run; what it answers, and what Triton counts, are the referee.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A container, removed when dropped (also when the test fails).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

impl Container {
    /// The host port Docker mapped the container's `port` to.
    fn port(&self, port: u16) -> u16 {
        let out = Command::new("docker")
            .args(["port", &self.0, &format!("{port}/tcp")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().expect("a mapped port");
        line.rsplit(':').next().unwrap().trim().parse().unwrap()
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &self.0])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `repo` pushed onto the real tritonserver base as a Docker archive, loaded, and started with
/// its HTTP, gRPC and metrics ports on loopback; returned once Triton says it is ready.
fn serve(repo: &Path, work: &Path) -> Container {
    let archive = work.join("image.tar");
    let tag = unique("t");
    run(Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .arg("push")
        .arg(repo)
        .arg("--base")
        .arg(env("TD_TRITON_BASE"))
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg("--tag")
        .arg(&tag)
        .env("TRITON_DEPLOY_CACHE_DIR", work.join("cache")));
    let loaded = run(Command::new("docker").arg("load").arg("-i").arg(&archive));
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("docker load said: {loaded}"))
        .trim()
        .to_string();
    let id = run(Command::new("docker").args([
        "run",
        "-d",
        "-p",
        "127.0.0.1::8000",
        "-p",
        "127.0.0.1::8001",
        "-p",
        "127.0.0.1::8002",
        "--shm-size",
        "256m",
        &image,
    ]));
    let c = Container(id.trim().to_string());
    let _ = Command::new("docker").args(["rmi", &image]).output();
    let ready = format!("http://127.0.0.1:{}/v2/health/ready", c.port(8000));
    let start = Instant::now();
    loop {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &ready])
            .status()
            .unwrap()
            .success();
        if ok {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Triton was not ready within 60 s:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Triton's own count of successful requests for `model`.
fn successes(metrics_url: &str, model: &str) -> f64 {
    let text = run(Command::new("curl").args(["-sf", metrics_url]));
    text.lines()
        .filter(|l| {
            l.starts_with("nv_inference_request_success{")
                && l.contains(&format!("model=\"{model}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json", "bench", "--warmup", "0s"])
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn answered(report: &Value) -> f64 {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_f64().unwrap() - s["errors"].as_f64().unwrap())
        .sum()
}

#[test]
#[ignore = "needs the local stack and the Docker Engine: run ./scripts/test.sh"]
fn the_pushed_image_serves_and_bench_counts_what_triton_counts() {
    let work = tempfile::tempdir().unwrap();
    let c = serve(&root().join("model-repos/python-backend"), work.path());
    let http = format!("http://127.0.0.1:{}", c.port(8000));
    let grpc = format!("http://127.0.0.1:{}", c.port(8001));
    let metrics = format!("http://127.0.0.1:{}/metrics", c.port(8002));

    // Real answers: byte length and word count of each string.
    let body = json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                                  "data": ["hello real triton", "two words"]}]});
    let answer: Value = serde_json::from_str(&run(Command::new("curl").args([
        "-sf",
        &format!("{http}/v2/models/text_stats/infer"),
        "-d",
        &body.to_string(),
    ])))
    .unwrap();
    let out = |name: &str| {
        answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .map(|o| o["data"].clone())
            .unwrap_or_else(|| panic!("no {name} in {answer}"))
    };
    assert_eq!(out("LENGTH"), json!([17, 9]));
    assert_eq!(out("WORDS"), json!([3, 2]));

    // bench over HTTP (JSON and binary tensors) and gRPC: what it says it sent is what Triton
    // counted, and Triton's own statistics and configuration come back in the report.
    for (url, extra) in [
        (&http, ["--tensor-format", "json"]),
        (&http, ["--tensor-format", "binary"]),
        (&grpc, ["--protocol", "grpc"]),
    ] {
        let before = successes(&metrics, "text_stats");
        let r = bench(&[
            "--url",
            url,
            "--model",
            "text_stats",
            "--concurrency",
            "1:2:x2",
            "--requests",
            "150",
            "--metrics-url",
            &metrics,
            extra[0],
            extra[1],
        ]);
        let after = successes(&metrics, "text_stats");
        assert_eq!(answered(&r), 300.0, "{r}");
        assert_eq!(
            after - before,
            answered(&r),
            "{extra:?}: Triton counted otherwise"
        );
        assert_eq!(r["model_config"]["available"], true, "{r}");
        assert_eq!(r["model_config"]["max_batch_size"], 16);
        assert_eq!(r["model_config"]["instance_group"][0]["kind"], "KIND_CPU");
        let step = &r["steps"][0];
        assert_eq!(
            step["server"]["gpu"],
            json!({"available": false, "reason": "no nv_gpu_* metrics"})
        );
        if url == &http {
            let stats = &step["server"]["stats"];
            assert_eq!(stats["available"], true, "{r}");
            assert_eq!(stats["inferences"], json!(150.0), "{r}");
            assert!(stats["compute_infer_us"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
}
