//! CloudWatch Logs: the service's container logs (`logs`, and the last lines of a failed task).

use aws_sdk_cloudwatchlogs::Client;
use serde::Serialize;

use crate::{ApiError, api};

const SVC: &str = "CloudWatch Logs";

/// One log event.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The log stream it is in.
    pub stream: String,
    /// The line.
    pub message: String,
    /// Its id (for de-duplicating a follow).
    #[serde(skip)]
    pub event_id: String,
}

/// CloudWatch Logs.
pub struct Logs {
    client: Client,
}

impl Logs {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Logs {
            client: Client::new(config),
        }
    }

    /// Events of `group` from `start_ms` on (optionally only streams starting with `prefix`),
    /// oldest first, at most `limit`.
    pub async fn read(
        &self,
        group: &str,
        prefix: Option<&str>,
        start_ms: i64,
        limit: usize,
    ) -> Result<Vec<LogLine>, ApiError> {
        let mut lines = Vec::new();
        let mut next = None;
        loop {
            let out = self
                .client
                .filter_log_events()
                .log_group_name(group)
                .set_log_stream_name_prefix(prefix.map(str::to_string))
                .start_time(start_ms)
                .set_next_token(next)
                .send()
                .await
                .map_err(api(SVC, "FilterLogEvents"))?;
            for e in out.events() {
                lines.push(LogLine {
                    timestamp: e.timestamp().unwrap_or_default(),
                    stream: e.log_stream_name().unwrap_or_default().to_string(),
                    message: e.message().unwrap_or_default().trim_end().to_string(),
                    event_id: e.event_id().unwrap_or_default().to_string(),
                });
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() || lines.len() >= limit {
                lines.sort_by_key(|l| l.timestamp);
                lines.truncate(limit);
                return Ok(lines);
            }
        }
    }
}
