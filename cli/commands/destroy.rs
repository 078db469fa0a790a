//! `triton-deploy destroy --yes`: autoscaling deregistered, the service scaled to 0 and deleted,
//! its task definitions deleted, the stack (with the dashboard) deleted; ECR images kept unless
//! `--delete-images`. Each step is skipped when its resource is already gone, so an interrupted
//! destroy is finished by running it again.

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
    #[arg(long)]
    pub delete_images: bool,

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
        output::confirm(
            &format!(
                "Delete service {} and stack {}?",
                spec.service,
                cloudformation::stack_name(&spec)
            ),
            "--yes",
        )?;
    }
    let aws = args.aws.options(spec.region.as_deref());
    let progress = global.progress();
    let timeout = Duration::from_secs(args.timeout * 60);
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
