//! The two layers of stacks through CloudFormation change sets: the cluster stack (GPU hosts,
//! capacity provider, the shared ALB, EFS), then the service's stack (target group, listener
//! rules, task role and security group, access point, logs, dashboard) with the cluster's outputs
//! as parameters. Each is rendered, compared with the deployed one by hash (the emulator's change
//! sets are no diff), planned or applied, with its events as progress. A cluster-level change
//! that other services of the cluster would see is named and needs `--yes`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use triton_deploy_aws::cfn::{Cfn, ResourceChange, StackEvent, StackInfo};

use super::error::DeployError;
use super::preflight::{Preflight, preflight};
use super::render::cloudformation;
use super::route::{self, ListenerRule, Routing};
use super::spec::{DeploymentSpec, RouteKind};
use crate::output::Progress;

/// The stack tag naming a stack's layer (`cluster` or `service`).
pub const LAYER_TAG: &str = "triton-deploy:layer";
/// The service stack tag recording its block of listener-rule priorities.
pub const BLOCK_TAG: &str = "triton-deploy:rule-block";
/// The service stack tag recording its route (`models` or `all`).
pub const ROUTE_TAG: &str = "triton-deploy:route";

/// What the stack phase is asked to do.
#[derive(Debug, Clone)]
pub struct StackSettings {
    /// Only show the changes.
    pub plan: bool,
    /// How long to wait for CloudFormation.
    pub timeout_minutes: u64,
    /// Change the cluster stack even when other services run on it.
    pub yes: bool,
    /// The models of the service's repository (for a route by model).
    pub models: Vec<String>,
}

/// The stack phase's part of the rollout report: the cluster stack's changes (as before the
/// split, at the top level) and the service stack's.
#[derive(Debug, Serialize)]
pub struct StackReport {
    pub stack: String,
    pub changes: Vec<ResourceChange>,
    pub applied: bool,
    pub template_hash: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// The GPU AMI the deployed stack was built with, when the parameter now resolves to another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami_update: Option<AmiUpdate>,
    /// The other services of the cluster that a change of the cluster stack reaches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affects: Vec<String>,
    /// The service's own stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_stack: Option<LayerReport>,
}

/// One service stack's changes.
#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub stack: String,
    pub changes: Vec<ResourceChange>,
    pub applied: bool,
    pub template_hash: String,
    /// How the shared load balancer routes to the service.
    pub route: Routing,
}

impl StackReport {
    /// Whether either stack changes (or would).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
            || self
                .service_stack
                .as_ref()
                .is_some_and(|s| !s.changes.is_empty())
    }
}

/// A newer AMI behind the spec's AMI parameter than the one the hosts were launched with.
#[derive(Debug, Clone, Serialize)]
pub struct AmiUpdate {
    pub from: String,
    pub to: String,
}

/// The outcome of [`apply`].
pub struct StackPhase {
    /// What changed (or would).
    pub report: StackReport,
    /// What the preflight found.
    pub preflight: Preflight,
    /// Both stacks as they are now, merged ([`merge`]); `None` while either does not exist (a
    /// plan of a new cluster or service).
    pub stack: Option<StackInfo>,
}

/// One CloudFormation stack event as a progress line.
pub fn event_line(e: &StackEvent) -> String {
    format!(
        "  {:<22} {:<40} {}{}",
        e.status,
        e.resource_type,
        e.logical_id,
        e.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    )
}

/// The cluster stack and the service stack as one: the cluster's name, status and tags, both
/// stacks' outputs and resources (their logical IDs do not meet).
pub fn merge(cluster: &StackInfo, service: &StackInfo) -> StackInfo {
    let mut m = cluster.clone();
    m.outputs
        .extend(service.outputs.iter().map(|(k, v)| (k.clone(), v.clone())));
    m.resources.extend(
        service
            .resources
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    m
}

/// A stack made before the split held the service's parts itself.
fn refuse_single_stack(s: &StackInfo) -> Result<(), DeployError> {
    if s.resources.contains_key("TargetGroup") {
        return Err(DeployError::State(format!(
            "stack {} holds a service's target group: it was made by an earlier triton-deploy with one stack per cluster; destroy it with that version (or delete the stack) and roll out again",
            s.name
        )));
    }
    Ok(())
}

/// The other services of the cluster: their stacks, by service name.
pub async fn other_services(
    cfn: &Cfn,
    spec: &DeploymentSpec,
) -> Result<BTreeMap<String, StackInfo>, DeployError> {
    Ok(cfn
        .stacks_tagged("triton-deploy:cluster", &spec.cluster)
        .await?
        .into_iter()
        .filter(|s| s.tags.get(LAYER_TAG).map(String::as_str) == Some("service"))
        .filter_map(|s| {
            let name = s.tags.get("triton-deploy:service")?.clone();
            (name != spec.service).then_some((name, s))
        })
        .collect())
}

/// The stack phase of a rollout: the preflight, the cluster stack, then the service stack (each
/// through a change set unless the deployed template is the rendered one), shown when planning
/// and executed otherwise. The spec gets the network the preflight chose.
pub async fn apply(
    spec: &mut DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
    settings: &StackSettings,
    progress: &Progress,
) -> Result<StackPhase, DeployError> {
    let pf = preflight(spec, config).await?;
    spec.vpc_id = Some(pf.vpc_id.clone());
    spec.subnets = pf.subnets.clone();
    let cfn = Cfn::new(config);
    let timeout = Duration::from_secs(settings.timeout_minutes * 60);
    let others = other_services(&cfn, spec).await?;

    // The cluster layer.
    let name = cloudformation::cluster_stack_name(spec);
    let params = cloudformation::cluster_parameters(&pf.vpc_id, &pf.subnets);
    // The resolved AMI is part of the deployed state: a new AMI behind the parameter is a change.
    let template = json(&cloudformation::cluster_template(spec))?;
    let hash = stack_hash(&template, &params, &format!("ami={}", pf.ami_id));
    let existing = cfn.describe(&name).await?;
    if let Some(s) = &existing {
        refuse_single_stack(s)?;
    }
    let ami_update = existing
        .as_ref()
        .and_then(|s| s.tags.get("triton-deploy:ami"))
        .filter(|old| **old != pf.ami_id)
        .map(|old| AmiUpdate {
            from: old.clone(),
            to: pf.ami_id.clone(),
        });
    let mut tags = cloudformation::cluster_tags(spec);
    tags.push((LAYER_TAG.into(), "cluster".into()));
    tags.push(("triton-deploy:ami".into(), pf.ami_id.clone()));
    let cluster_layer = Layer {
        name: &name,
        template: &template,
        params: &params,
        tags,
        hash: &hash,
    };
    let changes_cluster = !cluster_layer.is_current(existing.as_ref());
    let affects: Vec<String> = if changes_cluster && existing.is_some() {
        others.keys().cloned().collect()
    } else {
        Vec::new()
    };
    if !affects.is_empty() && !settings.plan && !settings.yes {
        return Err(DeployError::Usage(format!(
            "the cluster stack {name} changes, and services {} run on it too: look with `rollout --plan`, then pass --yes to change it for them as well",
            affects.join(", ")
        )));
    }
    let cluster = cluster_layer
        .run(&cfn, existing, settings.plan, timeout, progress)
        .await?;
    let mut report = StackReport {
        stack: name,
        changes: cluster.changes,
        applied: cluster.applied,
        template_hash: hash,
        subnets: pf.subnets.clone(),
        ami: Some(pf.ami_id.clone()),
        ami_update,
        affects,
        service_stack: None,
    };

    // The service layer.
    let name = cloudformation::service_stack_name(spec);
    let existing = cfn.describe(&name).await?;
    let own_block = existing
        .as_ref()
        .and_then(|s| s.tags.get(BLOCK_TAG))
        .and_then(|b| b.parse().ok());
    let taken: BTreeMap<u32, String> = others
        .iter()
        .filter_map(|(svc, s)| Some((s.tags.get(BLOCK_TAG)?.parse().ok()?, svc.clone())))
        .collect();
    let block = route::choose_block(&spec.service, own_block, &taken)
        .map_err(|e| DeployError::State(format!("network.route: {e}")))?;
    let routing = route::routing(spec, &settings.models, block)
        .map_err(|e| DeployError::State(format!("network.route: {e}")))?;
    let template = json(&cloudformation::service_template(spec, &routing))?;
    let Some(cluster_info) = cluster.info else {
        // A new cluster, planned: the service stack would be made with it.
        report.service_stack = Some(LayerReport {
            stack: name,
            changes: static_changes(&template),
            applied: false,
            template_hash: stack_hash(&template, &[], ""),
            route: routing,
        });
        return Ok(StackPhase {
            report,
            preflight: pf,
            stack: None,
        });
    };
    let params = service_parameters(spec, &cluster_info, &pf)?;
    // Another service's rule on one of this route's paths (or on the catch-all) is refused.
    let listener = get(&cluster_info, "ListenerArn", "Listener")?;
    let rules: Vec<ListenerRule> = triton_deploy_aws::elbv2::Elb::new(config)
        .rules(&listener)
        .await?
        .into_iter()
        .map(|r| ListenerRule {
            priority: r.priority,
            hosts: r.hosts,
            paths: r.paths,
        })
        .collect();
    routing
        .check(&rules, |p| owner(&others, p))
        .map_err(|e| DeployError::State(format!("network.route: {e}")))?;
    let hash = stack_hash(&template, &params, "");
    let mut tags = cloudformation::tags(spec);
    tags.push((LAYER_TAG.into(), "service".into()));
    tags.push((BLOCK_TAG.into(), block.to_string()));
    tags.push((
        ROUTE_TAG.into(),
        match spec.route {
            RouteKind::Models => "models",
            RouteKind::All => "all",
            RouteKind::Host => "host",
            RouteKind::Path => "path",
        }
        .into(),
    ));
    let service_layer = Layer {
        name: &name,
        template: &template,
        params: &params,
        tags,
        hash: &hash,
    };
    let service = if existing.is_none() && settings.plan {
        // Planned, not made: no empty stack left in REVIEW_IN_PROGRESS.
        Outcome {
            changes: static_changes(&template),
            applied: false,
            info: None,
        }
    } else {
        service_layer
            .run(&cfn, existing, settings.plan, timeout, progress)
            .await?
    };
    report.service_stack = Some(LayerReport {
        stack: name,
        changes: service.changes,
        applied: service.applied,
        template_hash: hash,
        route: routing,
    });
    let stack = service.info.map(|s| merge(&cluster_info, &s));
    Ok(StackPhase {
        report,
        preflight: pf,
        stack,
    })
}

/// The service holding a listener-rule priority.
fn owner(others: &BTreeMap<String, StackInfo>, priority: u32) -> Option<String> {
    others.iter().find_map(|(svc, s)| {
        let holds = if priority == route::CATCH_ALL_PRIORITY {
            s.tags.get(ROUTE_TAG).map(String::as_str) == Some("all")
        } else {
            s.tags.get(BLOCK_TAG).and_then(|b| b.parse().ok()) == route::block_of(priority)
        };
        holds.then(|| svc.clone())
    })
}

/// The service template's parameters: the cluster stack's outputs (or its resources' physical
/// IDs where an emulator leaves outputs out) and the network.
fn service_parameters(
    spec: &DeploymentSpec,
    cluster: &StackInfo,
    pf: &Preflight,
) -> Result<Vec<(String, String)>, DeployError> {
    let lb = get(cluster, "LoadBalancerArn", "LoadBalancer")?;
    let lb_full = cluster
        .outputs
        .get("LoadBalancerFullName")
        .cloned()
        .or_else(|| lb.split_once(":loadbalancer/").map(|(_, n)| n.to_string()))
        .unwrap_or_default();
    let mut p = vec![
        ("VpcId".to_string(), pf.vpc_id.clone()),
        ("VpcCidr".to_string(), pf.vpc_cidr.clone()),
        (
            "ClusterName".to_string(),
            get(cluster, "ClusterName", "Cluster")?,
        ),
        (
            "CapacityProviderName".to_string(),
            cluster
                .outputs
                .get("CapacityProviderName")
                .cloned()
                .unwrap_or_else(|| cloudformation::capacity_provider_name(spec)),
        ),
        (
            "ListenerArn".to_string(),
            get(cluster, "ListenerArn", "Listener")?,
        ),
        ("LoadBalancerFullName".to_string(), lb_full),
        (
            "AlbSecurityGroupId".to_string(),
            get(cluster, "AlbSecurityGroupId", "AlbSecurityGroup")?,
        ),
    ];
    if spec.efs {
        p.push((
            "FileSystemId".into(),
            get(cluster, "FileSystemId", "FileSystem")?,
        ));
        p.push((
            "EfsSecurityGroupId".into(),
            get(cluster, "EfsSecurityGroupId", "EfsSecurityGroup")?,
        ));
    }
    Ok(p)
}

/// An output of the stack, or the physical ID of the resource that gives it.
fn get(stack: &StackInfo, output: &str, resource: &str) -> Result<String, DeployError> {
    stack.value(output, resource).ok_or_else(|| {
        DeployError::State(format!(
            "stack {} has no output {output} nor resource {resource}: a cluster stack made by another tool or version",
            stack.name
        ))
    })
}

fn json(v: &serde_json::Value) -> Result<String, DeployError> {
    serde_json::to_string(v)
        .map_err(|e| DeployError::State(format!("cannot serialize the template: {e}")))
}

/// What identifies a deployed stack's state: its template, its parameters, and `extra`.
fn stack_hash(template: &str, params: &[(String, String)], extra: &str) -> String {
    let mut input = format!("{template}\n{extra}");
    for (k, v) in params {
        input.push_str(&format!("\n{k}={v}"));
    }
    crate::package::registry::sha256_digest(input.as_bytes())[7..23].to_string()
}

/// The resources a template would add to a stack that does not exist yet.
fn static_changes(template: &str) -> Vec<ResourceChange> {
    let v: serde_json::Value = serde_json::from_str(template).unwrap_or_default();
    v["Resources"]
        .as_object()
        .map(|r| {
            r.iter()
                .map(|(id, res)| ResourceChange {
                    action: "Add".into(),
                    logical_id: id.clone(),
                    resource_type: res["Type"].as_str().unwrap_or_default().to_string(),
                    replacement: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One stack to bring to a rendered template.
struct Layer<'a> {
    name: &'a str,
    template: &'a str,
    params: &'a [(String, String)],
    tags: Vec<(String, String)>,
    hash: &'a str,
}

/// What running a [`Layer`] did.
struct Outcome {
    changes: Vec<ResourceChange>,
    applied: bool,
    /// The stack as it is afterwards (`None`: it does not exist, e.g. a new one planned).
    info: Option<StackInfo>,
}

impl Layer<'_> {
    /// Whether the deployed stack is this template, settled.
    fn is_current(&self, existing: Option<&StackInfo>) -> bool {
        existing.is_some_and(|s| {
            s.tags
                .get("triton-deploy:template-hash")
                .map(String::as_str)
                == Some(self.hash)
                && s.status.ends_with("_COMPLETE")
        })
    }

    /// A change set unless the stack is current; planned (and deleted) or executed.
    async fn run(
        self,
        cfn: &Cfn,
        existing: Option<StackInfo>,
        plan: bool,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Outcome, DeployError> {
        let stack = self.name;
        let on_event = |e: &StackEvent| progress.line(event_line(e));
        // A CREATE change set that was never executed (a rollout stopped between making and
        // executing it) leaves an empty stack in REVIEW_IN_PROGRESS: it goes, and the stack is
        // made afresh. A plan leaves it to its own clean-up.
        let existing = match existing {
            Some(s) if s.status == "REVIEW_IN_PROGRESS" && !plan => {
                progress.line(format!(
                    "  {stack}: left empty by a change set never executed (REVIEW_IN_PROGRESS); deleting it first"
                ));
                cfn.delete_and_wait(stack, timeout, &on_event).await?;
                None
            }
            other => other,
        };
        if let Some(s) = &existing
            && (s.status == "ROLLBACK_COMPLETE"
                || s.status.ends_with("_IN_PROGRESS") && s.status != "REVIEW_IN_PROGRESS")
        {
            return Err(DeployError::State(format!(
                "stack {stack} is {}: wait for it to settle (or delete a ROLLBACK_COMPLETE stack) and run again",
                s.status
            )));
        }
        if self.is_current(existing.as_ref()) {
            // The deployed template is the rendered one: no change set needed.
            return Ok(Outcome {
                changes: Vec::new(),
                applied: false,
                info: existing,
            });
        }
        let create = existing
            .as_ref()
            .is_none_or(|s| s.status == "REVIEW_IN_PROGRESS");
        let mut tags = self.tags;
        tags.push(("triton-deploy:template-hash".into(), self.hash.to_string()));
        let change_set = format!(
            "td-{}-{}",
            self.hash,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        let changes = cfn
            .create_change_set(
                stack,
                &change_set,
                create,
                self.template,
                self.params,
                &tags,
            )
            .await?;
        if plan || changes.is_empty() {
            if !changes.is_empty() {
                cfn.delete_change_set(stack, &change_set).await?;
            }
            if create {
                // A CREATE change set leaves an empty stack in REVIEW_IN_PROGRESS: a plan removes it.
                let _ = cfn.delete_stack(stack).await;
                return Ok(Outcome {
                    changes,
                    applied: false,
                    info: None,
                });
            }
            return Ok(Outcome {
                changes,
                applied: false,
                info: existing,
            });
        }
        cfn.execute(stack, &change_set, timeout, &on_event).await?;
        Ok(Outcome {
            changes,
            applied: true,
            info: cfn.describe(stack).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str, tags: &[(&str, &str)]) -> StackInfo {
        StackInfo {
            name: name.into(),
            status: "CREATE_COMPLETE".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..StackInfo::default()
        }
    }

    #[test]
    fn a_priority_is_owned_by_the_service_whose_block_or_catch_all_it_is() {
        let others = BTreeMap::from([
            (
                "images".to_string(),
                stack("s1", &[(BLOCK_TAG, "7"), (ROUTE_TAG, "models")]),
            ),
            (
                "fallback".to_string(),
                stack("s2", &[(BLOCK_TAG, "9"), (ROUTE_TAG, "all")]),
            ),
        ]);
        assert_eq!(owner(&others, 1705).as_deref(), Some("images"));
        assert_eq!(owner(&others, 1701).as_deref(), Some("images"));
        assert_eq!(
            owner(&others, 15).as_deref(),
            Some("images"),
            "its head band"
        );
        assert_eq!(owner(&others, 1801), None);
        // An `all` route holds the catch-all, and its block for a gRPC rule.
        assert_eq!(owner(&others, 19).as_deref(), Some("fallback"));
        assert_eq!(
            owner(&others, route::CATCH_ALL_PRIORITY).as_deref(),
            Some("fallback")
        );
    }

    #[test]
    fn the_merged_stack_has_both_layers_and_a_single_stack_is_refused() {
        let mut c = stack("triton-deploy-ml", &[]);
        c.resources.insert("Cluster".into(), "ml".into());
        let mut s = stack("triton-deploy-ml-text", &[]);
        s.resources.insert("TargetGroup".into(), "arn:tg".into());
        s.outputs.insert("LogGroupName".into(), "/x".into());
        let m = merge(&c, &s);
        assert_eq!(m.name, "triton-deploy-ml");
        assert_eq!(m.resources.len(), 2);
        assert_eq!(m.outputs["LogGroupName"], "/x");
        assert!(refuse_single_stack(&c).is_ok());
        let err = refuse_single_stack(&m).unwrap_err().to_string();
        assert!(err.contains("earlier triton-deploy"), "{err}");
    }

    #[test]
    fn a_planned_new_stack_lists_the_template_s_resources() {
        let t =
            r#"{"Resources":{"TargetGroup":{"Type":"AWS::ElasticLoadBalancingV2::TargetGroup"}}}"#;
        let c = static_changes(t);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].action.as_str(), c[0].logical_id.as_str()),
            ("Add", "TargetGroup")
        );
        // The hash follows the template and the parameters.
        let p = vec![("VpcId".to_string(), "vpc-1".to_string())];
        assert_ne!(stack_hash(t, &p, ""), stack_hash(t, &[], ""));
        assert_eq!(stack_hash(t, &p, ""), stack_hash(t, &p, ""));
    }
}
