//! The service's container logs from CloudWatch: the recent lines, and new ones as they come.

use std::collections::HashSet;
use std::time::Duration;

use triton_deploy_aws::AwsOptions;
use triton_deploy_aws::logs::{LogLine, Logs};

use super::error::DeployError;
use super::service::{Context, epoch_ms};
use super::spec::DeploymentSpec;

/// Which lines to read.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// How far back to start.
    pub since: Duration,
    /// At most this many lines before following.
    pub limit: usize,
    /// Keep reading new lines until Ctrl-C.
    pub follow: bool,
}

/// Reads the log lines of `spec`'s service, each passed once to `on_line` in order; with
/// `settings.follow` it goes on until Ctrl-C. Returns how many lines were read.
pub async fn read(
    spec: DeploymentSpec,
    aws: &AwsOptions,
    settings: LogSettings,
    on_line: &mut dyn FnMut(&LogLine),
) -> Result<usize, DeployError> {
    let cx = Context::load(spec, aws).await?;
    let infra = cx.infra()?;
    let logs = Logs::new(&cx.config);
    let since_ms = i64::try_from(settings.since.as_millis()).unwrap_or(i64::MAX);
    let mut start = epoch_ms().saturating_sub(since_ms);
    let mut seen = HashSet::new();
    let mut limit = settings.limit;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let lines = logs
            .read(&infra.task.log_group, Some(&cx.spec.service), start, limit)
            .await?;
        for l in &lines {
            if seen.insert(l.event_id.clone()) {
                on_line(l);
            }
            start = start.max(l.timestamp);
        }
        if !settings.follow {
            return Ok(seen.len());
        }
        limit = 10_000;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut ctrl_c => return Ok(seen.len()),
        }
    }
}
