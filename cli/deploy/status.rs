//! The deployment at a glance: the stacks, the service's deployments, running/desired, target
//! health, the image, autoscaling, the endpoint, and whether a newer GPU AMI is out; and with
//! `--cluster` the cluster's hosts, GPUs and every service on it.

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::appscaling::{AppScaling, Scaling};
use triton_deploy_aws::autoscaling::{AutoScaling, InstanceRefresh};
use triton_deploy_aws::cfn::Cfn;
use triton_deploy_aws::ecs::{ContainerInstance, Deployment, Ecs, ServiceEvent};
use triton_deploy_aws::elbv2::{Elb, TargetHealth};
use triton_deploy_aws::ssm::Ssm;

use super::error::DeployError;
use super::plan::{self, Assessment};
use super::render::cloudformation;
use super::route;
use super::service::Context;
use super::spec::DeploymentSpec;
use super::stack::{AmiUpdate, BLOCK_TAG, LAYER_TAG, ROUTE_TAG};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The cluster stack.
    pub stack: String,
    pub stack_status: Option<String>,
    /// The service's stack.
    pub service_stack: String,
    pub service_stack_status: Option<String>,
    pub ami: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami_update: Option<AmiUpdate>,
    /// With `compute.ami = "baked"`: the AMI in the cluster's parameter, what it holds, and
    /// whether it is behind the base AMI or the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baked_ami: Option<crate::deploy::ami::build::BakedStatus>,
    pub service: Option<ServiceStatus>,
    pub endpoint: Option<String>,
    /// The gRPC endpoint through the load balancer (`network.grpc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,
    /// Where the tasks' CPU, memory and network are charted (Container Insights is on for the
    /// cluster); GPU metrics are on each task's :8002, inside the VPC.
    pub container_insights: Option<String>,
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
        stack: cloudformation::cluster_stack_name(&cx.spec),
        stack_status: cx.cluster_stack.as_ref().map(|s| s.status.clone()),
        service_stack: cloudformation::service_stack_name(&cx.spec),
        service_stack_status: cx.service_stack.as_ref().map(|s| s.status.clone()),
        ami: cx
            .cluster_stack
            .as_ref()
            .and_then(|s| s.tags.get("triton-deploy:ami").cloned()),
        ami_update: None,
        baked_ami: None,
        service: None,
        endpoint: None,
        grpc_endpoint: None,
        container_insights: None,
        instance_refresh: None,
    };
    if matches!(cx.spec.ami, super::spec::Ami::Baked(_)) {
        report.baked_ami = Some(crate::deploy::ami::build::status(&cx.spec, &cx.config).await?);
    }
    if cx.stack.is_none() {
        return Ok(report);
    }
    if let (Some(deployed), Some(p)) = (&report.ami, cx.spec.ami.parameter())
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
    report.grpc_endpoint = plan::grpc_endpoint_url(&cx.spec);
    report.container_insights = Some(container_insights_url(&infra.task.region, &infra.cluster));
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
    let assessment = plan::assess(&svc, &svc.task_definition, &targets, false);
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

/// The cluster at a glance (`status --cluster`): its stack, its hosts and GPUs, and every service
/// on it with its route, models and tasks.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub cluster: String,
    pub stack: String,
    pub stack_status: Option<String>,
    /// Hosts in service in the Auto Scaling group, and its desired capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<HostCount>,
    /// The hosts ECS has in the cluster, with their GPUs.
    pub container_instances: Vec<ContainerInstance>,
    /// GPUs the hosts registered, and those no task holds.
    pub gpus: usize,
    pub gpus_free: usize,
    pub services: Vec<ClusterService>,
}

/// The Auto Scaling group's size.
#[derive(Debug, Serialize)]
pub struct HostCount {
    pub in_service: usize,
    pub desired: i32,
}

/// One service of the cluster.
#[derive(Debug, Serialize)]
pub struct ClusterService {
    pub name: String,
    pub stack: String,
    pub stack_status: String,
    /// `models` or `all`.
    pub route: String,
    /// The models its listener rules route to it.
    pub models: Vec<String>,
    /// ECS's view: ACTIVE, DRAINING, or none when the service is not (yet) there.
    pub status: Option<String>,
    pub running: i32,
    pub desired: i32,
}

/// The CloudWatch console's Container Insights page for an ECS cluster.
pub fn container_insights_url(region: &str, cluster: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#container-insights:performance/ECS:Cluster?~(query~(controls~(CW*3a*3aECS.cluster~(~'{cluster}))))"
    )
}

/// The models a service's listener rules route (paths `/v2/models/<m>` in its block).
fn routed_models(rules: &[triton_deploy_aws::elbv2::Rule], block: Option<u32>) -> Vec<String> {
    let mut models: Vec<String> = rules
        .iter()
        .filter(|r| block.is_some() && route::block_of(r.priority) == block)
        .flat_map(|r| r.paths.iter())
        .filter_map(|p| p.strip_prefix("/v2/models/"))
        .filter(|m| !m.contains('/'))
        .map(str::to_string)
        .collect();
    models.sort();
    models.dedup();
    models
}

/// `status --cluster` for the cluster of `spec`.
pub async fn cluster_status(
    spec: DeploymentSpec,
    aws: &AwsOptions,
) -> Result<ClusterReport, DeployError> {
    let config = triton_deploy_aws::load_config(aws).await;
    let cfn = Cfn::new(&config);
    let name = cloudformation::cluster_stack_name(&spec);
    let stack = cfn.describe(&name).await?;
    let mut report = ClusterReport {
        cluster: spec.cluster.clone(),
        stack: name,
        stack_status: stack.as_ref().map(|s| s.status.clone()),
        instances: None,
        container_instances: Vec::new(),
        gpus: 0,
        gpus_free: 0,
        services: Vec::new(),
    };
    let Some(stack) = stack else {
        return Ok(report);
    };
    if let Some(group) = stack.value("AutoScalingGroupName", "AutoScalingGroup")
        && let Some((in_service, desired)) = AutoScaling::new(&config).size(&group).await?
    {
        report.instances = Some(HostCount {
            in_service,
            desired,
        });
    }
    let ecs = Ecs::new(&config);
    let cluster = stack
        .value("ClusterName", "Cluster")
        .unwrap_or_else(|| spec.cluster.clone());
    report.container_instances = ecs.container_instances(&cluster).await?;
    report.gpus = report.container_instances.iter().map(|c| c.gpus).sum();
    report.gpus_free = report.container_instances.iter().map(|c| c.gpus_free).sum();
    let rules = match stack.value("ListenerArn", "Listener") {
        Some(l) => Elb::new(&config).rules(&l).await?,
        None => Vec::new(),
    };
    let services = cfn
        .stacks_tagged("triton-deploy:cluster", &spec.cluster)
        .await?
        .into_iter()
        .filter(|s| s.tags.get(LAYER_TAG).map(String::as_str) == Some("service"));
    for s in services {
        let Some(svc) = s.tags.get("triton-deploy:service").cloned() else {
            continue;
        };
        let route = s.tags.get(ROUTE_TAG).cloned().unwrap_or_default();
        let block = s.tags.get(BLOCK_TAG).and_then(|b| b.parse().ok());
        let state = ecs.describe_service(&cluster, &svc).await?;
        report.services.push(ClusterService {
            models: if route == "all" {
                Vec::new()
            } else {
                routed_models(&rules, block)
            },
            route,
            stack: s.name,
            stack_status: s.status,
            status: state.as_ref().map(|x| x.status.clone()),
            running: state.as_ref().map_or(0, |x| x.running),
            desired: state.as_ref().map_or(0, |x| x.desired),
            name: svc,
        });
    }
    report.services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_s_models_are_the_paths_of_its_block() {
        let rule = |priority, paths: &[&str]| triton_deploy_aws::elbv2::Rule {
            priority,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hosts: Vec::new(),
        };
        let rules = vec![
            rule(1305, &["/v2/models/b", "/v2/models/b/*"]),
            rule(1301, &["/v2/models/a", "/v2/models/a/*"]),
            rule(1401, &["/v2/models/c", "/v2/models/c/*"]),
            rule(50_000, &["/*"]),
        ];
        assert_eq!(routed_models(&rules, Some(3)), ["a", "b"]);
        assert_eq!(routed_models(&rules, Some(4)), ["c"]);
        assert!(routed_models(&rules, None).is_empty());
    }
}
