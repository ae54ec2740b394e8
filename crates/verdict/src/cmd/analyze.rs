//! `verdict analyze`: one JSON document of per-variant summary statistics on stdin, the full
//! analysis (the same one `/results` serves) as one JSON document on stdout.
//!
//! Malformed input is an error naming the field, with a non-zero exit; numbers that are
//! undefined for the data are `null` in the output, never an error.

use anyhow::Context;
use std::io::{Read, Write};
use std::process::ExitCode;
use verdict_stats::{analyze, AnalysisInput};

/// Arguments of `verdict analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pretty-print the output.
    #[arg(long)]
    pretty: bool,
}

/// Runs `verdict analyze`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).context("stdin is not a JSON document")?;
    let input = AnalysisInput::from_json(&doc).context("invalid analysis input")?;
    let output = analyze(&input);
    let mut out = std::io::stdout().lock();
    if args.pretty {
        serde_json::to_writer_pretty(&mut out, &output)?;
    } else {
        serde_json::to_writer(&mut out, &output)?;
    }
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
