//! EC2 facts for the preflight: the default VPC, subnets' zones, an instance type's GPUs and the
//! zones that offer it.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceType, LocationType};

use crate::describe_sdk_error;

/// An EC2 call failed.
#[derive(Debug, thiserror::Error)]
#[error("EC2 {action} failed: {detail}")]
pub struct Ec2Error {
    /// The call.
    pub action: &'static str,
    /// What AWS said.
    pub detail: String,
}

/// A VPC: its id and CIDR.
#[derive(Debug, Clone)]
pub struct Network {
    /// The VPC's id.
    pub vpc_id: String,
    /// Its IPv4 CIDR.
    pub cidr: String,
    /// (subnet ID, availability zone)
    pub subnets: Vec<(String, String)>,
}

/// EC2.
pub struct Ec2 {
    client: Client,
}

fn err(action: &'static str) -> impl Fn(String) -> Ec2Error {
    move |detail| Ec2Error { action, detail }
}

impl Ec2 {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ec2 {
            client: Client::new(config),
        }
    }

    /// The VPC (`vpc_id`, or the default VPC) with its CIDR and subnets (`subnets`, or all of them).
    pub async fn network(
        &self,
        vpc_id: Option<&str>,
        subnets: &[String],
    ) -> Result<Option<Network>, Ec2Error> {
        let mut req = self.client.describe_vpcs();
        req = match vpc_id {
            Some(id) => req.vpc_ids(id),
            None => req.filters(Filter::builder().name("isDefault").values("true").build()),
        };
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) => {
                if crate::error_code(&e).as_deref() == Some("InvalidVpcID.NotFound") {
                    return Ok(None);
                }
                return Err(err("DescribeVpcs")(describe_sdk_error(&e)));
            }
        };
        let Some(vpc) = out.vpcs().first() else {
            return Ok(None);
        };
        let vpc_id = vpc.vpc_id().unwrap_or_default().to_string();
        let mut sreq = self
            .client
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(&vpc_id).build());
        if !subnets.is_empty() {
            sreq = sreq.set_subnet_ids(Some(subnets.to_vec()));
        }
        // Every page: a VPC can hold more subnets than one answer.
        let pages = sreq
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| err("DescribeSubnets")(describe_sdk_error(&e)))?;
        let mut found: Vec<(String, String)> = pages
            .iter()
            .flat_map(|p| p.subnets())
            .map(|s| {
                (
                    s.subnet_id().unwrap_or_default().to_string(),
                    s.availability_zone().unwrap_or_default().to_string(),
                )
            })
            .collect();
        found.sort();
        Ok(Some(Network {
            vpc_id,
            cidr: vpc.cidr_block().unwrap_or_default().to_string(),
            subnets: found,
        }))
    }

    /// GPUs of an instance type; `None` when EC2 does not know the type.
    pub async fn gpus(&self, instance_type: &str) -> Result<Option<u32>, Ec2Error> {
        match self
            .client
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
        {
            Ok(out) => Ok(out.instance_types().first().map(|t| {
                t.gpu_info()
                    .map(|g| {
                        g.gpus()
                            .iter()
                            .map(|d| d.count().unwrap_or(0).max(0) as u32)
                            .sum()
                    })
                    .unwrap_or(0)
            })),
            Err(e) => {
                if crate::error_code(&e).is_some_and(|c| c.starts_with("InvalidInstanceType")) {
                    Ok(None)
                } else {
                    Err(err("DescribeInstanceTypes")(describe_sdk_error(&e)))
                }
            }
        }
    }

    /// Availability zones that offer the instance type.
    pub async fn zones_offering(&self, instance_type: &str) -> Result<Vec<String>, Ec2Error> {
        let out = self
            .client
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(
                Filter::builder()
                    .name("instance-type")
                    .values(instance_type)
                    .build(),
            )
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| err("DescribeInstanceTypeOfferings")(describe_sdk_error(&e)))?;
        let mut z: Vec<String> = out
            .iter()
            .flat_map(|p| p.instance_type_offerings())
            .filter_map(|o| o.location().map(str::to_string))
            .collect();
        z.sort();
        Ok(z)
    }

    /// Whether an AMI ID exists.
    pub async fn image_exists(&self, ami: &str) -> Result<bool, Ec2Error> {
        match self.client.describe_images().image_ids(ami).send().await {
            Ok(out) => Ok(!out.images().is_empty()),
            Err(e) => {
                // InvalidAMIID.NotFound, .Malformed, .Unavailable: no such image here.
                if crate::error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) {
                    Ok(false)
                } else {
                    Err(err("DescribeImages")(describe_sdk_error(&e)))
                }
            }
        }
    }

    /// An AMI's name, tags and EBS snapshots, or `None` when there is no such image here.
    pub async fn image(&self, ami: &str) -> Result<Option<Image>, Ec2Error> {
        let out = match self.client.describe_images().image_ids(ami).send().await {
            Ok(o) => o,
            Err(e) if crate::error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => {
                return Ok(None);
            }
            Err(e) => return Err(err("DescribeImages")(describe_sdk_error(&e))),
        };
        Ok(out.images().first().map(|i| Image {
            id: i.image_id().unwrap_or(ami).to_string(),
            name: i.name().unwrap_or_default().to_string(),
            created: i.creation_date().unwrap_or_default().to_string(),
            tags: i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect(),
            snapshots: i
                .block_device_mappings()
                .iter()
                .filter_map(|b| b.ebs()?.snapshot_id().map(str::to_string))
                .collect(),
        }))
    }

    /// Turns Fast Snapshot Restore on (or off) for `snapshots` in `zones`.
    pub async fn fast_snapshot_restore(
        &self,
        enable: bool,
        snapshots: &[String],
        zones: &[String],
    ) -> Result<(), Ec2Error> {
        if snapshots.is_empty() || zones.is_empty() {
            return Ok(());
        }
        // The two calls' answers have the same shape: the snapshots and zones that failed.
        macro_rules! call {
            ($op:ident, $action:literal) => {
                self.client
                    .$op()
                    .set_source_snapshot_ids(Some(snapshots.to_vec()))
                    .set_availability_zones(Some(zones.to_vec()))
                    .send()
                    .await
                    .map_err(|e| err($action)(describe_sdk_error(&e)))?
                    .unsuccessful()
                    .iter()
                    .flat_map(|u| u.fast_snapshot_restore_state_errors())
                    .filter_map(|e| e.error()?.message().map(str::to_string))
                    .collect::<Vec<_>>()
            };
        }
        let unsuccessful = if enable {
            call!(enable_fast_snapshot_restores, "EnableFastSnapshotRestores")
        } else {
            call!(
                disable_fast_snapshot_restores,
                "DisableFastSnapshotRestores"
            )
        };
        if unsuccessful.is_empty() {
            Ok(())
        } else {
            Err(Ec2Error {
                action: if enable {
                    "EnableFastSnapshotRestores"
                } else {
                    "DisableFastSnapshotRestores"
                },
                detail: unsuccessful.join("; "),
            })
        }
    }
}

/// An AMI as `DescribeImages` tells of it.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The AMI's ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// ISO 8601.
    pub created: String,
    /// Its tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Its EBS snapshots.
    pub snapshots: Vec<String>,
}
