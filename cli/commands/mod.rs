//! The subcommands. Each is a clap `Args` struct plus a `run` that returns the process exit code;
//! the work itself lives in the stage modules.

pub mod bench;
pub mod deployment;
pub mod destroy;
pub mod logs;
pub mod push;
pub mod render;
pub mod rollback;
pub mod rollout;
pub mod status;
pub mod validate;

use clap::ValueEnum;

/// `--format`: how results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable text with source snippets.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

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
    pub fn load(&self) -> Result<crate::spec::DeploymentSpec, crate::spec::SpecError> {
        crate::spec::load(&self.file, self.env.as_deref())
    }
}

/// Options every command shares.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    pub format: Format,
    pub color: bool,
    /// `--format csv` (bench only): CSV on stdout instead of the table.
    pub csv: bool,
}

/// Runs an async command body on a multi-threaded runtime; `None` (after saying why) when no
/// runtime can be started.
pub fn block_on<F: std::future::Future>(fut: F) -> Option<F::Output> {
    block_on_threads(None, fut)
}

/// [`block_on`] with `threads` worker threads (1: the calling thread alone; default: one per
/// CPU).
pub fn block_on_threads<F: std::future::Future>(
    threads: Option<usize>,
    fut: F,
) -> Option<F::Output> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    match builder.enable_all().build() {
        Ok(rt) => Some(rt.block_on(fut)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Process exit codes.
pub mod exit {
    /// Success (warnings allowed).
    pub const OK: i32 = 0;
    /// The input is invalid (validation errors).
    pub const INVALID: i32 = 1;
    /// Usage or I/O error.
    pub const USAGE: i32 = 2;
}

/// One CloudFormation stack event as a progress line on stderr.
pub fn print_stack_event(e: &triton_deploy_aws::cfn::StackEvent) {
    eprintln!(
        "  {:<22} {:<40} {}{}",
        e.status,
        e.resource_type,
        e.logical_id,
        e.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
}
