//! The `triton-deploy` command line.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use triton_deploy::commands::{self, Format, Global};

/// Take a Triton model repository to a load-tested, autoscaled GPU service on Amazon ECS.
#[derive(Debug, Parser)]
#[command(name = "triton-deploy", version, about, propagate_version = true)]
struct Cli {
    /// Output format on stdout: human-readable text (`table` is the same), one JSON document, or
    /// (bench only) CSV with perf_analyzer's columns.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,

    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Never color the output (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long, global = true)]
    no_color: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    #[value(alias = "table")]
    Text,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint a model repository the way Triton would load it, before anything ships.
    Validate(commands::validate::ValidateArgs),
    /// Package a model repository as a tritonserver image and push it to ECR.
    Push(Box<commands::push::PushArgs>),
    /// Print the CloudFormation template, task definition or Terraform module of a deployment spec.
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("triton_deploy={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let color =
        !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let csv = cli.format == OutputFormat::Csv;
    if csv && !matches!(cli.command, Command::Bench(_)) {
        eprintln!("error: --format csv is for `bench`; the other commands print text or json");
        return ExitCode::from(commands::exit::USAGE as u8);
    }
    let global = Global {
        format: match cli.format {
            OutputFormat::Json => Format::Json,
            OutputFormat::Text | OutputFormat::Csv => Format::Text,
        },
        color,
        csv,
    };
    let code = match cli.command {
        Command::Validate(args) => commands::validate::run(args, global),
        Command::Push(args) => commands::push::run(*args, global),
        Command::Render(args) => commands::render::run(args, global),
        Command::Rollout(args) => commands::rollout::run(*args, global),
        Command::Status(args) => commands::status::run(args, global),
        Command::Rollback(args) => commands::rollback::run(args, global),
        Command::Destroy(args) => commands::destroy::run(args, global),
        Command::Logs(args) => commands::logs::run(args, global),
        Command::Bench(args) => commands::bench::run(*args, global),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "triton-deploy",
                &mut std::io::stdout(),
            );
            0
        }
    };
    ExitCode::from(code as u8)
}
