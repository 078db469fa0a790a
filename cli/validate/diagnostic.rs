//! Diagnostics: what a rule found, where, and how it is shown (text with a source snippet, or JSON).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::rules::Rule;
use crate::triton::pbtxt::{Span, line_col};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Triton loads it, but it is likely a mistake.
    Warning,
    /// Triton refuses it (or the model will not serve).
    Error,
}

/// One finding: the rule, where, what and how to mend it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The rule that found it.
    pub rule: Rule,
    /// Error or warning.
    pub severity: Severity,
    /// The model it is about.
    pub model: Option<String>,
    /// The file it is in.
    pub file: Option<PathBuf>,
    /// Where in `file` (a `config.pbtxt`), when the finding has a place in its text.
    pub span: Option<Span>,
    /// What is wrong (Triton's wording where Triton has one).
    pub message: String,
    /// How to mend it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A finding of `rule`.
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

    /// About model `m`.
    pub fn model(mut self, m: &str) -> Self {
        self.model = Some(m.to_string());
        self
    }

    /// In file `f`.
    pub fn file(mut self, f: impl AsRef<Path>) -> Self {
        self.file = Some(f.as_ref().to_path_buf());
        self
    }

    /// At span `s` of the file.
    pub fn span(mut self, s: Option<Span>) -> Self {
        self.span = s;
        self
    }

    /// With a hint.
    pub fn with_help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }

    /// Adds a hint.
    pub fn help(&mut self, h: impl Into<String>) -> &mut Self {
        self.help = Some(h.into());
        self
    }
}

/// A diagnostic as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    /// The rule's id.
    pub rule: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The model it is about.
    pub model: Option<&'a str>,
    /// The file it is in.
    pub file: Option<String>,
    /// The line, from 1.
    pub line: Option<usize>,
    /// The column, from 1.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: &'a str,
    /// How to mend it.
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

    /// The finding as JSON, with line and column from `source` (the file's text).
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
