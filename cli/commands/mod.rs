//! The subcommands. Each is a clap `Args` struct plus a `run` that turns the arguments into
//! typed settings, calls its stage and returns a report (`Serialize` + [`Render`]) or a
//! [`CliError`]; `main` prints either through [`crate::output::finish`]. No command builds an
//! AWS client or imports another command.
//!
//! [`Render`]: crate::output::Render
//! [`CliError`]: crate::output::CliError

pub mod ami;
pub mod bench;
pub mod destroy;
pub mod logs;
pub mod push;
pub mod render;
pub mod rollback;
pub mod rollout;
pub mod run;
pub mod status;
pub mod validate;

use std::time::Duration;

use crate::output::CliError;

/// Which deployment spec a command reads: `-f FILE` and `--env NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// The deployment spec.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "triton-deploy.toml",
        value_name = "SPEC"
    )]
    pub file: std::path::PathBuf,

    /// Apply the spec's `[env.<NAME>]` overrides.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

impl SpecArgs {
    /// Reads and resolves the spec.
    pub fn load(&self) -> Result<crate::deploy::spec::DeploymentSpec, CliError> {
        Ok(crate::deploy::spec::load(&self.file, self.env.as_deref())?)
    }

    /// The directory relative paths in the spec start from.
    pub fn dir(&self) -> std::path::PathBuf {
        self.file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Where and as whom to call AWS, shared by every command that talks to it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// AWS profile (default: the standard chain: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,

    /// AWS region (default: the spec's `service.region` where there is a spec, then the standard
    /// chain: AWS_REGION, the profile's region).
    #[arg(long)]
    pub region: Option<String>,
}

impl AwsArgs {
    /// The options for [`triton_deploy_aws::load_config`].
    pub fn options(&self, spec_region: Option<&str>) -> triton_deploy_aws::AwsOptions {
        triton_deploy_aws::AwsOptions {
            region: self.region.clone().or(spec_region.map(str::to_string)),
            profile: self.profile.clone(),
        }
    }
}

/// Runs an async command body on a runtime with `threads` worker threads (1: the calling thread
/// alone; default: one per CPU).
pub fn block_on<F: std::future::Future>(
    threads: Option<usize>,
    fut: F,
) -> Result<F::Output, CliError> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(fut))
}

/// `250ms`, `5s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len()),
    );
    let v: f64 = n
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("`{s}`: give a number and a unit (ms, s, m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        "us" => v / 1e6,
        _ => return Err(format!("`{s}`: the unit is us, ms, s or m")),
    };
    // At most a day: a benchmark window, warm-up, timeout or budget longer than that is a typo.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= Duration::from_secs(86_400) => Ok(d),
        _ => Err(format!("`{s}`: at most 24h (86400s)")),
    }
}

/// A push failure as a command error; an invalid repository's validation report is printed
/// first (on stderr, in text mode), as `validate` prints it.
pub fn push_failure(
    e: crate::package::push::PushError,
    global: &crate::output::Global,
) -> CliError {
    if let crate::package::push::PushError::Invalid(report) = &e
        && global.text()
    {
        eprint!(
            "{}",
            crate::validate::render::text(report, false, global.color)
        );
    }
    e.into()
}
