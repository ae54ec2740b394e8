//! `verdict assign`: batch assignment for conformance and differential testing.

use std::process::ExitCode;

/// Arguments of `verdict assign`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `verdict assign`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("verdict assign: not built yet")
}
