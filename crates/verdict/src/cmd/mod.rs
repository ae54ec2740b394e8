//! Subcommands of the `verdict` CLI, one module each (as mini-redis `src/cmd`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod analyze;
mod assign;
mod bench;
mod demo;
mod project;
mod replay;
mod results;
mod serve;
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
    /// Serve the API, projections and dashboard (embedded log, PostgreSQL or JetStream).
    Serve(serve::Args),
    /// Run a whole experiment on simulated traffic through the real server.
    Demo(demo::Args),
    /// Print an experiment's results from a running server.
    Results(results::Args),
    /// Rebuild the projections from the log (server stopped), or print one experiment's
    /// results computed from a fresh replay of any store.
    Replay(replay::Args),
    /// Run the projector and monitors as their own process, into PostgreSQL read models
    /// (one active at a time; others stand by).
    Project(project::Args),
    /// Benchmark workloads (e.g. a ten-million-event log for `verdict replay`).
    Bench(bench::Args),
}

/// Runs the parsed command line; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Assign(args) => assign::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Store(args) => store::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Results(args) => results::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Project(args) => project::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// The soft limit on open files (`RLIMIT_NOFILE`), if known.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard one where the OS allows, and logs the
/// figure: every connection, segment and snapshot write takes a descriptor, and running
/// out (EMFILE) fails them all.
pub fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    let now = if raised.current != limit.current && setrlimit(Resource::Nofile, raised).is_ok() {
        getrlimit(Resource::Nofile).current
    } else {
        limit.current
    };
    tracing::info!(
        soft = now.map_or("unlimited".to_owned(), |n| n.to_string()),
        was = limit
            .current
            .map_or("unlimited".to_owned(), |n| n.to_string()),
        hard = limit
            .maximum
            .map_or("unlimited".to_owned(), |n| n.to_string()),
        "open-file limit"
    );
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info` for verdict's crates).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,verdict=info,verdict_server=info,verdict_app=info,verdict_readmodel_postgres=info,verdict_store_log=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
