//! `triton-deploy validate`: lint model repositories the way Triton would load them.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};
use serde::Serialize;

use super::{Format, Global, exit};
use crate::validate::diagnostic::JsonDiagnostic;
use crate::validate::{self, Diagnostic, ModelSummary, Options, Report, Severity, rules};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Model repositories (or single model directories) to check. Several repositories are
    /// checked together, as Triton's repeated --model-repository would load them.
    #[arg(required_unless_present = "list_rules", value_name = "REPO")]
    pub paths: Vec<PathBuf>,

    /// Treat warnings as errors (exit 1 when there is any).
    #[arg(long)]
    pub strict: bool,

    /// Read configs/<NAME>.pbtxt where a model has it, as Triton's --model-config-name does.
    #[arg(long, value_name = "NAME")]
    pub model_config_name: Option<String>,

    /// Validate as Triton runs with --disable-auto-complete-config: a missing config.pbtxt is an error.
    #[arg(long)]
    pub disable_auto_complete_config: bool,

    /// Skip the cross-check of ONNX graphs against their configs.
    #[arg(long)]
    pub no_onnx_check: bool,

    /// A backend the target image provides beyond the standard -py3 image's (repeatable),
    /// e.g. `--backend vllm` for the -vllm-python-py3 image.
    #[arg(long = "backend", value_name = "NAME")]
    pub backends: Vec<String>,

    /// Print the rule catalogue and exit.
    #[arg(long)]
    pub list_rules: bool,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    models: &'a [ModelSummary],
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

pub fn run(args: ValidateArgs, global: Global) -> i32 {
    if args.list_rules {
        return list_rules(global);
    }
    let mut opts = Options {
        model_config_name: args.model_config_name.clone(),
        auto_complete: !args.disable_auto_complete_config,
        onnx: !args.no_onnx_check,
        ..Options::default()
    };
    opts.backends.extend(args.backends.iter().cloned());
    if opts.model_config_name.as_deref() == Some("") {
        eprintln!("Error: empty argument for --model-config-name");
        return exit::USAGE;
    }
    let report = match validate::validate(&args.paths, &opts) {
        Ok(r) => r,
        Err(e) => {
            if global.format == Format::Json {
                let doc = serde_json::json!({"valid": false, "models": [], "diagnostics": [], "error": e.to_string()});
                println!("{doc}");
            }
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let valid = report.is_valid(args.strict);
    match global.format {
        Format::Json => {
            let doc = JsonReport {
                valid,
                models: &report.models,
                diagnostics: report
                    .diagnostics
                    .iter()
                    .map(|d| d.to_json(report.source_of(d)))
                    .collect(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("serializable")
            );
        }
        Format::Text => print!("{}", render_text(&report, args.strict, global.color)),
    }
    if valid { exit::OK } else { exit::INVALID }
}

fn list_rules(global: Global) -> i32 {
    match global.format {
        Format::Json => {
            let v: Vec<_> = rules::ALL
                .iter()
                .map(|r| serde_json::json!({"id": r.id, "name": r.name, "summary": r.summary}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("serializable")
            );
        }
        Format::Text => {
            for r in rules::ALL {
                println!("{}  {:<26} {}", r.id, r.name, r.summary);
            }
        }
    }
    exit::OK
}

/// Renders the report as text: each diagnostic with its source snippet, then a summary line.
pub fn render_text(report: &Report, strict: bool, color: bool) -> String {
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
    span: crate::pbtxt::Span,
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
