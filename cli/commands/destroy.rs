//! `triton-deploy destroy --yes`: autoscaling deregistered, the service scaled to 0 and deleted,
//! its task definitions deleted, its stack (with the dashboard) deleted, the cluster stack with the
//! cluster's last service; ECR images kept unless `--delete-images`. `--cluster` removes the
//! cluster stack alone, and refuses while services remain. Each step is skipped when its resource
//! is already gone, so an interrupted destroy is finished by running it again.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::render::cloudformation;
use crate::deploy::teardown::{self, DestroyReport};
use crate::output::{self, CliError, Global, Render};

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Destroy without asking.
    #[arg(long)]
    pub yes: bool,

    /// Also delete the ECR repository and its images.
    #[arg(long, conflicts_with = "cluster")]
    pub delete_images: bool,

    /// Remove the spec's cluster (its stack: hosts, load balancer, EFS) instead of the service;
    /// refused, naming them, while services of the cluster remain.
    #[arg(long)]
    pub cluster: bool,

    /// How long to wait for the service and the stack to go, in minutes.
    #[arg(long, default_value_t = 60, value_name = "MINUTES",
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub timeout: u64,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Runs `destroy`: asks first unless `--yes`.
pub fn run(args: DestroyArgs, global: &Global) -> Result<DestroyReport, CliError> {
    let spec = args.spec.load()?;
    if !args.yes {
        let question = if args.cluster {
            format!(
                "Delete cluster {} (stack {})?",
                spec.cluster,
                cloudformation::cluster_stack_name(&spec)
            )
        } else {
            format!(
                "Delete service {} and stack {} (and the cluster stack {} when no other service runs on it)?",
                spec.service,
                cloudformation::service_stack_name(&spec),
                cloudformation::cluster_stack_name(&spec)
            )
        };
        output::confirm(&question, "--yes")?;
    }
    let aws = args.aws.options(spec.region.as_deref());
    let progress = global.progress();
    let timeout = Duration::from_secs(args.timeout * 60);
    if args.cluster {
        return Ok(block_on(
            None,
            teardown::destroy_cluster(spec, &aws, timeout, &progress),
        )??);
    }
    Ok(block_on(
        None,
        teardown::destroy(spec, &aws, args.delete_images, timeout, &progress),
    )??)
}

impl Render for DestroyReport {
    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();
        if self.removed.is_empty() {
            let _ = writeln!(out, "nothing to destroy");
        }
        for x in &self.removed {
            let _ = writeln!(out, "removed {x}");
        }
        for x in &self.kept {
            let _ = writeln!(out, "kept    {x}");
        }
        out
    }
}
