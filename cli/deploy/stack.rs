//! The cluster stack (GPU hosts, capacity provider, ALB, EFS) through a CloudFormation change set:
//! rendered, compared with the deployed template by hash (the emulator's change sets are no
//! diff), planned or applied, with the stack's events as progress.

use std::time::Duration;

use serde::Serialize;
use triton_deploy_aws::cfn::{Cfn, ResourceChange, StackEvent};

use super::error::DeployError;
use super::preflight::{Preflight, preflight};
use super::render::cloudformation;
use super::spec::DeploymentSpec;
use crate::output::Progress;

/// What the stack phase is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct StackSettings {
    /// Only show the changes.
    pub plan: bool,
    /// How long to wait for CloudFormation.
    pub timeout_minutes: u64,
}

/// The stack phase's part of the rollout report.
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
    /// The stack as described, when nothing was applied (its description still holds).
    pub unchanged: Option<triton_deploy_aws::cfn::StackInfo>,
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

/// The cluster stack phase of a rollout: the preflight, then (unless the deployed template is
/// the rendered one) a change set, shown when planning and executed otherwise. The spec gets the
/// network the preflight chose.
pub async fn apply(
    spec: &mut DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
    settings: &StackSettings,
    progress: &Progress,
) -> Result<StackPhase, DeployError> {
    let pf = preflight(spec, config).await?;
    spec.vpc_id = Some(pf.vpc_id.clone());
    spec.subnets = pf.subnets.clone();
    let template = serde_json::to_string(&cloudformation::template(spec))
        .map_err(|e| DeployError::State(format!("cannot serialize the template: {e}")))?;
    let params = cloudformation::parameters(&pf.vpc_id, &pf.vpc_cidr, &pf.subnets);
    // The resolved AMI is part of the deployed state: a new AMI behind the parameter is a change.
    let mut hash_input = format!("{template}\nami={}", pf.ami_id);
    for (k, v) in &params {
        hash_input.push_str(&format!("\n{k}={v}"));
    }
    let hash = crate::package::registry::sha256_digest(hash_input.as_bytes())[7..23].to_string();
    let stack = cloudformation::stack_name(spec);
    let cfn = Cfn::new(config);
    let existing = cfn.describe(&stack).await?;
    let ami_update = existing
        .as_ref()
        .and_then(|s| s.tags.get("triton-deploy:ami"))
        .filter(|old| **old != pf.ami_id)
        .map(|old| AmiUpdate {
            from: old.clone(),
            to: pf.ami_id.clone(),
        });
    let mut report = StackReport {
        stack: stack.clone(),
        changes: Vec::new(),
        applied: false,
        template_hash: hash.clone(),
        subnets: pf.subnets.clone(),
        ami: Some(pf.ami_id.clone()),
        ami_update,
    };
    if let Some(s) = &existing {
        if s.status == "ROLLBACK_COMPLETE"
            || s.status.ends_with("_IN_PROGRESS") && s.status != "REVIEW_IN_PROGRESS"
        {
            return Err(DeployError::State(format!(
                "stack {stack} is {}: wait for it to settle (or delete a ROLLBACK_COMPLETE stack) and run again",
                s.status
            )));
        }
        if s.tags.get("triton-deploy:template-hash") == Some(&hash)
            && s.status.ends_with("_COMPLETE")
        {
            // The deployed template is the rendered one: no change set needed.
            return Ok(StackPhase {
                report,
                preflight: pf,
                unchanged: existing,
            });
        }
    }
    let create = existing
        .as_ref()
        .is_none_or(|s| s.status == "REVIEW_IN_PROGRESS");
    let mut tags = cloudformation::tags(spec);
    tags.push(("triton-deploy:template-hash".into(), hash.clone()));
    tags.push(("triton-deploy:ami".into(), pf.ami_id.clone()));
    let change_set = format!(
        "td-{hash}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    report.changes = cfn
        .create_change_set(&stack, &change_set, create, &template, &params, &tags)
        .await?;
    if settings.plan || report.changes.is_empty() {
        if !report.changes.is_empty() {
            cfn.delete_change_set(&stack, &change_set).await?;
        }
        if create {
            // A CREATE change set leaves an empty stack in REVIEW_IN_PROGRESS: a plan removes it.
            let _ = cfn.delete_stack(&stack).await;
            return Ok(StackPhase {
                report,
                preflight: pf,
                unchanged: None,
            });
        }
        return Ok(StackPhase {
            report,
            preflight: pf,
            unchanged: existing,
        });
    }
    let on_event = |e: &StackEvent| progress.line(event_line(e));
    cfn.execute(
        &stack,
        &change_set,
        Duration::from_secs(settings.timeout_minutes * 60),
        &on_event,
    )
    .await?;
    report.applied = true;
    Ok(StackPhase {
        report,
        preflight: pf,
        unchanged: None,
    })
}
