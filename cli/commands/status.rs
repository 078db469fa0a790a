//! `triton-deploy status`: the stack, the service's deployments, running/desired, target health,
//! the image digest, autoscaling, the endpoint, and whether a newer GPU AMI is out.

use std::fmt::Write as _;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::plan;
use crate::deploy::status::{self, StatusReport};
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
}

/// Runs `status`.
pub fn run(args: StatusArgs, _global: &Global) -> Result<StatusReport, CliError> {
    let spec = args.spec.load()?;
    let aws = args.aws.options(spec.region.as_deref());
    Ok(block_on(None, status::status(spec, &aws, args.events))??)
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
            "stack    {} ({})",
            self.stack,
            self.stack_status.as_deref().unwrap_or("not deployed")
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
        if !s.events.is_empty() {
            let _ = writeln!(out, "events");
            for e in &s.events {
                let _ = writeln!(out, "  {} {}", e.at.as_deref().unwrap_or(""), e.message);
            }
        }
        out
    }
}
