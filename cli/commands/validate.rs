//! `triton-deploy validate`: lint model repositories the way Triton would load them.

use std::path::PathBuf;

use clap::Args;
use serde::{Serialize, Serializer};

use crate::output::{CliError, Global, Render, exit};
use crate::validate::diagnostic::JsonDiagnostic;
use crate::validate::{self, ModelSummary, Options, Report, rules};

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

/// What `validate` found, or the rule catalogue (`--list-rules`).
pub enum ValidateOutput {
    /// The verdict on the repositories.
    Verdict { report: Report, strict: bool },
    /// The rule catalogue.
    Rules,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    models: &'a [ModelSummary],
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
struct JsonRule {
    id: &'static str,
    name: &'static str,
    summary: &'static str,
}

impl Serialize for ValidateOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ValidateOutput::Verdict { report, strict } => JsonReport {
                valid: report.is_valid(*strict),
                models: &report.models,
                diagnostics: report
                    .diagnostics
                    .iter()
                    .map(|d| d.to_json(report.source_of(d)))
                    .collect(),
            }
            .serialize(s),
            ValidateOutput::Rules => s.collect_seq(rules::ALL.iter().map(|r| JsonRule {
                id: r.id,
                name: r.name,
                summary: r.summary,
            })),
        }
    }
}

impl Render for ValidateOutput {
    fn text(&self, global: &Global) -> String {
        match self {
            ValidateOutput::Verdict { report, strict } => {
                validate::render::text(report, *strict, global.color)
            }
            ValidateOutput::Rules => rules::ALL
                .iter()
                .map(|r| format!("{}  {:<26} {}\n", r.id, r.name, r.summary))
                .collect(),
        }
    }

    /// 1 when the repository is invalid.
    fn exit_code(&self) -> u8 {
        match self {
            ValidateOutput::Verdict { report, strict } if !report.is_valid(*strict) => {
                exit::FAILURE
            }
            _ => exit::OK,
        }
    }
}

/// Runs `validate`.
pub fn run(args: ValidateArgs, _global: &Global) -> Result<ValidateOutput, CliError> {
    if args.list_rules {
        return Ok(ValidateOutput::Rules);
    }
    if args.model_config_name.as_deref() == Some("") {
        return Err(CliError::usage(
            "--model-config-name: give a name (configs/<NAME>.pbtxt), not an empty string",
        ));
    }
    let mut opts = Options {
        model_config_name: args.model_config_name.clone(),
        auto_complete: !args.disable_auto_complete_config,
        onnx: !args.no_onnx_check,
        ..Options::default()
    };
    opts.backends.extend(args.backends.iter().cloned());
    let report = validate::validate(&args.paths, &opts)?;
    Ok(ValidateOutput::Verdict {
        report,
        strict: args.strict,
    })
}
