//! `triton-deploy rollback [--to REVISION]`: point the service at an earlier task definition
//! revision (by default the newest one older than the running one) and wait for it. Never
//! deregisters a revision.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use triton_deploy_aws::ecs::Ecs;

use super::deployment::{self, Context, WaitReport};
use super::rollout::{RolloutError, report_error};
use super::{Format, Global, SpecArgs, block_on, exit};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// The revision to go back to: a number, `family:number`, or an ARN (default: the newest
    /// revision older than the running one).
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,

    /// Do not wait for the deployment.
    #[arg(long)]
    pub no_wait: bool,

    /// How long to wait, in minutes.
    #[arg(long, default_value_t = 30, value_name = "MINUTES")]
    pub timeout: u64,

    /// AWS profile.
    #[arg(long)]
    pub profile: Option<String>,

    #[arg(long, default_value_t = 5, value_name = "SECONDS", hide = true)]
    pub poll: u64,
}

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
pub fn choose(revisions: &[String], current: &str, to: Option<&str>) -> Result<String, String> {
    let cur =
        revision_number(current).ok_or_else(|| format!("cannot read the revision of {current}"))?;
    let target = match to {
        Some(t) => {
            let n: Option<u32> = t.rsplit(':').next().and_then(|x| x.parse().ok());
            let n = n.ok_or_else(|| {
                format!("--to {t}: give a revision number, family:number or an ARN")
            })?;
            revisions
                .iter()
                .find(|r| revision_number(r) == Some(n))
                .cloned()
                .ok_or_else(|| {
                    format!("revision {n} is not an active revision of this service's family")
                })?
        }
        None => revisions
            .iter()
            .filter(|r| revision_number(r).is_some_and(|n| n < cur))
            .max_by_key(|r| revision_number(r))
            .cloned()
            .ok_or_else(|| format!("no active revision older than {cur} to roll back to"))?,
    };
    if revision_number(&target) == Some(cur) {
        return Err(format!("the service already runs revision {cur}"));
    }
    Ok(target)
}

pub fn run(args: RollbackArgs, global: Global) -> i32 {
    let Some(result) = block_on(rollback(&args, global)) else {
        return exit::USAGE;
    };
    match result {
        Ok(r) => {
            match global.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Format::Text => {
                    let short = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
                    println!("{}: {} -> {}", r.service, short(&r.from), short(&r.to));
                    if let Some(w) = &r.wait {
                        println!("rolled back in {:.0} s; targets {:?}", w.seconds, w.targets);
                    }
                }
            }
            exit::OK
        }
        Err(e) => report_error(&e),
    }
}

async fn rollback(args: &RollbackArgs, global: Global) -> Result<RollbackReport, RolloutError> {
    let cx = Context::load(&args.spec, args.profile.as_deref()).await?;
    let infra = cx.infra()?;
    let ecs = Ecs::new(&cx.config);
    let svc = ecs
        .describe_service(&infra.cluster, &cx.spec.service)
        .await?
        .ok_or_else(|| {
            RolloutError::NotDeployed(format!("service {} is not deployed", cx.spec.service))
        })?;
    let revisions = ecs.revisions(&crate::taskdef::family(&cx.spec)).await?;
    let target = choose(&revisions, &svc.task_definition, args.to.as_deref())
        .map_err(RolloutError::Usage)?;
    ecs.set_task_definition(&infra.cluster, &cx.spec.service, &target)
        .await?;
    let mut report = RollbackReport {
        service: cx.spec.service.clone(),
        from: svc.task_definition.clone(),
        to: target.clone(),
        wait: None,
    };
    if !args.no_wait {
        report.wait = Some(
            deployment::wait(
                &cx.spec,
                &infra,
                &target,
                &cx.config,
                Duration::from_secs(args.timeout * 60),
                Duration::from_secs(args.poll.max(1)),
                global.format == Format::Text,
            )
            .await?,
        );
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
