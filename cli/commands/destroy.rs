//! `triton-deploy destroy --yes`: autoscaling deregistered, the service
//! scaled to 0 and deleted, its task definitions deleted, the stack (with the dashboard) deleted; ECR images kept
//! unless `--delete-images`. Each step is skipped when its resource is already gone, so an
//! interrupted destroy is finished by running it again.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use triton_deploy_aws::appscaling::AppScaling;
use triton_deploy_aws::cfn::{Cfn, StackEvent};
use triton_deploy_aws::ecr::Ecr;
use triton_deploy_aws::ecs::Ecs;

use super::deployment::Context;
use super::rollout::{RolloutError, report_error};
use super::{Format, Global, SpecArgs, block_on, exit};

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Destroy without asking.
    #[arg(long)]
    pub yes: bool,

    /// Also delete the ECR repository and its images.
    #[arg(long)]
    pub delete_images: bool,

    /// How long to wait for the service and the stack to go, in minutes.
    #[arg(long, default_value_t = 60, value_name = "MINUTES")]
    pub timeout: u64,

    /// AWS profile.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct DestroyReport {
    /// What was removed, in order.
    pub removed: Vec<String>,
    /// What was kept, and why.
    pub kept: Vec<String>,
}

pub fn run(args: DestroyArgs, global: Global) -> i32 {
    let Some(result) = block_on(destroy(&args, global)) else {
        return exit::USAGE;
    };
    match result {
        Ok(r) => {
            match global.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Format::Text => {
                    if r.removed.is_empty() {
                        println!("nothing to destroy");
                    }
                    for x in &r.removed {
                        println!("removed {x}");
                    }
                    for x in &r.kept {
                        println!("kept    {x}");
                    }
                }
            }
            exit::OK
        }
        Err(e) => report_error(&e),
    }
}

async fn destroy(args: &DestroyArgs, global: Global) -> Result<DestroyReport, RolloutError> {
    let cx = Context::load(&args.spec, args.profile.as_deref()).await?;
    let stack_name = crate::infra::stack_name(&cx.spec);
    if !args.yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(RolloutError::Usage(
                "destroy deletes the service and its cluster: pass --yes".into(),
            ));
        }
        eprint!(
            "Delete service {} and stack {stack_name}? [y/N] ",
            cx.spec.service
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(RolloutError::Usage("nothing destroyed".into()));
        }
    }
    let text = global.format == Format::Text;
    let say = |m: &str| {
        if text {
            eprintln!("  {m}");
        }
    };
    let timeout = Duration::from_secs(args.timeout * 60);
    let mut report = DestroyReport::default();
    let ecs = Ecs::new(&cx.config);
    if cx.stack.is_some() {
        let infra = cx.infra()?;
        let resource_id = format!("service/{}/{}", infra.cluster, cx.spec.service);
        let scaler = AppScaling::new(&cx.config);
        let policy = format!("triton-deploy-{}-requests", cx.spec.service);
        if scaler.get(&resource_id, &policy).await?.is_some() {
            say("deregistering autoscaling");
            scaler.delete(&resource_id).await?;
            report.removed.push(format!("autoscaling {resource_id}"));
        }
        if let Some(svc) = ecs
            .describe_service(&infra.cluster, &cx.spec.service)
            .await?
        {
            if svc.desired > 0 {
                say("scaling the service to 0");
                ecs.set_desired_count(&infra.cluster, &cx.spec.service, 0)
                    .await?;
            }
            say("deleting the service");
            ecs.delete_service(&infra.cluster, &cx.spec.service).await?;
            let started = Instant::now();
            while ecs
                .describe_service(&infra.cluster, &cx.spec.service)
                .await?
                .is_some_and(|s| s.status != "DRAINING" || s.running > 0)
            {
                if started.elapsed() > timeout {
                    return Err(RolloutError::Usage(format!(
                        "service {} still draining after {} min: run destroy again later",
                        cx.spec.service, args.timeout
                    )));
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            report.removed.push(format!("service {}", cx.spec.service));
        }
    }
    let family = crate::taskdef::family(&cx.spec);
    let revisions = ecs.revisions(&family).await?;
    if !revisions.is_empty() {
        ecs.delete_task_definitions(&revisions).await?;
        report.removed.push(format!(
            "task definition {family} ({} revision(s))",
            revisions.len()
        ));
    }
    if cx.stack.is_some() {
        say(&format!("deleting stack {stack_name}"));
        let on_event = move |e: &StackEvent| {
            if text {
                super::print_stack_event(e);
            }
        };
        Cfn::new(&cx.config)
            .delete_and_wait(&stack_name, timeout, &on_event)
            .await?;
        report.removed.push(format!(
            "stack {stack_name} (hosts, load balancer, EFS, dashboard {})",
            crate::infra::dashboard_name(&cx.spec)
        ));
    }
    if let Some(repo) = &cx.spec.image_repository {
        let ecr = Ecr::new(&cx.config);
        if args.delete_images {
            if ecr
                .describe(repo)
                .await
                .map_err(|e| RolloutError::Usage(e.to_string()))?
                .is_some()
            {
                ecr.delete_repository(repo).await?;
                report
                    .removed
                    .push(format!("ECR repository {repo} and its images"));
            }
        } else {
            report.kept.push(format!(
                "ECR repository {repo} (--delete-images removes it)"
            ));
        }
    }
    Ok(report)
}
