//! The deployment at a glance: the stack, the service's deployments, running/desired, target
//! health, the image, autoscaling, the endpoint, and whether a newer GPU AMI is out.

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::appscaling::{AppScaling, Scaling};
use triton_deploy_aws::autoscaling::{AutoScaling, InstanceRefresh};
use triton_deploy_aws::ecs::{Deployment, Ecs, ServiceEvent};
use triton_deploy_aws::elbv2::{Elb, TargetHealth};
use triton_deploy_aws::ssm::Ssm;

use super::error::DeployError;
use super::plan::{self, Assessment};
use super::render::cloudformation;
use super::service::Context;
use super::spec::{Ami, DeploymentSpec};
use super::stack::AmiUpdate;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub stack: String,
    pub stack_status: Option<String>,
    pub ami: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami_update: Option<AmiUpdate>,
    pub service: Option<ServiceStatus>,
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_refresh: Option<InstanceRefresh>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub status: String,
    pub task_definition: String,
    pub image: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    /// `steady`, `deploying`, or `failed`.
    pub state: String,
    pub deployments: Vec<Deployment>,
    pub targets: Vec<TargetHealth>,
    pub autoscaling: Option<Scaling>,
    pub events: Vec<ServiceEvent>,
}

/// The deployment of `spec` at a glance; `events` recent service events.
pub async fn status(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    events: usize,
) -> Result<StatusReport, DeployError> {
    let cx = Context::load(spec, aws).await?;
    let mut report = StatusReport {
        stack: cloudformation::stack_name(&cx.spec),
        stack_status: cx.stack.as_ref().map(|s| s.status.clone()),
        ami: cx
            .stack
            .as_ref()
            .and_then(|s| s.tags.get("triton-deploy:ami").cloned()),
        ami_update: None,
        service: None,
        endpoint: None,
        instance_refresh: None,
    };
    if cx.stack.is_none() {
        return Ok(report);
    }
    if let (Some(deployed), Ami::SsmParameter(p)) = (&report.ami, &cx.spec.ami)
        && let Some(now) = Ssm::new(&cx.config).get(p).await?
        && now != *deployed
    {
        report.ami_update = Some(AmiUpdate {
            from: deployed.clone(),
            to: now,
        });
    }
    let infra = cx.infra()?;
    report.instance_refresh = AutoScaling::new(&cx.config)
        .refreshes(&infra.auto_scaling_group)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
        .filter(|r| !r.is_done());
    let elb = Elb::new(&cx.config);
    report.endpoint = elb
        .dns_name(&infra.load_balancer_arn)
        .await?
        .map(|d| plan::endpoint_url(&cx.spec, &d));
    let ecs = Ecs::new(&cx.config);
    let Some(svc) = ecs
        .describe_service(&infra.cluster, &cx.spec.service)
        .await?
    else {
        return Ok(report);
    };
    let image = ecs
        .describe_task_definition(&svc.task_definition)
        .await
        .ok()
        .and_then(|t| {
            t.definition
                .pointer("/containerDefinitions/0/image")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let targets = elb.target_health(&infra.target_group_arn).await?;
    let assessment = plan::assess(&svc, &svc.task_definition, &targets);
    let scaling = &plan::scaling(
        &cx.spec,
        &infra,
        &plan::ScalingTarget {
            requests_per_minute: 0,
            source: String::new(),
        },
    )[0];
    let autoscaling = AppScaling::new(&cx.config)
        .get(&scaling.resource_id, &scaling.policy_name)
        .await?;
    report.service = Some(ServiceStatus {
        name: cx.spec.service.clone(),
        status: svc.status.clone(),
        task_definition: svc.task_definition.clone(),
        image,
        desired: svc.desired,
        running: svc.running,
        pending: svc.pending,
        state: match assessment {
            Assessment::Done => "steady",
            Assessment::Waiting(_) => "deploying",
            Assessment::Failed(_) => "failed",
        }
        .into(),
        deployments: svc.deployments.clone(),
        targets,
        autoscaling,
        events: svc.events.iter().take(events).cloned().collect(),
    });
    Ok(report)
}
