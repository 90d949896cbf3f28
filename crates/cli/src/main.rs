//! `slotbox`: the command line over the slotbox crates.
//!
//! Each subcommand has an args struct (clap derive; doc comments are the help text) and a `run`
//! function. Data goes to stdout, diagnostics to stderr. Exit codes are listed in `ExitStatus`.

mod bench;
mod bench_pool;
mod bench_rollout;
mod bench_serve;
mod config;
mod env_vars;
mod exec;
mod rollout;
mod serve;
mod up;

use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;

/// slotbox: isolated shell sessions for LLM agents and RL rollouts.
#[derive(Debug, Parser)]
#[command(name = "slotbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one command in a backend and print its output; exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Serve slots over HTTP: the seed-compatible API and the v1 lease API.
    Serve(serve::ServeArgs),
    /// Run the slot pool: one v1 lease endpoint over sandbox servers a scheduler supplies.
    Up(up::UpArgs),
    /// Run tasks through the agent loop against an OpenAI-compatible model, each in a leased slot.
    Rollout(rollout::RolloutArgs),
    /// Internal: the agent inside a long-lived slot sandbox (started by `slotbox serve`).
    #[command(name = "__sandbox-agent", hide = true)]
    SandboxAgent,
    /// Measure slotbox against its floors (prints a table; not a test).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// What the `slotbox` process itself exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    /// The command ran; pass its exit code through (124 timeout, 130 interrupt).
    Command(i32),
    /// slotbox could not run the command (bad setup, sandbox unavailable); like `docker run`'s 125.
    SlotboxError,
}

impl ExitStatus {
    fn code(self) -> ExitCode {
        match self {
            // Exit codes are 0..=255 on Unix; the shell's own codes always fit.
            ExitStatus::Command(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
            ExitStatus::SlotboxError => ExitCode::from(125),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::SandboxAgent) {
        // Inside the sandbox, on its own small runtime, with nothing else of the CLI.
        return match slotbox_exec::agent::run_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => report(&anyhow::Error::new(error).context("sandbox agent")),
        };
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return report(&anyhow::Error::new(error).context("starting the async runtime"));
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Rollout(args) => rollout::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::SandboxAgent => Ok(ExitStatus::Command(0)),
        }
    });
    match result {
        Ok(status) => status.code(),
        Err(error) => report(&error),
    }
}

#[allow(clippy::print_stderr)]
fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("slotbox: error: {error:#}");
    ExitStatus::SlotboxError.code()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::SLOTBOX_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
