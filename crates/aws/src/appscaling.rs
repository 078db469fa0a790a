//! Application Auto Scaling for the ECS service's desired count: the scalable target and a
//! target-tracking policy (ALB requests per target, or CPU). Read first so that an unchanged
//! configuration makes no call that changes anything.

use aws_sdk_applicationautoscaling::Client;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use serde::Serialize;

use crate::{ApiError, api};

const SVC: &str = "Application Auto Scaling";

/// The service's scaling: bounds and one target-tracking policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// `service/<cluster>/<service>`
    pub resource_id: String,
    /// The fewest tasks.
    pub min: i32,
    /// The most tasks.
    pub max: i32,
    /// The target-tracking policy's name.
    pub policy_name: String,
    /// `ALBRequestCountPerTarget` or `ECSServiceAverageCPUUtilization`.
    pub metric: String,
    /// The metric's target value.
    pub target: f64,
    /// `app/<lb>/<id>/targetgroup/<tg>/<id>` for ALBRequestCountPerTarget.
    pub resource_label: Option<String>,
    /// Seconds between scale-in steps.
    pub scale_in_cooldown: i32,
    /// Seconds between scale-out steps.
    pub scale_out_cooldown: i32,
}

fn invalid_policy(e: impl std::fmt::Display) -> ApiError {
    ApiError::local(SVC, "PutScalingPolicy", format!("invalid policy: {e}"))
}

/// Application Auto Scaling for ECS services.
pub struct AppScaling {
    client: Client,
}

impl AppScaling {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AppScaling {
            client: Client::new(config),
        }
    }

    /// The scaling as deployed (bounds and the named policy), or `None` when there is no target.
    pub async fn get(
        &self,
        resource_id: &str,
        policy_name: &str,
    ) -> Result<Option<Scaling>, ApiError> {
        let t = self
            .client
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_ids(resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .map_err(api(SVC, "DescribeScalableTargets"))?;
        let Some(t) = t.scalable_targets().first() else {
            return Ok(None);
        };
        let p = self
            .client
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .policy_names(policy_name)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(api(SVC, "DescribeScalingPolicies"))?;
        let mut s = Scaling {
            resource_id: resource_id.into(),
            min: t.min_capacity(),
            max: t.max_capacity(),
            policy_name: policy_name.into(),
            metric: String::new(),
            target: 0.0,
            resource_label: None,
            scale_in_cooldown: 0,
            scale_out_cooldown: 0,
        };
        // Picked by name: not every implementation applies the PolicyNames filter.
        if let Some(c) = p
            .iter()
            .flat_map(|page| page.scaling_policies())
            .find(|p| p.policy_name() == policy_name)
            .and_then(|p| p.target_tracking_scaling_policy_configuration())
        {
            s.target = c.target_value();
            s.scale_in_cooldown = c.scale_in_cooldown().unwrap_or_default();
            s.scale_out_cooldown = c.scale_out_cooldown().unwrap_or_default();
            if let Some(m) = c.predefined_metric_specification() {
                s.metric = m.predefined_metric_type().as_str().to_string();
                s.resource_label = m.resource_label().map(str::to_string);
            }
        }
        Ok(Some(s))
    }

    /// Registers (or updates) the scalable target's bounds.
    pub async fn register_target(&self, s: &Scaling) -> Result<(), ApiError> {
        self.client
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&s.resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(s.min)
            .max_capacity(s.max)
            .send()
            .await
            .map_err(api(SVC, "RegisterScalableTarget"))?;
        Ok(())
    }

    /// Puts the target-tracking policy of `s`.
    pub async fn put_policy(&self, s: &Scaling) -> Result<(), ApiError> {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::from(s.metric.as_str()))
            .set_resource_label(s.resource_label.clone())
            .build()
            .map_err(invalid_policy)?;
        let config = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(s.target)
            .predefined_metric_specification(metric)
            .scale_in_cooldown(s.scale_in_cooldown)
            .scale_out_cooldown(s.scale_out_cooldown)
            .build()
            .map_err(invalid_policy)?;
        self.client
            .put_scaling_policy()
            .policy_name(&s.policy_name)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&s.resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config)
            .send()
            .await
            .map_err(api(SVC, "PutScalingPolicy"))?;
        Ok(())
    }

    /// Deletes the policy `name` of `resource_id`, if there.
    pub async fn delete_policy(
        &self,
        resource_id: &str,
        policy_name: &str,
    ) -> Result<(), ApiError> {
        self.client
            .delete_scaling_policy()
            .policy_name(policy_name)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .map_err(api(SVC, "DeleteScalingPolicy"))?;
        Ok(())
    }

    /// Removes the scalable target (and with it its policies). Absent is fine.
    pub async fn delete(&self, resource_id: &str) -> Result<(), ApiError> {
        match self
            .client
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .map_err(api(SVC, "DeregisterScalableTarget"))
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}
