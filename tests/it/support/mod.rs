//! Shared helpers of the integration tests that run against the local stand-in stack
//! (`scripts/stack.sh up`; `./scripts/test.sh` starts it and exports its variables).

pub mod kserve;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;

pub const ECR_USER: &str = "AWS";
/// moto's deterministic ECR token password.
pub const ECR_PASSWORD: &str = "123456789012-auth-token";

/// AWS actions that change something, by their name's start (recorded calls are checked against it).
pub const MUTATING: &[&str] = &[
    "Create",
    "Delete",
    "Execute",
    "Update",
    "Put",
    "Register",
    "Run",
    "Attach",
    "Authorize",
    "Modify",
    "Tag",
    "Deregister",
    "Start",
];

/// triton-deploy with `--format json` and `envs`: its exit code, its one JSON document (a panic
/// when it printed anything else) and its stderr.
pub fn td_json(args: &[&str], envs: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json"])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not one JSON document: {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), doc, stderr)
}

/// A command's stdout and stderr, as one text (for assertion messages and searches).
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command's stdout as the one JSON document it should be.
pub fn json_of(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the stand-ins with `./scripts/stack.sh up` and `eval \"$(./scripts/stack.sh env)\"`, or run ./scripts/test.sh")
    })
}

/// host:port of a stack URL.
pub fn host(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A name unique to this test process, for ECR repositories and tags.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a small stand-in `tritonserver` base image with umoci and copies it with skopeo to
/// `registry_url/repo:tag` (credentials when given). Returns the image reference.
pub fn make_base(registry_url: &str, repo: &str, tag: &str, creds: Option<&str>) -> String {
    make_base_as(registry_url, repo, tag, creds, None)
}

/// As [`make_base`], converting the manifest to `format` (`v2s2` for Docker's) on the way.
pub fn make_base_as(
    registry_url: &str,
    repo: &str,
    tag: &str,
    creds: Option<&str>,
    format: Option<&str>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("opt/tritonserver/bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        rootfs.join("opt/tritonserver/bin/tritonserver"),
        "#!/bin/sh\necho tritonserver \"$@\"\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/os-release"),
        format!("ID=triton-test\nVERSION_ID={tag}\n"),
    )
    .unwrap();
    let l = layout.to_str().unwrap();
    run(Command::new("umoci").args(["init", "--layout", l]));
    run(Command::new("umoci").args(["new", "--image", &format!("{l}:1")]));
    run(Command::new("umoci")
        .args(["insert", "--rootless", "--image", &format!("{l}:1")])
        .arg(&rootfs)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:1"),
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.env",
        "TRITON_SERVER_VERSION=2.99.0",
        "--config.entrypoint",
        "/opt/nvidia/nvidia_entrypoint.sh",
    ]));
    let dest = format!("{}/{repo}:{tag}", host(registry_url));
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    if let Some(f) = format {
        cmd.args(["--format", f]);
    }
    run(cmd
        .arg(format!("oci:{l}:1"))
        .arg(format!("docker://{dest}")));
    dest
}

/// `skopeo inspect --raw` (the manifest) or `--config` of an image in the ECR stand-in.
pub fn skopeo_inspect(image: &str, what: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{ECR_USER}:{ECR_PASSWORD}"),
        what,
        &format!("docker://{image}"),
    ]));
    serde_json::from_str(&out).unwrap()
}

/// Copies an image from the ECR stand-in into an OCI layout (skopeo checks every digest).
pub fn skopeo_to_layout(image: &str, dir: &Path) {
    run(Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{ECR_USER}:{ECR_PASSWORD}"),
        ])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:x", dir.display())));
}

/// Files (path, size) in a gzip/zstd/plain layer blob.
pub fn layer_files(blob: &Path) -> Vec<(String, u64)> {
    let bytes = std::fs::read(blob).unwrap();
    let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(&bytes[..]))
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::new(&bytes[..]).unwrap())
    } else {
        Box::new(&bytes[..])
    };
    let mut a = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type().is_file() {
            out.push((
                e.path().unwrap().display().to_string(),
                e.header().size().unwrap(),
            ));
        }
    }
    out
}

/// Files (path under /models/<model>/, size) of a model directory on disk.
pub fn model_files(dir: &Path, model: &str) -> Vec<(String, u64)> {
    fn rec(base: &Path, d: &Path, model: &str, out: &mut Vec<(String, u64)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rec(base, &p, model, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.push((format!("models/{model}/{rel}"), p.metadata().unwrap().len()));
            }
        }
    }
    let mut out = Vec::new();
    rec(dir, dir, model, &mut out);
    out.sort();
    out
}

/// Calls a moto JSON-protocol API (`ecr`, ...) directly, as the AWS CLI would.
pub async fn moto_json(service: &str, target: &str, body: serde_json::Value) -> serde_json::Value {
    let url = env("TD_MOTO_URL");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("X-Amz-Target", target)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    if text.is_empty() {
        // Some actions (CreateLogStream, ...) answer 200 with no body.
        return serde_json::Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("moto answered: {text}"))
}
