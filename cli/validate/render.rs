//! The text rendering of a [`Report`]: each diagnostic with its source snippet (miette's
//! graphical renderer), then a summary line.

use std::fmt::Write as _;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

use super::{Diagnostic, Report, Severity};

/// Renders the report as text: each diagnostic with its source snippet, then a summary line.
pub fn text(report: &Report, strict: bool, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in &report.diagnostics {
        let sev = if strict || d.severity == Severity::Error {
            "error"
        } else {
            "warning"
        };
        let location = match (&d.file, d.line_col(report.source_of(d))) {
            (Some(f), Some((l, c))) => format!("{}:{l}:{c}", f.display()),
            (Some(f), None) => f.display().to_string(),
            (None, _) => String::new(),
        };
        let _ = writeln!(out, "{sev}[{}]: {}: {}", d.rule.id, location, d.message);
        if let (Some(span), Some(src), Some(file)) = (d.span, report.source_of(d), &d.file) {
            let _ = handler.render_report(&mut out, &snippet(d, span, src, file));
        } else if let Some(help) = &d.help {
            let _ = writeln!(out, "  help: {help}");
        }
        out.push('\n');
    }
    let n = report.models.len();
    let (e, w) = (report.errors(), report.warnings());
    let plural = |k: usize, s: &str| format!("{k} {s}{}", if k == 1 { "" } else { "s" });
    if report.is_valid(strict) {
        let _ = writeln!(
            out,
            "ok: {} valid ({})",
            plural(n, "model"),
            plural(w, "warning")
        );
    } else {
        let _ = writeln!(
            out,
            "invalid: {}, {} in {}",
            plural(e, "error"),
            plural(w, "warning"),
            plural(n, "model")
        );
    }
    out
}

fn snippet(
    d: &Diagnostic,
    span: crate::triton::pbtxt::Span,
    src: &str,
    file: &std::path::Path,
) -> SnippetReport {
    let len = span.len().max(1).min(src.len().saturating_sub(span.start));
    let mut diag = MietteDiagnostic::new(d.rule.name.to_string())
        .with_severity(match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
        .with_label(LabeledSpan::at(span.start..span.start + len, "here"));
    if let Some(h) = &d.help {
        diag = diag.with_help(h.clone());
    }
    SnippetReport {
        diag,
        src: NamedSource::new(file.display().to_string(), src.to_string()),
    }
}

/// A diagnostic paired with its source text, for miette's renderer.
#[derive(Debug)]
struct SnippetReport {
    diag: MietteDiagnostic,
    src: NamedSource<String>,
}

impl std::fmt::Display for SnippetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.diag.message)
    }
}

impl std::error::Error for SnippetReport {}

impl miette::Diagnostic for SnippetReport {
    fn severity(&self) -> Option<miette::Severity> {
        self.diag.severity
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.diag
            .labels
            .as_ref()
            .map(|l| Box::new(l.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
}
