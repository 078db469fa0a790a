//! `triton-deploy rollout`: the cluster stack through a CloudFormation change set after a GPU
//! preflight, then the service; `--plan` shows the resource- and field-level changes and changes
//! nothing (exit 0: nothing would change, 2: something would, like terraform's
//! `-detailed-exitcode`).

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;

use super::{AwsArgs, SpecArgs, block_on};
use crate::deploy::Timing;
use crate::deploy::plan::FieldChange;
use crate::deploy::render::cloudformation;
use crate::deploy::rollout::{self, RolloutReport, RolloutSettings};
use crate::deploy::route::{self, Route};
use crate::deploy::service::ServicePlan;
use crate::output::{self, CliError, Global, Render, exit, short_arn};
use triton_deploy_aws::cfn::ResourceChange;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Show what would change and change nothing. Exit 0: no changes; 2: changes.
    #[arg(long)]
    pub plan: bool,

    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,

    /// How long to wait for CloudFormation and the deployment, in minutes (1 to 1440).
    #[arg(long, default_value_t = 60, value_name = "MINUTES",
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub timeout: u64,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// The image to deploy (default: the spec's image.uri, else the newest image in the spec's ECR
    /// repository). ECR images are checked and pinned by digest.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Verify through this URL instead of the load balancer's DNS name (a tunnel, or a local
    /// stand-in).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Do not wait for the deployment (nor verify it).
    #[arg(long)]
    pub no_wait: bool,

    /// After the deployment, run one real inference built from the model's metadata.
    #[arg(long)]
    pub smoke: bool,

    /// Replace the GPU hosts (an instance refresh that keeps capacity and lets ECS drain tasks),
    /// e.g. to move them to a newer AMI, and follow it.
    #[arg(long)]
    pub refresh_instances: bool,

    /// Seconds between polls while waiting.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll: u64,
}

/// Runs `rollout`: asks before changing anything (unless `--plan` or `--yes`), then rolls out.
pub fn run(args: RolloutArgs, global: &Global) -> Result<Planned, CliError> {
    let spec = args.spec.load()?;
    if !args.plan && !args.yes {
        output::confirm(
            &format!(
                "Apply the changes to {} and {}?",
                cloudformation::cluster_stack_name(&spec),
                cloudformation::service_stack_name(&spec)
            ),
            "--yes (or --plan to only look)",
        )?;
    }
    let aws = args.aws.options(spec.region.as_deref());
    let settings = RolloutSettings {
        plan: args.plan,
        image: args.image.clone(),
        endpoint: args.endpoint.clone(),
        no_wait: args.no_wait,
        smoke: args.smoke,
        refresh_instances: args.refresh_instances,
        yes: args.yes,
        timing: Timing {
            timeout: Duration::from_secs(args.timeout * 60),
            poll: Duration::from_secs(args.poll),
        },
        spec_dir: args.spec.dir(),
    };
    let progress = global.progress();
    let report = block_on(None, rollout::rollout(spec, &aws, &settings, &progress))??;
    Ok(Planned {
        report,
        planned: args.plan,
    })
}

/// A rollout's report and whether it was a plan (`--plan` exits 2 when something would change).
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Planned {
    report: RolloutReport,
    #[serde(skip)]
    planned: bool,
}

impl std::ops::Deref for Planned {
    type Target = RolloutReport;
    fn deref(&self) -> &RolloutReport {
        &self.report
    }
}

impl Render for Planned {
    fn exit_code(&self) -> u8 {
        if self.planned && self.has_changes() {
            exit::CHANGES
        } else {
            exit::OK
        }
    }

    fn text(&self, _global: &Global) -> String {
        let mut out = String::new();
        if let Some(n) = &self.not_baked {
            let _ = writeln!(out, "warning: {n}");
        }
        if let Some(u) = &self.infra.ami_update {
            let _ = writeln!(
                out,
                "GPU AMI update: {} -> {} (the launch template takes it; running hosts keep the old AMI until they are replaced)",
                u.from, u.to
            );
        }
        stack_changes(
            &mut out,
            &self.infra.stack,
            &self.infra.changes,
            self.planned,
        );
        if !self.infra.affects.is_empty() {
            let _ = writeln!(
                out,
                "  the cluster is shared: services {} run on it too{}",
                self.infra.affects.join(", "),
                if self.planned {
                    " (applying needs --yes)"
                } else {
                    ""
                }
            );
        }
        if let Some(s) = &self.infra.service_stack {
            stack_changes(&mut out, &s.stack, &s.changes, self.planned);
            let priorities = s.route.model_priorities();
            let route = match &s.route.route {
                Route::All => "every path no other service routes".to_string(),
                Route::Models { models } => format!(
                    "by model ({}), rule priorities {}-{}",
                    models.join(", "),
                    priorities.start(),
                    priorities.end()
                ),
                Route::Host { host } => format!("every request for {host}"),
                Route::Path { prefix } => {
                    format!("every path under {prefix} (stripped before Triton sees it)")
                }
            };
            let _ = writeln!(out, "  route: {route}");
            if let Some(host) = &s.route.grpc_host {
                let _ = writeln!(
                    out,
                    "  gRPC: {host} ({} on Triton's :8001)",
                    route::GRPC_PATHS
                );
            }
        }
        if let Some(p) = &self.service {
            service_plan_text(&mut out, p, self.planned);
        }
        if let Some(w) = &self.wait {
            let _ = writeln!(
                out,
                "deployed in {:.0} s; targets {:?}",
                w.seconds, w.targets
            );
            if let Some(n) = &w.note {
                let _ = writeln!(out, "note: {n}");
            }
        }
        if let Some(e) = &self.endpoint {
            let _ = writeln!(out, "endpoint: {e}");
        }
        if let Some(v) = &self.verified {
            let _ = writeln!(out, "verify: {v}");
        }
        if let Some(r) = &self.instance_refresh {
            let _ = writeln!(out, "instance refresh {}: {}", r.id, r.status);
        }
        out
    }
}

/// A stack's resource changes, a line each.
fn stack_changes(out: &mut String, stack: &str, changes: &[ResourceChange], planned: bool) {
    if changes.is_empty() {
        let _ = writeln!(out, "{stack}: no changes");
        return;
    }
    let _ = writeln!(
        out,
        "{stack}: {} resource change(s){}",
        changes.len(),
        if planned {
            " (plan: nothing applied)"
        } else {
            ""
        }
    );
    for c in changes {
        let what = match (c.action.as_str(), c.replacement.as_deref()) {
            ("Add", _) => "add",
            ("Remove", _) => "remove",
            ("Modify", Some("True")) => "replace",
            ("Modify", Some("Conditional")) => "modify (may replace)",
            ("Modify", _) => "modify",
            (other, _) => other,
        };
        let _ = writeln!(out, "  {what:<20} {:<28} {}", c.logical_id, c.resource_type);
    }
}

fn change_line(out: &mut String, c: &FieldChange) {
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "      {}: {} -> {}",
        c.path,
        show(&c.from),
        show(&c.to)
    );
}

fn service_plan_text(out: &mut String, p: &ServicePlan, planning: bool) {
    let verb = |what: &str| {
        if planning {
            format!("would {what}")
        } else {
            what.to_string()
        }
    };
    if let Some(i) = &p.image {
        let _ = writeln!(
            out,
            "image: {} ({}{})",
            i.uri,
            i.source,
            if i.checked {
                ", in ECR"
            } else {
                ", not an ECR image: not checked"
            }
        );
    }
    if let Some(t) = &p.task_definition {
        let _ = writeln!(
            out,
            "task definition {}: {} a new revision{}",
            t.family,
            verb("register"),
            t.from
                .as_deref()
                .map(|f| format!(" (from {})", short_arn(f)))
                .unwrap_or_default()
        );
        if t.from.is_some() {
            t.changes.iter().for_each(|c| change_line(out, c));
        }
    }
    if let Some(c) = &p.service {
        let _ = writeln!(out, "service: {}", verb(&c.action));
        if c.action != "create" {
            c.changes.iter().for_each(|c| change_line(out, c));
        }
    }
    if let Some(c) = &p.autoscaling {
        let source = p
            .scaling_target
            .as_ref()
            .map(|t| {
                format!(
                    " (target {} requests/min per task, from {})",
                    t.requests_per_minute, t.source
                )
            })
            .unwrap_or_default();
        let _ = writeln!(out, "autoscaling: {}{source}", verb(&c.action));
        if c.action != "create" {
            c.changes.iter().for_each(|c| change_line(out, c));
        }
    }
    if let Some(repo) = &p.repository {
        for d in &p.repository_settings {
            let what = if d.setting == triton_deploy_aws::ecr::Setting::Encryption {
                "ECR cannot change it: reported only".to_string()
            } else if d.repaired {
                "set back".to_string()
            } else {
                verb("set back")
            };
            let _ = writeln!(
                out,
                "ECR repository {repo}: {} is {}, push asked for {}: {what}",
                d.setting.name(),
                d.live,
                d.wanted
            );
        }
    }
    if p.is_empty() {
        let _ = writeln!(out, "service: no changes");
    }
    if let Some(r) = &p.readiness {
        let _ = writeln!(
            out,
            "grace period: {} s (spec); measured time to ready {:.1} s ({}) -> proposed {} s; health check start period {} s; a cold host first pulls {} MiB, about {:.0} s at {:.0} MiB/s (before the task starts, so outside the grace period)",
            r.grace_seconds,
            r.measured_ready_seconds,
            r.source,
            r.proposed_grace_seconds,
            r.start_period_seconds,
            r.image_bytes >> 20,
            r.cold_pull_seconds,
            crate::deploy::plan::COLD_PULL_MIB_PER_SECOND
        );
        for w in &r.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
}
