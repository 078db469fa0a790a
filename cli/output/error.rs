//! [`CliError`]: what went wrong, classified so that every command maps it to the same exit code
//! and the same JSON error document `{"error": {"kind", "message", "file"?, "line"?, "column"?}}`.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::exit;

/// The class of an error; it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad flags or values, found before any work (exit 64).
    Usage,
    /// The input is invalid: a model repository, a spec or an input file (exit 1).
    Invalid,
    /// A file could not be read or written (exit 1).
    Io,
    /// An AWS call failed (exit 1).
    Aws,
    /// The registry, the Docker Engine or a server answered with an error (exit 1).
    Remote,
    /// The work itself failed: a rollout rolled back, a wait timed out (exit 1).
    Failed,
    /// Nothing is deployed where the command expects a deployment (exit 1).
    NotDeployed,
    /// Interrupted by Ctrl-C (exit 130).
    Interrupted,
}

/// An error of a command, with the file position it is about when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CliError {
    /// Its class.
    pub kind: ErrorKind,
    /// One line saying what is wrong and, where it helps, what to do.
    pub message: String,
    /// The file it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The 1-based line in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The 1-based column in `line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl CliError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            file: None,
            line: None,
            column: None,
        }
    }

    /// A usage error (exit 64).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Usage, message)
    }

    /// A failure of the work (exit 1).
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Failed, message)
    }

    /// Invalid input (exit 1).
    pub fn invalid(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Invalid, message)
    }

    /// The same error, about `file` at `line:column`.
    pub fn at(mut self, file: &Path, line: usize, column: usize) -> CliError {
        self.file = Some(file.display().to_string());
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// The same error, about `file`.
    pub fn in_file(mut self, file: &Path) -> CliError {
        self.file = Some(file.display().to_string());
        self
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Interrupted => exit::INTERRUPTED,
            _ => exit::FAILURE,
        }
    }

    /// The JSON error document.
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "error": self })
    }

    /// The line printed on stderr.
    pub fn to_text(&self) -> String {
        format!("error: {}", self.message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<crate::deploy::spec::SpecError> for CliError {
    fn from(e: crate::deploy::spec::SpecError) -> CliError {
        let (file, line, column) = (e.file.clone(), e.line, e.column);
        CliError::invalid(e.to_string()).at(&file, line, column)
    }
}

impl From<crate::validate::ValidateError> for CliError {
    fn from(e: crate::validate::ValidateError) -> CliError {
        use crate::validate::ValidateError;
        let (kind, path) = match &e {
            ValidateError::NotADirectory(p) => (ErrorKind::Usage, p.clone()),
            ValidateError::Io { path, .. } => (ErrorKind::Io, path.clone()),
        };
        CliError::new(kind, e.to_string()).in_file(&path)
    }
}

impl From<crate::deploy::error::DeployError> for CliError {
    fn from(e: crate::deploy::error::DeployError) -> CliError {
        use crate::deploy::error::DeployError as E;
        let kind = match e {
            E::Spec(s) => return s.into(),
            E::Usage(_) => ErrorKind::Usage,
            E::Preflight(_) | E::State(_) | E::Failed(_) => ErrorKind::Failed,
            E::Cfn(_) | E::Ec2(_) | E::Ssm(_) | E::Api(_) => ErrorKind::Aws,
            E::NotDeployed(_) => ErrorKind::NotDeployed,
            E::Service(crate::deploy::service::ServiceError::Interrupted) => ErrorKind::Interrupted,
            E::Service(crate::deploy::service::ServiceError::Api(_))
            | E::Service(crate::deploy::service::ServiceError::Ecr(_)) => ErrorKind::Aws,
            E::Service(_) => ErrorKind::Failed,
        };
        CliError::new(kind, e.to_string())
    }
}

impl From<triton_deploy_aws::ApiError> for CliError {
    fn from(e: triton_deploy_aws::ApiError) -> CliError {
        CliError::new(ErrorKind::Aws, e.to_string())
    }
}

/// A failure described in words alone (the load generator's and the protocol's errors).
impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError::failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_exit_codes() {
        let cases = [
            (ErrorKind::Usage, 64),
            (ErrorKind::Invalid, 1),
            (ErrorKind::Io, 1),
            (ErrorKind::Aws, 1),
            (ErrorKind::Remote, 1),
            (ErrorKind::Failed, 1),
            (ErrorKind::NotDeployed, 1),
            (ErrorKind::Interrupted, 130),
        ];
        for (kind, code) in cases {
            assert_eq!(CliError::new(kind, "x").exit_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn the_json_document_carries_the_position_only_when_known() {
        let plain = CliError::failed("boom").to_json();
        assert_eq!(
            plain,
            json!({"error": {"kind": "failed", "message": "boom"}})
        );
        let at = CliError::invalid("bad key")
            .at(Path::new("t.toml"), 3, 7)
            .to_json();
        assert_eq!(
            at,
            json!({"error": {"kind": "invalid", "message": "bad key", "file": "t.toml", "line": 3, "column": 7}})
        );
    }
}
