//! The service half of `rollout`, shared with `status`, `rollback` and `destroy`: the image to
//! deploy, the task definition revision, the ECS service and its autoscaling (each
//! read first, changed only when it differs), and the wait for the deployment.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use triton_deploy_aws::ApiError;
use triton_deploy_aws::appscaling::{AppScaling, Scaling};
use triton_deploy_aws::ecr::{Ecr, RecordedDrift, Setting, SettingDrift};
use triton_deploy_aws::ecs::{Ecs, ServiceState, TaskDefinition};
use triton_deploy_aws::elbv2::Elb;
use triton_deploy_aws::logs::Logs;

use crate::deploy::error::DeployError;
use crate::deploy::plan::{self, Assessment, FieldChange, Infra};
use crate::deploy::spec::DeploymentSpec;
use crate::output::Progress;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Image(String),
    #[error("{0}")]
    Stack(String),
    #[error("deployment failed: {0}")]
    Failed(String),
    #[error(
        "timed out after {0} min waiting for the deployment; it goes on in ECS: follow it with `triton-deploy status`"
    )]
    Timeout(u64),
    #[error(
        "interrupted: stopped waiting; the deployment goes on in ECS. Follow it with `triton-deploy status`, or run `triton-deploy rollout` again to wait for it"
    )]
    Interrupted,
    #[error("verification failed: {0}")]
    Verify(String),
    #[error(transparent)]
    Ecr(#[from] triton_deploy_aws::ecr::EcrError),
}

/// The image a rollout deploys, pinned by digest.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRef {
    /// `registry/repository@sha256:...` (or the reference as given for non-ECR images).
    pub uri: String,
    /// `--image`, `spec`, or `newest in <repository>`.
    pub source: String,
    /// Whether ECR confirmed it exists.
    pub checked: bool,
}

fn ecr_repository(registry: &str) -> bool {
    registry.contains(".dkr.ecr.") && registry.contains(".amazonaws.com")
}

/// The image: `--image`, else the spec's `image.uri`, else the newest image in the spec's ECR
/// repository. ECR images are checked with `DescribeImages` and pinned by digest.
pub async fn resolve_image(
    spec: &DeploymentSpec,
    flag: Option<&str>,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<ImageRef, ServiceError> {
    let ecr = Ecr::new(config);
    let given = flag
        .map(|i| (i.to_string(), "--image".to_string()))
        .or_else(|| spec.image_uri.clone().map(|i| (i, "spec".to_string())));
    if let Some((uri, source)) = given {
        let name = crate::package::image::ImageName::parse(&uri)
            .map_err(|e| ServiceError::Image(format!("{source}: {e}")))?;
        if !ecr_repository(&name.registry) {
            return Ok(ImageRef {
                uri,
                source,
                checked: false,
            });
        }
        let found = ecr.images(&name.repository, Some(&name.reference)).await?;
        let Some(img) = found.first() else {
            return Err(ServiceError::Image(format!(
                "{uri} ({source}) is not in ECR: push it first (`triton-deploy push`) or fix the reference"
            )));
        };
        return Ok(ImageRef {
            uri: format!("{}/{}@{}", name.registry, name.repository, img.digest),
            source,
            checked: true,
        });
    }
    let Some(repo) = &spec.image_repository else {
        return Err(ServiceError::Image(
            "no image: pass --image, or set image.uri or image.repository in the spec".into(),
        ));
    };
    let described = ecr
        .describe(repo)
        .await
        .map_err(|e| ServiceError::Image(e.to_string()))?
        .ok_or_else(|| {
            ServiceError::Image(format!(
                "ECR repository {repo} does not exist: run `triton-deploy push` first"
            ))
        })?;
    let images = ecr.images(repo, None).await?;
    let img = images.first().ok_or_else(|| {
        ServiceError::Image(format!(
            "ECR repository {repo} has no image: run `triton-deploy push` first"
        ))
    })?;
    Ok(ImageRef {
        uri: format!("{}@{}", described.uri, img.digest),
        source: format!("newest in {repo}"),
        checked: true,
    })
}

/// What the service phase changes (or, with `--plan`, would change).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServicePlan {
    pub image: Option<ImageRef>,
    /// `register` when a new revision is needed, with the field changes from the active one.
    pub task_definition: Option<TaskDefinitionChange>,
    /// `create` or `update` with the field changes; `None` when the service is as wanted.
    pub service: Option<ChangeOf>,
    pub autoscaling: Option<ChangeOf>,
    /// The scaling target and where it came from.
    pub scaling_target: Option<plan::ScalingTarget>,
    /// The grace period against the measured time to ready (`task.run_result`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<plan::Readiness>,
    /// The revision the service runs after the rollout.
    pub revision: Option<String>,
    /// The image's ECR repository, when its settings are compared (see `repository_settings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Settings of the image's ECR repository that differ from those `push` recorded on it, and
    /// whether each was set back (the encryption never is: ECR cannot change it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repository_settings: Vec<SettingDrift>,
}

impl ServicePlan {
    /// Whether nothing would change. A difference in the repository's encryption is reported,
    /// not counted: no rollout can change it.
    pub fn is_empty(&self) -> bool {
        self.task_definition.is_none()
            && self.service.is_none()
            && self.autoscaling.is_none()
            && self
                .repository_settings
                .iter()
                .all(|d| d.setting == Setting::Encryption)
    }
}

/// The ECR repository of `image` (an image in ECR) and how its settings differ from those push
/// recorded there; `None` for an image elsewhere, or a repository with nothing recorded.
async fn repository_drift(
    image: &ImageRef,
    ecr: &Ecr,
) -> Result<Option<(String, RecordedDrift)>, ServiceError> {
    if !image.checked {
        return Ok(None);
    }
    let Ok(name) = crate::package::image::ImageName::parse(&image.uri) else {
        return Ok(None);
    };
    if !ecr_repository(&name.registry) {
        return Ok(None);
    }
    Ok(ecr
        .recorded_drift(&name.repository)
        .await?
        .map(|d| (name.repository, d)))
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskDefinitionChange {
    pub family: String,
    /// The active revision, if any.
    pub from: Option<String>,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeOf {
    pub action: String,
    pub changes: Vec<FieldChange>,
}

fn as_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The task definition's change from the active revision (`None`: as wanted), and the
/// revision the service should run when nothing is registered (empty: none yet).
fn task_definition_change(
    active: Option<&TaskDefinition>,
    def: &Value,
    family: &str,
) -> (Option<TaskDefinitionChange>, String) {
    match active {
        Some(a) => {
            let changes = plan::diff(&plan::normalize(&a.definition), &plan::normalize(def));
            let change = (!changes.is_empty()).then(|| TaskDefinitionChange {
                family: family.to_string(),
                from: Some(a.arn.clone()),
                changes,
            });
            (change, a.arn.clone())
        }
        None => (
            Some(TaskDefinitionChange {
                family: family.to_string(),
                from: None,
                changes: plan::diff(&Value::Null, &plan::normalize(def)),
            }),
            String::new(),
        ),
    }
}

/// The service's change to run revision `rev` (empty: a revision still to be registered).
fn service_change(
    existing: Option<&ServiceState>,
    spec: &DeploymentSpec,
    infra: &Infra,
    rev: &str,
    family: &str,
) -> Option<ChangeOf> {
    match existing {
        None => Some(ChangeOf {
            action: "create".into(),
            changes: plan::diff(
                &Value::Null,
                &plan::service_fields(&plan::service_config(spec, infra, rev, true)),
            ),
        }),
        Some(s) => {
            let desired = plan::service_config(spec, infra, rev, false);
            let mut changes = plan::service_diff(s, &desired);
            if s.task_definition != rev || rev.is_empty() {
                changes.push(FieldChange {
                    path: "taskDefinition".into(),
                    from: Value::String(s.task_definition.clone()),
                    to: Value::String(if rev.is_empty() {
                        format!("{family}:<new revision>")
                    } else {
                        rev.to_string()
                    }),
                });
            }
            (!changes.is_empty()).then(|| ChangeOf {
                action: "update".into(),
                changes,
            })
        }
    }
}

/// What autoscaling needs: the change to show, the policies to put, and whether a CPU policy
/// the spec no longer asks for is to go.
struct ScalingPlan {
    change: Option<ChangeOf>,
    changed: Vec<Scaling>,
    stale_cpu_policy: bool,
}

async fn plan_scaling(
    scaler: &AppScaling,
    spec: &DeploymentSpec,
    service_exists: bool,
    scalings: &[Scaling],
) -> Result<ScalingPlan, ServiceError> {
    let mut changed = Vec::new();
    let mut changes = Vec::new();
    let mut scaling_exists = false;
    let mut stale_cpu_policy = false;
    if service_exists {
        for s in scalings {
            let deployed = scaler.get(&s.resource_id, &s.policy_name).await?;
            scaling_exists |= deployed.is_some();
            if deployed.as_ref() != Some(s) {
                changes.extend(plan::diff(
                    &deployed.as_ref().map(as_json).unwrap_or(Value::Null),
                    &as_json(s),
                ));
                changed.push(s.clone());
            }
        }
        if spec.cpu_target.is_none() {
            let cpu = plan::cpu_policy_name(spec);
            stale_cpu_policy = scaler
                .get(&scalings[0].resource_id, &cpu)
                .await?
                .is_some_and(|s| !s.metric.is_empty());
            if stale_cpu_policy {
                changes.push(FieldChange {
                    path: cpu,
                    from: Value::String("ECSServiceAverageCPUUtilization".into()),
                    to: Value::Null,
                });
            }
        }
    } else {
        changed = scalings.to_vec();
    }
    let change = (!changed.is_empty() || stale_cpu_policy).then(|| ChangeOf {
        action: if scaling_exists { "update" } else { "create" }.into(),
        changes: if scaling_exists {
            changes
        } else {
            scalings
                .iter()
                .flat_map(|s| plan::diff(&Value::Null, &as_json(s)))
                .collect()
        },
    });
    Ok(ScalingPlan {
        change,
        changed,
        stale_cpu_policy,
    })
}

/// Creates or updates the service to run `revision`, tagging it with the hash of its
/// configuration.
async fn apply_service(
    ecs: &Ecs,
    spec: &DeploymentSpec,
    infra: &Infra,
    revision: &str,
    change: &ChangeOf,
    existing: Option<&ServiceState>,
) -> Result<(), ServiceError> {
    let creating = change.action == "create";
    let mut c = plan::service_config(spec, infra, revision, creating);
    let hash = plan::service_hash(&c);
    if creating {
        c.tags.push(("triton-deploy:service-hash".into(), hash));
        ecs.create_service(&c).await?;
    } else {
        let s = existing.expect("update of an existing service");
        ecs.update_service(&c, false).await?;
        if !s
            .tags
            .iter()
            .any(|(k, v)| k == "triton-deploy:service-hash" && *v == hash)
        {
            ecs.tag(&s.arn, &[("triton-deploy:service-hash".into(), hash)])
                .await?;
        }
    }
    Ok(())
}

/// The scalable target first (its bounds), then each policy that differs; a stale CPU policy
/// removed.
async fn apply_scaling(
    scaler: &AppScaling,
    spec: &DeploymentSpec,
    scalings: &[Scaling],
    p: &ScalingPlan,
) -> Result<(), ServiceError> {
    scaler.register_target(&scalings[0]).await?;
    for s in &p.changed {
        scaler.put_policy(s).await?;
    }
    if p.stale_cpu_policy {
        scaler
            .delete_policy(&scalings[0].resource_id, &plan::cpu_policy_name(spec))
            .await?;
    }
    Ok(())
}

/// Plans the service phase against what is deployed, and applies it unless `plan_only`.
pub async fn plan_and_apply(
    spec: &DeploymentSpec,
    infra: &Infra,
    image: ImageRef,
    spec_dir: &std::path::Path,
    config: &triton_deploy_aws::SdkConfig,
    plan_only: bool,
) -> Result<(ServicePlan, Option<ServiceState>), ServiceError> {
    let ecs = Ecs::new(config);
    let def = crate::deploy::render::taskdef::task_definition(spec, &image.uri, &infra.task);
    let family = crate::deploy::render::taskdef::family(spec);
    let active = ecs.latest_task_definition(&family).await?;
    let (task_definition, mut revision) = task_definition_change(active.as_ref(), &def, &family);
    let existing = ecs.describe_service(&infra.cluster, &spec.service).await?;
    let target =
        plan::scaling_target(spec, spec_dir).map_err(|e| ServiceError::Stack(e.to_string()))?;
    let readiness =
        plan::readiness(spec, spec_dir).map_err(|e| ServiceError::Stack(e.to_string()))?;
    let scalings = plan::scaling(spec, infra, &target);
    let scaler = AppScaling::new(config);
    let scaling = plan_scaling(&scaler, spec, existing.is_some(), &scalings).await?;
    let ecr = Ecr::new(config);
    let mut repository = repository_drift(&image, &ecr).await?;
    let mut plan = ServicePlan {
        repository: repository.as_ref().map(|(n, _)| n.clone()),
        repository_settings: repository
            .as_ref()
            .map(|(_, d)| d.drift.clone())
            .unwrap_or_default(),
        image: Some(image),
        task_definition,
        autoscaling: scaling.change.clone(),
        scaling_target: Some(target),
        readiness,
        ..ServicePlan::default()
    };
    if plan_only {
        // The revision to deploy is new when registering; else the newest, which the service
        // should run.
        let rev = if plan.task_definition.is_some() {
            ""
        } else {
            &revision
        };
        plan.service = service_change(existing.as_ref(), spec, infra, rev, &family);
        plan.revision =
            (!revision.is_empty() && plan.task_definition.is_none()).then_some(revision);
        return Ok((plan, existing));
    }
    if plan.task_definition.is_some() {
        revision = ecs.register_task_definition(&def).await?.arn;
    }
    plan.service = service_change(existing.as_ref(), spec, infra, &revision, &family);
    plan.revision = Some(revision.clone());
    if let Some(change) = &plan.service {
        apply_service(&ecs, spec, infra, &revision, change, existing.as_ref()).await?;
    }
    if plan.autoscaling.is_some() {
        apply_scaling(&scaler, spec, &scalings, &scaling).await?;
    }
    if let Some((name, recorded)) = repository.as_mut()
        && !recorded.drift.is_empty()
    {
        ecr.repair_drift(name, recorded).await?;
        plan.repository_settings = recorded.drift.clone();
    }
    Ok((plan, existing))
}

/// How waiting went.
#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    pub seconds: f64,
    pub targets: std::collections::BTreeMap<String, usize>,
    /// Said when the target group has no target although tasks run (an emulator creates none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Follows the service's deployment of `revision` until it completes, fails or times out,
/// printing new service events and target-health changes (text mode) as they come. Ctrl-C stops
/// waiting and leaves everything as it is.
pub async fn wait(
    spec: &DeploymentSpec,
    infra: &Infra,
    revision: &str,
    config: &triton_deploy_aws::SdkConfig,
    timing: super::Timing,
    progress: &Progress,
) -> Result<WaitReport, ServiceError> {
    let (timeout, poll) = (timing.timeout, timing.poll);
    let ecs = Ecs::new(config);
    let elb = Elb::new(config);
    let started = Instant::now();
    let mut seen_events: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut first = true;
    let mut last_line = String::new();
    let mut empty_polls = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let svc = ecs
            .describe_service(&infra.cluster, &spec.service)
            .await?
            .ok_or_else(|| ServiceError::Failed(format!("service {} disappeared", spec.service)))?;
        for e in svc.events.iter().rev() {
            if seen_events.insert(e.id.clone()) && !first {
                progress.line(format!("  event: {}", e.message));
            }
        }
        first = false;
        let targets = elb.target_health(&infra.target_group_arn).await?;
        let assessment = plan::assess(
            &svc,
            revision,
            &targets,
            started.elapsed() < plan::STALE_READ_GRACE,
        );
        let line = match &assessment {
            Assessment::Waiting(w) => {
                format!("waiting: {w}; targets {:?}", plan::target_summary(&targets))
            }
            _ => String::new(),
        };
        if !line.is_empty() && line != last_line {
            progress.line(format!("  {line}"));
        }
        last_line = line;
        match assessment {
            Assessment::Done => {
                if targets.is_empty() && svc.desired > 0 {
                    // ECS registers tasks before it calls a rollout COMPLETED; give it a few polls.
                    empty_polls += 1;
                    if empty_polls < 2 {
                        tokio::time::sleep(poll).await;
                        continue;
                    }
                }
                return Ok(WaitReport {
                    seconds: started.elapsed().as_secs_f64(),
                    targets: plan::target_summary(&targets),
                    note: (targets.is_empty() && svc.desired > 0).then(|| {
                        "the target group has no registered target although ECS reports the tasks running".to_string()
                    }),
                });
            }
            Assessment::Failed(why) => {
                let mut msg = why;
                if let Ok(stopped) = ecs.stopped_tasks(&infra.cluster, &spec.service).await {
                    for t in stopped.iter().take(3) {
                        msg.push_str(&format!(
                            "\n  stopped task {}: {}",
                            triton_deploy_aws::short_arn(&t.arn),
                            t.stopped_reason.as_deref().unwrap_or("no reason given")
                        ));
                        for c in &t.container_reasons {
                            msg.push_str(&format!("\n    {c}"));
                        }
                    }
                }
                if let Ok(lines) = Logs::new(config)
                    .read(
                        &infra.task.log_group,
                        Some(&spec.service),
                        epoch_ms().saturating_sub(30 * 60 * 1000),
                        10_000,
                    )
                    .await
                {
                    let tail: Vec<&triton_deploy_aws::logs::LogLine> =
                        lines.iter().rev().take(15).collect();
                    if !tail.is_empty() {
                        msg.push_str("\n  last log lines:");
                        for l in tail.into_iter().rev() {
                            msg.push_str(&format!("\n    {}", l.message));
                        }
                    }
                }
                return Err(ServiceError::Failed(msg));
            }
            Assessment::Waiting(_) => {}
        }
        if started.elapsed() > timeout {
            return Err(ServiceError::Timeout(timeout.as_secs() / 60));
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = &mut ctrl_c => return Err(ServiceError::Interrupted),
        }
    }
}

pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `GET <endpoint>/v2/health/ready` — or, for a service routed by model, each of its models'
/// `/v2/models/<m>/ready` — retried for up to `within`.
pub async fn verify_ready(
    endpoint: &str,
    models: &[String],
    within: Duration,
) -> Result<(), ServiceError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServiceError::Verify(e.to_string()))?;
    let base = endpoint.trim_end_matches('/');
    // Routed by model, the shared endpoint's own /v2/health/ready belongs to no one service.
    let urls: Vec<String> = if models.is_empty() {
        vec![format!("{base}/v2/health/ready")]
    } else {
        models
            .iter()
            .map(|m| format!("{base}/v2/models/{m}/ready"))
            .collect()
    };
    let started = Instant::now();
    let mut pending = urls.iter();
    let mut url = pending.next();
    while let Some(u) = url {
        let outcome = match client.get(u).send().await {
            Ok(r) if r.status().is_success() => {
                url = pending.next();
                continue;
            }
            Ok(r) => format!("{u} answered {}", r.status()),
            Err(e) => format!("{u}: {}", describe_http_error(&e)),
        };
        if started.elapsed() > within {
            return Err(ServiceError::Verify(outcome));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// One real inference: the first ready model's metadata → a request of zeros (dynamic dims as 1)
/// → `POST /v2/models/<m>/infer`, which must answer 200 with outputs. Returns the model's name.
pub async fn smoke(endpoint: &str, models: &[String]) -> Result<String, ServiceError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ServiceError::Verify(e.to_string()))?;
    let base = endpoint.trim_end_matches('/');
    let fail = |m: String| ServiceError::Verify(format!("smoke test: {m}"));
    // The first of the spec's models the server calls ready; else the first READY model of the
    // server's repository index (Triton's repository extension).
    let mut chosen = None;
    for m in models {
        if let Ok(r) = client
            .get(format!("{base}/v2/models/{m}/ready"))
            .send()
            .await
            && r.status().is_success()
        {
            chosen = Some(m.clone());
            break;
        }
    }
    if chosen.is_none()
        && let Ok(r) = client
            .post(format!("{base}/v2/repository/index"))
            .json(&serde_json::json!({}))
            .send()
            .await
        && let Ok(Value::Array(index)) = r.json::<Value>().await
    {
        chosen = index
            .iter()
            .find(|m| m.get("state").and_then(Value::as_str) == Some("READY"))
            .and_then(|m| m.get("name").and_then(Value::as_str))
            .map(str::to_string);
    }
    let model = chosen.ok_or_else(|| {
        fail(if models.is_empty() {
            "no ready model: the server lists none (set image.model_repository in the spec)".into()
        } else {
            format!("none of the models is ready: {}", models.join(", "))
        })
    })?;
    let model = &model;
    let meta_body = client
        .get(format!("{base}/v2/models/{model}"))
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?
        .error_for_status()
        .map_err(|e| fail(e.to_string()))?
        .bytes()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let meta = crate::kserve::ModelMetadata::from_json(&meta_body)
        .map_err(|e| fail(format!("{model}: {e}")))?;
    let request = crate::kserve::zero_request(&meta).map_err(|e| fail(e.to_string()))?;
    let resp = client
        .post(format!("{base}/v2/models/{model}/infer"))
        .json(&request)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(fail(format!(
            "{model}: inference answered {status}: {}",
            body.get("error").and_then(Value::as_str).unwrap_or("")
        )));
    }
    if body
        .get("outputs")
        .and_then(Value::as_array)
        .is_none_or(|o| o.is_empty())
    {
        return Err(fail(format!("{model}: the answer has no outputs")));
    }
    Ok(model.clone())
}

fn describe_http_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "cannot connect".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

/// What `status`, `rollback`, `destroy` and `logs` start from: the spec, the AWS configuration and
/// the deployed stacks (when there are).
pub struct Context {
    pub spec: DeploymentSpec,
    pub config: triton_deploy_aws::SdkConfig,
    /// The cluster stack and the service stack merged ([`crate::deploy::stack::merge`]), when
    /// both exist.
    pub stack: Option<triton_deploy_aws::cfn::StackInfo>,
    /// The cluster stack alone, when it exists.
    pub cluster_stack: Option<triton_deploy_aws::cfn::StackInfo>,
    /// The service stack alone, when it exists.
    pub service_stack: Option<triton_deploy_aws::cfn::StackInfo>,
    pub region: String,
}

impl Context {
    /// The context of `spec`: the SDK configuration for `aws` (the spec's region unless `aws`
    /// names one) and the deployed stacks.
    pub async fn load(
        spec: DeploymentSpec,
        aws: &triton_deploy_aws::AwsOptions,
    ) -> Result<Context, DeployError> {
        use crate::deploy::render::cloudformation::{cluster_stack_name, service_stack_name};
        let config = triton_deploy_aws::load_config(aws).await;
        let region = triton_deploy_aws::region_of(&config);
        let cfn = triton_deploy_aws::cfn::Cfn::new(&config);
        let live = |s: &triton_deploy_aws::cfn::StackInfo| s.status != "REVIEW_IN_PROGRESS";
        let cluster_stack = cfn.describe(&cluster_stack_name(&spec)).await?.filter(live);
        let service_stack = cfn.describe(&service_stack_name(&spec)).await?.filter(live);
        let mut stack = match (&cluster_stack, &service_stack) {
            (Some(c), Some(s)) => Some(crate::deploy::stack::merge(c, s)),
            _ => None,
        };
        if let Some(s) = stack.as_mut() {
            complete_stack(&spec, s, &config).await?;
        }
        Ok(Context {
            spec,
            config,
            stack,
            cluster_stack,
            service_stack,
            region,
        })
    }

    /// The stacks' resources the service uses; an error naming the missing stack when there is none.
    pub fn infra(&self) -> Result<Infra, DeployError> {
        use crate::deploy::render::cloudformation::{cluster_stack_name, service_stack_name};
        let stack = self.stack.as_ref().ok_or_else(|| {
            let missing = if self.cluster_stack.is_none() {
                cluster_stack_name(&self.spec)
            } else {
                service_stack_name(&self.spec)
            };
            DeployError::NotDeployed(format!(
                "stack {missing} does not exist: nothing is deployed (run `triton-deploy rollout`)"
            ))
        })?;
        plan::infra_from_stack(&self.spec, stack, Vec::new(), &self.region)
            .map_err(|e| DeployError::State(e.to_string()))
    }
}

/// Fills in what a stack does not report but its resources tell: the EFS access point's ID
/// (read from EFS by the stack's file system), which some emulators leave out.
pub async fn complete_stack(
    spec: &DeploymentSpec,
    stack: &mut triton_deploy_aws::cfn::StackInfo,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<(), ApiError> {
    let known = stack.outputs.contains_key("AccessPointId")
        || stack
            .resources
            .get("AccessPoint")
            .is_some_and(|v| !v.is_empty());
    if !spec.efs || known {
        return Ok(());
    }
    let Some(fs) = stack
        .outputs
        .get("FileSystemId")
        .or_else(|| stack.resources.get("FileSystem"))
        .filter(|v| !v.is_empty())
        .cloned()
    else {
        return Ok(());
    };
    let points = triton_deploy_aws::efs::Efs::new(config)
        .access_points(&fs)
        .await?;
    // Each service's access point has its own root directory.
    let root = crate::deploy::render::cloudformation::access_point_root(spec);
    let mine: Vec<&String> = points
        .iter()
        .filter(|(_, path)| *path == root)
        .map(|(id, _)| id)
        .collect();
    if let [only] = mine.as_slice() {
        stack
            .resources
            .insert("AccessPoint".into(), (*only).clone());
    }
    Ok(())
}
