//! `triton-deploy status`: the stack, the service's deployments, running/desired, target health,
//! the image digest, autoscaling, the endpoint, and whether a newer GPU AMI is out.

use clap::Args;
use serde::Serialize;
use triton_deploy_aws::appscaling::{AppScaling, Scaling};
use triton_deploy_aws::autoscaling::{AutoScaling, InstanceRefresh};
use triton_deploy_aws::ecs::{Deployment, Ecs, ServiceEvent};
use triton_deploy_aws::elbv2::{Elb, TargetHealth};
use triton_deploy_aws::ssm::Ssm;

use super::deployment::Context;
use super::rollout::{AmiUpdate, RolloutError, report_error};
use super::{Format, Global, SpecArgs, block_on, exit};
use crate::spec::Ami;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// AWS profile.
    #[arg(long)]
    pub profile: Option<String>,

    /// How many recent service events to show.
    #[arg(long, default_value_t = 5)]
    pub events: usize,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub stack: String,
    pub stack_status: Option<String>,
    pub ami: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami_update: Option<AmiUpdate>,
    pub service: Option<ServiceStatus>,
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_refresh: Option<InstanceRefresh>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub status: String,
    pub task_definition: String,
    pub image: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    /// `steady`, `deploying`, or `failed`.
    pub state: String,
    pub deployments: Vec<Deployment>,
    pub targets: Vec<TargetHealth>,
    pub autoscaling: Option<Scaling>,
    pub events: Vec<ServiceEvent>,
}

pub fn run(args: StatusArgs, global: Global) -> i32 {
    let Some(result) = block_on(status(&args)) else {
        return exit::USAGE;
    };
    match result {
        Ok(r) => {
            match global.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Format::Text => print_text(&r),
            }
            if r.service.is_some() {
                exit::OK
            } else {
                exit::INVALID
            }
        }
        Err(e) => report_error(&e),
    }
}

fn print_text(r: &StatusReport) {
    println!(
        "stack    {} ({})",
        r.stack,
        r.stack_status.as_deref().unwrap_or("not deployed")
    );
    if let Some(a) = &r.ami {
        println!("ami      {a}");
    }
    if let Some(u) = &r.ami_update {
        println!(
            "         newer GPU AMI {} is out: `triton-deploy rollout` updates the launch template, `--refresh-instances` replaces the hosts",
            u.to
        );
    }
    if let Some(i) = &r.instance_refresh {
        println!(
            "hosts    instance refresh {}: {} {}%",
            i.id, i.status, i.percentage_complete
        );
    }
    let Some(s) = &r.service else {
        println!("service  not deployed");
        return;
    };
    println!("service  {} ({}, {})", s.name, s.status, s.state);
    println!(
        "revision {}",
        s.task_definition
            .rsplit('/')
            .next()
            .unwrap_or(&s.task_definition)
    );
    if let Some(i) = &s.image {
        println!("image    {i}");
    }
    println!(
        "tasks    {} running / {} desired ({} pending)",
        s.running, s.desired, s.pending
    );
    for d in &s.deployments {
        println!(
            "  {:<8} {:<28} {}/{} {}{}",
            d.status,
            d.task_definition
                .rsplit('/')
                .next()
                .unwrap_or(&d.task_definition),
            d.running,
            d.desired,
            d.rollout_state.as_deref().unwrap_or(""),
            d.rollout_state_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    let summary = crate::deploy::target_summary(&s.targets);
    println!("targets  {summary:?}");
    for t in s.targets.iter().filter(|t| t.state != "healthy") {
        println!(
            "  {} {}{}",
            t.id,
            t.state,
            t.description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    if let Some(a) = &s.autoscaling {
        println!(
            "scaling  {}..{} tasks, {} target {}",
            a.min, a.max, a.metric, a.target
        );
    }
    if let Some(e) = &r.endpoint {
        println!("endpoint {e}");
    }
    if !s.events.is_empty() {
        println!("events");
        for e in &s.events {
            println!("  {} {}", e.at.as_deref().unwrap_or(""), e.message);
        }
    }
}

async fn status(args: &StatusArgs) -> Result<StatusReport, RolloutError> {
    let cx = Context::load(&args.spec, args.profile.as_deref()).await?;
    let mut report = StatusReport {
        stack: crate::infra::stack_name(&cx.spec),
        stack_status: cx.stack.as_ref().map(|s| s.status.clone()),
        ami: cx
            .stack
            .as_ref()
            .and_then(|s| s.tags.get("triton-deploy:ami").cloned()),
        ami_update: None,
        service: None,
        endpoint: None,
        instance_refresh: None,
    };
    if cx.stack.is_none() {
        return Ok(report);
    }
    if let (Some(deployed), Ami::SsmParameter(p)) = (&report.ami, &cx.spec.ami)
        && let Some(now) = Ssm::new(&cx.config).get(p).await?
        && now != *deployed
    {
        report.ami_update = Some(AmiUpdate {
            from: deployed.clone(),
            to: now,
        });
    }
    let infra = cx.infra()?;
    report.instance_refresh = AutoScaling::new(&cx.config)
        .refreshes(&infra.auto_scaling_group)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
        .filter(|r| !r.is_done());
    let elb = Elb::new(&cx.config);
    report.endpoint = elb
        .dns_name(&infra.load_balancer_arn)
        .await?
        .map(|d| crate::deploy::endpoint_url(&cx.spec, &d));
    let ecs = Ecs::new(&cx.config);
    let Some(svc) = ecs
        .describe_service(&infra.cluster, &cx.spec.service)
        .await?
    else {
        return Ok(report);
    };
    let image = ecs
        .describe_task_definition(&svc.task_definition)
        .await
        .ok()
        .and_then(|t| {
            t.definition
                .pointer("/containerDefinitions/0/image")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let targets = elb.target_health(&infra.target_group_arn).await?;
    let progress = crate::deploy::assess(&svc, &svc.task_definition, &targets);
    let scaling = &crate::deploy::scaling(
        &cx.spec,
        &infra,
        &crate::deploy::ScalingTarget {
            requests_per_minute: 0,
            source: String::new(),
        },
    )[0];
    let autoscaling = AppScaling::new(&cx.config)
        .get(&scaling.resource_id, &scaling.policy_name)
        .await?;
    report.service = Some(ServiceStatus {
        name: cx.spec.service.clone(),
        status: svc.status.clone(),
        task_definition: svc.task_definition.clone(),
        image,
        desired: svc.desired,
        running: svc.running,
        pending: svc.pending,
        state: match progress {
            crate::deploy::Progress::Done => "steady",
            crate::deploy::Progress::Waiting(_) => "deploying",
            crate::deploy::Progress::Failed(_) => "failed",
        }
        .into(),
        deployments: svc.deployments.clone(),
        targets,
        autoscaling,
        events: svc.events.iter().take(args.events).cloned().collect(),
    });
    Ok(report)
}
