//! EC2 Auto Scaling: instance refreshes of the GPU hosts (new AMI), which ECS managed draining
//! turns into orderly task moves.

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::{RefreshPreferences, RefreshStrategy};
use serde::Serialize;

use crate::{ApiError, api};

const SVC: &str = "Auto Scaling";

/// An Auto Scaling group's instance refresh.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRefresh {
    /// Its id.
    pub id: String,
    /// Pending, InProgress, Successful, Failed, Cancelling, Cancelled, RollbackInProgress, ...
    pub status: String,
    /// How far it is, percent.
    pub percentage_complete: i32,
    /// Instances still to replace.
    pub instances_to_update: i32,
    /// Why it is in its status, if AWS says.
    pub status_reason: Option<String>,
}

impl InstanceRefresh {
    /// Whether it has ended (successfully or not).
    pub fn is_done(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking"
        )
    }
}

/// EC2 Auto Scaling.
pub struct AutoScaling {
    client: Client,
}

impl AutoScaling {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AutoScaling {
            client: Client::new(config),
        }
    }

    /// The group's instances in service and its desired capacity, or `None` when it is gone.
    pub async fn size(&self, group: &str) -> Result<Option<(usize, i32)>, ApiError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(api(SVC, "DescribeAutoScalingGroups"))?;
        Ok(out.auto_scaling_groups().first().map(|g| {
            let in_service = g
                .instances()
                .iter()
                .filter(|i| i.lifecycle_state().map(|l| l.as_str()) == Some("InService"))
                .count();
            (in_service, g.desired_capacity().unwrap_or_default())
        }))
    }

    /// Starts a rolling refresh that keeps `min_healthy` percent in service and skips instances
    /// already on the launch template's version.
    pub async fn start_refresh(
        &self,
        group: &str,
        min_healthy: i32,
        warmup_seconds: i32,
    ) -> Result<String, ApiError> {
        let out = self
            .client
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .strategy(RefreshStrategy::Rolling)
            .preferences(
                RefreshPreferences::builder()
                    .min_healthy_percentage(min_healthy)
                    .instance_warmup(warmup_seconds)
                    .skip_matching(true)
                    .build(),
            )
            .send()
            .await
            .map_err(api(SVC, "StartInstanceRefresh"))?;
        Ok(out.instance_refresh_id().unwrap_or_default().to_string())
    }

    /// The group's refreshes, newest first.
    pub async fn refreshes(&self, group: &str) -> Result<Vec<InstanceRefresh>, ApiError> {
        let out = self
            .client
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(api(SVC, "DescribeInstanceRefreshes"))?;
        Ok(out
            .iter()
            .flat_map(|p| p.instance_refreshes())
            .map(|r| InstanceRefresh {
                id: r.instance_refresh_id().unwrap_or_default().to_string(),
                status: r
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                percentage_complete: r.percentage_complete().unwrap_or_default(),
                instances_to_update: r.instances_to_update().unwrap_or_default(),
                status_reason: r.status_reason().map(str::to_string),
            })
            .collect())
    }
}
