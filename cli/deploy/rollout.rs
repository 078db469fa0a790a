//! The whole `rollout`: the cluster stack ([`super::stack`]), then the service phase
//! ([`super::service`]: image, task definition, ECS service, autoscaling), then the wait for the
//! deployment, the verification through the endpoint and, on request, an instance refresh.

use std::path::PathBuf;

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::short_arn;

use super::error::DeployError;
use super::plan::{self, Assessment};
use super::service::{self, ServicePlan, WaitReport};
use super::spec::{DeploymentSpec, RouteKind};
use super::stack::{self, StackReport, StackSettings};
use super::{Timing, refresh};
use crate::output::Progress;

/// What a rollout is asked to do (from `rollout`'s flags).
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// Only show what would change.
    pub plan: bool,
    /// The image to deploy instead of the spec's.
    pub image: Option<String>,
    /// Verify through this URL instead of the load balancer's DNS name.
    pub endpoint: Option<String>,
    /// Do not wait for the deployment.
    pub no_wait: bool,
    /// One real inference after the deployment.
    pub smoke: bool,
    /// Replace the GPU hosts.
    pub refresh_instances: bool,
    /// Change the cluster stack even when other services of the cluster run on it.
    pub yes: bool,
    /// How long to wait, how often to look.
    pub timing: Timing,
    /// The directory of the spec file (relative paths in the spec start there).
    pub spec_dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct RolloutReport {
    /// The cluster stack phase.
    #[serde(flatten)]
    pub infra: StackReport,
    /// The service phase: image, task definition, service, autoscaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
    /// The endpoint the service answers on (the load balancer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `ready`, `ready+smoke:<model>`, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_refresh: Option<triton_deploy_aws::autoscaling::InstanceRefresh>,
    /// With `compute.ami = "baked"`: the image rolled out is not the one baked into the AMI, so
    /// new hosts pull it (`ami build` bakes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_baked: Option<String>,
}

impl RolloutReport {
    /// The report of a rollout that got as far as the stack phase.
    pub fn new(infra: StackReport) -> RolloutReport {
        RolloutReport {
            infra,
            service: None,
            wait: None,
            endpoint: None,
            verified: None,
            instance_refresh: None,
            not_baked: None,
        }
    }

    /// Whether anything changed (or, planning, would change).
    pub fn has_changes(&self) -> bool {
        self.infra.has_changes() || self.service.as_ref().is_some_and(|s| !s.is_empty())
    }
}

/// Rolls `spec` out: the cluster stack, then the service, then (unless told not to) the wait and
/// the verification. With `settings.plan` it only shows what would change.
pub async fn rollout(
    mut spec: DeploymentSpec,
    aws: &AwsOptions,
    settings: &RolloutSettings,
    progress: &Progress,
) -> Result<RolloutReport, DeployError> {
    let config = triton_deploy_aws::load_config(aws).await;
    let models = match spec.route {
        RouteKind::Models => models(&spec, &settings.spec_dir)?,
        RouteKind::All | RouteKind::Host | RouteKind::Path => Vec::new(),
    };
    let phase = stack::apply(
        &mut spec,
        &config,
        &StackSettings {
            plan: settings.plan,
            timeout_minutes: settings.timing.timeout.as_secs() / 60,
            yes: settings.yes,
            models,
        },
        progress,
    )
    .await?;
    let pf = phase.preflight;
    let mut report = RolloutReport::new(phase.report);
    let Some(mut stack) = phase.stack else {
        // Planning a new cluster or service: the service comes with its stack.
        return Ok(report);
    };
    service::complete_stack(&spec, &mut stack, &config).await?;
    let region = triton_deploy_aws::region_of(&config);
    let infra = plan::infra_from_stack(&spec, &stack, pf.subnets.clone(), &region)
        .map_err(|e| DeployError::State(e.to_string()))?;
    let image = service::resolve_image(&spec, settings.image.as_deref(), &config).await?;
    if matches!(spec.ami, crate::deploy::spec::Ami::Baked(_)) {
        report.not_baked = crate::deploy::ami::build::not_baked(&spec, &config, &image.uri).await?;
    }
    let (plan, existing) = service::plan_and_apply(
        &spec,
        &infra,
        image,
        &settings.spec_dir,
        &config,
        settings.plan,
    )
    .await?;
    let deployed = !settings.plan && (plan.service.is_some() || plan.task_definition.is_some());
    // Nothing to change, but an earlier rollout's deployment still going (it was interrupted, or
    // another client started it): wait for it too.
    let in_progress = !deployed
        && match (&existing, &plan.revision) {
            (Some(s), Some(rev)) => {
                matches!(plan::assess(s, rev, &[], false), Assessment::Waiting(_))
            }
            _ => false,
        };
    let revision = plan.revision.clone();
    report.service = Some(plan);
    if let Some(dns) = triton_deploy_aws::elbv2::Elb::new(&config)
        .dns_name(&infra.load_balancer_arn)
        .await?
    {
        report.endpoint = Some(plan::endpoint_url(&spec, &dns));
    }
    if settings.plan {
        return Ok(report);
    }
    if settings.refresh_instances {
        report.instance_refresh = Some(
            refresh::refresh_instances(&spec, &infra, &config, settings.timing, progress).await?,
        );
    }
    if settings.no_wait {
        return Ok(report);
    }
    let Some(revision) = revision else {
        return Ok(report);
    };
    if deployed || in_progress || settings.smoke || settings.endpoint.is_some() {
        if deployed || in_progress {
            progress.line(format!(
                "waiting for {} to run {}",
                spec.service,
                short_arn(&revision)
            ));
        }
        report.wait = Some(
            service::wait(&spec, &infra, &revision, &config, settings.timing, progress).await?,
        );
        report.verified = Some(verify(&spec, settings, report.endpoint.as_deref()).await?);
    }
    Ok(report)
}

/// The models of the spec's repository (none without one).
fn models(spec: &DeploymentSpec, spec_dir: &std::path::Path) -> Result<Vec<String>, DeployError> {
    let Some(dir) = &spec.model_repository else {
        return Ok(Vec::new());
    };
    let path = spec_dir.join(dir);
    crate::triton::model_repo::ModelRepo::read(&path, None)
        .map(|r| r.models.into_iter().map(|m| m.name).collect())
        .map_err(|e| {
            DeployError::State(format!(
                "image.model_repository {}: {e} (a route by model needs its models)",
                path.display()
            ))
        })
}

/// `GET /v2/health/ready` through the load balancer (or `--endpoint`), and with `--smoke` one
/// inference. An internal load balancer is not reachable from outside its VPC: said, not failed.
async fn verify(
    spec: &DeploymentSpec,
    settings: &RolloutSettings,
    alb: Option<&str>,
) -> Result<String, DeployError> {
    let endpoint = match (&settings.endpoint, alb) {
        (Some(e), _) => e.clone(),
        (None, Some(a)) if spec.internet_facing => a.to_string(),
        (None, Some(_)) => {
            return Ok("skipped: the load balancer is internal (pass --endpoint through a tunnel or from inside the VPC)".into());
        }
        (None, None) => return Ok("skipped: no load balancer DNS name".into()),
    };
    let models = models(spec, &settings.spec_dir).unwrap_or_default();
    let routed = match spec.route {
        RouteKind::Models => models.as_slice(),
        // The server's own readiness reaches the service by its host or prefix.
        RouteKind::All | RouteKind::Host | RouteKind::Path => &[],
    };
    service::verify_ready(&endpoint, routed, std::time::Duration::from_secs(60)).await?;
    if !settings.smoke {
        return Ok(format!("ready at {endpoint}"));
    }
    let model = service::smoke(&endpoint, &models).await?;
    Ok(format!(
        "ready at {endpoint}; inference on {model} answered"
    ))
}
