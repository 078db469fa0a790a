//! `triton-deploy rollout`: the infra stack (GPU hosts, capacity provider, ALB, EFS) through a
//! CloudFormation change set, after a GPU preflight. `--plan` shows the resource-level changes and
//! changes nothing (exit 0: nothing would change, 2: something would, like terraform's
//! `-detailed-exitcode`).

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use triton_deploy_aws::cfn::{Cfn, ResourceChange, StackEvent};
use triton_deploy_aws::ec2::Ec2;
use triton_deploy_aws::ssm::Ssm;
use triton_deploy_aws::{AwsOptions, load_config};

use super::deployment::{self, ServicePlan, WaitReport};
use super::{Format, Global, SpecArgs, block_on, exit};
use crate::infra;
use crate::spec::{self, Ami, DeploymentSpec};

/// Exit code of `--plan` when something would change.
pub const CHANGES: i32 = 2;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Show what would change and change nothing. Exit 0: no changes; 2: changes.
    #[arg(long)]
    pub plan: bool,

    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,

    /// How long to wait for CloudFormation, in minutes.
    #[arg(long, default_value_t = 60, value_name = "MINUTES")]
    pub timeout: u64,

    /// AWS profile.
    #[arg(long)]
    pub profile: Option<String>,

    /// The image to deploy (default: the spec's image.uri, else the newest image in the spec's ECR
    /// repository). ECR images are checked and pinned by digest.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Verify through this URL instead of the load balancer's DNS name (a tunnel, or a local
    /// stand-in).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Do not wait for the deployment (nor verify it).
    #[arg(long)]
    pub no_wait: bool,

    /// After the deployment, run one real inference built from the model's metadata.
    #[arg(long)]
    pub smoke: bool,

    /// Replace the GPU hosts (an instance refresh that keeps capacity and lets ECS drain tasks),
    /// e.g. to move them to a newer AMI, and follow it.
    #[arg(long)]
    pub refresh_instances: bool,

    /// Seconds between polls while waiting.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", hide = true)]
    pub poll: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("preflight: {0}")]
    Preflight(String),
    #[error(transparent)]
    Cfn(#[from] triton_deploy_aws::cfn::CfnError),
    #[error(transparent)]
    Ec2(#[from] triton_deploy_aws::ec2::Ec2Error),
    #[error(transparent)]
    Ssm(#[from] triton_deploy_aws::ssm::SsmError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Service(#[from] super::deployment::ServiceError),
    #[error(transparent)]
    Api(#[from] triton_deploy_aws::ApiError),
    #[error("{0}")]
    NotDeployed(String),
}

/// Prints an error of a deployment command and returns its exit code.
pub fn report_error(e: &RolloutError) -> i32 {
    eprintln!("error: {e}");
    match e {
        RolloutError::Usage(_) => exit::USAGE,
        RolloutError::Service(super::deployment::ServiceError::Interrupted) => 130,
        _ => exit::INVALID,
    }
}

#[derive(Debug, Serialize)]
pub struct RolloutReport {
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
    /// The service phase: image, task definition, service, autoscaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
    /// The endpoint the service answers on (the load balancer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `ready`, `ready+smoke:<model>`, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_refresh: Option<triton_deploy_aws::autoscaling::InstanceRefresh>,
}

impl RolloutReport {
    /// Whether anything changed (or, planning, would change).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || self.service.as_ref().is_some_and(|s| !s.is_empty())
    }
}

/// A newer AMI behind the spec's AMI parameter than the one the hosts were launched with.
#[derive(Debug, Clone, Serialize)]
pub struct AmiUpdate {
    pub from: String,
    pub to: String,
}

/// What the preflight found: the network to use and the AMI the parameter resolves to.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub vpc_id: String,
    pub vpc_cidr: String,
    pub subnets: Vec<String>,
    pub ami_id: String,
}

/// Checks, before any change, that the deployment can run: the instance type's GPUs, room for a
/// rolling deployment, the type offered in the subnets' zones (one subnet per zone is used), and
/// the AMI. Each failure says what to change.
pub async fn preflight(
    spec: &DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
) -> Result<Preflight, RolloutError> {
    let ec2 = Ec2::new(config);
    let per = ec2.gpus(&spec.instance_type).await?.ok_or_else(|| {
        RolloutError::Preflight(format!(
            "EC2 does not know the instance type {} in this region: check compute.instance_type",
            spec.instance_type
        ))
    })?;
    if per == 0 {
        return Err(RolloutError::Preflight(format!(
            "{} has no GPU: choose a GPU instance type (g5, g6, g6e, p4d, p5...)",
            spec.instance_type
        )));
    }
    spec::rolling_room(spec, per).map_err(RolloutError::Preflight)?;
    let net =
        ec2.network(spec.vpc_id.as_deref(), &spec.subnets)
            .await?
            .ok_or_else(|| {
                RolloutError::Preflight(match &spec.vpc_id {
                    Some(v) => format!("VPC {v} does not exist in this region: fix network.vpc_id"),
                    None => "no default VPC in this region: set network.vpc_id and network.subnets"
                        .into(),
                })
            })?;
    if !spec.subnets.is_empty() {
        let found: BTreeSet<&str> = net.subnets.iter().map(|(s, _)| s.as_str()).collect();
        if let Some(missing) = spec.subnets.iter().find(|s| !found.contains(s.as_str())) {
            return Err(RolloutError::Preflight(format!(
                "subnet {missing} is not in {}: fix network.subnets",
                net.vpc_id
            )));
        }
    }
    let zones = ec2.zones_offering(&spec.instance_type).await?;
    let mut chosen: Vec<(String, String)> = Vec::new();
    for (subnet, az) in &net.subnets {
        if !zones.contains(az) {
            if !spec.subnets.is_empty() {
                return Err(RolloutError::Preflight(format!(
                    "{} is not offered in {az} (subnet {subnet}); it is offered in {}: use subnets in those zones",
                    spec.instance_type,
                    zones.join(", ")
                )));
            }
            continue;
        }
        if chosen.iter().any(|(_, z)| z == az) {
            if !spec.subnets.is_empty() {
                return Err(RolloutError::Preflight(format!(
                    "two subnets in {az}: EFS takes one mount target per zone; give one subnet per availability zone"
                )));
            }
            continue;
        }
        chosen.push((subnet.clone(), az.clone()));
    }
    if chosen.len() < 2 {
        return Err(RolloutError::Preflight(format!(
            "{} is offered in {} of the VPC's zones; the hosts and the load balancer need at least 2 zones",
            spec.instance_type,
            chosen.len()
        )));
    }
    let ami_id = match &spec.ami {
        Ami::SsmParameter(p) => Ssm::new(config).get(p).await?.ok_or_else(|| {
            RolloutError::Preflight(format!(
                "the AMI parameter {p} does not exist in this region: set compute.ami to al2-gpu, an AMI ID, or your own parameter"
            ))
        })?,
        Ami::Id(id) => {
            if !ec2.image_exists(id).await? {
                return Err(RolloutError::Preflight(format!("AMI {id} does not exist in this region: fix compute.ami")));
            }
            id.clone()
        }
    };
    Ok(Preflight {
        vpc_id: net.vpc_id,
        vpc_cidr: net.cidr,
        subnets: chosen.into_iter().map(|(s, _)| s).collect(),
        ami_id,
    })
}

pub fn run(args: RolloutArgs, global: Global) -> i32 {
    let Some(result) = block_on(rollout(&args, global)) else {
        return exit::USAGE;
    };
    match result {
        Ok(report) => {
            let code = if args.plan && report.has_changes() {
                CHANGES
            } else {
                exit::OK
            };
            match global.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&report).expect("json"))
                }
                Format::Text => {
                    if let Some(u) = &report.ami_update {
                        println!(
                            "GPU AMI update: {} -> {} (the launch template takes it; running hosts keep the old AMI until they are replaced)",
                            u.from, u.to
                        );
                    }
                    if report.changes.is_empty() {
                        println!("{}: no changes", report.stack);
                    } else {
                        println!(
                            "{}: {} resource change(s){}",
                            report.stack,
                            report.changes.len(),
                            if args.plan {
                                " (plan: nothing applied)"
                            } else {
                                ""
                            }
                        );
                        for c in &report.changes {
                            let what = match (c.action.as_str(), c.replacement.as_deref()) {
                                ("Add", _) => "add",
                                ("Remove", _) => "remove",
                                ("Modify", Some("True")) => "replace",
                                ("Modify", Some("Conditional")) => "modify (may replace)",
                                ("Modify", _) => "modify",
                                (other, _) => other,
                            };
                            println!("  {what:<20} {:<28} {}", c.logical_id, c.resource_type);
                        }
                    }
                    if let Some(p) = &report.service {
                        print_service_plan(p, args.plan);
                    }
                    if let Some(w) = &report.wait {
                        println!("deployed in {:.0} s; targets {:?}", w.seconds, w.targets);
                        if let Some(n) = &w.note {
                            println!("note: {n}");
                        }
                    }
                    if let Some(e) = &report.endpoint {
                        println!("endpoint: {e}");
                    }
                    if let Some(v) = &report.verified {
                        println!("verify: {v}");
                    }
                    if let Some(r) = &report.instance_refresh {
                        println!("instance refresh {}: {}", r.id, r.status);
                    }
                }
            }
            code
        }
        Err(e) => report_error(&e),
    }
}

fn print_change(c: &crate::deploy::FieldChange) {
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("      {}: {} -> {}", c.path, show(&c.from), show(&c.to));
}

fn print_service_plan(p: &ServicePlan, planning: bool) {
    let verb = |what: &str| {
        if planning {
            format!("would {what}")
        } else {
            what.to_string()
        }
    };
    if let Some(i) = &p.image {
        println!(
            "image: {} ({}{})",
            i.uri,
            i.source,
            if i.checked {
                ", in ECR"
            } else {
                ", not an ECR image: not checked"
            }
        );
    }
    if let Some(t) = &p.task_definition {
        println!(
            "task definition {}: {} a new revision{}",
            t.family,
            verb("register"),
            t.from
                .as_deref()
                .map(|f| format!(" (from {})", f.rsplit('/').next().unwrap_or(f)))
                .unwrap_or_default()
        );
        if t.from.is_some() {
            t.changes.iter().for_each(print_change);
        }
    }
    if let Some(c) = &p.service {
        println!("service: {}", verb(&c.action));
        if c.action != "create" {
            c.changes.iter().for_each(print_change);
        }
    }
    if let Some(c) = &p.autoscaling {
        let source = p
            .scaling_target
            .as_ref()
            .map(|t| {
                format!(
                    " (target {} requests/min per task, from {})",
                    t.requests_per_minute, t.source
                )
            })
            .unwrap_or_default();
        println!("autoscaling: {}{source}", verb(&c.action));
        if c.action != "create" {
            c.changes.iter().for_each(print_change);
        }
    }
    if p.is_empty() {
        println!("service: no changes");
    }
}

async fn rollout(args: &RolloutArgs, global: Global) -> Result<RolloutReport, RolloutError> {
    let mut spec = args.spec.load()?;
    if !args.plan && !args.yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(RolloutError::Usage(
                "rollout changes AWS resources: pass --yes (or --plan to only look)".into(),
            ));
        }
        eprint!("Apply the changes to {}? [y/N] ", infra::stack_name(&spec));
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(RolloutError::Usage("not applied".into()));
        }
    }
    let config = load_config(&AwsOptions {
        region: spec.region.clone(),
        profile: args.profile.clone(),
    })
    .await;
    let text = global.format == Format::Text;
    let (mut report, pf, unchanged) = infra_phase(args, &mut spec, &config, global).await?;
    let cfn = Cfn::new(&config);
    // The infra phase's description still holds when it applied nothing.
    let stack = match unchanged {
        Some(s) => Some(s),
        None => cfn.describe(&report.stack).await?,
    };
    let Some(mut stack) = stack else {
        // Planning a new cluster: the service comes with it.
        return Ok(report);
    };
    if stack.status == "REVIEW_IN_PROGRESS" {
        return Ok(report);
    }
    deployment::complete_stack(&spec, &mut stack, &config).await?;
    let region = config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let infra = crate::deploy::infra_from_stack(&spec, &stack, pf.subnets.clone(), &region)
        .map_err(RolloutError::Usage)?;
    let image = deployment::resolve_image(&spec, args.image.as_deref(), &config).await?;
    let spec_dir = args
        .spec
        .file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let (plan, existing) =
        deployment::plan_and_apply(&spec, &infra, image, &spec_dir, &config, args.plan).await?;
    let deployed = !args.plan && (plan.service.is_some() || plan.task_definition.is_some());
    // Nothing to change, but an earlier rollout's deployment still going (it was interrupted, or
    // another client started it): wait for it too.
    let in_progress = !deployed
        && match (&existing, &plan.revision) {
            (Some(s), Some(rev)) => matches!(
                crate::deploy::assess(s, rev, &[]),
                crate::deploy::Progress::Waiting(_)
            ),
            _ => false,
        };
    let revision = plan.revision.clone();
    report.service = Some(plan);
    if let Some(dns) = triton_deploy_aws::elbv2::Elb::new(&config)
        .dns_name(&infra.load_balancer_arn)
        .await?
    {
        report.endpoint = Some(crate::deploy::endpoint_url(&spec, &dns));
    }
    if args.plan {
        return Ok(report);
    }
    if args.refresh_instances {
        report.instance_refresh =
            Some(refresh_instances(&spec, &infra, &config, args, text).await?);
    }
    if args.no_wait {
        return Ok(report);
    }
    let Some(revision) = revision else {
        return Ok(report);
    };
    if deployed || in_progress || args.smoke || args.endpoint.is_some() {
        if text && (deployed || in_progress) {
            eprintln!(
                "waiting for {} to run {}",
                spec.service,
                revision.rsplit('/').next().unwrap_or(&revision)
            );
        }
        report.wait = Some(
            deployment::wait(
                &spec,
                &infra,
                &revision,
                &config,
                Duration::from_secs(args.timeout * 60),
                Duration::from_secs(args.poll.max(1)),
                text,
            )
            .await?,
        );
        report.verified = Some(verify(&spec, args, report.endpoint.as_deref()).await?);
    }
    Ok(report)
}

/// `GET /v2/health/ready` through the load balancer (or `--endpoint`), and with `--smoke` one
/// inference. An internal load balancer is not reachable from outside its VPC: said, not failed.
async fn verify(
    spec: &DeploymentSpec,
    args: &RolloutArgs,
    alb: Option<&str>,
) -> Result<String, RolloutError> {
    let endpoint = match (&args.endpoint, alb) {
        (Some(e), _) => e.clone(),
        (None, Some(a)) if spec.internet_facing => a.to_string(),
        (None, Some(_)) => {
            return Ok("skipped: the load balancer is internal (pass --endpoint through a tunnel or from inside the VPC)".into());
        }
        (None, None) => return Ok("skipped: no load balancer DNS name".into()),
    };
    deployment::verify_ready(&endpoint, Duration::from_secs(60)).await?;
    if !args.smoke {
        return Ok(format!("ready at {endpoint}"));
    }
    let models = match &spec.model_repository {
        Some(dir) => {
            let base = args.spec.file.parent().unwrap_or(std::path::Path::new("."));
            crate::model_repo::ModelRepo::read(&base.join(dir), None)
                .map(|r| r.models.into_iter().map(|m| m.name).collect())
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let model = deployment::smoke(&endpoint, &models).await?;
    Ok(format!(
        "ready at {endpoint}; inference on {model} answered"
    ))
}

/// Starts an instance refresh of the GPU hosts and follows it to the end.
async fn refresh_instances(
    spec: &DeploymentSpec,
    infra: &crate::deploy::Infra,
    config: &triton_deploy_aws::SdkConfig,
    args: &RolloutArgs,
    text: bool,
) -> Result<triton_deploy_aws::autoscaling::InstanceRefresh, RolloutError> {
    let asg = triton_deploy_aws::autoscaling::AutoScaling::new(config);
    // Keep every host in service while its replacement starts when the service cannot lose one.
    let min_healthy = if spec.minimum_healthy_percent >= 100 {
        100
    } else {
        90
    };
    let id = match asg
        .refreshes(&infra.auto_scaling_group)
        .await?
        .into_iter()
        .find(|r| !r.is_done())
    {
        Some(running) => {
            if text {
                eprintln!(
                    "instance refresh {} is already running: following it",
                    running.id
                );
            }
            running.id
        }
        None => {
            asg.start_refresh(
                &infra.auto_scaling_group,
                min_healthy,
                spec.instance_warmup_seconds as i32,
            )
            .await?
        }
    };
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let r = asg
            .refreshes(&infra.auto_scaling_group)
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| RolloutError::Usage(format!("instance refresh {id} disappeared")))?;
        let line = format!(
            "instance refresh {}: {} {}%",
            r.id, r.status, r.percentage_complete
        );
        if text && line != last {
            eprintln!("  {line}");
            last = line;
        }
        if r.is_done() {
            if r.status != "Successful" {
                return Err(RolloutError::Usage(format!(
                    "instance refresh {} ended {}: {}",
                    r.id,
                    r.status,
                    r.status_reason.unwrap_or_default()
                )));
            }
            return Ok(r);
        }
        if started.elapsed() > Duration::from_secs(args.timeout * 60) {
            return Err(RolloutError::Usage(format!(
                "instance refresh {id} still {} after {} min: it goes on; follow it with `triton-deploy status`",
                r.status, args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_secs(args.poll.max(1))).await;
    }
}

async fn infra_phase(
    args: &RolloutArgs,
    spec: &mut DeploymentSpec,
    config: &triton_deploy_aws::SdkConfig,
    global: Global,
) -> Result<
    (
        RolloutReport,
        Preflight,
        Option<triton_deploy_aws::cfn::StackInfo>,
    ),
    RolloutError,
> {
    let pf = preflight(spec, config).await?;
    spec.vpc_id = Some(pf.vpc_id.clone());
    spec.subnets = pf.subnets.clone();
    let template = serde_json::to_string(&infra::template(spec)).expect("json");
    let params = infra::parameters(&pf.vpc_id, &pf.vpc_cidr, &pf.subnets);
    // The resolved AMI is part of the deployed state: a new AMI behind the parameter is a change.
    let mut hash_input = format!("{template}\nami={}", pf.ami_id);
    for (k, v) in &params {
        hash_input.push_str(&format!("\n{k}={v}"));
    }
    let hash = crate::registry::sha256_digest(hash_input.as_bytes())[7..23].to_string();
    let stack = infra::stack_name(spec);
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
    let mut report = RolloutReport {
        stack: stack.clone(),
        changes: Vec::new(),
        applied: false,
        template_hash: hash.clone(),
        subnets: pf.subnets.clone(),
        ami: Some(pf.ami_id.clone()),
        ami_update,
        service: None,
        wait: None,
        endpoint: None,
        verified: None,
        instance_refresh: None,
    };
    if let Some(s) = &existing {
        if s.status == "ROLLBACK_COMPLETE"
            || s.status.ends_with("_IN_PROGRESS") && s.status != "REVIEW_IN_PROGRESS"
        {
            return Err(RolloutError::Usage(format!(
                "stack {stack} is {}: wait for it to settle (or delete a ROLLBACK_COMPLETE stack) and run again",
                s.status
            )));
        }
        if s.tags.get("triton-deploy:template-hash") == Some(&hash)
            && s.status.ends_with("_COMPLETE")
        {
            // The deployed template is the rendered one: no change set needed.
            return Ok((report, pf, existing));
        }
    }
    let create = existing
        .as_ref()
        .is_none_or(|s| s.status == "REVIEW_IN_PROGRESS");
    let mut tags = infra::tags(spec);
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
    if args.plan || report.changes.is_empty() {
        if !report.changes.is_empty() {
            cfn.delete_change_set(&stack, &change_set).await?;
        }
        if create {
            // A CREATE change set leaves an empty stack in REVIEW_IN_PROGRESS: a plan removes it.
            let _ = cfn.delete_stack(&stack).await;
            return Ok((report, pf, None));
        }
        return Ok((report, pf, existing));
    }
    let text = global.format == Format::Text;
    let on_event = move |e: &StackEvent| {
        if text {
            super::print_stack_event(e);
        }
    };
    cfn.execute(
        &stack,
        &change_set,
        Duration::from_secs(args.timeout * 60),
        &on_event,
    )
    .await?;
    report.applied = true;
    Ok((report, pf, None))
}
