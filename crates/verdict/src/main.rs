//! The `verdict` binary: one subcommand per file under `cmd/`.
//!
//! Only this crate reads the environment and maps errors to exit codes.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: requests allocate on one thread and free on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("verdict: {err:#}");
            ExitCode::from(2)
        }
    }
}
