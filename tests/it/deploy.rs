//! The service half of `rollout`, `status`, `rollback` and `destroy` against moto, asserted at the
//! wire through a recording proxy (moto drops several `CreateService` fields, and its deployments
//! never progress: where a test needs ECS's real deployment behaviour, the proxy rewrites moto's
//! `DescribeServices` answer the way ECS would answer).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use serde_json::{Value, json};

fn short_name(prefix: &str) -> String {
    unique(prefix).replace('-', "").chars().take(18).collect()
}

fn write_spec(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[service]\nname = \"{name}\"\nregion = \"us-east-1\"\n[image]\nrepository = \"{name}/triton\"\n{extra}"
        ),
    )
    .unwrap();
    p
}

/// The command `triton-deploy <args> -f <spec>` against `endpoint`, with test credentials.
fn command(endpoint: &str, args: &[&str], spec: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"));
    c.args(args)
        .arg("-f")
        .arg(spec)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_REGION");
    c
}

fn cli(endpoint: &str, args: &[&str], spec: &Path) -> Output {
    command(endpoint, args, spec).output().unwrap()
}

async fn cli_async(endpoint: &str, args: &[&str], spec: &Path) -> Output {
    let (e, a, s) = (
        endpoint.to_string(),
        args.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        spec.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        cli(&e, &a, &s)
    })
    .await
    .unwrap()
}

/// Puts an image into moto's ECR repository `repo` (created if needed); returns moto's digest.
async fn put_image(repo: &str, tag: &str, layer: &str) -> String {
    let _ = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.CreateRepository",
        json!({"repositoryName": repo}),
    )
    .await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{layer}"), "size": 10}]
    });
    let out = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.PutImage",
        json!({"repositoryName": repo, "imageManifest": manifest.to_string(), "imageTag": tag}),
    )
    .await;
    if out["__type"] == "ImageAlreadyExistsException" {
        // Put by an earlier run against the same stand-in.
        let d = moto_json(
            "ecr",
            "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
            json!({"repositoryName": repo, "imageIds": [{"imageTag": tag}]}),
        )
        .await;
        return d["imageDetails"][0]["imageDigest"]
            .as_str()
            .unwrap_or_else(|| panic!("DescribeImages: {d}"))
            .to_string();
    }
    out["image"]["imageId"]["imageDigest"]
        .as_str()
        .unwrap_or_else(|| panic!("PutImage: {out}"))
        .to_string()
}

/// Rewrites DescribeServices the way ECS answers after the circuit breaker rolled a deployment
/// back: the old revision is PRIMARY again, the new deployment FAILED.
fn rolled_back() -> proxy::Hooks {
    proxy::Hooks {
        answer: None,
        rewrite: Some(Arc::new(move |action, _req, body| {
            if action != "DescribeServices" {
                return body;
            }
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            for s in v["services"].as_array_mut().into_iter().flatten() {
                let Some(d) = s["deployments"].get(0).cloned() else {
                    continue;
                };
                if d["taskDefinition"] == s["taskDefinition"] {
                    continue;
                }
                let mut failed = d.clone();
                failed["status"] = json!("ACTIVE");
                failed["taskDefinition"] = s["taskDefinition"].clone();
                failed["rolloutState"] = json!("FAILED");
                failed["rolloutStateReason"] =
                    json!("ECS deployment circuit breaker: tasks failed to start.");
                failed["runningCount"] = json!(0);
                s["taskDefinition"] = d["taskDefinition"].clone();
                s["deployments"] = json!([d, failed]);
            }
            serde_json::to_vec(&v).unwrap()
        })),
    }
}

/// Nothing tagged for the service is left, except what the emulator keeps after deletion: the
/// deleted service (INACTIVE; ECS forgets it later) and the instances of the deleted Auto
/// Scaling group (moto does not terminate them; AWS does).
async fn assert_nothing_left(name: &str) {
    let left: Vec<String> = tagged_resources(name)
        .await
        .into_iter()
        .filter(|arn| !arn.contains(":instance/"))
        .collect();
    for arn in &left {
        assert!(arn.contains(":service/"), "left behind: {left:?}");
        let svc = moto_json(
            "ecs",
            "AmazonEC2ContainerServiceV20141113.DescribeServices",
            json!({"cluster": format!("{name}-gpu"), "services": [arn]}),
        )
        .await;
        assert_eq!(svc["services"][0]["status"], "INACTIVE", "{svc}");
    }
}

async fn tagged_resources(service: &str) -> Vec<String> {
    let out = moto_json(
        "tagging",
        "ResourceGroupsTaggingAPI_20170126.GetResources",
        json!({"TagFilters": [{"Key": "triton-deploy:service", "Values": [service]}]}),
    )
    .await;
    out["ResourceTagMappingList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ResourceARN"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn rollout_deploys_the_service_then_plans_nothing_then_status_then_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let name = short_name("dep");
    let spec = write_spec(
        dir.path(),
        &name,
        "[task]\nshm_size_mib = 1024\nhealth_check_grace_seconds = 900\nenable_exec = true\n[autoscaling]\nmin_tasks = 1\nmax_tasks = 1\ntarget_requests_per_task = 450\ncpu_target = 70\nscale_in_cooldown_seconds = 600\n",
    );
    let moto = env("TD_MOTO_URL");
    let repo = format!("{name}/triton");
    let digest = put_image(&repo, "v1", &"a".repeat(64)).await;

    let proxy = proxy::start(&moto, proxy::Mode::Pass).await;
    let out = cli_async(
        &proxy.url,
        &[
            "rollout",
            "--yes",
            "--timeout",
            "5",
            "--poll",
            "1",
            "--format",
            "json",
        ],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json_of(&out);
    let service = &report["service"];
    assert_eq!(service["image"]["source"], format!("newest in {repo}"));
    assert!(
        service["image"]["uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{repo}@{digest}")),
        "{service}"
    );
    assert_eq!(service["service"]["action"], "create");
    assert_eq!(service["autoscaling"]["action"], "create");
    assert!(report["wait"]["seconds"].is_number(), "{report}");
    assert!(
        report["endpoint"].as_str().unwrap().starts_with("http://"),
        "{report}"
    );

    // What was sent, field by field (moto drops half of CreateService).
    let td = &proxy.sent("RegisterTaskDefinition")[0];
    let c = &td["containerDefinitions"][0];
    assert_eq!(td["family"], format!("triton-{name}"));
    assert_eq!(td["requiresCompatibilities"], json!(["EC2"]));
    assert_eq!(td["networkMode"], "awsvpc");
    assert!(c["image"].as_str().unwrap().ends_with(&digest));
    assert_eq!(
        c["resourceRequirements"],
        json!([{"type": "GPU", "value": "1"}])
    );
    assert_eq!(c["linuxParameters"]["sharedMemorySize"], 1024);
    assert_eq!(c["linuxParameters"]["initProcessEnabled"], true);
    assert_eq!(
        c["ulimits"],
        json!([{"name": "memlock", "softLimit": -1, "hardLimit": -1}, {"name": "stack", "softLimit": 67108864, "hardLimit": 67108864}])
    );
    assert_eq!(c["portMappings"][1]["appProtocol"], "grpc");
    assert_eq!(c["healthCheck"]["startPeriod"], 300);
    assert_eq!(c["logConfiguration"]["logDriver"], "awslogs");
    let efs = &td["volumes"][0]["efsVolumeConfiguration"];
    assert_eq!(efs["transitEncryption"], "ENABLED");
    assert_eq!(efs["authorizationConfig"]["iam"], "ENABLED");
    assert!(
        efs["authorizationConfig"]["accessPointId"]
            .as_str()
            .unwrap()
            .starts_with("fsap-")
    );
    assert!(
        td["executionRoleArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::")
    );

    let cs = &proxy.sent("CreateService")[0];
    assert_eq!(cs["serviceName"], name);
    assert_eq!(
        cs["capacityProviderStrategy"],
        json!([{"capacityProvider": format!("td-{name}-gpu"), "weight": 1, "base": 1}])
    );
    assert_eq!(
        cs["deploymentConfiguration"]["deploymentCircuitBreaker"],
        json!({"enable": true, "rollback": true})
    );
    assert_eq!(cs["deploymentConfiguration"]["minimumHealthyPercent"], 100);
    assert_eq!(cs["deploymentConfiguration"]["maximumPercent"], 200);
    assert_eq!(cs["healthCheckGracePeriodSeconds"], 900);
    assert_eq!(
        cs["placementStrategy"],
        json!([{"type": "spread", "field": "attribute:ecs.availability-zone"}, {"type": "binpack", "field": "memory"}])
    );
    assert_eq!(cs["loadBalancers"][0]["containerName"], "triton");
    assert_eq!(cs["loadBalancers"][0]["containerPort"], 8000);
    assert_eq!(cs["propagateTags"], "SERVICE");
    assert_eq!(cs["enableECSManagedTags"], true);
    assert!(
        cs.get("launchType").is_none(),
        "launch type and capacity providers exclude each other"
    );
    // One subnet per zone offering the instance type (the default VPC has several).
    assert!(
        cs["networkConfiguration"]["awsvpcConfiguration"]["subnets"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    let rst = &proxy.sent("RegisterScalableTarget")[0];
    assert_eq!(rst["ResourceId"], format!("service/{name}-gpu/{name}"));
    assert_eq!(
        (rst["MinCapacity"].clone(), rst["MaxCapacity"].clone()),
        (json!(1), json!(1))
    );
    let policies = proxy.sent("PutScalingPolicy");
    assert_eq!(policies.len(), 2, "{policies:?}");
    let psp = &policies[0];
    let tt = &psp["TargetTrackingScalingPolicyConfiguration"];
    assert_eq!(tt["TargetValue"], 450.0);
    assert_eq!(
        (
            tt["ScaleInCooldown"].clone(),
            tt["ScaleOutCooldown"].clone()
        ),
        (json!(600), json!(60))
    );
    let cpu = &policies[1]["TargetTrackingScalingPolicyConfiguration"];
    assert_eq!(cpu["TargetValue"], 70.0);
    assert_eq!(
        cpu["PredefinedMetricSpecification"]["PredefinedMetricType"],
        "ECSServiceAverageCPUUtilization"
    );
    assert_eq!(cs["enableExecuteCommand"], true);
    let metric = &tt["PredefinedMetricSpecification"];
    assert_eq!(metric["PredefinedMetricType"], "ALBRequestCountPerTarget");
    let label = metric["ResourceLabel"].as_str().unwrap();
    assert!(
        label.starts_with("app/") && label.contains("/targetgroup/"),
        "{label}"
    );

    // The same spec again: nothing to change, and nothing mutating at the wire.
    let proxy2 = proxy::start(&moto, proxy::Mode::Pass).await;
    let out = cli_async(&proxy2.url, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("service: no changes"), "{}", text(&out));
    assert_eq!(proxy2.mutations(), Vec::<String>::new());
    assert!(proxy2.actions().len() <= 25, "{:?}", proxy2.actions());

    // A change made outside the tool (another security group on the tasks, from the console)
    // is seen and repaired, though the configuration-hash tag still says what was applied.
    let svc = moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.DescribeServices",
        json!({"cluster": format!("{name}-gpu"), "services": [name]}),
    )
    .await;
    let mut network = svc["services"][0]["networkConfiguration"].clone();
    network["awsvpcConfiguration"]["securityGroups"] = json!(["sg-0123456789abcdef0"]);
    moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.UpdateService",
        json!({"cluster": format!("{name}-gpu"), "service": name, "networkConfiguration": network}),
    )
    .await;
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "drift: {}", text(&out));
    assert!(
        text(&out).contains("securityGroups") && text(&out).contains("sg-0123456789abcdef0"),
        "{}",
        text(&out)
    );
    let out = cli_async(&moto, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "repaired: {}", text(&out));

    // Dropping the CPU policy from the spec is planned as its removal.
    let text_spec = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text_spec.replace("cpu_target = 70\n", "")).unwrap();
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "triton-deploy-{name}-cpu: ECSServiceAverageCPUUtilization -> -"
        )),
        "{}",
        text(&out)
    );
    std::fs::write(&spec, text_spec).unwrap();

    // Status.
    let out = cli_async(&moto, &["status", "--format", "json"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = json_of(&out);
    assert_eq!(st["stack_status"], "CREATE_COMPLETE");
    assert_eq!(st["service"]["state"], "steady", "{st}");
    assert_eq!(st["service"]["running"], 1);
    assert!(st["service"]["image"].as_str().unwrap().ends_with(&digest));
    assert_eq!(st["service"]["autoscaling"]["target"], 450.0);
    assert!(st["endpoint"].as_str().unwrap().contains(".elb."), "{st}");

    // Destroy: everything tagged for the service is gone, the ECR repository is kept.
    assert!(!tagged_resources(&name).await.is_empty());
    let out = cli_async(&moto, &["destroy", "--yes", "--format", "json"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = json_of(&out);
    let removed = d["removed"].to_string();
    for what in [
        "autoscaling",
        "dashboard",
        "service",
        "task definition",
        "stack",
    ] {
        assert!(removed.contains(what), "{what}: {d}");
    }
    assert_nothing_left(&name).await;
    let repos = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        json!({"repositoryNames": [repo]}),
    )
    .await;
    assert_eq!(repos["repositories"][0]["repositoryName"], repo, "{repos}");
    let out = cli_async(&moto, &["status"], &spec).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not deployed"));
    // Destroying again finds nothing to do.
    let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_changed_spec_plans_field_diffs_and_a_rolled_back_deployment_fails_then_rollback_works() {
    let dir = tempfile::tempdir().unwrap();
    let name = short_name("upd");
    let spec = write_spec(dir.path(), &name, "[storage]\nefs = false\n");
    let moto = env("TD_MOTO_URL");
    let repo = format!("{name}/triton");
    put_image(&repo, "v1", &"b".repeat(64)).await;
    let out = cli_async(&moto, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A new image and a larger shm: the plan shows exactly those fields and exits 2.
    let digest2 = put_image(&repo, "v2", &"d".repeat(64)).await;
    write_spec(
        dir.path(),
        &name,
        "[storage]\nefs = false\n[task]\nshm_size_mib = 2048\n",
    );
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("linuxParameters.sharedMemorySize: 1024 -> 2048"),
        "{t}"
    );
    assert!(
        t.contains("containerDefinitions[0].image: ") && t.contains(&digest2),
        "{t}"
    );
    assert!(t.contains("would register a new revision"), "{t}");
    assert!(t.contains("service: would update"), "{t}");

    // Apply while ECS rolls it back: the rollout fails and says why, with the containers' last words.
    put_log_line(
        &format!("/triton-deploy/{name}-gpu/{name}"),
        &format!("{name}/triton/9f8e7d6c5b"),
        "E1129 failed to load 'add_sub' version 1: Not found: unable to load shared library",
    )
    .await;
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, rolled_back()).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("rolled back"), "{t}");
    assert!(t.contains("circuit breaker"), "{t}");
    assert!(
        t.contains("last log lines") && t.contains("failed to load 'add_sub'"),
        "{t}"
    );
    let us = &proxy.sent("UpdateService")[0];
    assert!(
        us["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with(&format!("triton-{name}:2")),
        "{us}"
    );
    assert!(
        us.get("desiredCount").is_none(),
        "autoscaling owns the desired count: {us}"
    );

    // The circuit breaker put the service back on revision 1 (moto does not: do it for it).
    moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.UpdateService",
        json!({"cluster": format!("{name}-gpu"), "service": name, "taskDefinition": format!("triton-{name}:1")}),
    )
    .await;

    // Deploy it again, now progressing as ECS does: it waits through IN_PROGRESS to COMPLETED.
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(3)).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("rollout in_progress"), "{}", text(&out));
    assert!(
        proxy
            .actions()
            .iter()
            .filter(|a| *a == "DescribeServices")
            .count()
            >= 4,
        "{:?}",
        proxy.actions()
    );
    assert!(
        proxy.sent("RegisterTaskDefinition").is_empty(),
        "revision 2 is already registered"
    );

    // Roll back to revision 1, never deregistering anything.
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(1)).await;
    let out = cli_async(
        &proxy.url,
        &["rollback", "--poll", "1", "--format", "json"],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json_of(&out);
    assert!(r["from"].as_str().unwrap().ends_with(":2"), "{r}");
    assert!(r["to"].as_str().unwrap().ends_with(":1"), "{r}");
    assert!(!proxy.actions().iter().any(|a| a.starts_with("Deregister")));
    // The next plan brings it forward again.
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("taskDefinition:"), "{}", text(&out));

    let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn throttled_and_failing_service_calls_converge_and_a_missing_image_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = short_name("thd");
    let spec = write_spec(dir.path(), &name, "[storage]\nefs = false\n");
    let moto = env("TD_MOTO_URL");

    // No image in the repository: the infra may be built, but the service is not touched.
    let proxy = proxy::start(&moto, proxy::Mode::Pass).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("run `triton-deploy push` first"),
        "{}",
        text(&out)
    );
    assert!(
        !proxy
            .actions()
            .iter()
            .any(|a| a == "RegisterTaskDefinition" || a == "CreateService"),
        "{:?}",
        proxy.actions()
    );

    put_image(&format!("{name}/triton"), "v1", &"e".repeat(64)).await;
    let proxy = proxy::start(&moto, proxy::Mode::FailEvery(10)).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.faults.load(Ordering::SeqCst) > 0);
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "converged: {}", text(&out));
    let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // AWS's own throttling answers (per service and protocol) on one call in ten: a rollout from
    // nothing converges, and so does its destroy, leaving nothing behind.
    let name = short_name("thf");
    let spec = write_spec(dir.path(), &name, "[storage]\nefs = false\n");
    put_image(&format!("{name}/triton"), "v1", &"e".repeat(64)).await;
    let proxy = proxy::start(&moto, proxy::Mode::ThrottleEvery(10)).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = proxy.log.lock().unwrap().join("\n");
    assert!(
        log.contains("throttled 400") && proxy.faults.load(Ordering::SeqCst) >= 3,
        "{log}"
    );
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "converged: {}", text(&out));
    let proxy = proxy::start(&moto, proxy::Mode::ThrottleEvery(10)).await;
    let out = cli_async(&proxy.url, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.faults.load(Ordering::SeqCst) > 0);
    assert_nothing_left(&name).await;
}

/// Answers the two Auto Scaling calls moto lacks the way EC2 Auto Scaling does: a refresh that is
/// InProgress for the first `polls` answers, then Successful.
fn instance_refresh(polls: usize) -> proxy::Hooks {
    let calls = Arc::new(AtomicUsize::new(0));
    proxy::Hooks {
        answer: Some(Arc::new(move |action, _req| {
            let ns = "http://autoscaling.amazonaws.com/doc/2011-01-01/";
            match action {
                "StartInstanceRefresh" => Some((
                    200,
                    format!(
                        "<StartInstanceRefreshResponse xmlns=\"{ns}\"><StartInstanceRefreshResult><InstanceRefreshId>ir-1</InstanceRefreshId></StartInstanceRefreshResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></StartInstanceRefreshResponse>"
                    ),
                )),
                "DescribeInstanceRefreshes" => {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    // Before the start: no refresh yet.
                    if n == 0 {
                        return Some((
                            200,
                            format!(
                                "<DescribeInstanceRefreshesResponse xmlns=\"{ns}\"><DescribeInstanceRefreshesResult><InstanceRefreshes/></DescribeInstanceRefreshesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeInstanceRefreshesResponse>"
                            ),
                        ));
                    }
                    let (status, pct) = if n <= polls {
                        ("InProgress", 50)
                    } else {
                        ("Successful", 100)
                    };
                    Some((
                        200,
                        format!(
                            "<DescribeInstanceRefreshesResponse xmlns=\"{ns}\"><DescribeInstanceRefreshesResult><InstanceRefreshes><member><InstanceRefreshId>ir-1</InstanceRefreshId><AutoScalingGroupName>g</AutoScalingGroupName><Status>{status}</Status><PercentageComplete>{pct}</PercentageComplete><InstancesToUpdate>1</InstancesToUpdate></member></InstanceRefreshes></DescribeInstanceRefreshesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeInstanceRefreshesResponse>"
                        ),
                    ))
                }
                _ => None,
            }
        })),
        rewrite: None,
    }
}

async fn put_log_line(group: &str, stream: &str, message: &str) {
    let _ = moto_json(
        "logs",
        "Logs_20140328.CreateLogStream",
        json!({"logGroupName": group, "logStreamName": stream}),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    moto_json(
        "logs",
        "Logs_20140328.PutLogEvents",
        json!({"logGroupName": group, "logStreamName": stream, "logEvents": [{"timestamp": now, "message": message}]}),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn verify_smoke_logs_interrupt_resume_and_instance_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let name = short_name("vfy");
    let models = root().join("model-repos/simple-onnx");
    let spec = write_spec(
        dir.path(),
        &name,
        &format!(
            "model_repository = \"{}\"\n[storage]\nefs = false\n",
            models.display()
        ),
    );
    let moto = env("TD_MOTO_URL");
    let repo = format!("{name}/triton");
    put_image(&repo, "v1", &"1".repeat(64)).await;
    let server = kserve::start().await;

    // Deploy, verify readiness and run one real inference through the endpoint.
    let out = cli_async(
        &moto,
        &[
            "rollout",
            "--yes",
            "--poll",
            "1",
            "--endpoint",
            &server.url,
            "--smoke",
            "--format",
            "json",
        ],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json_of(&out);
    assert_eq!(
        r["verified"],
        format!("ready at {}; inference on add_sub answered", server.url)
    );
    assert_eq!(server.inferences.load(Ordering::SeqCst), 1);

    // logs: what the containers wrote.
    let group = format!("/triton-deploy/{name}-gpu/{name}");
    put_log_line(
        &group,
        &format!("{name}/triton/0a1b2c3d4e"),
        "I1129 server is ready",
    )
    .await;
    let out = cli_async(&moto, &["logs", "--since", "1h"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0a1b2c3d I1129 server is ready"),
        "{}",
        text(&out)
    );

    // Ctrl-C while a deployment goes on: it stops waiting, says how to resume, changes nothing more.
    put_image(&repo, "v2", &"2".repeat(64)).await;
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(usize::MAX)).await;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["rollout", "--yes", "--poll", "1", "-f"])
        .arg(&spec)
        .env("AWS_ENDPOINT_URL", &proxy.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if proxy
            .actions()
            .iter()
            .filter(|a| *a == "DescribeServices")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("run `triton-deploy rollout` again"),
        "{}",
        text(&out)
    );
    assert_eq!(proxy.sent("UpdateService").len(), 1);

    // Run again: nothing to change, but it waits for the deployment in progress to finish.
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(2)).await;
    let out = cli_async(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("rollout in_progress"), "{}", text(&out));
    assert_eq!(proxy.mutations(), Vec::<String>::new());

    // --refresh-instances: an instance refresh keeping every host in service, followed to the end.
    let proxy = proxy::start_with(&moto, proxy::Mode::Pass, instance_refresh(2)).await;
    let out = cli_async(
        &proxy.url,
        &[
            "rollout",
            "--yes",
            "--poll",
            "1",
            "--refresh-instances",
            "--format",
            "json",
        ],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["instance_refresh"]["status"], "Successful");
    let start = proxy.sent_form("StartInstanceRefresh");
    assert_eq!(start.len(), 1);
    assert!(
        start[0].contains("Preferences.MinHealthyPercentage=100"),
        "{}",
        start[0]
    );
    assert!(
        start[0].contains("Preferences.SkipMatching=true"),
        "{}",
        start[0]
    );
    assert!(
        start[0].contains(&format!(
            "AutoScalingGroupName=triton-deploy-{name}-gpu-AutoScalingGroup"
        )),
        "{}",
        start[0]
    );

    // bench -f: the model (and the task count) from the deployment; the endpoint too, unless --url
    // points elsewhere (here: at the test server, as the emulator's load balancer answers nothing).
    let out = cli_async(
        &moto,
        &[
            "--format",
            "json",
            "bench",
            "--url",
            &server.url,
            "--requests",
            "5",
            "--warmup",
            "0s",
        ],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["model"], "add_sub");
    let out = cli_async(&moto, &["bench", "--requests", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(".elb.amazonaws.com"), "{}", text(&out));

    let out = cli_async(&moto, &["destroy", "--yes", "--delete-images"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("removed ECR repository {repo}")),
        "{}",
        text(&out)
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn the_example_spec_deploys_against_the_emulator_unchanged() {
    let spec = root().join("examples/triton-deploy.toml");
    let moto = env("TD_MOTO_URL");
    put_image("team/text-classifier", "v1", &"3".repeat(64)).await;
    let out = cli_async(&moto, &["rollout", "--yes", "--poll", "1"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli_async(&moto, &["status", "--format", "json"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = json_of(&out);
    assert_eq!(st["service"]["name"], "text-classifier");
    assert_eq!(st["service"]["state"], "steady", "{st}");
    let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_rollout_or_destroy_killed_at_any_point_is_finished_by_the_next_one() {
    let moto = env("TD_MOTO_URL");
    // Killed (SIGKILL: no cleanup of its own) as soon as it sends each of these.
    for point in ["CreateChangeSet", "RegisterTaskDefinition", "CreateService"] {
        let dir = tempfile::tempdir().unwrap();
        let name = short_name("kil");
        let spec = write_spec(dir.path(), &name, "[storage]\nefs = false\n");
        put_image(&format!("{name}/triton"), "v1", &"c".repeat(64)).await;
        let proxy = proxy::start(&moto, proxy::Mode::Pass).await;
        let child = command(&proxy.url, &["rollout", "--yes", "--poll", "1"], &spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        kill_at(child, &proxy, point).await;

        // The next rollout finishes the work: one service, and nothing left to change.
        let out = cli_async(
            &moto,
            &["rollout", "--yes", "--poll", "1", "--timeout", "2"],
            &spec,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "after {point}: {}", text(&out));
        let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
        assert_eq!(out.status.code(), Some(0), "after {point}: {}", text(&out));
        let services = moto_json(
            "ecs",
            "AmazonEC2ContainerServiceV20141113.ListServices",
            json!({"cluster": format!("{name}-gpu")}),
        )
        .await;
        assert_eq!(
            services["serviceArns"].as_array().map(Vec::len),
            Some(1),
            "after {point}: {services}"
        );
        // A destroy killed as it deletes the service's stack is finished by the next one.
        let proxy = proxy::start(&moto, proxy::Mode::Pass).await;
        let child = command(&proxy.url, &["destroy", "--yes"], &spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        kill_at(child, &proxy, "DeleteStack").await;
        let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
        assert_eq!(out.status.code(), Some(0), "after {point}: {}", text(&out));
        assert_nothing_left(&name).await;
    }
}

/// Kills `child` (SIGKILL) as soon as the proxy has seen it send `action`.
async fn kill_at(mut child: std::process::Child, proxy: &proxy::Proxy, action: &str) {
    let started = std::time::Instant::now();
    while !proxy.actions().iter().any(|a| a == action) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{action} never sent: {:?}",
            proxy.actions()
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        proxy.actions().iter().any(|a| a == action),
        "{action}: {:?}",
        proxy.actions()
    );
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn repository_settings_changed_outside_the_tool_are_planned_and_set_back_by_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let name = short_name("ecr");
    let spec = write_spec(dir.path(), &name, "");
    let moto = env("TD_MOTO_URL");
    let repo = format!("{name}/triton");
    // `push` creates the repository (and records the settings it asked for on it).
    let cache = tempfile::tempdir().unwrap();
    let base = make_base(
        &env("TD_UPSTREAM_URL"),
        "nvidia/tritonserver",
        &unique("base"),
        None,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json", "push"])
        .arg(root().join("model-repos/python-backend"))
        .args([
            "--repository",
            &repo,
            "--base",
            &base,
            "--registry-endpoint",
        ])
        .arg(env("TD_REGISTRY_URL"))
        .args(["--keep-images", "12"])
        .env("AWS_ENDPOINT_URL", &moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TRITON_DEPLOY_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = cli_async(
        &moto,
        &["rollout", "--yes", "--timeout", "5", "--poll", "1"],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Someone turns scanning off and makes the tags mutable, from the console.
    moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.PutImageScanningConfiguration",
        json!({"repositoryName": repo, "imageScanningConfiguration": {"scanOnPush": false}}),
    )
    .await;
    moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.PutImageTagMutability",
        json!({"repositoryName": repo, "imageTagMutability": "MUTABLE"}),
    )
    .await;
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "drift: {}", text(&out));
    let t = text(&out);
    for line in [
        format!("ECR repository {repo}: scan on push is off, push asked for on: would set back"),
        format!(
            "ECR repository {repo}: tag mutability is MUTABLE, push asked for IMMUTABLE: would set back"
        ),
    ] {
        assert!(t.contains(&line), "{line}:\n{t}");
    }
    // The lifecycle policy push set (12 images, not the default 30) is what is compared with.
    assert!(!t.contains("lifecycle"), "{t}");
    let out = cli_async(&moto, &["rollout", "--plan", "--format", "json"], &spec).await;
    let settings = &json_of(&out)["service"]["repository_settings"];
    assert_eq!(settings.as_array().map(Vec::len), Some(2), "{settings}");

    let out = cli_async(
        &moto,
        &["rollout", "--yes", "--poll", "1", "--format", "json"],
        &spec,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        json_of(&out)["service"]["repository_settings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["repaired"] == true),
        "{}",
        text(&out)
    );
    let repos = moto_json(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        json!({"repositoryNames": [repo]}),
    )
    .await;
    let r = &repos["repositories"][0];
    assert_eq!(r["imageScanningConfiguration"]["scanOnPush"], true, "{r}");
    assert_eq!(r["imageTagMutability"], "IMMUTABLE", "{r}");
    let out = cli_async(&moto, &["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "set back: {}", text(&out));

    let out = cli_async(&moto, &["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_nothing_left(&name).await;
}
