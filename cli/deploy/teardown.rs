//! Tearing a deployment down: autoscaling deregistered, the service scaled to 0 and deleted, its
//! task definitions deleted, its stack (with the dashboard) deleted, and the cluster stack too
//! when no other service runs on the cluster; ECR images kept unless asked.
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
use super::stack::{LAYER_TAG, event_line, other_services};
use crate::output::Progress;

#[derive(Debug, Serialize, Default)]
pub struct DestroyReport {
    /// What was removed, in order.
    pub removed: Vec<String>,
    /// What was kept, and why.
    pub kept: Vec<String>,
}

/// Removes the cluster of `spec` (its stack), refused while any service's stack remains on it.
pub async fn destroy_cluster(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    timeout: Duration,
    progress: &Progress,
) -> Result<DestroyReport, DeployError> {
    let config = triton_deploy_aws::load_config(aws).await;
    let cfn = Cfn::new(&config);
    let services: Vec<String> = cfn
        .stacks_tagged("triton-deploy:cluster", &spec.cluster)
        .await?
        .into_iter()
        .filter(|s| s.tags.get(LAYER_TAG).map(String::as_str) == Some("service"))
        .filter_map(|s| s.tags.get("triton-deploy:service").cloned())
        .collect();
    if !services.is_empty() {
        return Err(DeployError::State(format!(
            "cluster {} still runs services {}: destroy them first (`triton-deploy destroy -f <their spec>`)",
            spec.cluster,
            services.join(", ")
        )));
    }
    let mut report = DestroyReport::default();
    let name = cloudformation::cluster_stack_name(&spec);
    if cfn.describe(&name).await?.is_some() {
        progress.line(format!("  deleting stack {name}"));
        let on_event = |e: &StackEvent| progress.line(event_line(e));
        cfn.delete_and_wait(&name, timeout, &on_event).await?;
        report
            .removed
            .push(format!("stack {name} (hosts, load balancer, EFS)"));
    }
    Ok(report)
}

/// Removes the deployment of `spec`: autoscaling, the service (scaled to 0, deleted, drained),
/// its task definitions, its stack, the cluster stack unless other services of the cluster remain,
/// and, with `delete_images`, the ECR repository.
pub async fn destroy(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    delete_images: bool,
    timeout: Duration,
    progress: &Progress,
) -> Result<DestroyReport, DeployError> {
    let cx = Context::load(spec, aws).await?;
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
    let cfn = Cfn::new(&cx.config);
    let on_event = |e: &StackEvent| progress.line(event_line(e));
    if let Some(s) = &cx.service_stack {
        say(&format!("deleting stack {}", s.name));
        cfn.delete_and_wait(&s.name, timeout, &on_event).await?;
        report.removed.push(format!(
            "stack {} (target group, listener rules, task role, access point, logs, dashboard {})",
            s.name,
            cloudformation::dashboard_name(&cx.spec)
        ));
    }
    if let Some(c) = &cx.cluster_stack {
        let others = other_services(&cfn, &cx.spec).await?;
        if others.is_empty() {
            say(&format!(
                "deleting stack {} (the cluster's last service is gone)",
                c.name
            ));
            cfn.delete_and_wait(&c.name, timeout, &on_event).await?;
            report
                .removed
                .push(format!("stack {} (hosts, load balancer, EFS)", c.name));
        } else {
            report.kept.push(format!(
                "stack {} (the cluster: services {} still run on it)",
                c.name,
                others.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
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
