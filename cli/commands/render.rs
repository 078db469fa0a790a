//! `triton-deploy render cloudformation|taskdef|terraform`: print (or write) exactly what `rollout`
//! sends, and the equivalent Terraform module.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use serde::Serialize;
use serde_json::Value;

use super::SpecArgs;
use crate::deploy::render::taskdef::{self, InfraOutputs};
use crate::deploy::render::{cloudformation, terraform};
use crate::output::{CliError, ErrorKind, Global, Render};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Document {
    /// The infra stack's CloudFormation template (JSON).
    Cloudformation,
    /// The ECS task definition (JSON; stack outputs shown as placeholders).
    Taskdef,
    /// An equivalent Terraform module (HCL).
    Terraform,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// What to render.
    #[arg(value_enum)]
    pub what: Document,

    #[command(flatten)]
    pub spec: SpecArgs,

    /// The image for the task definition (default: the spec's image.uri, else a placeholder).
    #[arg(long)]
    pub image: Option<String>,

    /// Write the document into this directory (infra.template.json, taskdef.json, main.tf) instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What `render` produced: the document itself (a JSON document as it is, the Terraform module
/// as `{"terraform": "..."}` under `--format json`), or where it was written.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RenderReport {
    /// A JSON document (template or task definition).
    Json(Value),
    /// The Terraform module's HCL.
    Hcl { terraform: String },
    /// Written into `--out`.
    Written { wrote: PathBuf },
}

/// Runs `render`: nothing is written for a bad spec.
pub fn run(args: RenderArgs, _global: &Global) -> Result<RenderReport, CliError> {
    let spec = args.spec.load()?;
    let (report, file) = match args.what {
        Document::Cloudformation => (
            RenderReport::Json(cloudformation::template(&spec)),
            "infra.template.json",
        ),
        Document::Taskdef => {
            let image = args
                .image
                .clone()
                .or_else(|| spec.image_uri.clone())
                .unwrap_or_else(|| "<the newest image pushed to the spec's repository>".into());
            let td = taskdef::task_definition(&spec, &image, &InfraOutputs::placeholders(&spec));
            (RenderReport::Json(td), "taskdef.json")
        }
        Document::Terraform => (
            RenderReport::Hcl {
                terraform: terraform::module(&spec),
            },
            "main.tf",
        ),
    };
    let Some(dir) = &args.out else {
        return Ok(report);
    };
    let path = dir.join(file);
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, report.document() + "\n"))
        .map_err(|e| {
            CliError::new(ErrorKind::Io, format!("writing {}: {e}", path.display())).in_file(&path)
        })?;
    Ok(RenderReport::Written { wrote: path })
}

impl RenderReport {
    /// The document as text, without a trailing newline.
    fn document(&self) -> String {
        match self {
            RenderReport::Json(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            RenderReport::Hcl { terraform } => terraform.trim_end().to_string(),
            RenderReport::Written { .. } => String::new(),
        }
    }
}

impl Render for RenderReport {
    fn text(&self, _global: &Global) -> String {
        match self {
            RenderReport::Written { .. } => String::new(),
            other => other.document() + "\n",
        }
    }

    fn notes(&self) -> String {
        match self {
            RenderReport::Written { wrote } => format!("wrote {}\n", wrote.display()),
            _ => String::new(),
        }
    }
}
