//! `render packer` and `ami build` with the real Packer (Debian's 1.6.6, whose amazon-ebs builder
//! runs against moto's EC2): every rendered variant passes `packer validate`; a build pulls the
//! pushed image by digest with ECR's token through the real AWS CLI and Docker Engine, publishes
//! the AMI to the cluster's parameter, `--if-changed` skips a current AMI, and a
//! `compute.ami = "baked"` cluster sees a newly baked AMI as newer. Bad input stops before
//! anything runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// The triton-deploy command (JSON out) with the AWS CLI of the test venv on PATH: the
/// provisioning script logs in with it.
fn td(args: &[&str]) -> (i32, Value, String) {
    td_with(args, &[])
}

/// [`td`] with more environment.
fn td_with(args: &[&str], envs: &[(&str, &str)]) -> (i32, Value, String) {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Ok(aws) = std::env::var("TD_AWS_CLI") {
        let dir = Path::new(&aws).parent().unwrap().display().to_string();
        path = format!("{dir}:{path}");
    }
    let mut all = vec![("PATH", path.as_str()), ("AWS_DEFAULT_REGION", "us-east-1")];
    all.extend_from_slice(envs);
    td_json(args, &all)
}

/// Pushes `repo` onto a small base in the ECR stand-in; returns the image as the registry knows it
/// (`host/repository@digest`: moto's DescribeImages reports a digest of its own, which the
/// registry does not serve).
fn push(repo: &Path, repository: &str) -> String {
    let registry = env("TD_REGISTRY_URL");
    let base = make_base(
        &registry,
        &format!("{repository}-base"),
        "1",
        Some(&format!("{ECR_USER}:{ECR_PASSWORD}")),
    );
    let (code, pushed, stderr) = td(&[
        "push",
        repo.to_str().unwrap(),
        "--repository",
        repository,
        "--base",
        &base,
        "--registry-endpoint",
        &registry,
        "--insecure-registry",
    ]);
    assert_eq!(code, 0, "{pushed}\n{stderr}");
    let digest = pushed["image"]
        .as_str()
        .unwrap()
        .rsplit_once('@')
        .unwrap()
        .1
        .to_string();
    format!("{}/{repository}@{digest}", host(&registry))
}

/// A model repository of one python model; `salt` makes its content (and so its digest) its own.
fn model_repo(dir: &Path, salt: &str) -> PathBuf {
    let repo = dir.join(format!("repo-{salt}"));
    let src = root().join("model-repos/python-backend/text_stats");
    std::fs::create_dir_all(repo.join("text_stats/1")).unwrap();
    let model = std::fs::read_to_string(src.join("1/model.py")).unwrap();
    std::fs::write(
        repo.join("text_stats/1/model.py"),
        format!("{model}\n# {salt}\n"),
    )
    .unwrap();
    std::fs::copy(
        src.join("config.pbtxt"),
        repo.join("text_stats/config.pbtxt"),
    )
    .unwrap();
    repo
}

fn write_spec(path: &Path, name: &str, image: &str, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[service]\nname = \"{name}\"\nregion = \"us-east-1\"\n[image]\nuri = \"{image}\"\nmodel_repository = \"repo-a\"\n[storage]\nefs = false\n{extra}"
        ),
    )
    .unwrap();
}

/// Every file under `dir`, as text, for secret searches.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push_str(&t);
        }
    }
    out
}

/// The AWS CLI of the test venv against the stand-ins.
fn aws_cli(args: &[&str]) -> String {
    let aws = std::env::var("TD_AWS_CLI").unwrap_or_else(|_| "aws".into());
    let out = Command::new(aws)
        .args(args)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ami build -f spec` with the provisioning run here (host paths under `host_root`), through the
/// registry stand-in, with `more` arguments.
fn bake(spec: &str, host_root: &Path, more: &[&str]) -> (i32, Value, String) {
    bake_with(spec, host_root, more, &[])
}

/// [`bake`] with more environment.
fn bake_with(
    spec: &str,
    host_root: &Path,
    more: &[&str],
    envs: &[(&str, &str)],
) -> (i32, Value, String) {
    let registry = env("TD_REGISTRY_URL");
    let mut args = vec![
        "ami",
        "build",
        "-f",
        spec,
        "--registry-endpoint",
        &registry,
        "--provision-here",
        host_root.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    td_with(&args, envs)
}

fn docker_digests(image: &str) -> String {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{.}} {{end}}",
            image,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the local stack, Packer and the Docker Engine: run ./scripts/test.sh"]
fn ami_build_bakes_the_image_publishes_the_ami_and_a_baked_cluster_rolls_onto_it() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let name = unique("bake")
        .replace('-', "")
        .chars()
        .take(18)
        .collect::<String>();
    let repository = unique("bake");
    let image1 = push(&model_repo(dir, "a"), &repository);
    let spec = dir.join("triton-deploy.toml");
    write_spec(&spec, &name, &image1, "");
    let f = spec.to_str().unwrap();

    // The cluster first: the build instance borrows its hosts' instance profile.
    let (code, r, stderr) = td(&["rollout", "-f", f, "--yes", "--timeout", "5"]);
    assert_eq!(code, 0, "{r}\n{stderr}");
    let first_ami = r["ami"].as_str().unwrap().to_string();

    // The build: Packer's amazon-ebs against moto, the provisioning run here (no instance).
    let host_root = dir.join("host");
    let agent_state = host_root.join("var/lib/ecs/data/ecs_agent_data.json");
    std::fs::create_dir_all(agent_state.parent().unwrap()).unwrap();
    std::fs::write(&agent_state, "{\"Cluster\": \"default\"}").unwrap();
    let template = dir.join("template");
    let (code, built, stderr) = bake(f, &host_root, &["--out", template.to_str().unwrap()]);
    assert_eq!(code, 0, "{built}\n{stderr}");
    assert_eq!(built["built"], true, "{built}");
    let ami1 = built["ami"].as_str().unwrap().to_string();
    assert!(ami1.starts_with("ami-") && ami1 != first_ami, "{built}");
    assert_eq!(
        built["source_ami"], first_ami,
        "baked on the spec's base: {built}"
    );
    assert_eq!(built["models"], serde_json::json!(["text_stats"]));
    assert_eq!(
        built["reasons"],
        serde_json::json!(["no AMI is baked for the cluster yet"])
    );
    assert!(
        built["packer"].as_str().unwrap().starts_with("1.6.6"),
        "the Packer that ran: {built}"
    );
    // What the provisioning did: the image by digest in Docker, prefer-cached, no agent state.
    let digest1 = image1.rsplit_once('@').unwrap().1;
    assert!(
        docker_digests(&image1).contains(&format!("@{digest1}")),
        "{}",
        docker_digests(&image1)
    );
    let config = std::fs::read_to_string(host_root.join("etc/ecs/ecs.config")).unwrap();
    assert_eq!(config, "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\n");
    assert!(!agent_state.exists(), "the agent's state is removed");
    // The template pulls by digest, and no credential is anywhere: not in the template, the
    // host's files, or what was printed.
    let t = std::fs::read_to_string(template.join("triton-ami.pkr.hcl")).unwrap();
    assert!(t.contains(&format!("default = \"{image1}\"")), "{t}");
    let everything = format!(
        "{}{}{built}{stderr}",
        all_text(&template),
        all_text(&host_root)
    );
    assert!(!everything.contains(ECR_PASSWORD), "the ECR token leaked");
    assert!(!everything.contains("testing"), "the AWS keys leaked");

    // Built again with nothing new: the AMI in the parameter holds this base and image.
    let (code, again, stderr) = bake(f, &host_root, &["--if-changed"]);
    assert_eq!(code, 0, "{again}\n{stderr}");
    assert_eq!(again["built"], false, "current: nothing built: {again}");
    assert_eq!(again["ami"], ami1.as_str());

    // The cluster onto the baked AMI.
    write_spec(&spec, &name, &image1, "[compute]\nami = \"baked\"\n");
    let (code, plan, stderr) = td(&["rollout", "-f", f, "--plan"]);
    assert_eq!(code, 2, "{plan}\n{stderr}");
    assert_eq!(plan["ami"], ami1.as_str(), "{plan}");
    assert_eq!(plan["ami_update"]["from"], first_ami.as_str(), "{plan}");
    let (code, r, stderr) = td(&["rollout", "-f", f, "--yes", "--timeout", "5"]);
    assert_eq!(code, 0, "{r}\n{stderr}");
    // The launch template's AMI parameter resolved to the baked AMI (moto shows the resolved
    // value where CloudFormation shows it as ResolvedValue).
    let stack = r["stack"].as_str().unwrap();
    let params = aws_cli(&[
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        stack,
        "--query",
        "Stacks[0].Parameters[?ParameterKey=='AmiId'].[ParameterValue,ResolvedValue]",
        "--output",
        "text",
    ]);
    assert!(params.contains(&ami1), "{params}");

    // A new image: --if-changed builds, and the cluster sees the newer baked AMI.
    let (code, st, stderr) = td(&["status", "-f", f]);
    assert_eq!(code, 0, "{st}\n{stderr}");
    assert_eq!(st["baked_ami"]["ami"], ami1.as_str(), "{st}");
    assert_eq!(st["baked_ami"]["image_digest"], digest1, "{st}");
    assert_eq!(st["baked_ami"]["models"], "text_stats", "{st}");
    assert_eq!(st["baked_ami"]["behind"], serde_json::json!([]), "{st}");
    let image2 = push(&model_repo(dir, "b"), &repository);
    write_spec(&spec, &name, &image2, "[compute]\nami = \"baked\"\n");
    // `status` says the baked AMI is behind the new image.
    let (_, st, _) = td(&["status", "-f", f]);
    let behind = st["baked_ami"]["behind"].to_string();
    assert!(behind.contains("the newest image is sha256:"), "{st}");
    // And a rollout of the new image says new hosts would pull it.
    let (_, plan, _) = td(&["rollout", "-f", f, "--plan"]);
    let warning = plan["not_baked"].as_str().unwrap_or_default();
    assert!(
        warning.contains(&ami1) && warning.contains(&format!("not {image2}")),
        "{plan}"
    );
    let (code, rebuilt, stderr) = bake(f, &host_root, &["--if-changed"]);
    assert_eq!(code, 0, "{rebuilt}\n{stderr}");
    assert_eq!(rebuilt["built"], true, "{rebuilt}");
    assert_eq!(rebuilt["previous_ami"], ami1.as_str(), "{rebuilt}");
    let why = rebuilt["reasons"].to_string();
    assert!(why.contains("the newest image is sha256:"), "{why}");
    let ami2 = rebuilt["ami"].as_str().unwrap().to_string();
    let (code, plan, stderr) = td(&["rollout", "-f", f, "--plan"]);
    assert_eq!(code, 2, "{plan}\n{stderr}");
    // (moto keeps a stack's tags of its creation through change sets, so `from` is the AMI the
    // stack was created with here; AWS would say the first baked AMI.)
    assert_ne!(plan["ami_update"]["from"], ami2.as_str(), "{plan}");
    assert!(
        plan.get("not_baked").is_none(),
        "the image is baked now: {plan}"
    );
    assert_eq!(plan["ami_update"]["to"], ami2.as_str(), "{plan}");

    for image in [&image1, &image2] {
        let _ = Command::new("docker").args(["rmi", "-f", image]).output();
    }
}

#[test]
#[ignore = "needs the local stack and Packer: run ./scripts/test.sh"]
fn every_rendered_packer_template_passes_packer_validate() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let repository = unique("render-bake");
    // The image in the ECR stand-in, as the spec's repository's newest.
    let _ = push(&model_repo(dir, "a"), &repository);
    let variants = [
        "[ami]\ninstance_profile = \"bake-profile\"\n",
        "[ami]\ninstance_profile = \"bake-profile\"\nbase = \"al2-gpu\"\nsubnet = \"subnet-0abc\"\nvolume_iops = 6000\nvolume_throughput = 700\ninstance_type = \"g6.xlarge\"\n",
        "[compute]\nami = \"baked\"\nroot_volume_gib = 400\n[ami]\ninstance_profile = \"bake-profile\"\nbase = \"/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id\"\n",
    ];
    for (i, v) in variants.iter().enumerate() {
        let spec = dir.join(format!("v{i}.toml"));
        let text = format!(
            "[service]\nname = \"pk{i}\"\nregion = \"us-east-1\"\n[image]\nrepository = \"{repository}\"\nmodel_repository = \"repo-a\"\n{v}"
        );
        std::fs::write(&spec, &text).unwrap();
        for version in ["1.6", "1.11"] {
            let out = dir.join(format!("v{i}-{version}"));
            let (code, r, stderr) = td(&[
                "render",
                "packer",
                "-f",
                spec.to_str().unwrap(),
                "--for-packer",
                version,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert_eq!(code, 0, "{text}\n{r}\n{stderr}");
            let t = std::fs::read_to_string(out.join("triton-ami.pkr.hcl")).unwrap();
            // The image by digest, as the repository's newest.
            let image = t
                .split("variable \"image\" {")
                .nth(1)
                .and_then(|b| b.split("default = \"").nth(1))
                .and_then(|d| d.split('"').next())
                .unwrap();
            assert!(image.contains(&format!("/{repository}@sha256:")), "{image}");
            assert!(!all_text(&out).contains(ECR_PASSWORD));
            if version == "1.6" {
                assert!(!out.join("plugins.pkr.hcl").exists());
                let v = Command::new("packer")
                    .args(["validate"])
                    .arg(&out)
                    .env("CHECKPOINT_DISABLE", "1")
                    .output()
                    .unwrap();
                assert!(
                    v.status.success(),
                    "packer validate {}:\n{}{}\n{t}",
                    out.display(),
                    String::from_utf8_lossy(&v.stdout),
                    String::from_utf8_lossy(&v.stderr)
                );
            } else {
                let plugins = std::fs::read_to_string(out.join("plugins.pkr.hcl")).unwrap();
                assert!(plugins.contains("required_plugins"), "{plugins}");
                assert!(t.contains("http_tokens = \"required\""), "{t}");
            }
        }
    }
}

#[test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
fn ami_build_refuses_bad_input_before_anything_runs() {
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("t.toml");
    // Packer missing: said first, with where to get it.
    std::fs::write(
        &spec,
        "[service]\nname = \"nopacker\"\n[image]\nrepository = \"x\"\n",
    )
    .unwrap();
    let f = spec.to_str().unwrap();
    let (code, r, _) = td(&["ami", "build", "-f", f, "--packer", "/nonexistent/packer"]);
    assert_eq!(code, 1, "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("/nonexistent/packer") && m.contains("Packer 1.7 or newer"),
        "{m}"
    );

    // A spec without an image.
    std::fs::write(&spec, "[service]\nname = \"noimage\"\n").unwrap();
    let (code, r, _) = td(&["ami", "build", "-f", f]);
    assert_eq!(code, 1, "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(m.contains("no image: pass --image"), "{m}");

    // An image that was never pushed.
    let never = unique("never-pushed");
    std::fs::write(
        &spec,
        format!("[service]\nname = \"never\"\n[image]\nrepository = \"{never}\"\n"),
    )
    .unwrap();
    let (code, r, _) = td(&["ami", "build", "-f", f]);
    assert_eq!(code, 1, "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&never) && m.contains("triton-deploy push"),
        "{m}"
    );

    // A spec error names the file, line and key.
    std::fs::write(
        &spec,
        "[service]\nname = \"badami\"\n[ami]\nvolume_iops = 2000\n",
    )
    .unwrap();
    let (code, r, _) = td(&["ami", "build", "-f", f]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["error"]["line"], 4, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ami.volume_iops"),
        "{r}"
    );
}

/// EC2's answer to an Enable/DisableFastSnapshotRestores that succeeded (the EC2 stand-in does not
/// have the call; the proxy answers it and records what was sent).
fn fsr_answer(action: &str, _body: &[u8]) -> Option<(u16, String)> {
    matches!(
        action,
        "EnableFastSnapshotRestores" | "DisableFastSnapshotRestores"
    )
    .then(|| {
        (
            200,
            format!(
                "<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><successful/><unsuccessful/></{action}Response>"
            ),
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack, Packer and the Docker Engine: run ./scripts/test.sh"]
async fn fast_snapshot_restore_goes_on_for_the_new_ami_and_off_for_the_previous() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let repository = unique("fsr");
    let image = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let repository = repository.clone();
        move || push(&model_repo(&dir, "a"), &repository)
    })
    .await
    .unwrap();
    let profile = unique("fsr-profile");
    aws_cli(&[
        "iam",
        "create-instance-profile",
        "--instance-profile-name",
        &profile,
    ]);
    let name = unique("fsr")
        .replace('-', "")
        .chars()
        .take(18)
        .collect::<String>();
    let spec = dir.join("triton-deploy.toml");
    write_spec(
        &spec,
        &name,
        &image,
        &format!(
            "[compute]\nami = \"baked\"\nfast_snapshot_restore = [\"us-east-1a\", \"us-east-1b\"]\n[ami]\ninstance_profile = \"{profile}\"\n"
        ),
    );
    let proxy = proxy::start_with(
        &env("TD_MOTO_URL"),
        proxy::Mode::Pass,
        proxy::Hooks {
            answer: Some(std::sync::Arc::new(fsr_answer)),
            rewrite: None,
        },
    )
    .await;
    let host_root = dir.join("host");
    let build = |url: String| {
        let spec = spec.clone();
        let host_root = host_root.clone();
        tokio::task::spawn_blocking(move || {
            bake_with(
                spec.to_str().unwrap(),
                &host_root,
                &[],
                &[("AWS_ENDPOINT_URL", url.as_str())],
            )
        })
    };
    let (code, first, stderr) = build(proxy.url.clone()).await.unwrap();
    assert_eq!(code, 0, "{first}\n{stderr}");
    assert_eq!(
        first["fast_snapshot_restore"],
        serde_json::json!(["us-east-1a", "us-east-1b"]),
        "{first}"
    );
    assert_eq!(first["warnings"], serde_json::json!([]), "{first}");
    let enabled = proxy.sent_form("EnableFastSnapshotRestores");
    assert_eq!(enabled.len(), 1, "{enabled:?}");
    let e = &enabled[0];
    assert!(
        e.contains("AvailabilityZone.1=us-east-1a") && e.contains("AvailabilityZone.2=us-east-1b"),
        "{e}"
    );
    assert!(e.contains("SourceSnapshotId.1=snap-"), "{e}");
    assert!(proxy.sent_form("DisableFastSnapshotRestores").is_empty());

    // Built again: on for the new AMI's snapshot, off for the previous one's (it is billed).
    let (code, second, stderr) = build(proxy.url.clone()).await.unwrap();
    assert_eq!(code, 0, "{second}\n{stderr}");
    assert_eq!(second["previous_ami"], first["ami"], "{second}");
    let enabled = proxy.sent_form("EnableFastSnapshotRestores");
    let disabled = proxy.sent_form("DisableFastSnapshotRestores");
    assert_eq!(
        (enabled.len(), disabled.len()),
        (2, 1),
        "{enabled:?} {disabled:?}"
    );
    let snapshot = |form: &str| {
        form.split('&')
            .find_map(|kv| kv.strip_prefix("SourceSnapshotId.1="))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        snapshot(&disabled[0]),
        snapshot(&enabled[0]),
        "the first AMI's snapshot"
    );
    assert_ne!(snapshot(&enabled[1]), snapshot(&enabled[0]));
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output();
}
