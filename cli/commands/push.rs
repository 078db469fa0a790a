//! `triton-deploy push`: package a model repository as a `tritonserver` image and push it to ECR.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use url::Url;

use super::{AwsArgs, block_on};
use crate::output::{CliError, ErrorKind, Global, Render};
use crate::package::image::DEFAULT_BASE;
use crate::package::layers::{Compression, Encoding};
use crate::package::push::{self, Builder, PushError, PushReport, PushSettings};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The model repository to package (validated first).
    #[arg(value_name = "MODEL_REPO")]
    pub repo: PathBuf,

    /// ECR repository name (created when missing). Required unless --output is given.
    #[arg(long, value_name = "NAME", required_unless_present = "output")]
    pub repository: Option<String>,

    /// Image tag. Default: `sha-` and the first 12 hex digits of the image digest, so an unchanged
    /// repository gets the same tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Base image: a tritonserver release image (`nvcr.io/nvidia/tritonserver:<yy.mm>-py3`).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_BASE)]
    pub base: String,

    /// How to build: `oci` appends model layers without Docker; `docker` builds templates/Dockerfile
    /// through the Docker Engine (for Python-backend requirements).
    #[arg(long, value_enum, default_value_t = Builder::Oci)]
    pub builder: Builder,

    /// Layer compression: `auto` gzips a layer when a sample of it shrinks by 10% or more and
    /// leaves it uncompressed otherwise (weights barely compress); `gzip` is level 6, `zstd`
    /// level 3, both on every core.
    #[arg(long, value_enum, default_value_t = Compression::Auto)]
    pub compression: Compression,

    /// Talk to this registry URL instead of the ECR endpoint (e.g. a local registry in tests).
    #[arg(long, value_name = "URL")]
    pub registry_endpoint: Option<Url>,

    /// Accept self-signed TLS certificates from the registries.
    #[arg(long)]
    pub insecure_registry: bool,

    /// Write the image locally instead of (or as well as, with --repository) pushing it:
    /// `oci-layout:DIR` or `docker-archive:FILE`.
    #[arg(long, value_name = "KIND:PATH")]
    pub output: Option<String>,

    /// Push even when `validate` finds errors.
    #[arg(long)]
    pub skip_validate: bool,

    /// An extra `tritonserver` flag for the image's command (repeatable), e.g. `--triton-arg=--strict-readiness=true`.
    #[arg(long = "triton-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub triton_args: Vec<String>,

    /// Environment variable holding `user:password` for the base image's registry (never printed).
    #[arg(long, value_name = "VAR")]
    pub base_credentials_env: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Lifecycle policy: keep this many images (0: none on a new repository, an existing one's left alone). Like the tag mutability and scan on push, it is set back on a repository triton-deploy created when changed elsewhere.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub keep_images: u32,

    /// Mutable tags (default: immutable).
    #[arg(long)]
    pub mutable_tags: bool,

    /// Encrypt a new repository with this KMS key instead of AES-256.
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,

    /// Blob transfers at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

/// Runs `push`.
pub fn run(args: PushArgs, global: &Global) -> Result<PushReport, CliError> {
    let started = Instant::now();
    let settings = PushSettings {
        repo: args.repo,
        repository: args.repository,
        tag: args.tag,
        base: args.base,
        builder: args.builder,
        compression: args.compression,
        registry_endpoint: args.registry_endpoint,
        insecure_registry: args.insecure_registry,
        output: args.output,
        skip_validate: args.skip_validate,
        triton_args: args.triton_args,
        base_credentials_env: args.base_credentials_env,
        keep_images: args.keep_images,
        mutable_tags: args.mutable_tags,
        kms_key: args.kms_key,
        jobs: args.jobs,
        aws: args.aws.options(None),
    };
    let progress = Arc::new(global.progress());
    let mut report = block_on(None, push::push(&settings, progress))?
        .map_err(|e| super::push_failure(e, global))?;
    report.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(report)
}

impl From<PushError> for CliError {
    fn from(e: PushError) -> CliError {
        let kind = match e {
            PushError::Validate(v) => return v.into(),
            PushError::Usage(_) => ErrorKind::Usage,
            PushError::Invalid(_) => ErrorKind::Invalid,
            PushError::Layer { .. } => ErrorKind::Io,
            PushError::Ecr(_) | PushError::EcrApi(_) => ErrorKind::Aws,
            PushError::Image(_) | PushError::Registry(_) => ErrorKind::Remote,
            PushError::Other(_) => ErrorKind::Failed,
        };
        CliError::new(kind, e.to_string())
    }
}

impl Render for PushReport {
    /// The per-layer table and the totals, on stderr.
    fn notes(&self) -> String {
        let mut out = String::new();
        for l in &self.layers {
            let what = if l.uploaded { "uploaded" } else { "reused" };
            let short = l.digest.get(..19).unwrap_or(&l.digest);
            let encoding = match l.compression {
                Encoding::Gzip => "gzip",
                Encoding::Zstd => "zstd",
                Encoding::None => "uncompressed",
            };
            let _ = writeln!(
                out,
                "  {:<24} {short}  {:>12} bytes  {encoding:<12}  {what}",
                l.model, l.size
            );
        }
        let _ = writeln!(
            out,
            "pushed in {:.1}s: {} bytes uploaded, {} bytes reused",
            self.seconds, self.uploaded_bytes, self.reused_bytes
        );
        if let Some(o) = &self.output {
            let _ = writeln!(out, "wrote {o}");
        }
        for d in &self.repository_settings {
            let what = match (d.repaired, d.setting) {
                (true, _) => "set back".to_string(),
                (false, triton_deploy_aws::ecr::Setting::Encryption) => {
                    "left as it is: ECR cannot change a repository's encryption (recreate the repository to change it)".to_string()
                }
                (false, _) => {
                    "left as it is: the repository was not created by triton-deploy".to_string()
                }
            };
            let _ = writeln!(
                out,
                "warning: repository {}: {} is {}, wanted {}: {what}",
                self.image.split('@').next().unwrap_or(&self.image),
                d.setting.name(),
                d.live,
                d.wanted
            );
        }
        out
    }

    /// The image reference, on stdout.
    fn text(&self, _global: &Global) -> String {
        format!("{}\n", self.image)
    }
}
