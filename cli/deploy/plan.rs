//! DeploymentSpec + the infra stack + the image → the desired service: the task definition's
//! inputs, the ECS service and its autoscaling; the normalized field-level diff
//! against what is deployed; and the judgement of a deployment's progress. Pure: the AWS calls
//! are made by the `rollout` command through the adapters.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use triton_deploy_aws::appscaling::Scaling;
use triton_deploy_aws::cfn::StackInfo;
use triton_deploy_aws::ecs::{Deployment, ServiceConfig, ServiceState};
use triton_deploy_aws::elbv2::TargetHealth;

use crate::deploy::render::taskdef::InfraOutputs;
use crate::deploy::spec::DeploymentSpec;

/// What the service needs from the infra stack.
#[derive(Debug, Clone, Serialize)]
pub struct Infra {
    pub cluster: String,
    pub capacity_provider: String,
    pub auto_scaling_group: String,
    pub load_balancer_arn: String,
    pub target_group_arn: String,
    /// The gRPC target group (`network.grpc`).
    pub grpc_target_group_arn: Option<String>,
    pub task_security_group: String,
    pub subnets: Vec<String>,
    #[serde(skip)]
    pub task: InfraOutputs,
}

/// What the plan could not learn from the stack or the spec's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The stack lacks an output the service needs.
    #[error(
        "stack {stack} has no output {output} nor resource {resource}: run `triton-deploy rollout` to update it"
    )]
    MissingOutput {
        /// The stack.
        stack: String,
        /// The output looked for.
        output: String,
        /// The resource whose physical ID would do.
        resource: String,
    },
    /// `task.run_result` names a file that is not a `run --out` report.
    #[error("{file}: {message}")]
    RunResult {
        /// The file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// `autoscaling.bench_result` names a file that does not give a target.
    #[error("{file}: {message}")]
    BenchResult {
        /// The file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads the stack's outputs, or (where an output is missing, as with some emulators) the physical
/// IDs of its resources. Names the first value it cannot find.
pub fn infra_from_stack(
    spec: &DeploymentSpec,
    stack: &StackInfo,
    subnets: Vec<String>,
    region: &str,
) -> Result<Infra, PlanError> {
    let get = |output: &str, resource: &str| -> Result<String, PlanError> {
        stack
            .value(output, resource)
            .ok_or_else(|| PlanError::MissingOutput {
                stack: stack.name.clone(),
                output: output.into(),
                resource: resource.into(),
            })
    };
    let target_group_arn = get("TargetGroupArn", "TargetGroup")?;
    // Roles are named by their physical ID; ECS wants ARNs: take partition and account from an ARN
    // the stack has.
    let mut arn_parts = target_group_arn.split(':');
    let partition = arn_parts.nth(1).unwrap_or("aws").to_string();
    let account = arn_parts.nth(2).unwrap_or_default().to_string();
    let role = |output: &str, resource: &str| -> Result<String, PlanError> {
        let v = get(output, resource)?;
        Ok(if v.starts_with("arn:") {
            v
        } else {
            format!("arn:{partition}:iam::{account}:role/{v}")
        })
    };
    let efs = spec.efs;
    Ok(Infra {
        cluster: get("ClusterName", "Cluster")?,
        capacity_provider: stack
            .outputs
            .get("CapacityProviderName")
            .cloned()
            .unwrap_or_else(|| crate::deploy::render::cloudformation::capacity_provider_name(spec)),
        auto_scaling_group: get("AutoScalingGroupName", "AutoScalingGroup")?,
        load_balancer_arn: get("LoadBalancerArn", "LoadBalancer")?,
        target_group_arn: target_group_arn.clone(),
        grpc_target_group_arn: if spec.grpc {
            Some(get("GrpcTargetGroupArn", "GrpcTargetGroup")?)
        } else {
            None
        },
        task_security_group: get("TaskSecurityGroupId", "TaskSecurityGroup")?,
        subnets,
        task: InfraOutputs {
            task_execution_role_arn: role("TaskExecutionRoleArn", "TaskExecutionRole")?,
            task_role_arn: role("TaskRoleArn", "TaskRole")?,
            log_group: get("LogGroupName", "LogGroup")?,
            file_system_id: if efs {
                Some(get("FileSystemId", "FileSystem")?)
            } else {
                None
            },
            access_point_id: if efs {
                Some(get("AccessPointId", "AccessPoint")?)
            } else {
                None
            },
            region: region.to_string(),
        },
    })
}

/// The ECS service `rollout` creates or updates. `desired_count` is set on creation only: after
/// that the service's autoscaling owns it.
pub fn service_config(
    spec: &DeploymentSpec,
    infra: &Infra,
    task_definition: &str,
    creating: bool,
) -> ServiceConfig {
    ServiceConfig {
        cluster: infra.cluster.clone(),
        service_name: spec.service.clone(),
        task_definition: task_definition.to_string(),
        desired_count: creating.then_some(spec.desired_count as i32),
        capacity_provider_strategy: vec![(infra.capacity_provider.clone(), 1, 1)],
        minimum_healthy_percent: spec.minimum_healthy_percent as i32,
        maximum_percent: spec.maximum_percent as i32,
        circuit_breaker_rollback: true,
        health_check_grace_period_seconds: spec.health_check_grace_seconds as i32,
        target_group_arn: infra.target_group_arn.clone(),
        grpc_target_group_arn: infra.grpc_target_group_arn.clone(),
        container_name: "triton".into(),
        container_port: 8000,
        subnets: infra.subnets.clone(),
        security_groups: vec![infra.task_security_group.clone()],
        enable_execute_command: spec.enable_exec,
        tags: crate::deploy::render::cloudformation::tags(spec),
    }
}

/// The service definition fields compared between desired and deployed (the JSON shape
/// `DescribeServices` is read into).
pub fn service_fields(c: &ServiceConfig) -> Value {
    let mut v = json!({
        "capacityProviderStrategy": c.capacity_provider_strategy.iter().map(|(p, w, b)| json!([p, w, b])).collect::<Vec<_>>(),
        "minimumHealthyPercent": c.minimum_healthy_percent,
        "maximumPercent": c.maximum_percent,
        "circuitBreakerRollback": c.circuit_breaker_rollback,
        "healthCheckGracePeriodSeconds": c.health_check_grace_period_seconds,
        "targetGroupArn": c.target_group_arn,
        "containerName": c.container_name,
        "containerPort": c.container_port,
        "subnets": c.subnets,
        "securityGroups": c.security_groups,
        "enableExecuteCommand": c.enable_execute_command,
    });
    // Only when set, so that a service without gRPC keeps the hash it had.
    if let Some(arn) = &c.grpc_target_group_arn {
        v["grpcTargetGroupArn"] = json!(arn);
    }
    v
}

/// A short hash of the service fields, kept as a service tag: the deployed configuration even
/// where `DescribeServices` does not report a field.
pub fn service_hash(c: &ServiceConfig) -> String {
    let text = serde_json::to_string(&service_fields(c)).expect("json");
    crate::package::registry::sha256_digest(text.as_bytes())[7..23].to_string()
}

/// Where the autoscaling target comes from.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingTarget {
    /// ALB requests per minute per task.
    pub requests_per_minute: u32,
    /// `spec`, `bench result <file>`, or `default`.
    pub source: String,
}

/// Default target when neither the spec nor a bench result gives one.
pub const DEFAULT_REQUESTS_PER_TASK: u32 = 600;

/// The target of the request-count policy: the spec's, a `bench` result's
/// (`autoscaling.target_requests_per_task` in its JSON), or the default.
pub fn scaling_target(
    spec: &DeploymentSpec,
    spec_dir: &std::path::Path,
) -> Result<ScalingTarget, PlanError> {
    if let Some(t) = spec.target_requests_per_task {
        return Ok(ScalingTarget {
            requests_per_minute: t,
            source: "spec".into(),
        });
    }
    if let Some(f) = &spec.bench_result {
        let path = spec_dir.join(f);
        let bad = |message: String| PlanError::BenchResult {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read the bench result: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let t = v
            .pointer("/autoscaling/target_requests_per_task")
            .and_then(Value::as_u64)
            .filter(|t| *t > 0 && *t <= u64::from(u32::MAX))
            .ok_or_else(|| {
                bad("no autoscaling.target_requests_per_task (a positive integer): run `triton-deploy bench --latency-budget ...` to write one".into())
            })?;
        return Ok(ScalingTarget {
            requests_per_minute: t as u32,
            source: format!("bench result {}", path.display()),
        });
    }
    Ok(ScalingTarget {
        requests_per_minute: DEFAULT_REQUESTS_PER_TASK,
        source: "default".into(),
    })
}

/// The pull rate assumed for a cold host's image pull from ECR in the same region (layers
/// downloaded and extracted; NVIDIA's 15 GB images take minutes).
pub const COLD_PULL_MIB_PER_SECOND: f64 = 60.0;

/// The grace period and health-check start period measured against a `run --out` report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Readiness {
    /// `run result <file>`.
    pub source: String,
    /// Container start to every model ready, as `run` measured it (on the host it ran on).
    pub measured_ready_seconds: f64,
    /// The image's size, bytes.
    pub image_bytes: u64,
    /// What a host without the image waits for its pull first, estimated at
    /// [`COLD_PULL_MIB_PER_SECOND`]. ECS pulls before the task starts, so it is not within the
    /// grace period; it is within a deployment's and a scale-out's time.
    pub cold_pull_seconds: f64,
    /// The grace period proposed: 1.5 × the measured time plus 15 s, in whole 10 s.
    pub proposed_grace_seconds: u32,
    /// The spec's `task.health_check_grace_seconds`.
    pub grace_seconds: u32,
    /// The container health check's start period as rendered (ECS allows at most 300 s).
    pub start_period_seconds: u32,
    /// Said when the spec's grace period (or the capped start period) is below the measured
    /// time: ECS would replace tasks that are still loading.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The readiness check of `task.run_result` (`None` without one): the measured time to ready
/// against the spec's grace period.
pub fn readiness(
    spec: &DeploymentSpec,
    spec_dir: &std::path::Path,
) -> Result<Option<Readiness>, PlanError> {
    let Some(f) = &spec.run_result else {
        return Ok(None);
    };
    let path = spec_dir.join(f);
    let bad = |message: String| PlanError::RunResult {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("cannot read the run result: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let t: crate::local::TimeToReady = v
        .get("time_to_ready")
        .cloned()
        .ok_or_else(|| {
            bad("no time_to_ready: write one with `triton-deploy run --out FILE`".into())
        })
        .and_then(|t| serde_json::from_value(t).map_err(|e| bad(format!("time_to_ready: {e}"))))?;
    let measured = t.ready_seconds;
    if !(measured.is_finite() && (0.0..=86_400.0).contains(&measured)) {
        return Err(bad(format!(
            "time_to_ready.ready_seconds {measured} is not a time between 0 and 86400 s"
        )));
    }
    Ok(Some(judge_readiness(
        spec,
        measured,
        t.image_bytes,
        format!("run result {}", path.display()),
    )))
}

/// The pure part of [`readiness`].
pub fn judge_readiness(
    spec: &DeploymentSpec,
    measured: f64,
    image_bytes: u64,
    source: String,
) -> Readiness {
    let proposed = ((measured * 1.5 + 15.0) / 10.0).ceil() as u32 * 10;
    let start_period = spec.health_check_grace_seconds.min(300);
    let mut warnings = Vec::new();
    if f64::from(spec.health_check_grace_seconds) < measured {
        warnings.push(format!(
            "task.health_check_grace_seconds = {} is below the measured time to ready ({measured:.1} s): ECS would stop tasks still loading their models; set it to {proposed} or more",
            spec.health_check_grace_seconds
        ));
    } else if f64::from(start_period) < measured {
        warnings.push(format!(
            "the container health check's start period is capped at 300 s by ECS, below the measured time to ready ({measured:.1} s): its retries must cover the rest"
        ));
    }
    Readiness {
        source,
        measured_ready_seconds: measured,
        image_bytes,
        // Rounded up: an estimate of a wait is better long than short.
        cold_pull_seconds: (image_bytes as f64 / (COLD_PULL_MIB_PER_SECOND * 1_048_576.0)).ceil(),
        proposed_grace_seconds: proposed,
        grace_seconds: spec.health_check_grace_seconds,
        start_period_seconds: start_period,
        warnings,
    }
}

/// The name of the CPU policy (present only when the spec sets `autoscaling.cpu_target`).
pub fn cpu_policy_name(spec: &DeploymentSpec) -> String {
    format!("triton-deploy-{}-cpu", spec.service)
}

/// The service's Application Auto Scaling: min/max tasks and target tracking on ALB requests per
/// target, plus one on average CPU when the spec asks for it.
pub fn scaling(spec: &DeploymentSpec, infra: &Infra, target: &ScalingTarget) -> Vec<Scaling> {
    let base = Scaling {
        resource_id: format!("service/{}/{}", infra.cluster, spec.service),
        min: spec.min_tasks as i32,
        max: spec.max_tasks as i32,
        policy_name: format!("triton-deploy-{}-requests", spec.service),
        metric: "ALBRequestCountPerTarget".into(),
        target: f64::from(target.requests_per_minute),
        resource_label: triton_deploy_aws::elbv2::resource_label(
            &infra.load_balancer_arn,
            &infra.target_group_arn,
        ),
        scale_in_cooldown: spec.scale_in_cooldown_seconds as i32,
        scale_out_cooldown: spec.scale_out_cooldown_seconds as i32,
    };
    let mut out = vec![base.clone()];
    if let Some(cpu) = spec.cpu_target {
        out.push(Scaling {
            policy_name: cpu_policy_name(spec),
            metric: "ECSServiceAverageCPUUtilization".into(),
            target: f64::from(cpu),
            resource_label: None,
            ..base
        });
    }
    out
}

/// The service's URL through the spec's listener: its `network.hostname` where it has one (the
/// name the certificate covers and host routing matches), else the load balancer's DNS name; under
/// its path prefix when routed by one.
pub fn endpoint_url(spec: &DeploymentSpec, dns: &str) -> String {
    let (scheme, default_port) = if spec.certificate_arn.is_some() {
        ("https", 443)
    } else {
        ("http", 80)
    };
    let host = spec.hostname.as_deref().unwrap_or(dns);
    let prefix = spec.path_prefix.as_deref().unwrap_or_default();
    if spec.listener_port == default_port {
        format!("{scheme}://{host}{prefix}")
    } else {
        format!("{scheme}://{host}:{}{prefix}", spec.listener_port)
    }
}

/// The service's gRPC endpoint through the load balancer (`network.grpc`): TLS to its hostname.
pub fn grpc_endpoint_url(spec: &DeploymentSpec) -> Option<String> {
    let host = spec.hostname.as_deref().filter(|_| spec.grpc)?;
    Some(if spec.listener_port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{}", spec.listener_port)
    })
}

/// A task definition as compared: the fields `taskdef` writes, with empty lists and nulls dropped
/// and tags and environment sorted, so ECS's defaults and ordering make no noise.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let x = normalize(x);
                let empty = x.is_null()
                    || x.as_array().is_some_and(|a| a.is_empty())
                    || x.as_object().is_some_and(|o| o.is_empty());
                if !empty {
                    out.insert(k.clone(), x);
                }
            }
            for key in ["tags", "environment"] {
                if let Some(Value::Array(a)) = out.get_mut(key) {
                    a.sort_by_key(|e| e.to_string());
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// One changed field: a JSON-pointer-like path and the two values (`null` for absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub from: Value,
    pub to: Value,
}

/// Field-level differences from `from` to `to`: objects by key, arrays by index (arrays of equal
/// length) or as a whole.
pub fn diff(from: &Value, to: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", from, to, &mut out);
    out
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                walk(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ => out.push(FieldChange {
            path: path.trim_start_matches('.').to_string(),
            from: a.clone(),
            to: b.clone(),
        }),
    }
}

/// The fields of the service that differ between what is deployed and what is wanted, field by
/// field: a change made outside the tool (the console, another script) is seen and repaired. A
/// field the reader does not report (an emulator drops some) is judged by the service's
/// configuration-hash tag instead: when it matches, the field was applied as it is wanted.
pub fn service_diff(observed: &ServiceState, desired: &ServiceConfig) -> Vec<FieldChange> {
    let hash = service_hash(desired);
    let applied = observed
        .tags
        .iter()
        .any(|(k, v)| k == "triton-deploy:service-hash" && *v == hash);
    let mut changes: Vec<FieldChange> = Vec::new();
    if let Value::Object(want) = service_fields(desired) {
        for (k, v) in &want {
            match observed.observed.get(k) {
                Some(seen) => walk(k, seen, v, &mut changes),
                None if applied => {}
                None => walk(k, &Value::Null, v, &mut changes),
            }
        }
    }
    changes
}

/// Where a deployment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Still going; what it waits for.
    Waiting(String),
    Done,
    /// Failed, with why (circuit-breaker rollback, rollout FAILED, ...).
    Failed(String),
}

fn short(arn: &str) -> &str {
    triton_deploy_aws::short_arn(arn)
}

/// How long after an update a service without the new deployment is taken for a stale read.
pub const STALE_READ_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Judges a service's deployment of `revision` from one `DescribeServices` answer and the target
/// group's health. Never calls a rolled-back deployment a success: the PRIMARY deployment must run
/// `revision` and be COMPLETED with running = desired and no unhealthy target. `fresh` says the
/// update was just made ([`STALE_READ_GRACE`]): an answer without any deployment of `revision` is
/// then a stale read (ECS's reads lag its writes), not a rollback — one whose deployment of
/// `revision` is there but not primary is a rollback all the same.
pub fn assess(
    service: &ServiceState,
    revision: &str,
    targets: &[TargetHealth],
    fresh: bool,
) -> Assessment {
    let primary: Option<&Deployment> = service.deployments.iter().find(|d| d.status == "PRIMARY");
    let Some(p) = primary else {
        return Assessment::Waiting("no primary deployment yet".into());
    };
    if p.task_definition != revision {
        let ours = service
            .deployments
            .iter()
            .find(|d| d.task_definition == revision);
        if ours.is_none() && fresh {
            return Assessment::Waiting(format!(
                "the service does not show the deployment of {} yet",
                short(revision)
            ));
        }
        let why = ours
            .and_then(|d| d.rollout_state_reason.clone())
            .or_else(|| p.rollout_state_reason.clone())
            .unwrap_or_default();
        return Assessment::Failed(format!(
            "the primary deployment runs {}, not {}: the deployment was rolled back{}",
            short(&p.task_definition),
            short(revision),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        ));
    }
    if p.rollout_state.as_deref() == Some("FAILED") {
        return Assessment::Failed(format!(
            "deployment {} failed: {}",
            p.id,
            p.rollout_state_reason.clone().unwrap_or_default()
        ));
    }
    let others = service
        .deployments
        .iter()
        .filter(|d| d.status != "PRIMARY" && d.status != "INACTIVE")
        .count();
    let completed = match p.rollout_state.as_deref() {
        Some(s) => s == "COMPLETED",
        None => others == 0,
    };
    if !completed || others > 0 {
        return Assessment::Waiting(format!(
            "rollout {} ({}/{} running, {} pending{})",
            p.rollout_state
                .as_deref()
                .unwrap_or("IN_PROGRESS")
                .to_lowercase(),
            p.running,
            p.desired,
            p.pending,
            if others > 0 {
                format!(", {others} old deployment(s) draining")
            } else {
                String::new()
            }
        ));
    }
    if p.running < p.desired || service.running < service.desired {
        return Assessment::Waiting(format!("{}/{} tasks running", p.running, p.desired));
    }
    let unhealthy: Vec<&TargetHealth> = targets
        .iter()
        .filter(|t| t.state != "healthy" && t.state != "draining")
        .collect();
    if let Some(t) = unhealthy.first() {
        return Assessment::Waiting(format!("target {}", target_line(t)));
    }
    Assessment::Done
}

/// One target as `<id> is <state>[: <why>]`, for progress lines and `status`.
pub fn target_line(t: &TargetHealth) -> String {
    let why = t
        .description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!("{} is {}{why}", t.id, t.state)
}

/// Counts of target states, for progress lines and `status`.
pub fn target_summary(targets: &[TargetHealth]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in targets {
        *m.entry(t.state.clone()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_hostname_under_the_prefix_and_grpc_is_tls_to_the_hostname() {
        let spec = |net: &str| {
            crate::deploy::spec::parse(
                std::path::Path::new("t.toml"),
                &format!("[service]\nname = \"clf\"\n[network]\n{net}"),
                None,
            )
            .unwrap()
        };
        let dns = "lb-1.us-east-1.elb.amazonaws.com";
        assert_eq!(endpoint_url(&spec(""), dns), format!("http://{dns}"));
        assert_eq!(grpc_endpoint_url(&spec("")), None);
        let s = spec("route = \"path\"\npath_prefix = \"/text\"\nlistener_port = 8080\n");
        assert_eq!(endpoint_url(&s, dns), format!("http://{dns}:8080/text"));
        let s = spec(
            "certificate_arn = \"arn:aws:acm:us-east-1:1:certificate/x\"\nhostname = \"Text.Example.com\"\ngrpc = true\n",
        );
        assert_eq!(endpoint_url(&s, dns), "https://text.example.com");
        assert_eq!(
            grpc_endpoint_url(&s).as_deref(),
            Some("https://text.example.com")
        );
    }

    fn dep(status: &str, td: &str, state: Option<&str>, running: i32) -> Deployment {
        Deployment {
            id: format!("ecs-svc/{td}"),
            status: status.into(),
            task_definition: td.into(),
            desired: 2,
            running,
            pending: 2 - running,
            failed: 0,
            rollout_state: state.map(str::to_string),
            rollout_state_reason: Some("tasks failed to start".into()),
        }
    }

    fn svc(deployments: Vec<Deployment>, running: i32) -> ServiceState {
        ServiceState {
            arn: "arn".into(),
            status: "ACTIVE".into(),
            task_definition: "td:2".into(),
            desired: 2,
            running,
            pending: 0,
            deployments,
            events: vec![],
            tags: vec![],
            observed: json!({}),
        }
    }

    fn target(state: &str) -> TargetHealth {
        TargetHealth {
            id: "10.0.0.1".into(),
            port: Some(8000),
            state: state.into(),
            reason: None,
            description: None,
        }
    }

    #[test]
    fn a_rolled_back_deployment_is_a_failure_not_a_success() {
        // The circuit breaker made the old revision primary again, and it is COMPLETED and healthy.
        let s = svc(
            vec![
                dep("PRIMARY", "td:1", Some("COMPLETED"), 2),
                dep("ACTIVE", "td:2", Some("FAILED"), 0),
            ],
            2,
        );
        for fresh in [false, true] {
            let p = assess(&s, "td:2", &[target("healthy")], fresh);
            assert!(
                matches!(&p, Assessment::Failed(m) if m.contains("rolled back") && m.contains("td:1")),
                "{p:?}"
            );
        }
        // Right after the update, an answer that does not show the new deployment at all is stale:
        // wait; later, the same answer means it was rolled back and is gone.
        let stale = svc(vec![dep("PRIMARY", "td:1", Some("COMPLETED"), 2)], 2);
        assert!(matches!(
            assess(&stale, "td:2", &[target("healthy")], true),
            Assessment::Waiting(m) if m.contains("does not show")
        ));
        assert!(matches!(
            assess(&stale, "td:2", &[target("healthy")], false),
            Assessment::Failed(m) if m.contains("rolled back")
        ));
    }

    #[test]
    fn a_deployment_is_done_only_when_completed_running_and_healthy() {
        let going = svc(
            vec![
                dep("PRIMARY", "td:2", Some("IN_PROGRESS"), 1),
                dep("ACTIVE", "td:1", Some("COMPLETED"), 2),
            ],
            3,
        );
        assert!(matches!(
            assess(&going, "td:2", &[], false),
            Assessment::Waiting(_)
        ));
        let done = svc(vec![dep("PRIMARY", "td:2", Some("COMPLETED"), 2)], 2);
        assert!(matches!(
            assess(&done, "td:2", &[target("initial")], false),
            Assessment::Waiting(m) if m.contains("initial")
        ));
        assert_eq!(
            assess(
                &done,
                "td:2",
                &[target("healthy"), target("draining")],
                false
            ),
            Assessment::Done
        );
        let failed = svc(vec![dep("PRIMARY", "td:2", Some("FAILED"), 0)], 0);
        assert!(matches!(
            assess(&failed, "td:2", &[], false),
            Assessment::Failed(m) if m.contains("tasks failed to start")
        ));
    }

    #[test]
    fn the_scaling_target_comes_from_a_bench_result() {
        let dir = tempfile::tempdir().unwrap();
        let a = crate::bench::sizing::autoscaling(40.0, 1, 0.5, None, None);
        std::fs::write(
            dir.path().join("bench.json"),
            json!({"steps": [], "autoscaling": a}).to_string(),
        )
        .unwrap();
        let spec = crate::deploy::spec::parse(
            std::path::Path::new("t.toml"),
            "[service]\nname = \"x\"\n[autoscaling]\nbench_result = \"bench.json\"\n",
            None,
        )
        .unwrap();
        let t = scaling_target(&spec, dir.path()).unwrap();
        assert_eq!(t.requests_per_minute, 1200);
        assert!(t.source.contains("bench.json"));
        std::fs::write(dir.path().join("bench.json"), "{\"steps\": []}").unwrap();
        assert!(
            scaling_target(&spec, dir.path())
                .unwrap_err()
                .to_string()
                .contains("--latency-budget")
        );
    }

    #[test]
    fn the_grace_period_is_checked_against_the_measured_time_to_ready() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |grace: u32| {
            crate::deploy::spec::parse(
                std::path::Path::new("t.toml"),
                &format!("[service]\nname = \"x\"\n[task]\nhealth_check_grace_seconds = {grace}\nrun_result = \"run.json\"\n"),
                None,
            )
            .unwrap()
        };
        let write = |v: Value| std::fs::write(dir.path().join("run.json"), v.to_string()).unwrap();
        write(
            json!({"time_to_ready": {"pull_seconds": 40.0, "pulled": true,
            "image_bytes": 15u64 << 30, "start_seconds": 20.0, "load_seconds": 80.0,
            "ready_seconds": 100.0, "total_seconds": 140.0}}),
        );
        let r = readiness(&spec(600), dir.path()).unwrap().unwrap();
        assert_eq!(r.measured_ready_seconds, 100.0);
        assert_eq!(
            r.proposed_grace_seconds, 170,
            "1.5 x 100 + 15, in whole 10 s"
        );
        assert_eq!(r.cold_pull_seconds, 256.0, "15 GiB at 60 MiB/s");
        assert_eq!(r.start_period_seconds, 300);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let low = readiness(&spec(60), dir.path()).unwrap().unwrap();
        assert_eq!(low.warnings.len(), 1);
        assert!(
            low.warnings[0].contains("health_check_grace_seconds = 60 is below"),
            "{:?}",
            low.warnings
        );
        // Past ECS's 300 s cap on the start period, the grace period alone is not enough.
        let slow = judge_readiness(&spec(900), 400.0, 0, "t".into());
        assert!(
            slow.warnings[0].contains("capped at 300 s"),
            "{:?}",
            slow.warnings
        );
        // Not a run report, and no spec key at all.
        write(json!({"steps": []}));
        let e = readiness(&spec(600), dir.path()).unwrap_err().to_string();
        assert!(e.contains("run.json") && e.contains("run --out"), "{e}");
        write(
            json!({"time_to_ready": {"pull_seconds": 0.0, "pulled": false, "image_bytes": 1,
            "start_seconds": 1.0, "load_seconds": 1.0, "ready_seconds": -3.0, "total_seconds": 2.0}}),
        );
        assert!(
            readiness(&spec(600), dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
        let none = crate::deploy::spec::parse(
            std::path::Path::new("t.toml"),
            "[service]\nname = \"x\"\n",
            None,
        )
        .unwrap();
        assert_eq!(readiness(&none, dir.path()).unwrap(), None);
    }

    #[test]
    fn normalized_definitions_ignore_order_and_empty_defaults() {
        let a = json!({"family": "f", "volumes": [], "tags": [{"key": "b", "value": "2"}, {"key": "a", "value": "1"}],
                       "containerDefinitions": [{"name": "triton", "environment": [], "mountPoints": []}]});
        let b = json!({"family": "f", "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
                       "containerDefinitions": [{"name": "triton"}], "placementConstraints": null});
        assert!(diff(&normalize(&a), &normalize(&b)).is_empty());
        let c = json!({"family": "f", "containerDefinitions": [{"name": "triton", "image": "x@sha256:1"}]});
        let d = json!({"family": "f", "containerDefinitions": [{"name": "triton", "image": "x@sha256:2"}]});
        assert_eq!(
            diff(&c, &d),
            vec![FieldChange {
                path: "containerDefinitions[0].image".into(),
                from: json!("x@sha256:1"),
                to: json!("x@sha256:2")
            }]
        );
    }
}
