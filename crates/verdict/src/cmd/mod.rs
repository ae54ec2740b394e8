//! Subcommands of the `verdict` CLI, one module each (as mini-redis `src/cmd`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod analyze;
mod assign;
mod store;

/// A/B testing for ML models, built on CQRS and event sourcing.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Assign users to variants: NDJSON in on stdin, NDJSON out on stdout.
    Assign(assign::Args),
    /// Analyse an experiment: summary statistics JSON on stdin, results JSON on stdout.
    Analyze(analyze::Args),
    /// Check or repair the embedded event log (offline).
    Store(store::Args),
}

/// Runs the parsed command line; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Assign(args) => assign::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Store(args) => store::run(args),
    }
}
