//! `triton-deploy ami build [-f SPEC] [--if-changed]`: bake the spec's image into a GPU AMI with
//! Packer and publish it to `/triton-deploy/<cluster>/ami`, where `compute.ami = "baked"` hosts
//! find it.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use url::Url;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::ami::build::{self, BakeSettings, BuildReport, BuildSettings};
use crate::output::{CliError, Global, Render};

#[derive(Debug, Args)]
pub struct AmiArgs {
    #[command(subcommand)]
    pub command: AmiCommand,
}

#[derive(Debug, Subcommand)]
pub enum AmiCommand {
    /// Bake the image into a GPU AMI with Packer and publish it to the cluster's SSM parameter
    /// (`/triton-deploy/<cluster>/ami`). `--if-changed` builds only when the base AMI or the image
    /// moved on.
    Build(Box<AmiBuildArgs>),
}

#[derive(Debug, Args)]
pub struct AmiBuildArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// The image to bake, by digest (default: the spec's image.uri, else the newest image in its
    /// repository).
    #[arg(long)]
    pub image: Option<String>,

    /// The registry the build instance pulls through, instead of ECR's own host (a pull-through
    /// proxy or a stand-in); ECR's token still logs in.
    #[arg(long, value_name = "URL")]
    pub registry_endpoint: Option<Url>,

    /// Build only when the base AMI behind its parameter or the newest image differ from what the
    /// AMI in the cluster's parameter holds; otherwise exit 0 without building.
    #[arg(long)]
    pub if_changed: bool,

    /// Keep the rendered template in this directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// The Packer to run (default: `packer` on PATH; 1.7+ with the amazon plugin, or 1.6).
    #[arg(long, value_name = "PATH")]
    pub packer: Option<PathBuf>,

    /// Run the provisioning steps on this machine with the host's paths under DIR, with no
    /// connection to the build instance: for an EC2 stand-in that launches no machine.
    #[arg(long, value_name = "DIR", hide = true)]
    pub provision_here: Option<PathBuf>,
}

/// What `ami` did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum AmiReport {
    Build(BuildReport),
}

/// Runs `ami`.
pub fn run(args: AmiArgs, global: &Global) -> Result<AmiReport, CliError> {
    match args.command {
        AmiCommand::Build(a) => {
            let spec = a.spec.load()?;
            let settings = BuildSettings {
                bake: BakeSettings {
                    image: a.image,
                    registry_endpoint: a.registry_endpoint,
                    spec_dir: a.spec.dir(),
                    aws: a.aws.options(spec.region.as_deref()),
                },
                if_changed: a.if_changed,
                out: a.out,
                packer: a.packer,
                provision_here: a.provision_here,
            };
            let progress = global.progress();
            Ok(AmiReport::Build(block_on(
                None,
                build::build(spec, &settings, &progress),
            )??))
        }
    }
}

impl Render for AmiReport {
    fn text(&self, _global: &Global) -> String {
        let AmiReport::Build(r) = self;
        let mut out = String::new();
        if !r.built {
            let _ = writeln!(
                out,
                "{} is current: {} holds {} on {}; nothing built",
                r.parameter, r.ami, r.image_digest, r.source_ami
            );
            return out;
        }
        let _ = writeln!(out, "baked {} into {}", r.image, r.ami);
        let _ = writeln!(
            out,
            "  base       {}{}",
            r.source_ami,
            r.source_ami_parameter
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if !r.models.is_empty() {
            let _ = writeln!(out, "  models     {}", r.models.join(", "));
        }
        let _ = writeln!(out, "  published  {}", r.parameter);
        if let Some(prev) = &r.previous_ami {
            let _ = writeln!(out, "  replaces   {prev}");
        }
        for why in &r.reasons {
            let _ = writeln!(out, "  because    {why}");
        }
        if !r.fast_snapshot_restore.is_empty() {
            let _ = writeln!(
                out,
                "  fast snapshot restore on in {}",
                r.fast_snapshot_restore.join(", ")
            );
        }
        if let Some(p) = &r.packer {
            let _ = writeln!(out, "  packer     {p}");
        }
        if let Some(d) = &r.template_dir {
            let _ = writeln!(out, "  template   {}", d.display());
        }
        let _ = writeln!(out, "  took       {:.0} s", r.seconds);
        let _ = writeln!(
            out,
            "hosts of compute.ami = \"baked\" clusters take it at the next `rollout --refresh-instances`"
        );
        out
    }

    fn notes(&self) -> String {
        let AmiReport::Build(r) = self;
        r.warnings
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect()
    }
}
