//! The GPU preflight: before any change, that the account and region can run the deployment
//! (the instance type's GPUs, room for a rolling deployment, the zones offering the type, the
//! AMI). Each failure says what to change in the spec.

use std::collections::BTreeSet;

use triton_deploy_aws::ec2::Ec2;
use triton_deploy_aws::ssm::Ssm;

use super::error::DeployError;
use super::spec::{self, Ami, DeploymentSpec};

/// What the preflight found: the network to use and the AMI the parameter resolves to.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub vpc_id: String,
    pub vpc_cidr: String,
    pub subnets: Vec<String>,
    pub ami_id: String,
}

/// Checks, before any change, that the deployment can run: the instance type's GPUs, room for a
/// rolling deployment, the type offered in the subnets' zones (one subnet per zone is used), and
/// the AMI. Each failure says what to change.
pub async fn preflight(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<Preflight, DeployError> {
    let ec2 = Ec2::new(config);
    let per = ec2.gpus(&spec.instance_type).await?.ok_or_else(|| {
        DeployError::Preflight(format!(
            "EC2 does not know the instance type {} in this region: check compute.instance_type",
            spec.instance_type
        ))
    })?;
    if per == 0 {
        return Err(DeployError::Preflight(format!(
            "{} has no GPU: choose a GPU instance type (g5, g6, g6e, p4d, p5...)",
            spec.instance_type
        )));
    }
    spec::rolling_room(spec, per)?;
    let net =
        ec2.network(spec.vpc_id.as_deref(), &spec.subnets)
            .await?
            .ok_or_else(|| {
                DeployError::Preflight(match &spec.vpc_id {
                    Some(v) => format!("VPC {v} does not exist in this region: fix network.vpc_id"),
                    None => "no default VPC in this region: set network.vpc_id and network.subnets"
                        .into(),
                })
            })?;
    if !spec.subnets.is_empty() {
        let found: BTreeSet<&str> = net.subnets.iter().map(|(s, _)| s.as_str()).collect();
        if let Some(missing) = spec.subnets.iter().find(|s| !found.contains(s.as_str())) {
            return Err(DeployError::Preflight(format!(
                "subnet {missing} is not in {}: fix network.subnets",
                net.vpc_id
            )));
        }
    }
    let zones = ec2.zones_offering(&spec.instance_type).await?;
    let mut chosen: Vec<(String, String)> = Vec::new();
    for (subnet, az) in &net.subnets {
        if !zones.contains(az) {
            if !spec.subnets.is_empty() {
                return Err(DeployError::Preflight(format!(
                    "{} is not offered in {az} (subnet {subnet}); it is offered in {}: use subnets in those zones",
                    spec.instance_type,
                    zones.join(", ")
                )));
            }
            continue;
        }
        if chosen.iter().any(|(_, z)| z == az) {
            if !spec.subnets.is_empty() {
                return Err(DeployError::Preflight(format!(
                    "two subnets in {az}: EFS takes one mount target per zone; give one subnet per availability zone"
                )));
            }
            continue;
        }
        chosen.push((subnet.clone(), az.clone()));
    }
    if chosen.len() < 2 {
        return Err(DeployError::Preflight(format!(
            "{} is offered in {} of the VPC's zones; the hosts and the load balancer need at least 2 zones",
            spec.instance_type,
            chosen.len()
        )));
    }
    // The other instance types: the same GPU count, offered in at least one chosen zone.
    for t in spec.instance_types.iter().skip(1) {
        match ec2.gpus(t).await? {
            None => {
                return Err(DeployError::Preflight(format!(
                    "EC2 does not know the instance type {t} in this region: check compute.instance_types"
                )));
            }
            Some(g) if g != per => {
                return Err(DeployError::Preflight(format!(
                    "{t} has {g} GPU(s) and {} {per}: compute.instance_types need the same GPU count",
                    spec.instance_type
                )));
            }
            Some(_) => {}
        }
        let offered = ec2.zones_offering(t).await?;
        if !chosen.iter().any(|(_, az)| offered.contains(az)) {
            return Err(DeployError::Preflight(format!(
                "{t} is offered in none of the zones chosen for {} ({}): drop it from compute.instance_types",
                spec.instance_type,
                chosen
                    .iter()
                    .map(|(_, z)| z.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let ami_id = match &spec.ami {
        Ami::SsmParameter(p) => Ssm::new(config).get(p).await?.ok_or_else(|| {
            DeployError::Preflight(format!(
                "the AMI parameter {p} does not exist in this region: set compute.ami to al2-gpu, an AMI ID, or your own parameter"
            ))
        })?,
        Ami::Baked(p) => Ssm::new(config).get(p).await?.ok_or_else(|| {
            DeployError::Preflight(format!(
                "compute.ami = \"baked\", but no AMI is baked for cluster {} yet ({p} does not exist): run `triton-deploy ami build` first",
                spec.cluster
            ))
        })?,
        Ami::Id(id) => {
            if !ec2.image_exists(id).await? {
                return Err(DeployError::Preflight(format!("AMI {id} does not exist in this region: fix compute.ami")));
            }
            id.clone()
        }
    };
    Ok(Preflight {
        vpc_id: net.vpc_id,
        vpc_cidr: net.cidr,
        subnets: chosen.into_iter().map(|(s, _)| s).collect(),
        ami_id,
    })
}
