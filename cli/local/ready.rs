//! Pure parts of bringing Triton up: reading its log lines, the command it runs in CPU mode, the
//! KIND_CPU configuration override, the load order, and when every model has settled. No I/O
//! here; `run` drives these.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Something Triton said in its log that tells where a model stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// `loading: NAME:VERSION`.
    Loading { model: String, version: String },
    /// `successfully loaded 'NAME'`.
    Loaded { model: String },
    /// `failed to load 'NAME' version N: REASON`.
    Failed {
        model: String,
        version: String,
        reason: String,
    },
    /// `Poll failed for model directory 'NAME': REASON`: the configuration was refused before
    /// any load.
    PollFailed { model: String, reason: String },
    /// `Started HTTPService at ADDR` (also gRPC and metrics).
    Started { service: String },
    /// An error line that names no model (e.g. an ensemble's missing member), kept as a reason.
    Error { message: String },
}

/// The message of a Triton log line (`I1202 05:00:00.123 1 file.cc:42] "message"`): severity
/// letter and the text, unquoted. Lines of another shape (the python stub's own output) give
/// `None`.
pub fn message(line: &str) -> Option<(char, String)> {
    let line = line.trim_end();
    let severity = line
        .chars()
        .next()
        .filter(|c| matches!(c, 'I' | 'W' | 'E'))?;
    // The header is `<sev><mmdd> <time> <pid> <file>:<line>]`.
    let (head, rest) = line.split_once("] ")?;
    if !head.contains(".cc:") && !head.contains(".h:") {
        return None;
    }
    let rest = rest.trim();
    // 2.51 quotes and escapes the message as a JSON string.
    let text = if rest.starts_with('"') && rest.ends_with('"') && rest.len() >= 2 {
        serde_json::from_str::<String>(rest).unwrap_or_else(|_| rest[1..rest.len() - 1].into())
    } else {
        rest.to_string()
    };
    Some((severity, text))
}

/// The text between the first pair of single quotes after `prefix`, and what follows it.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = text.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('\'')?;
    let end = rest.find('\'')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// The event a log line carries, if any.
pub fn event(line: &str) -> Option<LogEvent> {
    let (severity, text) = message(line)?;
    if let Some(rest) = text.strip_prefix("loading: ") {
        let (model, version) = rest.rsplit_once(':').unwrap_or((rest, ""));
        return Some(LogEvent::Loading {
            model: model.to_string(),
            version: version.to_string(),
        });
    }
    if let Some((model, _)) = quoted_after(&text, "successfully loaded ") {
        return Some(LogEvent::Loaded {
            model: model.to_string(),
        });
    }
    if let Some((model, rest)) = quoted_after(&text, "failed to load ") {
        let rest = rest.trim_start();
        let (version, reason) = rest
            .strip_prefix("version ")
            .and_then(|r| r.split_once(": "))
            .unwrap_or(("", rest.trim_start_matches(':').trim()));
        return Some(LogEvent::Failed {
            model: model.to_string(),
            version: version.to_string(),
            reason: reason.to_string(),
        });
    }
    if let Some((model, rest)) = quoted_after(&text, "Poll failed for model directory ") {
        return Some(LogEvent::PollFailed {
            model: model.to_string(),
            reason: rest.trim_start_matches(':').trim().to_string(),
        });
    }
    if let Some(rest) = text.strip_prefix("Started ") {
        let service = rest.split(" at ").next().unwrap_or(rest);
        return Some(LogEvent::Started {
            service: service.to_string(),
        });
    }
    (severity == 'E').then_some(LogEvent::Error { message: text })
}

/// Whether a line is the server's own startup complaint, printed before its logging starts
/// (`tritonserver: unrecognized option '--x'`, `error: creating server: ...`).
pub fn complaint(line: &str) -> bool {
    let l = line.trim_start().to_ascii_lowercase();
    l.starts_with("tritonserver: ") || l.starts_with("error: ") || l.starts_with("error:")
}

/// Where a model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Not settled yet.
    Loading,
    /// Serving.
    Ready,
    /// Triton refused or failed to load it.
    Unavailable,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            State::Loading => "LOADING",
            State::Ready => "READY",
            State::Unavailable => "UNAVAILABLE",
        })
    }
}

/// One model's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelState {
    /// The model's name.
    pub name: String,
    /// The version Triton reports (empty when it reports none, e.g. a refused configuration).
    pub version: String,
    /// Where it stands.
    pub state: State,
    /// Triton's reason when it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it was loaded with its instance groups overridden to KIND_CPU.
    pub cpu_override: bool,
    /// Seconds from the load request (or the server's start) to its settling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
}

/// One entry of `POST /v2/repository/index`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct IndexEntry {
    /// The model's name (its directory).
    pub name: String,
    /// The version, when Triton has tried to load one.
    #[serde(default)]
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, `LOADING`, `UNLOADING`; absent when never loaded.
    #[serde(default)]
    pub state: Option<String>,
    /// Why it is unavailable.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The models of an index and the log events so far, folded into states: `READY` and
/// `UNAVAILABLE` from the index, and a refusal Triton only logged (a configuration that failed
/// its poll is listed with a name alone) from the log.
pub fn fold(index: &[IndexEntry], failures: &BTreeMap<String, String>) -> Vec<ModelState> {
    index
        .iter()
        .map(|e| {
            let (state, reason) = match e.state.as_deref() {
                Some("READY") => (State::Ready, None),
                Some("UNAVAILABLE") => (
                    State::Unavailable,
                    e.reason
                        .clone()
                        .filter(|r| !r.is_empty())
                        .or_else(|| failures.get(&e.name).cloned()),
                ),
                _ => match failures.get(&e.name) {
                    Some(r) => (State::Unavailable, Some(r.clone())),
                    None => (State::Loading, None),
                },
            };
            ModelState {
                name: e.name.clone(),
                version: e.version.clone().unwrap_or_default(),
                state,
                reason,
                cpu_override: false,
                load_seconds: None,
            }
        })
        .collect()
}

/// Whether every model has settled (none still loading). An empty index has not settled: the
/// server has not read its repository yet.
pub fn settled(states: &[ModelState]) -> bool {
    !states.is_empty() && states.iter().all(|s| s.state != State::Loading)
}

/// The model repository directory of a `tritonserver` command (`--model-repository=DIR`,
/// `--model-repository DIR` or the older `--model-store`), `/models` when none is named.
pub fn model_repository(cmd: &[String]) -> String {
    let mut it = cmd.iter();
    while let Some(a) = it.next() {
        for flag in ["--model-repository", "--model-store"] {
            if let Some(v) = a.strip_prefix(flag) {
                if let Some(v) = v.strip_prefix('=') {
                    return v.to_string();
                }
                if v.is_empty()
                    && let Some(next) = it.clone().next()
                {
                    return next.clone();
                }
            }
        }
    }
    "/models".to_string()
}

/// The image's command changed for a host without GPUs: the same server and flags, with
/// explicit model control (each model is then loaded through the repository API, where its
/// configuration can be overridden) and without the flags that would load models on their own.
pub fn cpu_command(cmd: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(cmd.len() + 2);
    let mut it = cmd.iter();
    while let Some(a) = it.next() {
        let drops = ["--model-control-mode", "--load-model", "--exit-on-error"];
        if let Some(flag) = drops.iter().find(|f| a.starts_with(**f)) {
            // `--flag VALUE` takes the next word with it.
            if a.len() == flag.len() {
                it.next();
            }
            continue;
        }
        out.push(a.clone());
    }
    if out.is_empty() {
        out.push("tritonserver".into());
        out.push("--model-repository=/models".into());
    }
    out.push("--model-control-mode=explicit".into());
    // A model that fails is reported with Triton's reason; the others still serve.
    out.push("--exit-on-error=false".into());
    out
}

/// The configuration to load `model` with on a host without GPUs: its own configuration (the
/// canonical JSON of its `config.pbtxt`) with every instance group that asks for a GPU turned
/// into KIND_CPU and its `gpus` list removed. `None` when nothing asks for a GPU (the model then
/// loads with its own configuration).
pub fn cpu_override(model: &str, config: &Value) -> Option<Value> {
    let groups = config.get("instance_group")?.as_array()?;
    let wants_gpu = |g: &Value| {
        g.get("kind").and_then(Value::as_str) == Some("KIND_GPU") || g.get("gpus").is_some()
    };
    if !groups.iter().any(wants_gpu) {
        return None;
    }
    let mut out = config.clone();
    if out
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        out["name"] = Value::String(model.to_string());
    }
    for g in out["instance_group"].as_array_mut()? {
        if wants_gpu(g) {
            g["kind"] = Value::String("KIND_CPU".into());
            if let Some(o) = g.as_object_mut() {
                o.remove("gpus");
            }
        }
    }
    Some(out)
}

/// The order to load models in explicit mode: ensembles after the models they are made of
/// (loading an ensemble loads its members with their own configuration, which would skip the
/// members' CPU override), each group by name.
pub fn load_order(models: &[(String, bool)]) -> Vec<String> {
    let mut plain: Vec<&String> = models.iter().filter(|m| !m.1).map(|m| &m.0).collect();
    let mut ensembles: Vec<&String> = models.iter().filter(|m| m.1).map(|m| &m.0).collect();
    plain.sort();
    ensembles.sort();
    plain.into_iter().chain(ensembles).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triton_log_lines_become_events() {
        let l = |s: &str| event(s);
        assert_eq!(
            l(r#"I1202 05:00:00.123456 1 model_lifecycle.cc:472] "loading: text_stats:1""#),
            Some(LogEvent::Loading {
                model: "text_stats".into(),
                version: "1".into()
            })
        );
        assert_eq!(
            l(r#"I1202 05:00:01.5 1 model_lifecycle.cc:849] "successfully loaded 'text_stats'""#),
            Some(LogEvent::Loaded {
                model: "text_stats".into()
            })
        );
        assert_eq!(
            l(
                r#"E1202 05:00:01.5 1 model_lifecycle.cc:654] "failed to load 'm' version 1: Invalid argument: model input 'IN0' must specify 'dims' for m""#
            ),
            Some(LogEvent::Failed {
                model: "m".into(),
                version: "1".into(),
                reason: "Invalid argument: model input 'IN0' must specify 'dims' for m".into()
            })
        );
        assert_eq!(
            l(
                r#"E1202 05:00:00.9 1 model_repository_manager.cc:1460] "Poll failed for model directory 'bad': dynamic batching preferred size must be <= max batch size for bad""#
            ),
            Some(LogEvent::PollFailed {
                model: "bad".into(),
                reason: "dynamic batching preferred size must be <= max batch size for bad".into()
            })
        );
        assert_eq!(
            l(r#"I1202 05:00:02.0 1 http_server.cc:4713] "Started HTTPService at 0.0.0.0:8000""#),
            Some(LogEvent::Started {
                service: "HTTPService".into()
            })
        );
        // Escapes inside the quoted message are undone.
        assert_eq!(
            message(r#"E1202 05:00:02.0 1 server.cc:1] "a \"b\" c""#),
            Some(('E', "a \"b\" c".to_string()))
        );
        // Not Triton's: the stub's own prints, blank lines, table borders.
        assert_eq!(l("hello from model.py"), None);
        assert_eq!(l("+-------+"), None);
        assert_eq!(l(""), None);
        assert_eq!(
            l(r#"I1202 05:00:02.0 1 server.cc:1] "CUDA driver version is insufficient""#),
            None
        );
    }

    #[test]
    fn startup_complaints_are_told_from_the_usage_text() {
        assert!(complaint(
            "tritonserver: unrecognized option '--no-such-flag'"
        ));
        assert!(complaint(
            "error: creating server: Internal - failed to stat file /m"
        ));
        assert!(!complaint("  --exit-on-error <boolean>"));
        assert!(!complaint(
            "Exit the inference server if an error occurs during"
        ));
        assert!(!complaint("hello"));
    }

    #[test]
    fn index_and_log_fold_into_states() {
        let index: Vec<IndexEntry> = serde_json::from_value(json!([
            {"name": "a", "version": "1", "state": "READY"},
            {"name": "b", "version": "1", "state": "UNAVAILABLE", "reason": "boom"},
            {"name": "c"},
            {"name": "d", "version": "1", "state": "LOADING"}
        ]))
        .unwrap();
        let failures = BTreeMap::from([("c".to_string(), "bad config".to_string())]);
        let s = fold(&index, &failures);
        assert_eq!(
            s.iter().map(|m| m.state).collect::<Vec<_>>(),
            [
                State::Ready,
                State::Unavailable,
                State::Unavailable,
                State::Loading
            ]
        );
        assert_eq!(s[1].reason.as_deref(), Some("boom"));
        assert_eq!(s[2].reason.as_deref(), Some("bad config"));
        assert!(!settled(&s));
        assert!(settled(&s[..3]));
        assert!(!settled(&[]), "an empty index has not settled");
    }

    #[test]
    fn cpu_command_takes_over_model_control() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cpu_command(&v(&[
                "tritonserver",
                "--model-repository=/models",
                "--model-control-mode",
                "poll",
                "--load-model=a",
                "--strict-readiness=true"
            ])),
            v(&[
                "tritonserver",
                "--model-repository=/models",
                "--strict-readiness=true",
                "--model-control-mode=explicit",
                "--exit-on-error=false"
            ])
        );
        assert_eq!(cpu_command(&[])[0], "tritonserver");
        assert_eq!(
            model_repository(&v(&["tritonserver", "--model-repository", "/m"])),
            "/m"
        );
        assert_eq!(
            model_repository(&v(&["tritonserver", "--model-store=/s"])),
            "/s"
        );
        assert_eq!(model_repository(&v(&["tritonserver"])), "/models");
    }

    #[test]
    fn gpu_instance_groups_become_cpu_and_others_are_left_alone() {
        let cfg = json!({
            "backend": "python",
            "instance_group": [{"count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}, {"kind": "KIND_CPU"}]
        });
        let o = cpu_override("m", &cfg).unwrap();
        assert_eq!(o["name"], "m");
        assert_eq!(
            o["instance_group"],
            json!([{"count": 2, "kind": "KIND_CPU"}, {"kind": "KIND_CPU"}])
        );
        assert_eq!(o["backend"], "python");
        assert_eq!(
            cpu_override("m", &json!({"instance_group": [{"kind": "KIND_CPU"}]})),
            None
        );
        assert_eq!(cpu_override("m", &json!({"backend": "python"})), None);
    }

    #[test]
    fn ensembles_load_after_their_members() {
        let m = |n: &str, e: bool| (n.to_string(), e);
        assert_eq!(
            load_order(&[m("pipe", true), m("b", false), m("a", false)]),
            ["a", "b", "pipe"]
        );
    }
}
