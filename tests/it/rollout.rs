//! `triton-deploy rollout` (the infra stack) against moto through a recording, fault-injecting proxy:
//! the plan changes nothing, the apply creates the resources, a second run makes no mutating call,
//! throttling converges, and preflight failures stop before any change.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;

use crate::support::*;

fn spec(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!("[service]\nname = \"{name}\"\nregion = \"us-east-1\"\n[image]\nuri = \"registry.example.com/team/triton:1\"\n{extra}"),
    )
    .unwrap();
    p
}

fn rollout(endpoint: &str, args: &[&str], spec: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .arg("rollout")
        .args(args)
        .arg("-f")
        .arg(spec)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_REGION")
        .output()
        .unwrap()
}

async fn stack_status(name: &str) -> Option<String> {
    let url = env("TD_MOTO_URL");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/cloudformation/aws4_request, SignedHeaders=host, Signature=0")
        .body(format!("Action=DescribeStacks&Version=2010-05-15&StackName={name}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    resp.split("<StackStatus>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .map(str::to_string)
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn plan_then_apply_then_a_second_rollout_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("svc")
        .replace('-', "")
        .chars()
        .take(20)
        .collect::<String>();
    // `run --out`'s report says the models took 95 s to load, more than the grace period.
    std::fs::write(
        dir.path().join("run.json"),
        serde_json::json!({"time_to_ready": {"pull_seconds": 1.0, "pulled": true,
            "image_bytes": 8u64 << 30, "start_seconds": 5.0, "load_seconds": 90.0,
            "ready_seconds": 95.0, "total_seconds": 96.0}})
        .to_string(),
    )
    .unwrap();
    let spec = spec(
        dir.path(),
        &name,
        "[compute]\nmax_instances = 3\n[task]\nhealth_check_grace_seconds = 60\nrun_result = \"run.json\"\n",
    );
    let stack = format!("triton-deploy-{name}-gpu");
    let moto = env("TD_MOTO_URL");

    // Plan: lists additions, exits 2, leaves no stack behind.
    let out = rollout(&moto, &["--plan"], &spec);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    for r in [
        "Cluster",
        "AutoScalingGroup",
        "CapacityProvider",
        "LoadBalancer",
        "TargetGroup",
        "FileSystem",
        "AccessPoint",
        "LaunchTemplate",
    ] {
        assert!(
            t.lines()
                .any(|l| l.trim_start().starts_with("add") && l.contains(&format!(" {r} "))),
            "plan adds {r}:\n{t}"
        );
    }
    assert_eq!(stack_status(&stack).await, None, "a plan creates nothing");

    // Apply.
    let out = rollout(&moto, &["--yes", "--timeout", "5"], &spec);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stack_status(&stack).await.as_deref(),
        Some("CREATE_COMPLETE")
    );
    let clusters = moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.DescribeClusters",
        serde_json::json!({"clusters": [format!("{name}-gpu")], "include": ["TAGS"]}),
    )
    .await;
    assert_eq!(clusters["clusters"][0]["status"], "ACTIVE", "{clusters}");

    // A second rollout, recorded at the wire: no mutating call, and --plan exits 0.
    let proxy = proxy::start(&moto, proxy::Mode::Pass).await;
    let url = proxy.url.clone();
    let spec2 = spec.clone();
    let out = tokio::task::spawn_blocking(move || rollout(&url, &["--plan"], &spec2))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no changes"));
    // The grace period is checked against the measured time to ready, and a proposal made.
    assert!(
        text(&out).contains("warning: task.health_check_grace_seconds = 60 is below the measured time to ready (95.0 s)"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("proposed 160 s"), "{}", text(&out));
    assert!(
        text(&out).contains("8192 MiB, about 137 s"),
        "{}",
        text(&out)
    );
    let log = proxy.log.lock().unwrap().clone();
    let mutations: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.split(' ')
                .nth(2)
                .is_some_and(|a| MUTATING.iter().any(|m| a.starts_with(m)))
        })
        .collect();
    assert!(mutations.is_empty(), "mutating calls: {mutations:?}");
    assert!(log.len() <= 25, "{} calls: {log:?}", log.len());
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn throttling_and_server_errors_on_one_call_in_ten_still_converge() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("thr")
        .replace('-', "")
        .chars()
        .take(20)
        .collect::<String>();
    let spec = spec(dir.path(), &name, "[storage]\nefs = false\n");
    let proxy = proxy::start(&env("TD_MOTO_URL"), proxy::Mode::FailEvery(10)).await;
    let url = proxy.url.clone();
    let out =
        tokio::task::spawn_blocking(move || rollout(&url, &["--yes", "--timeout", "5"], &spec))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.faults.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        stack_status(&format!("triton-deploy-{name}-gpu"))
            .await
            .as_deref(),
        Some("CREATE_COMPLETE")
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn preflight_failures_say_what_to_change_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let moto = env("TD_MOTO_URL");
    let cases = [
        // EC2 knows a gr6.4xlarge has one GPU (the spec's own table does not list the type).
        (
            "[compute]\ninstance_type = \"gr6.4xlarge\"\n[task]\ngpus = 2\n",
            "a gr6.4xlarge has 1 GPU(s)",
        ),
        (
            "[compute]\ninstance_type = \"g4ad.xlarge\"\n",
            "EC2 does not know the instance type g4ad.xlarge",
        ),
        // Several types: EC2 says a gr6.8xlarge has 1 GPU, a g5.12xlarge (the spec's own table
        // does not list gr6) 4.
        (
            "[compute]\ninstance_type = \"g5.12xlarge\"\ninstance_types = [\"gr6.8xlarge\"]\n[task]\ngpus = 1\n",
            "gr6.8xlarge has 1 GPU(s) and g5.12xlarge 4: compute.instance_types need the same GPU count",
        ),
        (
            "[compute]\ninstance_types = [\"g5.xlarge\", \"g4ad.xlarge\"]\n",
            "EC2 does not know the instance type g4ad.xlarge in this region: check compute.instance_types",
        ),
        (
            "[compute]\nami = \"/triton/test/no-such-parameter\"\n",
            "the AMI parameter /triton/test/no-such-parameter does not exist",
        ),
        (
            "[compute]\nami = \"ami-0000000000000dead\"\n",
            "AMI ami-0000000000000dead does not exist",
        ),
        (
            "[network]\nvpc_id = \"vpc-00000000\"\nsubnets = [\"subnet-1\", \"subnet-2\"]\n",
            "VPC vpc-00000000 does not exist in this region",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let name = format!("pf{i}{}", std::process::id());
        let spec = spec(dir.path(), &name, extra);
        let out = rollout(&moto, &["--yes"], &spec);
        assert_eq!(out.status.code(), Some(1), "case {i}: {}", text(&out));
        assert!(
            text(&out).contains(want),
            "case {i}: expected '{want}' in {}",
            text(&out)
        );
        assert_eq!(
            stack_status(&format!("triton-deploy-{name}-gpu")).await,
            None,
            "case {i} changed nothing"
        );
    }
    // A bad spec fails with its file and line before any AWS call.
    let bad = spec(dir.path(), "badspec", "[compute]\nmax_instance = 3\n");
    let out = rollout("http://127.0.0.1:9", &["--plan"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!(
            "{}:7:1: max_instance: unknown field",
            bad.display()
        )),
        "{}",
        text(&out)
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_newer_ami_behind_the_parameter_is_reported_and_planned() {
    // Two real AMIs from the stand-in's public GPU and standard parameters.
    let get = |name: &'static str| async move {
        moto_json(
            "ssm",
            "AmazonSSM.GetParameter",
            serde_json::json!({"Name": name}),
        )
        .await["Parameter"]["Value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old =
        get("/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id").await;
    let new = get("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id").await;
    assert_ne!(old, new);
    let param = format!("/triton/test/ami-{}", std::process::id());
    let put = |value: String| {
        let param = param.clone();
        async move {
            moto_json("ssm", "AmazonSSM.PutParameter", serde_json::json!({"Name": param, "Value": value, "Type": "String", "DataType": "aws:ec2:image", "Overwrite": true})).await
        }
    };
    put(old.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let name = unique("ami")
        .replace('-', "")
        .chars()
        .take(20)
        .collect::<String>();
    let spec = spec(
        dir.path(),
        &name,
        &format!("[compute]\nami = \"{param}\"\n[storage]\nefs = false\n"),
    );
    let moto = env("TD_MOTO_URL");
    let out = rollout(&moto, &["--yes", "--timeout", "5"], &spec);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = rollout(&moto, &["--plan"], &spec);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("GPU AMI update"));

    put(new.clone()).await;
    let out = rollout(&moto, &["--plan", "--format", "json"], &spec);
    let t = text(&out);
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{t}"));
    assert_eq!(
        doc["ami_update"],
        serde_json::json!({"from": old, "to": new}),
        "{t}"
    );
    assert_eq!(doc["ami"], new);

    // status says the same: the hosts run the old AMI, a newer one is out.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["status", "--format", "json", "-f"])
        .arg(&spec)
        .env("AWS_ENDPOINT_URL", &moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let st: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(st["ami"], old, "{st}");
    assert_eq!(
        st["ami_update"],
        serde_json::json!({"from": old, "to": new}),
        "{st}"
    );
}

/// `rollout --plan` with `env` as the whole environment (and PATH), its output as text.
async fn plan_with_env(
    spec: &Path,
    env: Vec<(&'static str, String)>,
) -> (Option<i32>, String, usize) {
    let spec = spec.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(["--format", "json", "rollout", "--plan", "-f"])
            .arg(&spec)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout_lines = String::from_utf8_lossy(&out.stdout).lines().count();
    (out.status.code(), text(&out), stdout_lines)
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn missing_expired_refused_and_denied_credentials_say_what_to_do_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), &unique("cred"), "");
    let home = tempfile::tempdir().unwrap();
    let base = |endpoint: &str| {
        vec![
            ("HOME", home.path().display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ]
    };
    // No credentials anywhere: what was tried, what to do; not the SDK's structure.
    let (code, out, _) = plan_with_env(&spec, base(&env("TD_MOTO_URL"))).await;
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no AWS credentials found: tried the environment"),
        "{msg}"
    );
    assert!(msg.contains("aws sso login"), "{msg}");
    assert!(
        !out.contains("DispatchFailure") && !out.contains("ProviderChainError"),
        "{out}"
    );

    // AWS refusing the call: access denied names the action (AWS's own words) and the way out.
    for (code_name, expect) in [
        (
            "AccessDenied",
            "access denied: the caller's IAM policy needs this action",
        ),
        ("ExpiredToken", "the AWS credentials have expired"),
        ("InvalidClientTokenId", "the AWS credentials were refused"),
    ] {
        let hooks = proxy::Hooks {
            answer: Some(std::sync::Arc::new(move |action, _| {
                (action == "DescribeStacks").then(|| {
                    (403, format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code_name}</Code><Message>User: arn:aws:iam::123456789012:user/ci is not authorized to perform: cloudformation:DescribeStacks</Message></Error><RequestId>r</RequestId></ErrorResponse>"))
                })
            })),
            rewrite: None,
        };
        let proxy = proxy::start_with(&env("TD_MOTO_URL"), proxy::Mode::Pass, hooks).await;
        let mut e = base(&proxy.url);
        e.push(("AWS_ACCESS_KEY_ID", "testing".into()));
        e.push(("AWS_SECRET_ACCESS_KEY", "testing".into()));
        let (code, out, documents) = plan_with_env(&spec, e).await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(expect), "{code_name}: {out}");
        assert!(
            out.contains("CloudFormation DescribeStacks failed")
                && out.contains("cloudformation:DescribeStacks"),
            "{out}"
        );
        assert_eq!(documents, 1, "one JSON document: {out}");
    }
}
