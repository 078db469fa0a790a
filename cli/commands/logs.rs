//! `triton-deploy logs [--follow] [--since 10m]`: the service's container logs from CloudWatch.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use triton_deploy_aws::logs::Logs;

use super::deployment::{Context, epoch_ms};
use super::rollout::{RolloutError, report_error};
use super::{Format, Global, SpecArgs, block_on, exit};

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Keep printing new lines until Ctrl-C.
    #[arg(long)]
    pub follow: bool,

    /// How far back to start: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "10m", value_parser = parse_since)]
    pub since: Duration,

    /// At most this many lines (before following).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,

    /// AWS profile.
    #[arg(long)]
    pub profile: Option<String>,
}

/// `30s`, `10m`, `2h`, `1d`.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: give a number and a unit, e.g. 10m"))?;
    let secs = match unit {
        "s" => 1,
        "m" | "" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

pub fn run(args: LogsArgs, global: Global) -> i32 {
    match block_on(logs(&args, global)) {
        None => exit::USAGE,
        Some(Ok(())) => exit::OK,
        Some(Err(e)) => report_error(&e),
    }
}

fn print(line: &triton_deploy_aws::logs::LogLine, format: Format) {
    match format {
        Format::Json => println!("{}", serde_json::to_string(line).expect("json")),
        Format::Text => {
            let secs = line.timestamp / 1000;
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            let task = line.stream.rsplit('/').next().unwrap_or(&line.stream);
            let task = &task[..task.len().min(8)];
            println!("{h:02}:{m:02}:{s:02} {task} {}", line.message);
        }
    }
}

async fn logs(args: &LogsArgs, global: Global) -> Result<(), RolloutError> {
    let cx = Context::load(&args.spec, args.profile.as_deref()).await?;
    let infra = cx.infra()?;
    let logs = Logs::new(&cx.config);
    let mut start = epoch_ms().saturating_sub(args.since.as_millis() as i64);
    let mut seen = HashSet::new();
    let mut limit = args.limit;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let lines = logs
            .read(&infra.task.log_group, Some(&cx.spec.service), start, limit)
            .await?;
        for l in &lines {
            if seen.insert(l.event_id.clone()) {
                print(l, global.format);
            }
            start = start.max(l.timestamp);
        }
        if !args.follow {
            return Ok(());
        }
        limit = 10_000;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_a_unit() {
        assert_eq!(super::parse_since("30s").unwrap().as_secs(), 30);
        assert_eq!(super::parse_since("10m").unwrap().as_secs(), 600);
        assert_eq!(super::parse_since("2h").unwrap().as_secs(), 7200);
        assert!(super::parse_since("ten").is_err());
        assert!(super::parse_since("5w").is_err());
    }
}
