//! Tearing a deployment down: autoscaling deregistered, the service scaled to 0 and deleted, its
//! task definitions deleted, the stack (with the dashboard) deleted; ECR images kept unless asked.
//! Each step is skipped when its resource is already gone, so an interrupted destroy is finished
//! by running it again.

use std::time::{Duration, Instant};

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::appscaling::AppScaling;
use triton_deploy_aws::cfn::{Cfn, StackEvent};
use triton_deploy_aws::ecr::Ecr;
use triton_deploy_aws::ecs::Ecs;

use super::error::DeployError;
use super::render::{cloudformation, taskdef};
use super::service::Context;
use super::spec::DeploymentSpec;
use super::stack::event_line;
use crate::output::Progress;

#[derive(Debug, Serialize, Default)]
pub struct DestroyReport {
    /// What was removed, in order.
    pub removed: Vec<String>,
    /// What was kept, and why.
    pub kept: Vec<String>,
}

/// Removes the deployment of `spec`: autoscaling, the service (scaled to 0, deleted, drained),
/// its task definitions, the stack and, with `delete_images`, the ECR repository.
pub async fn destroy(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    delete_images: bool,
    timeout: Duration,
    progress: &Progress,
) -> Result<DestroyReport, DeployError> {
    let cx = Context::load(spec, aws).await?;
    let stack_name = cloudformation::stack_name(&cx.spec);
    let say = |m: &str| progress.line(format!("  {m}"));
    let mut report = DestroyReport::default();
    let ecs = Ecs::new(&cx.config);
    if cx.stack.is_some() {
        let infra = cx.infra()?;
        let resource_id = format!("service/{}/{}", infra.cluster, cx.spec.service);
        let scaler = AppScaling::new(&cx.config);
        let policy = format!("triton-deploy-{}-requests", cx.spec.service);
        if scaler.get(&resource_id, &policy).await?.is_some() {
            say("deregistering autoscaling");
            scaler.delete(&resource_id).await?;
            report.removed.push(format!("autoscaling {resource_id}"));
        }
        if let Some(svc) = ecs
            .describe_service(&infra.cluster, &cx.spec.service)
            .await?
        {
            if svc.desired > 0 {
                say("scaling the service to 0");
                ecs.set_desired_count(&infra.cluster, &cx.spec.service, 0)
                    .await?;
            }
            say("deleting the service");
            ecs.delete_service(&infra.cluster, &cx.spec.service).await?;
            let started = Instant::now();
            while ecs
                .describe_service(&infra.cluster, &cx.spec.service)
                .await?
                .is_some_and(|s| s.status != "DRAINING" || s.running > 0)
            {
                if started.elapsed() > timeout {
                    return Err(DeployError::Failed(format!(
                        "service {} still draining after {} min: run destroy again later",
                        cx.spec.service,
                        timeout.as_secs() / 60
                    )));
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            report.removed.push(format!("service {}", cx.spec.service));
        }
    }
    let family = taskdef::family(&cx.spec);
    let revisions = ecs.revisions(&family).await?;
    if !revisions.is_empty() {
        ecs.delete_task_definitions(&revisions).await?;
        report.removed.push(format!(
            "task definition {family} ({} revision(s))",
            revisions.len()
        ));
    }
    if cx.stack.is_some() {
        say(&format!("deleting stack {stack_name}"));
        let on_event = |e: &StackEvent| progress.line(event_line(e));
        Cfn::new(&cx.config)
            .delete_and_wait(&stack_name, timeout, &on_event)
            .await?;
        report.removed.push(format!(
            "stack {stack_name} (hosts, load balancer, EFS, dashboard {})",
            cloudformation::dashboard_name(&cx.spec)
        ));
    }
    if let Some(repo) = &cx.spec.image_repository {
        let ecr = Ecr::new(&cx.config);
        if delete_images {
            if ecr
                .describe(repo)
                .await
                .map_err(|e| DeployError::Failed(e.to_string()))?
                .is_some()
            {
                ecr.delete_repository(repo).await?;
                report
                    .removed
                    .push(format!("ECR repository {repo} and its images"));
            }
        } else {
            report.kept.push(format!(
                "ECR repository {repo} (--delete-images removes it)"
            ));
        }
    }
    Ok(report)
}
