//! The endpoint a deployment answers on, for `bench -f SPEC`: the service's URL through the load
//! balancer (HTTP, and gRPC where it has it), the first model of the spec's repository, and the
//! number of running tasks.

use std::path::Path;

use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::ecs::Ecs;
use triton_deploy_aws::elbv2::Elb;

use super::error::DeployError;
use super::plan;
use super::service::Context;
use super::spec::DeploymentSpec;
use crate::triton::model_repo::ModelRepo;

/// Where a deployed service answers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The service's URL (its hostname where the spec sets one, else the load balancer's).
    pub url: String,
    /// Its gRPC endpoint through the load balancer (`network.grpc`).
    pub grpc_url: Option<String>,
    /// The first model of the spec's model repository, when it has one.
    pub model: Option<String>,
    /// The running tasks (at least 1), when the service exists.
    pub tasks: Option<u32>,
}

/// The endpoint of `spec`'s deployment; `spec_dir` is where the spec's relative paths start.
pub async fn deployed(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    spec_dir: &Path,
) -> Result<Endpoint, DeployError> {
    let cx = Context::load(spec, aws).await?;
    let infra = cx.infra()?;
    let dns = Elb::new(&cx.config)
        .dns_name(&infra.load_balancer_arn)
        .await?
        .ok_or_else(|| DeployError::State("the deployed load balancer has no DNS name".into()))?;
    let url = plan::endpoint_url(&cx.spec, &dns);
    let grpc_url = plan::grpc_endpoint_url(&cx.spec);
    let model = cx.spec.model_repository.as_ref().and_then(|dir| {
        ModelRepo::read(&spec_dir.join(dir), None)
            .ok()?
            .models
            .into_iter()
            .map(|m| m.name)
            .next()
    });
    let tasks = Ecs::new(&cx.config)
        .describe_service(&infra.cluster, &cx.spec.service)
        .await?
        .map(|s| s.running.max(1) as u32);
    Ok(Endpoint {
        url,
        grpc_url,
        model,
        tasks,
    })
}
