//! `triton-deploy render cloudformation|taskdef|terraform`: print (or write) exactly what `rollout`
//! sends, and the equivalent Terraform module.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{Global, SpecArgs, exit};
use crate::taskdef::{self, InfraOutputs};

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

pub fn run(args: RenderArgs, _global: Global) -> i32 {
    let spec = match args.spec.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (text, file) = match args.what {
        Document::Cloudformation => (
            serde_json::to_string_pretty(&crate::infra::template(&spec)).expect("json"),
            "infra.template.json",
        ),
        Document::Taskdef => {
            let image = args
                .image
                .clone()
                .or_else(|| spec.image_uri.clone())
                .unwrap_or_else(|| "<the newest image pushed to the spec's repository>".into());
            let td = taskdef::task_definition(&spec, &image, &InfraOutputs::placeholders(&spec));
            (
                serde_json::to_string_pretty(&td).expect("json"),
                "taskdef.json",
            )
        }
        Document::Terraform => (crate::terraform::module(&spec), "main.tf"),
    };
    match &args.out {
        None => {
            println!("{}", text.trim_end());
            exit::OK
        }
        Some(dir) => {
            let path = dir.join(file);
            match std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&path, text.trim_end().to_string() + "\n"))
            {
                Ok(()) => {
                    eprintln!("wrote {}", path.display());
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: writing {}: {e}", path.display());
                    exit::USAGE
                }
            }
        }
    }
}
