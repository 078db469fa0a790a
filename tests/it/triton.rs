//! Against the real Triton: NVIDIA's tritonserver 2.51 (CPU, python backend) in the base image
//! `scripts/stack.sh up` builds from Debian packages and the nvidia-pytriton wheel
//! (`TD_TRITON_BASE`, in the upstream registry). The image `push` makes on it is loaded into the
//! Docker Engine and run; what it answers, and what Triton counts, are the referee.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// A container `triton-deploy run --detach` started, removed when dropped (also when the test
/// fails).
struct Container {
    name: String,
    report: Value,
}

impl Drop for Container {
    fn drop(&mut self) {
        // As a user would: `run --stop` removes the container and the image it loaded.
        let _ = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(["run", "--stop", "--name", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

impl Container {
    /// The endpoint `run` reported: `http`, `grpc` or `metrics`.
    fn url(&self, which: &str) -> String {
        self.report["endpoints"][which]
            .as_str()
            .unwrap_or_else(|| panic!("no {which} endpoint in {}", self.report))
            .to_string()
    }
}

/// `triton-deploy --format json ARGS`: exit code, the JSON document, stderr.
fn td(args: &[&str], envs: &[(&str, &str)]) -> (i32, Value, String) {
    td_json(args, envs)
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

/// Whether the engine has a container named `name`.
fn exists(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name=^/{name}$")])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// `repo` packaged on the fly onto the real tritonserver base and started by `triton-deploy run
/// --detach` with its ports on free loopback ports; returned once every model is READY.
fn serve(repo: &Path, work: &Path) -> Container {
    let name = unique("td-run");
    let cache = work.join("cache");
    let (code, report, stderr) = td(
        &[
            "run",
            repo.to_str().unwrap(),
            "--base",
            &env("TD_TRITON_BASE"),
            "--name",
            &name,
            "--detach",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--shm-size",
            "256",
        ],
        &[("TRITON_DEPLOY_CACHE_DIR", cache.to_str().unwrap())],
    );
    let c = Container { name, report };
    assert_eq!(code, 0, "{}\n{stderr}", c.report);
    c
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
    let http = c.url("http");
    let grpc = c.url("grpc");
    let metrics = format!("{}/metrics", c.url("metrics"));

    // Real answers: byte length and word count of each string.
    let answer = text_stats(&http);
    let out = |name: &str| output(&answer, name);
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

/// The text_stats answer for two strings, from `http`.
fn text_stats(http: &str) -> Value {
    infer(
        http,
        "text_stats",
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                           "data": ["hello real triton", "two words"]}]}),
    )
}

#[test]
#[ignore = "needs the local stack and the Docker Engine: run ./scripts/test.sh"]
fn run_loads_gpu_models_as_cpu_here_pulls_from_ecr_and_stops() {
    let work = tempfile::tempdir().unwrap();
    // The example with its instance group asking for two GPUs, as it would on AWS.
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("text_stats/1")).unwrap();
    let src = root().join("model-repos/python-backend/text_stats");
    std::fs::copy(src.join("1/model.py"), repo.join("text_stats/1/model.py")).unwrap();
    let config = std::fs::read_to_string(src.join("config.pbtxt")).unwrap();
    assert!(config.contains("KIND_CPU"), "{config}");
    std::fs::write(
        repo.join("text_stats/config.pbtxt"),
        config.replace("KIND_CPU", "KIND_GPU"),
    )
    .unwrap();

    // Pushed to the ECR stand-in, then run from there: the engine pulls with ECR's token.
    let repository = unique("run");
    let cache = work.path().join("cache");
    let envs = [("TRITON_DEPLOY_CACHE_DIR", cache.to_str().unwrap())];
    let registry = env("TD_REGISTRY_URL");
    let (code, pushed, stderr) = td(
        &[
            "push",
            repo.to_str().unwrap(),
            "--repository",
            &repository,
            "--base",
            &env("TD_TRITON_BASE"),
            "--registry-endpoint",
            &registry,
        ],
        &envs,
    );
    assert_eq!(code, 0, "{pushed}\n{stderr}");
    let image = pushed["image"].as_str().unwrap().to_string();
    let name = unique("td-run");
    let out = work.path().join("run.json");
    let (code, report, stderr) = td(
        &[
            "run",
            "--image",
            &image,
            "--registry-endpoint",
            &registry,
            "--name",
            &name,
            "--detach",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
        &envs,
    );
    let c = Container { name, report };
    assert_eq!(code, 0, "{}\n{stderr}", c.report);
    let r = &c.report;
    assert_eq!(r["mode"], "cpu", "{r}");
    assert_eq!(r["models"][0]["name"], "text_stats");
    assert_eq!(r["models"][0]["state"], "READY", "{r}");
    assert_eq!(r["models"][0]["cpu_override"], true, "{r}");
    assert!(
        r["note"]
            .as_str()
            .unwrap()
            .contains("KIND_CPU for text_stats"),
        "{r}"
    );
    assert!(
        r["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--model-control-mode=explicit"))
    );
    let t = &r["time_to_ready"];
    assert_eq!(t["pulled"], true, "{r}");
    for part in ["pull_seconds", "start_seconds", "load_seconds"] {
        assert!(t[part].as_f64().unwrap() > 0.0, "{part}: {r}");
    }
    let sum = t["pull_seconds"].as_f64().unwrap()
        + t["start_seconds"].as_f64().unwrap()
        + t["load_seconds"].as_f64().unwrap();
    assert!(
        (t["total_seconds"].as_f64().unwrap() - sum).abs() < 0.5,
        "{r}"
    );
    assert!(t["image_bytes"].as_u64().unwrap() > 100 << 20, "{r}");
    // --out holds the same report.
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["time_to_ready"], r["time_to_ready"]);

    // Triton itself says the instances are CPU ones, and they answer.
    let http = c.url("http");
    let cfg: Value = serde_json::from_str(&run(
        Command::new("curl").args(["-sf", &format!("{http}/v2/models/text_stats/config")])
    ))
    .unwrap();
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_CPU", "{cfg}");
    assert_eq!(cfg["instance_group"][0]["count"], 2, "{cfg}");
    let answer = text_stats(&http);
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 2, "{answer}");

    // The name is taken while it runs; --stop removes it, and a second --stop finds nothing.
    let (code, err, _) = td(
        &[
            "run", "--image", &image, "--name", &c.name, "--detach", "--pull", "never",
        ],
        &envs,
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exists already"),
        "{err}"
    );
    let (code, stopped, _) = td(&["run", "--stop", "--name", &c.name], &[]);
    assert_eq!(code, 0, "{stopped}");
    assert_eq!(stopped["removed"], json!([c.name]));
    assert!(!exists(&c.name));
    let (code, err, _) = td(&["run", "--stop", "--name", &c.name], &[]);
    assert_eq!(code, 1, "{err}");
    let _ = Command::new("docker")
        .args([
            "rmi",
            &image.replace(&image[..image.find('/').unwrap()], &host(&registry)),
        ])
        .output();
}

#[test]
#[ignore = "needs the local stack and the Docker Engine: run ./scripts/test.sh"]
fn run_failures_say_why_and_leave_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let envs = [("TRITON_DEPLOY_CACHE_DIR", cache.to_str().unwrap())];
    let base = env("TD_TRITON_BASE");
    let free = [
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ];
    let message = |doc: &Value| {
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // A model Triton cannot load (its python model raises while starting) beside one it can:
    // the reason is Triton's, and nothing is left running.
    let repo = work.path().join("broken");
    std::fs::create_dir_all(repo.join("broken/1")).unwrap();
    std::fs::write(
        repo.join("broken/config.pbtxt"),
        "backend: \"python\"\nmax_batch_size: 0\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 1 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 1 ] } ]\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("broken/1/model.py"),
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('no weights in this model')\n",
    )
    .unwrap();
    let src = root().join("model-repos/python-backend/text_stats");
    std::fs::create_dir_all(repo.join("text_stats/1")).unwrap();
    std::fs::copy(
        src.join("config.pbtxt"),
        repo.join("text_stats/config.pbtxt"),
    )
    .unwrap();
    std::fs::copy(src.join("1/model.py"), repo.join("text_stats/1/model.py")).unwrap();
    let name = unique("td-fail");
    let mut args = vec![
        "run",
        repo.to_str().unwrap(),
        "--base",
        &base,
        "--name",
        &name,
        "--detach",
    ];
    args.extend(free);
    let (code, err, stderr) = td(&args, &envs);
    assert_eq!(code, 1, "{err}\n{stderr}");
    let m = message(&err);
    assert!(
        m.contains("model 'broken' failed to load") && m.contains("no weights in this model"),
        "{m}"
    );
    assert!(!m.contains("model 'text_stats'"), "text_stats loads: {m}");
    assert!(!exists(&name), "the container was left behind");

    // The base image alone: Triton is up but has nothing to serve.
    let name = unique("td-empty");
    let mut args = vec!["run", "--image", &base, "--name", &name, "--detach"];
    args.extend(free);
    let (code, err, _) = td(&args, &envs);
    assert_eq!(code, 1, "{err}");
    assert!(
        message(&err).contains("Triton found no model in /models"),
        "{err}"
    );
    assert!(!exists(&name));

    // The container exits (Triton refuses a flag): its exit code and its last log lines.
    let name = unique("td-exit");
    let mut args = vec![
        "run",
        "--image",
        &base,
        "--name",
        &name,
        "--detach",
        "--triton-arg=--no-such-flag",
    ];
    args.extend(free);
    let (code, err, _) = td(&args, &envs);
    assert_eq!(code, 1, "{err}");
    let m = message(&err);
    assert!(m.contains("the container exited with code"), "{m}");
    assert!(
        m.contains("no-such-flag"),
        "the log tail shows Triton's complaint: {m}"
    );
    assert!(!exists(&name));

    // An image that is nowhere.
    let missing = format!("{}/nvidia/no-such-image:1", host(&env("TD_UPSTREAM_URL")));
    let (code, err, _) = td(&["run", "--image", &missing, "--detach"], &envs);
    assert_eq!(code, 1, "{err}");
    assert!(
        message(&err).contains(&format!("image {missing} not found")),
        "{err}"
    );

    // A port in use, before anything is pulled or created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let name = unique("td-port");
    let (code, err, _) = td(
        &[
            "run",
            "--image",
            &base,
            "--name",
            &name,
            "--detach",
            "--http-port",
            &port,
        ],
        &envs,
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        message(&err).contains(&format!("host port {port} is in use")),
        "{err}"
    );
    assert!(message(&err).contains("--http-port"), "{err}");
    assert!(!exists(&name));

    // No engine.
    let (code, err, _) = td(
        &["run", "--image", &base, "--detach"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        message(&err).contains("cannot reach the Docker Engine"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the local stack and the Docker Engine: run ./scripts/test.sh"]
fn run_in_the_foreground_serves_until_ctrl_c_then_removes_the_container() {
    let work = tempfile::tempdir().unwrap();
    let name = unique("td-fg");
    let out = work.path().join("run.json");
    let repo = root().join("model-repos/python-backend");
    let mut child = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json", "run", repo.to_str().unwrap(), "--base"])
        .arg(env("TD_TRITON_BASE"))
        .args([
            "--name",
            &name,
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--out")
        .arg(&out)
        .env("TRITON_DEPLOY_CACHE_DIR", work.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // --out is written once every model is ready; the run then stays in the foreground.
    let start = std::time::Instant::now();
    while !out.exists() {
        assert!(start.elapsed().as_secs() < 120, "not ready within 120 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before Ctrl-C"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ready: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let answer = text_stats(ready["endpoints"]["http"].as_str().unwrap());
    assert_eq!(answer["model_name"], "text_stats", "{answer}");
    assert!(exists(&name));
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["ended"], "interrupted", "{doc}");
    assert_eq!(doc["models"][0]["state"], "READY");
    assert!(!exists(&name), "Ctrl-C left the container");
    // The image it loaded for the repository went with it.
    let image = ready["image"].as_str().unwrap();
    let inspect = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "{image} was left in the engine");
}

/// `POST {http}/v2/models/{model}/infer` with `body`; Triton's answer.
fn infer(http: &str, model: &str, body: Value) -> Value {
    serde_json::from_str(&run(Command::new("curl").args([
        "-sf",
        &format!("{http}/v2/models/{model}/infer"),
        "-d",
        &body.to_string(),
    ])))
    .unwrap()
}

fn output(answer: &Value, name: &str) -> Value {
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .map(|o| o["data"].clone())
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

#[test]
#[ignore = "needs the local stack and the Docker Engine: run ./scripts/test.sh"]
fn every_example_repository_serves_correct_answers_from_its_pushed_image() {
    let work = tempfile::tempdir().unwrap();
    let repo = |name: &str| root().join("model-repos").join(name);

    // ONNX, its instance group asking for a GPU: loaded as KIND_CPU, served by ONNX Runtime.
    let c = serve(&repo("simple-onnx"), work.path());
    assert_eq!(c.report["models"][0]["cpu_override"], true, "{}", c.report);
    let x: Vec<f64> = (1..=16).map(f64::from).collect();
    let a = infer(
        &c.url("http"),
        "add_sub",
        json!({"inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": x},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": vec![1.0; 16]}]}),
    );
    let plus: Vec<f64> = x.iter().map(|v| v + 1.0).collect();
    let minus: Vec<f64> = x.iter().map(|v| v - 1.0).collect();
    assert_eq!(output(&a, "OUTPUT0"), json!(plus));
    assert_eq!(output(&a, "OUTPUT1"), json!(minus));
    drop(c);

    // BYTES through an ONNX graph, non-ASCII included.
    let c = serve(&repo("strings"), work.path());
    let a = infer(
        &c.url("http"),
        "string_identity",
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                           "data": ["héllo wörld", "two words"]}]}),
    );
    assert_eq!(output(&a, "TEXT_OUT"), json!(["héllo wörld", "two words"]));
    drop(c);

    // Three versions, the policy serving the newest two: each answers with its own factor.
    let c = serve(&repo("multi-version"), work.path());
    let versions: Vec<(&str, &str)> = c.report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["version"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [("2", "READY"), ("3", "READY")], "{}", c.report);
    for (version, factor) in [(2.0, 2.0), (3.0, 3.0)] {
        let a = infer(
            &c.url("http"),
            &format!("scale/versions/{version}"),
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
        );
        let want: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| v * factor).collect();
        assert_eq!(output(&a, "y"), json!(want), "version {version}");
    }
    drop(c);

    // The ensemble: the python preprocessor, then the ONNX classifier (loaded as KIND_CPU).
    let c = serve(&repo("ensemble"), work.path());
    let models = c.report["models"].as_array().unwrap();
    assert_eq!(models.len(), 3, "{}", c.report);
    assert!(models.iter().all(|m| m["state"] == "READY"), "{}", c.report);
    let a = infer(
        &c.url("http"),
        "pipeline",
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                           "data": ["Hello, World 42", "abc"]}]}),
    );
    let scores = output(&a, "SCORES");
    let scores = scores.as_array().unwrap();
    assert_eq!(scores.len(), 4, "{a}");
    assert!(
        scores.iter().all(|s| s.as_f64().unwrap().is_finite()),
        "{a}"
    );
    assert_ne!(
        scores[..2],
        scores[2..],
        "different texts score differently: {a}"
    );
}
