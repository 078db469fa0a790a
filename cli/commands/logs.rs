//! `triton-deploy logs [--follow] [--since 10m]`: the service's container logs from CloudWatch.
//! Without `--follow` the lines are one report (`{"lines": [...]}` in JSON); with it they are
//! printed as they come (JSON: one object per line, a stream cannot be one document).

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use triton_deploy_aws::logs::LogLine;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::logs::{self, LogSettings};
use crate::output::{CliError, Format, Global, Render, short_arn};

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Keep printing new lines until Ctrl-C.
    #[arg(long)]
    pub follow: bool,

    /// How far back to start: 30s, 10m, 2h, 1d (at most 400d).
    #[arg(long, default_value = "10m", value_parser = parse_since)]
    pub since: Duration,

    /// At most this many lines (before following), 1 to 10000.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub limit: u64,

    #[command(flatten)]
    pub aws: AwsArgs,
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
    match n.checked_mul(secs) {
        Some(t) if t <= 400 * 86400 => Ok(Duration::from_secs(t)),
        _ => Err(format!("`{s}`: at most 400d")),
    }
}

/// The lines read (empty when they were streamed).
#[derive(Debug, Serialize)]
pub struct LogsReport {
    pub lines: Vec<LogLine>,
    #[serde(skip)]
    streamed: bool,
}

/// Runs `logs`.
pub fn run(args: LogsArgs, global: &Global) -> Result<LogsReport, CliError> {
    let spec = args.spec.load()?;
    let aws = args.aws.options(spec.region.as_deref());
    let settings = LogSettings {
        since: args.since,
        limit: args.limit as usize,
        follow: args.follow,
    };
    let mut lines = Vec::new();
    let format = global.format;
    let mut on_line = |l: &LogLine| {
        if !args.follow {
            lines.push(l.clone());
        } else if format == Format::Json {
            println!("{}", serde_json::to_string(l).unwrap_or_default());
        } else {
            println!("{}", line_text(l));
        }
    };
    block_on(None, logs::read(spec, &aws, settings, &mut on_line))??;
    Ok(LogsReport {
        lines,
        streamed: args.follow,
    })
}

/// `hh:mm:ss <task id's first 8 characters> <message>`.
fn line_text(line: &LogLine) -> String {
    let secs = line.timestamp / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let task: String = short_arn(&line.stream).chars().take(8).collect();
    format!("{h:02}:{m:02}:{s:02} {task} {}", line.message)
}

impl Render for LogsReport {
    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(out, "{}", line_text(l));
        }
        out
    }

    fn streamed(&self) -> bool {
        self.streamed
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
        assert!(super::parse_since("99999999999999999999d").is_err());
        assert!(super::parse_since("401d").is_err());
    }
}
