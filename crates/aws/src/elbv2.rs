//! Elastic Load Balancing: the load balancer's DNS name, its listener's rules and the target
//! group's target health.

use aws_sdk_elasticloadbalancingv2::Client;
use serde::Serialize;

use crate::{ApiError, api};

const SVC: &str = "Elastic Load Balancing";

/// A target's health behind a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    /// The target (an instance id).
    pub id: String,
    /// Its port.
    pub port: Option<i32>,
    /// initial, healthy, unhealthy, unused, draining, unavailable
    pub state: String,
    /// Why it is in its state, if the load balancer says.
    pub reason: Option<String>,
    /// The load balancer's description of it.
    pub description: Option<String>,
}

/// A listener rule: its priority and the path patterns it matches (the default rule left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Its priority.
    pub priority: u32,
    /// Its path-pattern values (none when it matches on something else).
    pub paths: Vec<String>,
    /// Its host-header values.
    pub hosts: Vec<String>,
}

/// `app/<name>/<id>/targetgroup/<name>/<id>`, the ALBRequestCountPerTarget resource label, from the
/// two ARNs.
pub fn resource_label(load_balancer_arn: &str, target_group_arn: &str) -> Option<String> {
    let lb = load_balancer_arn.split_once(":loadbalancer/")?.1;
    let tg = target_group_arn.split_once(':')?.1.rsplit_once(':')?.1;
    tg.starts_with("targetgroup/").then(|| format!("{lb}/{tg}"))
}

/// Elastic Load Balancing v2.
pub struct Elb {
    client: Client,
}

impl Elb {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Elb {
            client: Client::new(config),
        }
    }

    /// The load balancer's DNS name, if it exists.
    pub async fn dns_name(&self, load_balancer_arn: &str) -> Result<Option<String>, ApiError> {
        let out = self
            .client
            .describe_load_balancers()
            .load_balancer_arns(load_balancer_arn)
            .send()
            .await
            .map_err(api(SVC, "DescribeLoadBalancers"))?;
        Ok(out
            .load_balancers()
            .first()
            .and_then(|l| l.dns_name())
            .map(str::to_string))
    }

    /// The listener's rules but its default one, every page.
    pub async fn rules(&self, listener_arn: &str) -> Result<Vec<Rule>, ApiError> {
        let mut rules = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_rules()
                .listener_arn(listener_arn)
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(api(SVC, "DescribeRules"))?;
            for r in out.rules() {
                let Some(priority) = r.priority().and_then(|p| p.parse().ok()) else {
                    continue; // "default"
                };
                let mut rule = Rule {
                    priority,
                    paths: Vec::new(),
                    hosts: Vec::new(),
                };
                for c in r.conditions() {
                    let values: Vec<String> = match c.field() {
                        Some("path-pattern") => c
                            .path_pattern_config()
                            .map(|p| p.values().to_vec())
                            .filter(|v| !v.is_empty())
                            .unwrap_or_else(|| c.values().to_vec()),
                        Some("host-header") => c
                            .host_header_config()
                            .map(|h| h.values().to_vec())
                            .filter(|v| !v.is_empty())
                            .unwrap_or_else(|| c.values().to_vec()),
                        _ => continue,
                    };
                    match c.field() {
                        Some("path-pattern") => rule.paths.extend(values),
                        _ => rule.hosts.extend(values),
                    }
                }
                rules.push(rule);
            }
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(rules);
            }
        }
    }

    /// The health of every target of the target group.
    pub async fn target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealth>, ApiError> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(api(SVC, "DescribeTargetHealth"))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| TargetHealth {
                id: d
                    .target()
                    .and_then(|t| t.id())
                    .unwrap_or_default()
                    .to_string(),
                port: d.target().and_then(|t| t.port()),
                state: d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: d
                    .target_health()
                    .and_then(|h| h.reason())
                    .map(|r| r.as_str().to_string()),
                description: d
                    .target_health()
                    .and_then(|h| h.description())
                    .map(str::to_string),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_resource_label_comes_from_the_arns() {
        assert_eq!(
            super::resource_label(
                "arn:aws:elasticloadbalancing:us-east-1:123:loadbalancer/app/td-alb/50dc6c495c0c9188",
                "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/td-tg/73e2d6bc24d8a067"
            )
            .as_deref(),
            Some("app/td-alb/50dc6c495c0c9188/targetgroup/td-tg/73e2d6bc24d8a067")
        );
        assert_eq!(super::resource_label("x", "y"), None);
    }
}
