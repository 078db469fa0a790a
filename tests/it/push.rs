//! `triton-deploy push` against the local stand-ins: moto for the ECR control plane, Debian's
//! docker-registry (htpasswd = moto's ECR token) for the data plane, a second registry without auth
//! standing in for the public base-image registry, and a fault-injecting proxy.
//! Run by ./scripts/test.sh, which starts the stack (`#[ignore]` for plain `cargo test`).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;
use serde_json::Value;

const IGNORE: &str = "needs the local stack: run ./scripts/test.sh";

struct Push {
    repo: PathBuf,
    args: Vec<String>,
    cache: PathBuf,
}

impl Push {
    fn new(repo: impl AsRef<Path>, cache: &Path) -> Push {
        Push {
            repo: repo.as_ref().to_path_buf(),
            args: Vec::new(),
            cache: cache.to_path_buf(),
        }
    }
    fn arg(mut self, a: impl Into<String>) -> Push {
        self.args.push(a.into());
        self
    }
    fn into_ecr(self, name: &str, base: &str) -> Push {
        self.into_ecr_via(name, base, &env("TD_REGISTRY_URL"))
    }
    /// To ECR repository `name` through the registry at `endpoint` (a proxy in front of it).
    fn into_ecr_via(self, name: &str, base: &str, endpoint: &str) -> Push {
        self.arg("--repository")
            .arg(name)
            .arg("--base")
            .arg(base)
            .arg("--registry-endpoint")
            .arg(endpoint)
    }
    fn command(&self) -> std::process::Command {
        self.command_as("json")
    }
    fn command_as(&self, format: &str) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"));
        c.arg("--format")
            .arg(format)
            .arg("push")
            .arg(&self.repo)
            .args(&self.args);
        c.env("AWS_ENDPOINT_URL", env("TD_MOTO_URL"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TRITON_DEPLOY_CACHE_DIR", &self.cache);
        c
    }
    fn output(&self) -> Output {
        self.command().output().unwrap()
    }
    fn ok(&self) -> Value {
        let out = self.output();
        assert!(
            out.status.success(),
            "push failed ({:?}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn upstream_base(tag: &str) -> String {
    make_base(&env("TD_UPSTREAM_URL"), "nvidia/tritonserver", tag, None)
}

fn secrets_absent(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let s = String::from_utf8_lossy(stream);
        assert!(
            !s.contains(ECR_PASSWORD),
            "the registry password leaked into the output"
        );
        assert!(
            !s.contains("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"),
            "the ECR token leaked into the output"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn push_creates_the_repository_and_an_image_whose_layers_hold_exactly_each_model() {
    let _ = IGNORE;
    let cache = tempfile::tempdir().unwrap();
    let name = unique("td-test/ensemble");
    let base = upstream_base(&unique("base"));
    let push = Push::new(root().join("model-repos/ensemble"), cache.path())
        .into_ecr(&name, &base)
        // At the highest verbosity too, the registry password and the ECR token stay out.
        .arg("-vvv");
    let out = push.output();
    secrets_absent(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("INFO"),
        "-vvv logs"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = r["digest"].as_str().unwrap();
    assert_eq!(
        r["image"],
        format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}@{digest}")
    );
    assert_eq!(r["tag"], format!("sha-{}", &digest[7..19]));
    let models: Vec<&str> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["classifier", "pipeline", "preprocess"]);
    assert!(
        r["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["uploaded"] == true)
    );
    assert!(r["uploaded_bytes"].as_u64().unwrap() > 0);

    // The control plane: repository created with scan-on-push, immutable tags, encryption, tags, lifecycle.
    assert_eq!(
        repository_settings(&name).await,
        (true, "IMMUTABLE".into(), Some(30))
    );
    let repo = describe_repository(&name).await;
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "AES256");
    let tags = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.ListTagsForResource",
        serde_json::json!({"resourceArn": repo["repositoryArn"]}),
    )
    .await;
    assert!(
        tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Key"] == "managed-by" && t["Value"] == "triton-deploy"),
        "{tags}"
    );

    // The data plane: a valid manifest and config, as skopeo reads them.
    let image = format!(
        "{}/{name}:{}",
        host(&env("TD_REGISTRY_URL")),
        r["tag"].as_str().unwrap()
    );
    let manifest = skopeo_inspect(&image, "--raw");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1 + 3, "the base's layer and one per model");
    let config = skopeo_inspect(&image, "--config");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["tritonserver", "--model-repository=/models"])
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/nvidia/nvidia_entrypoint.sh"]),
        "the base's entrypoint is kept"
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "TRITON_SERVER_VERSION=2.99.0")
    );
    for p in ["8000/tcp", "8001/tcp", "8002/tcp"] {
        assert!(config["config"]["ExposedPorts"].get(p).is_some(), "{p}");
    }
    assert_eq!(
        config["config"]["Labels"]["ai.triton-deploy.models"],
        "classifier=1;pipeline=1;preprocess=1"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);

    // Each model layer holds exactly its model's files, under /models/<model>/.
    let layout = tempfile::tempdir().unwrap();
    skopeo_to_layout(&image, layout.path());
    for (i, model) in ["classifier", "pipeline", "preprocess"].iter().enumerate() {
        let blob = layout.path().join("blobs/sha256").join(
            layers[1 + i]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        );
        let mut got = layer_files(&blob);
        got.sort();
        assert_eq!(
            got,
            model_files(&root().join("model-repos/ensemble").join(model), model),
            "{model}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn an_unchanged_repository_pushes_zero_bytes_and_a_changed_model_only_its_layer() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    copy_dir(&root().join("model-repos/multi-version"), &repo);
    copy_dir(
        &root().join("model-repos/python-backend/text_stats"),
        &repo.join("text_stats"),
    );
    let name = unique("td-test/repush");
    let base = upstream_base(&unique("base"));
    let first = Push::new(&repo, cache.path()).into_ecr(&name, &base).ok();
    let t = std::time::Instant::now();
    let second = Push::new(&repo, cache.path()).into_ecr(&name, &base).ok();
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["tag"], first["tag"]);
    assert_eq!(second["uploaded_bytes"], 0, "{second:#}");
    assert!(
        second["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["uploaded"] == false)
    );
    eprintln!("re-push took {:?}", t.elapsed());

    // Change one model: only its layer (and the config) is uploaded.
    std::fs::write(
        repo.join("text_stats/1/model.py"),
        std::fs::read_to_string(repo.join("text_stats/1/model.py")).unwrap() + "\n# changed\n",
    )
    .unwrap();
    let third = Push::new(&repo, cache.path()).into_ecr(&name, &base).ok();
    assert_ne!(third["digest"], first["digest"]);
    let uploaded: Vec<&str> = third["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["uploaded"] == true)
        .map(|l| l["model"].as_str().unwrap())
        .collect();
    assert_eq!(uploaded, ["text_stats"]);
    let text_stats_size = third["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "text_stats")
        .unwrap()["size"]
        .as_u64()
        .unwrap();
    let uploaded_bytes = third["uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded_bytes > text_stats_size && uploaded_bytes < text_stats_size + 4096,
        "layer + config only: {third:#}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn the_same_content_gives_the_same_digest_from_any_directory() {
    let base = upstream_base(&unique("base"));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_dir(
        &root().join("model-repos/simple-onnx"),
        &a.path().join("models"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy_dir(
        &root().join("model-repos/simple-onnx"),
        &b.path().join("elsewhere"),
    );
    let digest = |dir: &Path| {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let r = Push::new(dir, cache.path())
            .arg("--base")
            .arg(&base)
            .arg("--output")
            .arg(format!(
                "oci-layout:{}",
                out.path().join("layout").display()
            ))
            .ok();
        // The layout is a valid OCI image that skopeo can read.
        let inspect = std::process::Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}", out.path().join("layout").display()))
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        r["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(
        digest(&a.path().join("models")),
        digest(&b.path().join("elsewhere"))
    );
}

/// Pushes the ensemble repository through a registry proxy in `mode`, and checks that it gives
/// the image an unhindered push gives, with every layer, and that the proxy did hinder it.
async fn push_through(mode: proxy::Mode) -> proxy::Proxy {
    let base = upstream_base(&unique("base"));
    let clean_cache = tempfile::tempdir().unwrap();
    let clean = Push::new(root().join("model-repos/ensemble"), clean_cache.path())
        .into_ecr(&unique("td-test/clean"), &base)
        .ok();

    let proxy = proxy::start(&env("TD_REGISTRY_URL"), mode).await;
    let cache = tempfile::tempdir().unwrap();
    let name = unique("td-test/faults");
    let push = Push::new(root().join("model-repos/ensemble"), cache.path())
        .into_ecr_via(&name, &base, &proxy.url);
    let out = tokio::task::spawn_blocking(move || push.output())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        proxy.faults.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "faults were injected: {:?}",
        proxy.log.lock().unwrap()
    );
    assert_eq!(r["digest"], clean["digest"]);
    let manifest = skopeo_inspect(
        &format!(
            "{}/{name}:{}",
            host(&env("TD_REGISTRY_URL")),
            r["tag"].as_str().unwrap()
        ),
        "--raw",
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);
    proxy
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn faults_on_one_request_in_ten_still_give_the_identical_image() {
    push_through(proxy::Mode::FailEvery(10)).await;
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_registry_throttling_one_request_in_four_gets_waited_for_as_it_asks() {
    let started = std::time::Instant::now();
    let proxy = push_through(proxy::Mode::ThrottleEvery(4)).await;
    // Each 429 said `Retry-After: 1`: the push waited at least that once.
    let throttled = proxy.faults.load(std::sync::atomic::Ordering::SeqCst);
    assert!(throttled >= 2, "{:?}", proxy.log.lock().unwrap());
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_push_killed_mid_upload_leaves_no_tag_and_a_rerun_completes() {
    let base = upstream_base(&unique("base"));
    let proxy = proxy::start(&env("TD_REGISTRY_URL"), proxy::Mode::StallFirstUpload).await;
    let cache = tempfile::tempdir().unwrap();
    let name = unique("td-test/killed");
    let tag = "v1";
    let stalled = Push::new(root().join("model-repos/multi-version"), cache.path())
        .arg("--repository")
        .arg(&name)
        .arg("--tag")
        .arg(tag)
        .arg("--base")
        .arg(&base)
        .arg("--registry-endpoint")
        .arg(&proxy.url);
    let mut child = stalled
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), proxy.stalled.notified())
        .await
        .expect("an upload started");
    child.kill().unwrap();
    child.wait().unwrap();

    let image = format!("{}/{name}:{tag}", host(&env("TD_REGISTRY_URL")));
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &format!("{ECR_USER}:{ECR_PASSWORD}"),
        ])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        !inspect.status.success(),
        "no tag may point at a half-pushed image"
    );

    let r = Push::new(root().join("model-repos/multi-version"), cache.path())
        .into_ecr(&name, &base)
        .arg("--tag")
        .arg(tag)
        .ok();
    let manifest = skopeo_inspect(&image, "--raw");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    let layout = tempfile::tempdir().unwrap();
    skopeo_to_layout(&image, layout.path());
    assert_eq!(r["tag"], tag);
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn an_immutable_tag_is_never_moved_and_nothing_is_uploaded() {
    let base = upstream_base(&unique("base"));
    let cache = tempfile::tempdir().unwrap();
    let name = unique("td-test/immutable");
    Push::new(root().join("model-repos/strings"), cache.path())
        .into_ecr(&name, &base)
        .arg("--tag")
        .arg("prod")
        .ok();
    let out = Push::new(root().join("model-repos/simple-onnx"), cache.path())
        .into_ecr(&name, &base)
        .arg("--tag")
        .arg("prod")
        .output();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tag 'prod' already points at sha256:") && err.contains("another --tag"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn bad_input_fails_with_one_clear_message_each() {
    let cache = tempfile::tempdir().unwrap();
    let base = upstream_base(&unique("base"));
    let check = |p: Push, code: i32, needle: &str| {
        let out = p.output();
        secrets_absent(&out);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "expected '{needle}' in:\n{err}");
    };
    // An invalid repository is refused before anything is created.
    let name = unique("td-test/invalid");
    check(
        Push::new(
            root().join("tests/fixtures/broken/TD013-parse-error"),
            cache.path(),
        )
        .into_ecr(&name, &base),
        1,
        "the model repository is invalid (1 errors)",
    );
    // (moto answers RepositoryNotFoundException for the name, so nothing was created.)
    check(
        Push::new(root().join("no/such/dir"), cache.path()).into_ecr(&name, &base),
        64,
        "is not a directory",
    );
    check(
        Push::new(root().join("model-repos/strings"), cache.path()).into_ecr("Bad Name", &base),
        64,
        "not a valid ECR repository name",
    );
    check(
        Push::new(root().join("model-repos/strings"), cache.path()).into_ecr(
            &unique("td-test/nobase"),
            &format!("{}/nvidia/nope:1", host(&env("TD_UPSTREAM_URL"))),
        ),
        1,
        "not found",
    );
    check(
        Push::new(root().join("model-repos/strings"), cache.path())
            .arg("--repository")
            .arg(unique("td-test/unreachable"))
            .arg("--base")
            .arg(&base)
            .arg("--registry-endpoint")
            .arg("http://127.0.0.1:9"),
        1,
        "cannot reach the registry",
    );
    check(
        Push::new(root().join("model-repos/strings"), cache.path())
            .arg("--output")
            .arg("tarball:x"),
        64,
        "expected oci-layout or docker-archive",
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_registry_that_refuses_the_credentials_is_an_auth_failure() {
    // A registry whose password is not moto's token.
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let htpasswd = std::process::Command::new("htpasswd")
        .args(["-Bbn", "AWS", "something-else"])
        .output()
        .unwrap();
    std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {0}/data }}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: s\nauth:\n  htpasswd: {{ realm: basic-realm, path: {0}/htpasswd }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut reg = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let base = upstream_base(&unique("base"));
    let cache = tempfile::tempdir().unwrap();
    let out = Push::new(root().join("model-repos/strings"), cache.path())
        .arg("--repository")
        .arg(unique("td-test/auth"))
        .arg("--base")
        .arg(&base)
        .arg("--registry-endpoint")
        .arg(format!("http://127.0.0.1:{port}"))
        .output();
    reg.kill().unwrap();
    let _ = reg.wait();
    secrets_absent(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the credentials (401 unauthorized)"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn the_docker_builder_builds_from_a_base_loaded_from_our_docker_archive() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = upstream_base(&unique("base"));
    // Our own export, loaded into the engine (it cannot pull), is the base of the Docker build.
    let archive = dir.path().join("base.tar");
    let tag = unique("base").replace('-', "");
    Push::new(root().join("model-repos/strings"), cache.path())
        .arg("--base")
        .arg(&base)
        .arg("--tag")
        .arg(&tag)
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()))
        .ok();
    let load = std::process::Command::new("docker")
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let loaded = format!("strings:{tag}");
    assert!(String::from_utf8_lossy(&load.stdout).contains(&loaded));

    let name = unique("td-test/docker");
    let out = Push::new(root().join("model-repos/python-backend"), cache.path())
        .arg("--builder")
        .arg("docker")
        .arg("--repository")
        .arg(&name)
        .arg("--base")
        .arg(&loaded)
        .arg("--registry-endpoint")
        .arg(env("TD_REGISTRY_URL"))
        .arg("--tag")
        .arg("d1")
        .output();
    let _ = std::process::Command::new("docker")
        .args([
            "rmi",
            "-f",
            &loaded,
            &format!("{}/{name}:d1", host(&env("TD_REGISTRY_URL"))),
        ])
        .output();
    secrets_absent(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["digest"].as_str().unwrap().starts_with("sha256:"));

    let image = format!("{}/{name}:d1", host(&env("TD_REGISTRY_URL")));
    let config = skopeo_inspect(&image, "--config");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["tritonserver", "--model-repository=/models"])
    );
    assert_eq!(
        config["config"]["Labels"]["ai.triton-deploy.models"],
        "text_stats=1"
    );
    // The base's model layer and the new COPY layer both hold their models.
    let layout = tempfile::tempdir().unwrap();
    skopeo_to_layout(&image, layout.path());
    let manifest = skopeo_inspect(&image, "--raw");
    let mut files = Vec::new();
    // (The first layer is the umoci-made stand-in base; the model layers follow.)
    for l in &manifest["layers"].as_array().unwrap()[1..] {
        files.extend(layer_files(
            &layout
                .path()
                .join("blobs/sha256")
                .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        ));
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| f.0.trim_start_matches('/').to_string())
        .collect();
    assert!(
        names.contains(&"models/text_stats/1/model.py".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"models/string_identity/1/model.onnx".to_string()),
        "{names:?}"
    );
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn the_docker_builder_says_so_when_no_engine_is_reachable() {
    let cache = tempfile::tempdir().unwrap();
    let out = Push::new(root().join("model-repos/strings"), cache.path())
        .into_ecr(
            &unique("td-test/noengine"),
            "nvcr.io/nvidia/tritonserver:25.10-py3",
        )
        .arg("--builder")
        .arg("docker")
        .command()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the Docker Engine"), "{err}");
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn large_blobs_go_in_one_patch_per_session_and_land_intact_through_faults() {
    use triton_deploy::package::registry::{Registry, sha256_digest};
    // Every 4th request fails (a reset, then a 500, in turn): with a HEAD first, the first
    // session's final PUT and later a whole PATCH fail, and each transfer starts over.
    let proxy = proxy::start(&env("TD_REGISTRY_URL"), proxy::Mode::FailEvery(4)).await;
    let mut reg = Registry::new(
        url::Url::parse(&format!("{}/", proxy.url)).unwrap(),
        Some((
            ECR_USER.to_string(),
            triton_deploy_aws::Secret::new(ECR_PASSWORD),
        )),
        false,
    )
    .unwrap();
    reg.patch_threshold = 1 << 20;
    reg.retry.base_delay = std::time::Duration::from_millis(10);
    let dir = tempfile::tempdir().unwrap();
    let repo = unique("td-test/large");
    for (i, len) in [3_300_000u32, 2_000_000].into_iter().enumerate() {
        let path = dir.path().join(format!("blob{i}"));
        let data: Vec<u8> = (0..len)
            .map(|j| ((j ^ i as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let digest = sha256_digest(&data);
        assert!(!reg.blob_exists(&repo, &digest).await.unwrap());
        reg.upload_file(&repo, &digest, &path, data.len() as u64, &|_| {})
            .await
            .unwrap();
        assert!(reg.blob_exists(&repo, &digest).await.unwrap());
        assert_eq!(
            reg.get_blob(&repo, &digest).await.unwrap(),
            data,
            "the registry holds exactly the file"
        );
    }
    assert!(
        proxy.faults.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "faults were injected"
    );
    // One PATCH per upload session (never a second, which ECR would drop), each followed by
    // the PUT that names the digest.
    let log = proxy.log.lock().unwrap().clone();
    let patches: Vec<&String> = log.iter().filter(|l| l.starts_with("PATCH")).collect();
    let sessions: std::collections::BTreeSet<&String> = patches.iter().copied().collect();
    assert!(patches.len() >= 3, "{log:?}");
    assert_eq!(patches.len(), sessions.len(), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with("PUT") && !l.contains("/blobs/uploads/")),
        "{log:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_docker_v2_base_in_the_same_registry_is_mounted_and_the_image_stays_docker_v2() {
    let creds = format!("{ECR_USER}:{ECR_PASSWORD}");
    let base = make_base_as(
        &env("TD_REGISTRY_URL"),
        "mirror/tritonserver",
        &unique("v2"),
        Some(&creds),
        Some("v2s2"),
    );
    let cache = tempfile::tempdir().unwrap();
    let name = unique("td-test/mount");
    let r = Push::new(root().join("model-repos/strings"), cache.path())
        .into_ecr(&name, &base)
        .ok();
    let image = format!(
        "{}/{name}:{}",
        host(&env("TD_REGISTRY_URL")),
        r["tag"].as_str().unwrap()
    );
    let manifest = skopeo_inspect(&image, "--raw");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert!(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip")
    );
    // The base layer was mounted (not counted as uploaded); only the model layer and config moved.
    let model_size = r["layers"][0]["size"].as_u64().unwrap();
    let up = r["uploaded_bytes"].as_u64().unwrap();
    assert!(up > model_size && up < model_size + 4096, "{r:#}");
    // zstd layers cannot go in a Docker v2 manifest: the image becomes OCI.
    let r = Push::new(root().join("model-repos/strings"), cache.path())
        .into_ecr(&unique("td-test/mount-zstd"), &base)
        .arg("--compression")
        .arg("zstd")
        .ok();
    let name2 = r["image"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .to_string();
    let manifest = skopeo_inspect(
        &format!(
            "{}/{name2}:{}",
            host(&env("TD_REGISTRY_URL")),
            r["tag"].as_str().unwrap()
        ),
        "--raw",
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_multi_arch_base_resolves_to_its_linux_amd64_manifest() {
    let tag = unique("multi");
    let base = upstream_base(&tag);
    let up = env("TD_UPSTREAM_URL");
    let http = reqwest::Client::new();
    let platform = http
        .get(format!("{up}/v2/nvidia/tritonserver/manifests/{tag}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let digest = triton_deploy::package::registry::sha256_digest(&platform);
    // An index listing an arm64 entry first (pointing at the same manifest) and then amd64.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": platform.len(), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": platform.len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let put = http
        .put(format!("{up}/v2/nvidia/tritonserver/manifests/{tag}-index"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let cache = tempfile::tempdir().unwrap();
    let r = Push::new(root().join("model-repos/strings"), cache.path())
        .into_ecr(&unique("td-test/multiarch"), &format!("{base}-index"))
        .ok();
    assert_eq!(r["base"]["digest"], digest);
    assert_eq!(r["base"]["layers"], 1);
}

/// Blob `digest` of repository `name` as the registry stand-in serves it.
async fn registry_blob(name: &str, digest: &str) -> bytes::Bytes {
    reqwest::Client::new()
        .get(format!(
            "{}/v2/{name}/blobs/{digest}",
            env("TD_REGISTRY_URL")
        ))
        .basic_auth(ECR_USER, Some(ECR_PASSWORD))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// Noise (SHA-256 in counter mode): bytes no codec shrinks, as model weights barely shrink.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&sha2::Sha256::digest(
            [seed.to_le_bytes(), i.to_le_bytes()].concat(),
        ));
        i += 1;
    }
    out.truncate(n);
    out
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn by_default_weights_go_uncompressed_and_code_gzipped_and_the_image_reads_back() {
    let cache = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let python = "backend: \"python\"\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n";
    for (model, weights) in [("weights", true), ("code", false)] {
        let m = repo.path().join(model);
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::write(m.join("config.pbtxt"), python).unwrap();
        let code =
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n";
        std::fs::write(m.join("1/model.py"), code.repeat(200)).unwrap();
        if weights {
            std::fs::write(m.join("1/weights.bin"), noise(6 << 20, 7)).unwrap();
        }
    }
    let name = unique("td-test/auto");
    let base = upstream_base(&unique("base"));
    let r = Push::new(repo.path(), cache.path())
        .into_ecr(&name, &base)
        .ok();
    let by_model: std::collections::BTreeMap<&str, &str> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["model"].as_str().unwrap(),
                l["compression"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [("code", "gzip"), ("weights", "none")]
            .into_iter()
            .collect()
    );
    // The manifest says so, in the Docker v2.2 types the base uses or OCI's; the weights' blob is
    // the tar itself (as large as the weights) and reads back to exactly the model's files.
    let image = format!(
        "{}/{name}:{}",
        host(&env("TD_REGISTRY_URL")),
        r["tag"].as_str().unwrap()
    );
    let manifest = skopeo_inspect(&image, "--raw");
    let layers = manifest["layers"].as_array().unwrap();
    let types: Vec<&str> = layers[1..]
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert!(
        types
            == [
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.layer.v1.tar"
            ]
            || types
                == [
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "application/vnd.docker.image.rootfs.diff.tar"
                ],
        "{types:?}"
    );
    assert!(layers[2]["size"].as_u64().unwrap() > 6 << 20);
    assert!(
        layers[1]["size"].as_u64().unwrap() < 5_000,
        "code compresses"
    );
    // Blobs as the registry serves them (skopeo would recompress an uncompressed layer on copy).
    let blobs = tempfile::tempdir().unwrap();
    for (i, model) in ["code", "weights"].iter().enumerate() {
        let digest = layers[1 + i]["digest"].as_str().unwrap();
        let bytes = registry_blob(&name, digest).await;
        use sha2::Digest;
        assert_eq!(
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            digest
        );
        let blob = blobs.path().join(model);
        std::fs::write(&blob, &bytes).unwrap();
        let mut got = layer_files(&blob);
        got.sort();
        let mut want = model_files(&repo.path().join(model), model);
        want.sort();
        assert_eq!(got, want, "{model}");
    }
    // The uncompressed layer's diffID is its digest.
    let config = skopeo_inspect(&image, "--config");
    assert_eq!(config["rootfs"]["diff_ids"][2], layers[2]["digest"]);
}

async fn describe_repository(name: &str) -> Value {
    moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        serde_json::json!({"repositoryNames": [name]}),
    )
    .await["repositories"][0]
        .clone()
}

/// Scan on push, tag mutability and the lifecycle policy's image count, as ECR has them.
async fn repository_settings(name: &str) -> (bool, String, Option<u64>) {
    let repo = &describe_repository(name).await;
    let lp = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.GetLifecyclePolicy",
        serde_json::json!({"repositoryName": name}),
    )
    .await;
    let keep = lp["lifecyclePolicyText"]
        .as_str()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|p| p["rules"][0]["selection"]["countNumber"].as_u64());
    (
        repo["imageScanningConfiguration"]["scanOnPush"] == true,
        repo["imageTagMutability"].as_str().unwrap().to_string(),
        keep,
    )
}

fn drift_of(r: &Value) -> Vec<(String, String, String, bool)> {
    r["repository_settings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["setting"].as_str().unwrap().to_string(),
                        d["live"].as_str().unwrap().to_string(),
                        d["wanted"].as_str().unwrap().to_string(),
                        d["repaired"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn repository_settings_changed_outside_the_tool_are_set_back_on_ours_and_only_reported_on_others()
 {
    let cache = tempfile::tempdir().unwrap();
    let base = upstream_base(&unique("base"));
    let target = "AmazonEC2ContainerRegistry_V20150921";
    // Ours: created by push, then changed by hand.
    let name = unique("td-test/drift");
    let push = |tag: &str| {
        Push::new(root().join("model-repos/ensemble"), cache.path())
            .into_ecr(&name, &base)
            .arg("--tag")
            .arg(tag)
    };
    let r = push("v1").ok();
    assert_eq!(drift_of(&r), []);
    assert_eq!(
        repository_settings(&name).await,
        (true, "IMMUTABLE".into(), Some(30))
    );
    moto_json(
        "ecr",
        &format!("{target}.PutImageScanningConfiguration"),
        serde_json::json!({"repositoryName": name, "imageScanningConfiguration": {"scanOnPush": false}}),
    )
    .await;
    moto_json(
        "ecr",
        &format!("{target}.PutImageTagMutability"),
        serde_json::json!({"repositoryName": name, "imageTagMutability": "MUTABLE"}),
    )
    .await;
    moto_json(
        "ecr",
        &format!("{target}.DeleteLifecyclePolicy"),
        serde_json::json!({"repositoryName": name}),
    )
    .await;
    let out = push("v2").output();
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string(), true);
    assert_eq!(
        drift_of(&r),
        [
            s("scan_on_push", "off", "on"),
            s("tag_mutability", "MUTABLE", "IMMUTABLE"),
            s("lifecycle_policy", "none", "keep the newest 30 images"),
        ]
    );
    assert_eq!(
        repository_settings(&name).await,
        (true, "IMMUTABLE".into(), Some(30)),
        "set back"
    );
    // Asked for other settings, a repository of ours follows them; then there is nothing left.
    let r = push("v3").arg("--keep-images").arg("5").ok();
    assert_eq!(
        drift_of(&r),
        [(
            "lifecycle_policy".into(),
            "keep the newest 30 images".into(),
            "keep the newest 5 images".into(),
            true
        )]
    );
    let r = push("v4").arg("--keep-images").arg("5").ok();
    assert_eq!(drift_of(&r), []);

    // Someone else's: made without our tag; pushed to, reported on, not changed.
    let theirs = unique("td-test/theirs");
    moto_json(
        "ecr",
        &format!("{target}.CreateRepository"),
        serde_json::json!({"repositoryName": theirs, "imageTagMutability": "MUTABLE",
            "imageScanningConfiguration": {"scanOnPush": false}}),
    )
    .await;
    let out = Push::new(root().join("model-repos/ensemble"), cache.path())
        .into_ecr(&theirs, &base)
        .output();
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = drift_of(&r);
    assert_eq!(
        got.iter().map(|d| (d.0.as_str(), d.3)).collect::<Vec<_>>(),
        [
            ("scan_on_push", false),
            ("tag_mutability", false),
            ("lifecycle_policy", false)
        ]
    );
    assert_eq!(
        repository_settings(&theirs).await,
        (false, "MUTABLE".into(), None),
        "left as it is"
    );
    // In text, each is a warning that says why it was left.
    let out = Push::new(root().join("model-repos/ensemble"), cache.path())
        .into_ecr(&theirs, &base)
        .arg("--tag")
        .arg("again")
        .command_as("text")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("warning: repository 123456789012.dkr.ecr.us-east-1.amazonaws.com/{theirs}: scan on push is off, wanted on: left as it is: the repository was not created by triton-deploy")),
        "{err}"
    );
}

/// The upload session (`/blobs/uploads/<id>`) a logged request is in.
fn session(line: &str) -> Option<&str> {
    let rest = line.split("/blobs/uploads/").nth(1)?;
    Some(rest.split(['?', ' ']).next().unwrap_or(rest))
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn large_uncompressed_layers_stream_while_they_are_hashed_and_one_the_registry_has_is_not_sent()
 {
    // 70 MiB of noise: uncompressed by default and over the size streamed while hashed, which
    // is far under the size that goes in a PATCH when the digest is known first (512 MiB).
    let repo = tempfile::tempdir().unwrap();
    let python = "backend: \"python\"\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n";
    for model in ["code", "weights"] {
        let m = repo.path().join(model);
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::write(m.join("config.pbtxt"), python).unwrap();
        std::fs::write(m.join("1/model.py"), "class TritonPythonModel:\n    pass\n").unwrap();
    }
    std::fs::write(
        repo.path().join("weights/1/weights.bin"),
        noise(70 << 20, 11),
    )
    .unwrap();
    let base = upstream_base(&unique("base"));
    let name = unique("td-test/stream");

    // 1. Cold: the weights go in one PATCH of a session whose PUT names their digest, and the
    //    image reads back to exactly the model's files.
    let proxy = proxy::start(&env("TD_REGISTRY_URL"), proxy::Mode::Pass).await;
    let cache = tempfile::tempdir().unwrap();
    let push = Push::new(repo.path(), cache.path()).into_ecr_via(&name, &base, &proxy.url);
    let r = tokio::task::spawn_blocking(move || push.ok())
        .await
        .unwrap();
    let weights = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "weights")
        .unwrap()
        .clone();
    assert_eq!(weights["compression"], "none");
    assert_eq!(weights["uploaded"], true);
    let digest = weights["digest"].as_str().unwrap().to_string();
    assert!(r["uploaded_bytes"].as_u64().unwrap() >= 70 << 20);
    let log = proxy.log.lock().unwrap().clone();
    let put = log
        .iter()
        .find(|l| {
            l.starts_with("PUT") && l.contains(&format!("digest={}", digest.replace(':', "%3A")))
        })
        .unwrap_or_else(|| panic!("a PUT naming {digest}: {log:?}"));
    let id = session(put).unwrap();
    let patches: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("PATCH") && session(l) == Some(id))
        .collect();
    assert_eq!(
        patches.len(),
        1,
        "one PATCH in the weights' session: {log:?}"
    );
    let image = format!(
        "{}/{name}:{}",
        host(&env("TD_REGISTRY_URL")),
        r["tag"].as_str().unwrap()
    );
    let manifest = skopeo_inspect(&image, "--raw");
    assert_eq!(manifest["layers"][2]["digest"], digest.as_str());
    let bytes = registry_blob(&name, &digest).await;
    let blob = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blob.path(), &bytes).unwrap();
    let mut got = layer_files(blob.path());
    got.sort();
    let mut want = model_files(&repo.path().join("weights"), "weights");
    want.sort();
    assert_eq!(got, want);

    // 2. A cold cache elsewhere (a new CI runner), the same ECR repository: the streamed upload
    //    stalls at the registry, the hash finds the blob already there, and the upload is
    //    cancelled rather than waited for (the stall lasts a minute).
    let proxy = proxy::start(&env("TD_REGISTRY_URL"), proxy::Mode::StallFirstUpload).await;
    let cache = tempfile::tempdir().unwrap();
    let push = Push::new(repo.path(), cache.path()).into_ecr_via(&name, &base, &proxy.url);
    let started = std::time::Instant::now();
    let again = tokio::task::spawn_blocking(move || push.ok())
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "the stalled upload was cancelled, not waited for"
    );
    assert_eq!(again["digest"], r["digest"]);
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    let log = proxy.log.lock().unwrap().clone();
    let stalled = log
        .iter()
        .find(|l| l.starts_with("PATCH"))
        .unwrap_or_else(|| panic!("the weights were streamed: {log:?}"));
    let id = session(stalled).unwrap();
    assert!(
        log.iter()
            .any(|l| l.starts_with("DELETE") && session(l) == Some(id)),
        "the session was cancelled: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.starts_with("PUT") && l.contains("/blobs/")),
        "nothing was put: {log:?}"
    );
}
