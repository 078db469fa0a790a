//! `triton-deploy status`: the stacks, the service's deployments, running/desired, target health,
//! the image digest, autoscaling, the endpoint, and whether a newer GPU AMI is out.

use std::fmt::Write as _;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::plan;
use crate::deploy::status::{self, ClusterReport, StatusReport};
use crate::output::{CliError, Global, Render, exit, short_arn};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// How many recent service events to show.
    #[arg(long, default_value_t = 5)]
    pub events: usize,

    /// The spec's whole cluster instead: its hosts and GPUs, and every service on it with its
    /// route, models and tasks.
    #[arg(long)]
    pub cluster: bool,
}

/// What `status` shows: one service, or with `--cluster` the cluster.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Status {
    /// The spec's service.
    Service(Box<StatusReport>),
    /// The spec's cluster.
    Cluster(ClusterReport),
}

/// Runs `status`.
pub fn run(args: StatusArgs, _global: &Global) -> Result<Status, CliError> {
    let spec = args.spec.load()?;
    let aws = args.aws.options(spec.region.as_deref());
    if args.cluster {
        return Ok(Status::Cluster(block_on(
            None,
            status::cluster_status(spec, &aws),
        )??));
    }
    Ok(Status::Service(Box::new(block_on(
        None,
        status::status(spec, &aws, args.events),
    )??)))
}

impl Render for Status {
    fn exit_code(&self) -> u8 {
        match self {
            Status::Service(s) => s.exit_code(),
            Status::Cluster(c) => c.exit_code(),
        }
    }

    fn text(&self, global: &Global) -> String {
        match self {
            Status::Service(s) => s.text(global),
            Status::Cluster(c) => c.text(global),
        }
    }
}

impl Render for ClusterReport {
    /// 1 when the cluster is not deployed.
    fn exit_code(&self) -> u8 {
        if self.stack_status.is_some() {
            exit::OK
        } else {
            exit::FAILURE
        }
    }

    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster  {} (stack {}: {})",
            self.cluster,
            self.stack,
            self.stack_status.as_deref().unwrap_or("not deployed")
        );
        if self.stack_status.is_none() {
            return out;
        }
        let hosts = match &self.instances {
            Some(h) => format!("{} in service ({} desired)", h.in_service, h.desired),
            None => "no Auto Scaling group".into(),
        };
        let _ = writeln!(
            out,
            "hosts    {hosts}; {} in the ECS cluster; GPUs {} used / {}",
            self.container_instances.len(),
            self.gpus - self.gpus_free,
            self.gpus
        );
        if self.services.is_empty() {
            let _ = writeln!(out, "services none");
            return out;
        }
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<10} {:<12} models",
            "service", "tasks", "status", "route"
        );
        for s in &self.services {
            let _ = writeln!(
                out,
                "{:<24} {:<8} {:<10} {:<12} {}",
                s.name,
                format!("{}/{}", s.running, s.desired),
                s.status.as_deref().unwrap_or("-"),
                s.route,
                if s.route == "all" {
                    "(every path no other service routes)".to_string()
                } else {
                    s.models.join(", ")
                }
            );
        }
        out
    }
}

impl Render for StatusReport {
    /// 1 when the service is not deployed (the report still says what there is).
    fn exit_code(&self) -> u8 {
        if self.service.is_some() {
            exit::OK
        } else {
            exit::FAILURE
        }
    }

    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();

        let _ = writeln!(
            out,
            "stack    {} ({}); service stack {} ({})",
            self.stack,
            self.stack_status.as_deref().unwrap_or("not deployed"),
            self.service_stack,
            self.service_stack_status
                .as_deref()
                .unwrap_or("not deployed")
        );
        if let Some(a) = &self.ami {
            let _ = writeln!(out, "ami      {a}");
        }
        if let Some(u) = &self.ami_update {
            let _ = writeln!(
                out,
                "         newer GPU AMI {} is out: `triton-deploy rollout` updates the launch template, `--refresh-instances` replaces the hosts",
                u.to
            );
        }
        if let Some(b) = &self.baked_ami {
            match &b.baked {
                Some(a) => {
                    let _ = writeln!(
                        out,
                        "baked    {} ({}): {} on {}",
                        a.ami,
                        b.parameter,
                        a.image_digest.as_deref().unwrap_or("an unrecorded image"),
                        a.source_ami.as_deref().unwrap_or("an unrecorded base")
                    );
                    if let Some(m) = &a.models {
                        let _ = writeln!(out, "         models {m}");
                    }
                }
                None => {
                    let _ = writeln!(out, "baked    none in {}", b.parameter);
                }
            }
            for why in &b.behind {
                let _ = writeln!(out, "         behind: {why}: `triton-deploy ami build`");
            }
        }
        if let Some(i) = &self.instance_refresh {
            let _ = writeln!(
                out,
                "hosts    instance refresh {}: {} {}%",
                i.id, i.status, i.percentage_complete
            );
        }
        let Some(s) = &self.service else {
            let _ = writeln!(out, "service  not deployed");
            return out;
        };
        let _ = writeln!(out, "service  {} ({}, {})", s.name, s.status, s.state);
        let _ = writeln!(out, "revision {}", short_arn(&s.task_definition));
        if let Some(i) = &s.image {
            let _ = writeln!(out, "image    {i}");
        }
        let _ = writeln!(
            out,
            "tasks    {} running / {} desired ({} pending)",
            s.running, s.desired, s.pending
        );
        for d in &s.deployments {
            let _ = writeln!(
                out,
                "  {:<8} {:<28} {}/{} {}{}",
                d.status,
                short_arn(&d.task_definition),
                d.running,
                d.desired,
                d.rollout_state.as_deref().unwrap_or(""),
                d.rollout_state_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
        let summary = plan::target_summary(&s.targets);
        let _ = writeln!(out, "targets  {summary:?}");
        for t in s.targets.iter().filter(|t| t.state != "healthy") {
            let _ = writeln!(out, "  {}", plan::target_line(t));
        }
        if let Some(a) = &s.autoscaling {
            let _ = writeln!(
                out,
                "scaling  {}..{} tasks, {} target {}",
                a.min, a.max, a.metric, a.target
            );
        }
        if let Some(e) = &self.endpoint {
            let _ = writeln!(out, "endpoint {e}");
        }
        if let Some(e) = &self.grpc_endpoint {
            let _ = writeln!(out, "gRPC endpoint {e}");
        }
        if let Some(c) = &self.container_insights {
            let _ = writeln!(
                out,
                "metrics: Container Insights {c} (GPU metrics: each task's :8002, from inside the VPC)"
            );
        }
        if !s.events.is_empty() {
            let _ = writeln!(out, "events");
            for e in &s.events {
                let _ = writeln!(out, "  {} {}", e.at.as_deref().unwrap_or(""), e.message);
            }
        }
        out
    }
}
