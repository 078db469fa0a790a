//! `triton-deploy rollback [--to REVISION]`: point the service at an earlier task definition
//! revision (by default the newest one older than the running one) and wait for it. Never
//! deregisters a revision.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::Timing;
use crate::deploy::rollback::{self, RollbackReport};
use crate::output::{CliError, Global, Render, short_arn};

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
    #[arg(long, default_value_t = 30, value_name = "MINUTES",
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub timeout: u64,

    #[command(flatten)]
    pub aws: AwsArgs,

    #[arg(long, default_value_t = 5, value_name = "SECONDS", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll: u64,
}

/// Runs `rollback`.
pub fn run(args: RollbackArgs, global: &Global) -> Result<RollbackReport, CliError> {
    let spec = args.spec.load()?;
    let aws = args.aws.options(spec.region.as_deref());
    let timing = (!args.no_wait).then(|| Timing {
        timeout: Duration::from_secs(args.timeout * 60),
        poll: Duration::from_secs(args.poll),
    });
    let progress = global.progress();
    Ok(block_on(
        None,
        rollback::rollback(spec, &aws, args.to.as_deref(), timing, &progress),
    )??)
}

impl Render for RollbackReport {
    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} -> {}",
            self.service,
            short_arn(&self.from),
            short_arn(&self.to)
        );
        if let Some(w) = &self.wait {
            let _ = writeln!(
                out,
                "rolled back in {:.0} s; targets {:?}",
                w.seconds, w.targets
            );
        }
        out
    }
}
