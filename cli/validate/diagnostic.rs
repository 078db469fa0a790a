//! Diagnostics: what a rule found, where, and how it is shown (text with a source snippet, or JSON).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::rules::Rule;
use crate::triton::pbtxt::{Span, line_col};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub rule: Rule,
    pub severity: Severity,
    pub model: Option<String>,
    pub file: Option<PathBuf>,
    /// Where in `file` (a `config.pbtxt`), when the finding has a place in its text.
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(rule: Rule, severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            rule,
            severity,
            model: None,
            file: None,
            span: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn model(mut self, m: &str) -> Self {
        self.model = Some(m.to_string());
        self
    }

    pub fn file(mut self, f: impl AsRef<Path>) -> Self {
        self.file = Some(f.as_ref().to_path_buf());
        self
    }

    pub fn span(mut self, s: Option<Span>) -> Self {
        self.span = s;
        self
    }

    pub fn with_help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }

    pub fn help(&mut self, h: impl Into<String>) -> &mut Self {
        self.help = Some(h.into());
        self
    }
}

/// A diagnostic as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub rule: &'static str,
    pub severity: Severity,
    pub model: Option<&'a str>,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

impl Diagnostic {
    /// Line and column (1-based) of the diagnostic in its file, given the file's text.
    pub fn line_col(&self, source: Option<&str>) -> Option<(usize, usize)> {
        match (self.span, source) {
            (Some(span), Some(src)) => Some(line_col(src, span.start)),
            _ => None,
        }
    }

    pub fn to_json<'a>(&'a self, source: Option<&str>) -> JsonDiagnostic<'a> {
        let lc = self.line_col(source);
        JsonDiagnostic {
            rule: self.rule.id,
            severity: self.severity,
            model: self.model.as_deref(),
            file: self.file.as_ref().map(|f| f.display().to_string()),
            line: lc.map(|x| x.0),
            column: lc.map(|x| x.1),
            message: &self.message,
            help: self.help.as_deref(),
        }
    }
}
