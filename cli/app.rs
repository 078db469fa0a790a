//! The `triton-deploy` command line: parse, run one command, print its report or error through
//! `output::finish`, exit with its code. The one exit path.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands;
use crate::output::{self, CliError, Format, Global, exit};

/// Take a Triton model repository to a load-tested, autoscaled GPU service on Amazon ECS.
#[derive(Debug, Parser)]
#[command(name = "triton-deploy", version, about, propagate_version = true)]
struct Cli {
    /// Output format on stdout: human-readable text (`table` is the same), one JSON document, or
    /// (bench only) CSV with perf_analyzer's columns.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Never color the output (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long, global = true)]
    no_color: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint a model repository the way Triton would load it, before anything ships.
    Validate(commands::validate::ValidateArgs),
    /// Package a model repository as a tritonserver image and push it to ECR.
    Push(Box<commands::push::PushArgs>),
    /// Run an image (or a model repository packaged on the fly) on this machine through the
    /// Docker Engine: every model's state and the time to ready. `--detach` leaves it running.
    Run(Box<commands::run::RunArgs>),
    /// Print the CloudFormation template, task definition, Terraform module or Packer template of a
    /// deployment spec.
    Render(commands::render::RenderArgs),
    /// Deploy: the GPU cluster stack, then the service (task definition, ECS service, autoscaling),
    /// waiting and verifying. `--plan` shows the changes and applies nothing.
    Rollout(Box<commands::rollout::RolloutArgs>),
    /// Show the stack, the service's deployments, target health, image and endpoint.
    Status(commands::status::StatusArgs),
    /// Point the service back at an earlier task definition revision.
    Rollback(commands::rollback::RollbackArgs),
    /// Delete the service, its autoscaling and dashboard, and the cluster stack.
    Destroy(commands::destroy::DestroyArgs),
    /// GPU AMIs with the Triton image on disk: `ami build` bakes one with Packer and publishes it
    /// for `compute.ami = "baked"`.
    Ami(commands::ami::AmiArgs),
    /// Print the service's container logs from CloudWatch.
    Logs(commands::logs::LogsArgs),
    /// Load-test a KServe v2 endpoint: latency, throughput, the capacity at a latency budget, and
    /// the autoscaling target it implies.
    Bench(Box<commands::bench::BenchArgs>),
    /// Print a shell completion script (e.g. `triton-deploy completions bash > /etc/bash_completion.d/triton-deploy`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // Only the tool's own events, at every verbosity: the AWS SDK's trace events carry response
    // bodies (an ECR authorization token among them), so `-vvv` does not turn them on.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("triton_deploy={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Whether the raw arguments ask for JSON, for errors found before they parse.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json")
}

/// clap's own errors: help and version exit 0, everything else is a usage error (64), with the
/// JSON error document under `--format json`.
fn parse_error(e: clap::Error, json: bool) -> u8 {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = e.print();
        return exit::OK;
    }
    if matches!(e.kind(), K::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return exit::USAGE;
    }
    if json {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        let message = first.trim_start_matches("error: ").to_string();
        println!("{}", CliError::usage(message).to_json());
    }
    let _ = e.print();
    exit::USAGE
}

fn run(cli: Cli) -> u8 {
    let color =
        !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let global = Global {
        format: cli.format,
        color,
    };
    let g = &global;
    if cli.format == Format::Csv && !matches!(cli.command, Command::Bench(_)) {
        // Refused before any work: a command must not run only to find it cannot print.
        return output::fail(&CliError::usage(output::CSV_IS_FOR_BENCH), g);
    }
    match cli.command {
        Command::Validate(a) => output::finish(commands::validate::run(a, g), g),
        Command::Push(a) => output::finish(commands::push::run(*a, g), g),
        Command::Run(a) => output::finish(commands::run::run(*a, g), g),
        Command::Render(a) => output::finish(commands::render::run(a, g), g),
        Command::Rollout(a) => output::finish(commands::rollout::run(*a, g), g),
        Command::Status(a) => output::finish(commands::status::run(a, g), g),
        Command::Rollback(a) => output::finish(commands::rollback::run(a, g), g),
        Command::Destroy(a) => output::finish(commands::destroy::run(a, g), g),
        Command::Ami(a) => output::finish(commands::ami::run(a, g), g),
        Command::Logs(a) => output::finish(commands::logs::run(a, g), g),
        Command::Bench(a) => output::finish(commands::bench::run(*a, g), g),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "triton-deploy",
                &mut std::io::stdout(),
            );
            exit::OK
        }
    }
}

/// Runs the command line on the process's arguments.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match Cli::try_parse_from(&args) {
        Ok(cli) => {
            init_logging(cli.verbose);
            run(cli)
        }
        Err(e) => parse_error(e, wants_json(&args)),
    };
    ExitCode::from(code)
}
