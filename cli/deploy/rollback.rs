//! Back to an earlier task definition revision (by default the newest one older than the
//! running one), and the wait for it. Never deregisters a revision.

use serde::Serialize;
use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::ecs::Ecs;

use super::Timing;
use super::error::DeployError;
use super::render::taskdef;
use super::service::{self, Context, WaitReport};
use super::spec::DeploymentSpec;
use crate::output::Progress;

#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub service: String,
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
}

fn revision_number(arn: &str) -> Option<u32> {
    arn.rsplit(':').next()?.parse().ok()
}

/// The revision to roll back to among `revisions` (ACTIVE, any order): `to` when given, else the
/// newest older than `current`.
pub fn choose(
    revisions: &[String],
    current: &str,
    to: Option<&str>,
) -> Result<String, DeployError> {
    let cur = revision_number(current)
        .ok_or_else(|| DeployError::Usage(format!("cannot read the revision of {current}")))?;
    let target = match to {
        Some(t) => {
            let n: Option<u32> = t.rsplit(':').next().and_then(|x| x.parse().ok());
            let n = n.ok_or_else(|| {
                DeployError::Usage(format!(
                    "--to {t}: give a revision number, family:number or an ARN"
                ))
            })?;
            revisions
                .iter()
                .find(|r| revision_number(r) == Some(n))
                .cloned()
                .ok_or_else(|| {
                    DeployError::Usage(format!(
                        "revision {n} is not an active revision of this service's family"
                    ))
                })?
        }
        None => revisions
            .iter()
            .filter(|r| revision_number(r).is_some_and(|n| n < cur))
            .max_by_key(|r| revision_number(r))
            .cloned()
            .ok_or_else(|| {
                DeployError::Usage(format!(
                    "no active revision older than {cur} to roll back to"
                ))
            })?,
    };
    if revision_number(&target) == Some(cur) {
        return Err(DeployError::Usage(format!(
            "the service already runs revision {cur}"
        )));
    }
    Ok(target)
}

/// Points the service of `spec` at revision `to` (default: the newest older than the running
/// one) and, with `timing`, waits for the deployment.
pub async fn rollback(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    to: Option<&str>,
    timing: Option<Timing>,
    progress: &Progress,
) -> Result<RollbackReport, DeployError> {
    let cx = Context::load(spec, aws).await?;
    let infra = cx.infra()?;
    let ecs = Ecs::new(&cx.config);
    let svc = ecs
        .describe_service(&infra.cluster, &cx.spec.service)
        .await?
        .ok_or_else(|| {
            DeployError::NotDeployed(format!("service {} is not deployed", cx.spec.service))
        })?;
    let revisions = ecs.revisions(&taskdef::family(&cx.spec)).await?;
    let target = choose(&revisions, &svc.task_definition, to)?;
    ecs.set_task_definition(&infra.cluster, &cx.spec.service, &target)
        .await?;
    let mut report = RollbackReport {
        service: cx.spec.service.clone(),
        from: svc.task_definition.clone(),
        to: target.clone(),
        wait: None,
    };
    if let Some(timing) = timing {
        report.wait =
            Some(service::wait(&cx.spec, &infra, &target, &cx.config, timing, progress).await?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn rollback_goes_to_the_newest_older_revision_or_the_one_asked() {
        let revs: Vec<String> = [5, 3, 2]
            .iter()
            .map(|n| format!("arn:aws:ecs:us-east-1:1:task-definition/triton-x:{n}"))
            .collect();
        let cur = "arn:aws:ecs:us-east-1:1:task-definition/triton-x:5";
        assert!(choose(&revs, cur, None).unwrap().ends_with(":3"));
        assert!(choose(&revs, cur, Some("2")).unwrap().ends_with(":2"));
        assert!(
            choose(&revs, cur, Some("triton-x:2"))
                .unwrap()
                .ends_with(":2")
        );
        assert!(choose(&revs, cur, Some("4")).is_err());
        assert!(choose(&revs, cur, Some("5")).is_err());
        assert!(choose(&revs[2..], "arn:x:task-definition/triton-x:2", None).is_err());
    }
}
