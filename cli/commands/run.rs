//! `triton-deploy run`: run a pushed image (or a model repository packaged on the fly) on this
//! machine through the Docker Engine, follow Triton until every model is ready, and print each
//! model's state and the time to ready.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use url::Url;

use super::{AwsArgs, block_on, parse_duration};
use crate::local::{self, Credentials, Ended, Gpus, ImageSource, Pull, RunError, RunReport};
use crate::output::{CliError, ErrorKind, Global, Render, exit};
use crate::package::image::{DEFAULT_BASE, ImageName};
use crate::package::push::{self, PushSettings};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A model repository to package on the fly (validated, built on --base, loaded into the
    /// engine without a registry) and run.
    #[arg(value_name = "MODEL_REPO", conflicts_with_all = ["image", "stop"])]
    pub repo: Option<PathBuf>,

    /// The image to run (default: the spec's image.uri, else the newest image in its ECR
    /// repository, as `rollout` picks it).
    #[arg(long, value_name = "IMAGE", conflicts_with = "stop")]
    pub image: Option<String>,

    /// The deployment spec: its image, shm size and service name (default: triton-deploy.toml
    /// when neither --image nor MODEL_REPO is given).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub file: Option<PathBuf>,

    /// Apply the spec's `[env.<NAME>]` overrides.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,

    /// The container's name (default: triton-deploy- and the service, image repository or model
    /// repository name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Remove the container `run --detach` left (the one --name names, else the spec's with -f,
    /// else every container `run` started), and exit.
    #[arg(long)]
    pub stop: bool,

    /// Return once every model is ready and leave the container running (`run --stop` removes
    /// it). Without it, `run` stays in the foreground with Triton's log until Ctrl-C, which stops
    /// and removes the container.
    #[arg(short, long)]
    pub detach: bool,

    /// The host address the ports are published on (0.0.0.0: every interface; Triton has no
    /// authentication).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: std::net::IpAddr,

    /// Host port for Triton's HTTP service (0: any free port).
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    pub http_port: u16,

    /// Host port for Triton's gRPC service (0: any free port).
    #[arg(long, default_value_t = 8001, value_name = "PORT")]
    pub grpc_port: u16,

    /// Host port for Triton's metrics (0: any free port).
    #[arg(long, default_value_t = 8002, value_name = "PORT")]
    pub metrics_port: u16,

    /// /dev/shm size in MiB (default: the spec's task.shm_size_mib, else 1024), 64 to 1048576.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub shm_size: Option<u32>,

    /// GPUs: `auto` (the host's, when the engine has NVIDIA's runtime), `none` (CPU: models load
    /// as KIND_CPU), `all`, or a count.
    #[arg(long, default_value = "auto", value_name = "auto|none|all|N", value_parser = parse_gpus)]
    pub gpus: Gpus,

    /// An extra `tritonserver` flag, after the image's own (repeatable), e.g.
    /// `--triton-arg=--log-verbose=1`.
    #[arg(long = "triton-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub triton_args: Vec<String>,

    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = Pull::Missing)]
    pub pull: Pull,

    /// How long Triton may take to load every model (e.g. 90s, 10m; at most 24h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Write the report, with the measured time to ready, to this file once ready (`rollout`
    /// proposes the health-check grace period from it).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Pull from this registry URL instead of the image's own host (a local registry in tests).
    #[arg(long, value_name = "URL")]
    pub registry_endpoint: Option<Url>,

    /// The base image for a MODEL_REPO packaged on the fly.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_BASE)]
    pub base: String,

    /// Environment variable holding `user:password` for the base image's registry (never printed).
    #[arg(long, value_name = "VAR")]
    pub base_credentials_env: Option<String>,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `--gpus`: auto, none, all, or a count (1 to 64).
pub fn parse_gpus(s: &str) -> Result<Gpus, String> {
    match s {
        "auto" => Ok(Gpus::Auto),
        "none" | "0" => Ok(Gpus::None),
        "all" => Ok(Gpus::All),
        n => match n.parse::<u32>() {
            Ok(c) if (1..=64).contains(&c) => Ok(Gpus::Count(c)),
            _ => Err(format!("`{s}`: auto, none, all, or a count from 1 to 64")),
        },
    }
}

/// What `run` printed: a run, or the containers `--stop` removed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RunOutcome {
    /// A run.
    Ran(Box<RunReport>),
    /// `--stop`.
    Stopped(local::StopReport),
}

/// A Docker container name from a service, repository or directory name.
fn container_name(base: &str) -> String {
    let slug: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("triton-deploy-{}", slug.trim_matches('-'))
}

/// The reference with its registry host replaced by `endpoint`'s (`--registry-endpoint`).
fn through_endpoint(reference: &str, endpoint: &Url) -> Result<String, CliError> {
    ImageName::through_endpoint(reference, endpoint).map_err(CliError::usage)
}

/// Runs `run`.
pub fn run(args: RunArgs, global: &Global) -> Result<RunOutcome, CliError> {
    if args.stop {
        // The container of the spec's service when -f names one, else --name, else all of ours.
        let name = match (&args.name, &args.file) {
            (Some(n), _) => Some(n.clone()),
            (None, Some(f)) => Some(container_name(
                &crate::deploy::spec::load(f, args.env.as_deref())?.service,
            )),
            (None, None) => None,
        };
        let report = block_on(None, local::stop(name.as_deref()))??;
        return Ok(RunOutcome::Stopped(report));
    }
    let progress = Arc::new(global.progress());
    block_on(None, async {
        let spec_file = match (&args.file, &args.image, &args.repo) {
            (Some(f), _, _) => Some(f.clone()),
            (None, None, None) => Some(PathBuf::from("triton-deploy.toml")),
            _ => None,
        };
        let spec = match &spec_file {
            Some(f) => Some(crate::deploy::spec::load(f, args.env.as_deref())?),
            None => None,
        };
        // The image, and the name the container is known by.
        let (source, default_name, ecr_host) = if let Some(repo) = &args.repo {
            let archive = tempfile::Builder::new()
                .prefix("triton-deploy-run-")
                .suffix(".tar")
                .tempfile()
                .map_err(|e| CliError::new(ErrorKind::Io, format!("a temporary file: {e}")))?;
            let settings = PushSettings {
                repo: repo.clone(),
                repository: None,
                tag: None,
                base: args.base.clone(),
                builder: push::Builder::Oci,
                compression: crate::package::layers::Compression::Auto,
                registry_endpoint: None,
                insecure_registry: false,
                output: Some(format!("docker-archive:{}", archive.path().display())),
                skip_validate: false,
                triton_args: Vec::new(),
                base_credentials_env: args.base_credentials_env.clone(),
                keep_images: 0,
                mutable_tags: false,
                kms_key: None,
                jobs: 4,
                aws: args.aws.options(None),
            };
            push::push(&settings, progress.clone())
                .await
                .map_err(|e| super::push_failure(e, global))?;
            let dir = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.clone());
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "models".into());
            (
                ImageSource::Archive(
                    archive.into_temp_path().keep().map_err(|e| {
                        CliError::new(ErrorKind::Io, format!("a temporary file: {e}"))
                    })?,
                ),
                name,
                None,
            )
        } else {
            // --image is run as given (the pull checks it); otherwise the spec's image, as
            // rollout picks it.
            let reference = match (&args.image, &spec) {
                (Some(i), _) => i.clone(),
                (None, Some(spec)) => {
                    let config =
                        triton_deploy_aws::load_config(&args.aws.options(spec.region.as_deref()))
                            .await;
                    crate::deploy::service::resolve_image(spec, None, &config)
                        .await
                        .map_err(crate::deploy::error::DeployError::from)?
                        .uri
                }
                (None, None) => {
                    return Err(CliError::usage(
                        "no image: pass --image, a model repository, or -f SPEC",
                    ));
                }
            };
            let name = ImageName::parse(&reference)
                .map_err(|e| CliError::usage(format!("image {reference}: {e}")))?;
            let short = name
                .repository
                .rsplit('/')
                .next()
                .unwrap_or(&name.repository)
                .to_string();
            let ecr = name
                .registry
                .contains(".dkr.ecr.")
                .then(|| name.registry.clone());
            let reference = match &args.registry_endpoint {
                Some(u) => through_endpoint(&reference, u)?,
                None => reference,
            };
            (ImageSource::Reference(reference), short, ecr)
        };
        let default_name = spec
            .as_ref()
            .map(|s| s.service.clone())
            .unwrap_or(default_name);
        // ECR's token, as push gets it, for an ECR image (or one behind --registry-endpoint).
        let credentials = match (&source, args.pull) {
            (ImageSource::Reference(r), p)
                if p != Pull::Never && (ecr_host.is_some() || args.registry_endpoint.is_some()) =>
            {
                let region = spec.as_ref().and_then(|s| s.region.clone());
                let config =
                    triton_deploy_aws::load_config(&args.aws.options(region.as_deref())).await;
                let account = ecr_host
                    .as_deref()
                    .and_then(|h| h.split('.').next())
                    .unwrap_or_default()
                    .to_string();
                let auth = triton_deploy_aws::ecr::Ecr::new(&config)
                    .registry_auth(&account)
                    .await
                    .map_err(|e| CliError::new(ErrorKind::Aws, e.to_string()))?;
                Some(Credentials {
                    username: auth.username,
                    password: auth.password,
                    server: r.split('/').next().unwrap_or_default().to_string(),
                })
            }
            _ => None,
        };
        let settings = local::RunSettings {
            image: source.clone(),
            name: args
                .name
                .clone()
                .unwrap_or_else(|| container_name(&default_name)),
            bind: args.bind.to_string(),
            ports: [args.http_port, args.grpc_port, args.metrics_port],
            shm_mib: args
                .shm_size
                .or(spec.as_ref().map(|s| s.shm_size_mib))
                .unwrap_or(1024),
            gpus: args.gpus,
            triton_args: args.triton_args.clone(),
            pull: args.pull,
            credentials,
            timeout: args.timeout,
            detach: args.detach,
            out: args.out.clone(),
        };
        let result = local::run(&settings, progress.clone()).await;
        if let ImageSource::Archive(path) = &source {
            let _ = std::fs::remove_file(path);
        }
        Ok(RunOutcome::Ran(Box::new(result?)))
    })?
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> CliError {
        let kind = match &e {
            RunError::Interrupted(_) => ErrorKind::Interrupted,
            RunError::NoContainer(_) => ErrorKind::NotDeployed,
            RunError::Out { .. } => ErrorKind::Io,
            RunError::Engine(local::EngineError::PortInUse { .. })
            | RunError::Engine(local::EngineError::NameTaken(_)) => ErrorKind::Usage,
            RunError::Engine(_) | RunError::Server(_) => ErrorKind::Remote,
            RunError::Exited { .. }
            | RunError::Models(_)
            | RunError::NoModels { .. }
            | RunError::Timeout { .. } => ErrorKind::Failed,
        };
        CliError::new(kind, e.to_string())
    }
}

impl Render for RunOutcome {
    fn notes(&self) -> String {
        let RunOutcome::Ran(r) = self else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(out, "{} ({})", r.container, r.note);
        for m in &r.models {
            let _ = write!(out, "  {:<24} {:<12}", m.name, m.state);
            if let Some(s) = m.load_seconds {
                let _ = write!(out, " {s:>6.2}s");
            }
            if m.cpu_override {
                let _ = write!(out, "  (as KIND_CPU)");
            }
            if let Some(reason) = &m.reason {
                let _ = write!(out, "  {reason}");
            }
            out.push('\n');
        }
        let t = &r.time_to_ready;
        let _ = writeln!(
            out,
            "time to ready {:.2}s: pull {:.2}s{}, start {:.2}s, load {:.2}s (image {} MiB)",
            t.total_seconds,
            t.pull_seconds,
            if t.pulled { "" } else { " (cached)" },
            t.start_seconds,
            t.load_seconds,
            t.image_bytes >> 20
        );
        out
    }

    fn text(&self, _global: &Global) -> String {
        match self {
            RunOutcome::Ran(r) => match r.ended {
                Ended::Detached => format!("{} {}\n", r.endpoints.http, r.container),
                Ended::Interrupted => format!("{} stopped and removed\n", r.container),
            },
            RunOutcome::Stopped(s) if s.removed.is_empty() => {
                "no container of `triton-deploy run` to remove\n".to_string()
            }
            RunOutcome::Stopped(s) => s.removed.iter().map(|n| format!("removed {n}\n")).collect(),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            RunOutcome::Ran(r) if r.ended == Ended::Interrupted => exit::INTERRUPTED,
            _ => exit::OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_parse_with_limits() {
        assert_eq!(parse_gpus("auto"), Ok(Gpus::Auto));
        assert_eq!(parse_gpus("none"), Ok(Gpus::None));
        assert_eq!(parse_gpus("all"), Ok(Gpus::All));
        assert_eq!(parse_gpus("2"), Ok(Gpus::Count(2)));
        assert!(parse_gpus("65").is_err());
        assert!(parse_gpus("-1").is_err());
        assert!(parse_gpus("many").is_err());
    }

    #[test]
    fn names_and_endpoint_rewrites() {
        assert_eq!(
            container_name("Demo/Text Stats"),
            "triton-deploy-demo-text-stats"
        );
        let u = Url::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            through_endpoint("123.dkr.ecr.us-east-1.amazonaws.com/demo/x@sha256:ab", &u).unwrap(),
            "127.0.0.1:5000/demo/x@sha256:ab"
        );
        assert_eq!(
            through_endpoint("123.dkr.ecr.us-east-1.amazonaws.com/x:v1", &u).unwrap(),
            "127.0.0.1:5000/x:v1"
        );
    }
}
