//! `triton-deploy render cloudformation|taskdef|terraform|packer`: print (or write) exactly what
//! `rollout` sends, the equivalent Terraform module, and the Packer template `ami build` runs.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use serde::Serialize;
use serde_json::Value;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::ami::build::{self as bake, BakeSettings};
use crate::deploy::ami::packer::parse_version;
use crate::deploy::ami::template::{self as packer, Dialect, Provision};
use crate::deploy::render::taskdef::{self, InfraOutputs};
use crate::deploy::render::{cloudformation, terraform};
use crate::deploy::route::{self, Routing};
use crate::deploy::spec::{DeploymentSpec, RouteKind};
use crate::output::{CliError, ErrorKind, Global, Render};
use crate::triton::model_repo::ModelRepo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Document {
    /// A stack's CloudFormation template (JSON): the cluster's, or with `--stack service` the
    /// service's.
    Cloudformation,
    /// The ECS task definition (JSON; stack outputs shown as placeholders).
    Taskdef,
    /// The equivalent Terraform module (HCL): the cluster's, or with `--stack service` the
    /// service's.
    Terraform,
    /// The Packer template (HCL2) of a GPU AMI with the image baked in: the base AMI behind its
    /// parameter and the image by digest, resolved now (AWS is asked).
    Packer,
}

/// The two layers of stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layer {
    /// The cluster stack: hosts, capacity provider, load balancer, EFS.
    Cluster,
    /// The service stack: target group, listener rules, task role, access point, logs.
    Service,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// What to render.
    #[arg(value_enum)]
    pub what: Document,

    #[command(flatten)]
    pub spec: SpecArgs,

    /// Which stack's template: the cluster's (shared by its services) or the service's own. The
    /// service's listener rules take the priorities its name prefers; `rollout` moves them past
    /// another service's if one holds them.
    #[arg(long, value_enum, default_value_t = Layer::Cluster)]
    pub stack: Layer,

    /// The image for the task definition (default: the spec's image.uri, else a placeholder).
    #[arg(long)]
    pub image: Option<String>,

    /// Write the document into this directory (cluster.template.json or service.template.json,
    /// taskdef.json, cluster/main.tf or service/main.tf, the Packer template's files) instead of
    /// stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// packer: the Packer version the template is for: 1.7 or newer (the amazon plugin,
    /// `packer init`), or 1.6 (the built-in amazon builder: no plugins file, no IMDS settings).
    #[arg(long, value_name = "VERSION", default_value = "1.7")]
    pub for_packer: String,

    #[command(flatten)]
    pub aws: AwsArgs,
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
    /// The Packer template's files, by name.
    Files {
        files: std::collections::BTreeMap<String, String>,
    },
    /// Written into `--out`.
    Written { wrote: PathBuf },
}

/// Runs `render`: nothing is written for a bad spec.
pub fn run(args: RenderArgs, _global: &Global) -> Result<RenderReport, CliError> {
    let spec = args.spec.load()?;
    if args.what == Document::Packer {
        return render_packer(&args, &spec);
    }
    let (report, file) = match args.what {
        Document::Packer => unreachable!("rendered above"),
        Document::Cloudformation if args.stack == Layer::Cluster => (
            RenderReport::Json(cloudformation::cluster_template(&spec)),
            "cluster.template.json",
        ),
        Document::Cloudformation => (
            RenderReport::Json(cloudformation::service_template(
                &spec,
                &routing(&args, &spec)?,
            )),
            "service.template.json",
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
        Document::Terraform if args.stack == Layer::Cluster => (
            RenderReport::Hcl {
                terraform: terraform::cluster_module(&spec),
            },
            "cluster/main.tf",
        ),
        Document::Terraform => (
            RenderReport::Hcl {
                terraform: terraform::service_module(&spec, &routing(&args, &spec)?),
            },
            "service/main.tf",
        ),
    };
    let Some(dir) = &args.out else {
        return Ok(report);
    };
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap_or(dir))
        .and_then(|_| std::fs::write(&path, report.document() + "\n"))
        .map_err(|e| {
            CliError::new(ErrorKind::Io, format!("writing {}: {e}", path.display())).in_file(&path)
        })?;
    Ok(RenderReport::Written { wrote: path })
}

/// `render packer`: resolves the base AMI, the image and the build instance's profile as
/// `ami build` does, then renders (or writes) the template's files.
fn render_packer(args: &RenderArgs, spec: &DeploymentSpec) -> Result<RenderReport, CliError> {
    let version = parse_version(&format!("Packer v{}", args.for_packer)).ok_or_else(|| {
        CliError::usage(format!(
            "--for-packer {}: a Packer version such as 1.6 or 1.11",
            args.for_packer
        ))
    })?;
    if version < (1, 6, 0) {
        return Err(CliError::usage(format!(
            "--for-packer {}: HCL2 templates need Packer 1.6 or newer",
            args.for_packer
        )));
    }
    let dialect = if version >= (1, 7, 0) {
        Dialect::Current
    } else {
        Dialect::Packer16
    };
    let settings = BakeSettings {
        image: args.image.clone(),
        registry_endpoint: None,
        spec_dir: args.spec.dir(),
        aws: args.aws.options(spec.region.as_deref()),
    };
    let files = block_on(None, async {
        let config = triton_deploy_aws::load_config(&settings.aws).await;
        let resolved = bake::resolve(spec, &settings, &config).await?;
        let profile = bake::instance_profile(spec, &config).await?;
        Ok::<_, crate::deploy::error::DeployError>(packer::render(&bake::inputs(
            spec,
            &resolved,
            profile,
            Provision::OnInstance,
            dialect,
        )))
    })??;
    if let Some(dir) = &args.out {
        bake::write(dir, &files)?;
        return Ok(RenderReport::Written { wrote: dir.clone() });
    }
    Ok(RenderReport::Files {
        files: files.into_iter().map(|(n, t)| (n.to_string(), t)).collect(),
    })
}

/// The service's route as `render` shows it: the models of its repository, the priorities its
/// name prefers (a rollout moves them past another service's block if one holds it).
fn routing(args: &RenderArgs, spec: &DeploymentSpec) -> Result<Routing, CliError> {
    let models = match spec.route {
        RouteKind::All | RouteKind::Host | RouteKind::Path => Vec::new(),
        RouteKind::Models => {
            let dir = args
                .spec
                .dir()
                .join(spec.model_repository.as_deref().unwrap_or("."));
            ModelRepo::read(&dir, None)
                .map_err(|e| {
                    CliError::new(
                        ErrorKind::Invalid,
                        format!("image.model_repository {}: {e}", dir.display()),
                    )
                })?
                .models
                .into_iter()
                .map(|m| m.name)
                .collect()
        }
    };
    route::routing(spec, &models, route::preferred_block(&spec.service))
        .map_err(|e| CliError::new(ErrorKind::Invalid, format!("network.route: {e}")))
}

impl RenderReport {
    /// The document as text, without a trailing newline.
    fn document(&self) -> String {
        match self {
            RenderReport::Json(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            RenderReport::Hcl { terraform } => terraform.trim_end().to_string(),
            RenderReport::Files { files } => files
                .iter()
                .map(|(name, text)| format!("# ==> {name} <==\n{}", text.trim_end()))
                .collect::<Vec<_>>()
                .join("\n\n"),
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
