//! `verdict store check|repair`: inspect and repair the embedded event log offline.
//!
//! `check` validates every record and the segment chain and reports each problem (segment,
//! offset, kind); it changes nothing. `repair` makes a log that refuses to open openable
//! again where it safely can (stray files moved aside, damaged headers rewritten, damage cut
//! at the last complete batch before it), after saving every file it changes or removes in
//! a backup directory beside the segments, and moves the read-model snapshot there too.
//! Both refuse to run while a server has the log open.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use verdict_store_log::{recovery, Status};

/// The server's read-model snapshot in the data directory; `repair` moves it aside.
const PROJECTIONS_FILE: &str = "projections.json";

/// Arguments of `verdict store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Validate every record of the event log and report; exit 1 if it is corrupt.
    Check(DirArgs),
    /// Cut a corrupt log back to its last complete batch before the damage, after a backup.
    Repair(DirArgs),
}

#[derive(Debug, clap::Args)]
struct DirArgs {
    /// verdict's data directory; the log is its `events/` subdirectory.
    #[arg(long, env = "VERDICT_DATA_DIR")]
    data_dir: PathBuf,
}

/// Runs `verdict store`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Check(dir) => check(&verdict_store_log::log_dir(&dir.data_dir)),
        Action::Repair(dir) => repair(&dir.data_dir),
    }
}

fn check(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "no event log at {}", dir.display());
    let report =
        verdict_store_log::check_dir(dir).with_context(|| format!("checking {}", dir.display()))?;
    println!("log: {}", dir.display());
    for s in &report.segments {
        println!(
            "  {}  first position {}  {} records  {} of {} bytes valid",
            s.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            s.first_position,
            s.records,
            s.valid_len,
            s.file_len
        );
    }
    println!(
        "head position: {}  streams: {}",
        report.head, report.streams
    );
    if let Some(identity) = &report.identity {
        println!("identity: {identity}");
    }
    for p in &report.torn_rolls {
        println!(
            "note: {} is the header-only segment of an unfinished roll; opening removes it",
            p.display()
        );
    }
    for p in &report.problems {
        println!(
            "PROBLEM: {} in {} at offset {}: {}",
            p.kind,
            p.segment.display(),
            p.offset,
            p.detail
        );
    }
    match &report.status {
        Status::TornTail {
            segment,
            truncate_at,
            discarded,
            provable,
            ..
        } => {
            println!(
                "torn tail in {} at offset {truncate_at} ({discarded} bytes of a write that never completed); \
                 opening the store truncates it{}",
                segment.display(),
                if *provable {
                    ""
                } else {
                    " and, since it may have held acknowledged events, gives the log a new identity generation"
                }
            );
        }
        Status::Corrupt { truncate_at, .. } => println!(
            "events after position {} are unreachable; `verdict store repair` backs up and then \
             fixes what it safely can (a record damage is cut at offset {truncate_at})",
            report.head
        ),
        Status::Clean => {}
    }
    if report.opens() {
        println!(
            "status: {}",
            if report.status == Status::Clean {
                "clean"
            } else {
                "opens (torn tail)"
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "status: CORRUPT ({} problem(s)); the store refuses to open",
            report.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}

fn repair(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let dir = verdict_store_log::log_dir(data_dir);
    anyhow::ensure!(dir.is_dir(), "no event log at {}", dir.display());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let outcome = verdict_store_log::repair(&dir, &stamp)
        .with_context(|| format!("repairing {}", dir.display()))?;
    if outcome.is_clean() {
        println!("log is clean; nothing to repair");
        return Ok(ExitCode::SUCCESS);
    }
    for action in &outcome.actions {
        println!("{action}");
    }
    if let Some(backup) = &outcome.backup {
        println!(
            "originals of every changed or removed file are in {}",
            backup.display()
        );
        // The server's read-model snapshot may now be ahead of the log: move it aside, so
        // the next start rebuilds it from the log.
        let snapshot = data_dir.join(PROJECTIONS_FILE);
        if snapshot.exists() {
            let to = backup.join(PROJECTIONS_FILE);
            std::fs::rename(&snapshot, &to)
                .with_context(|| format!("moving {} into the backup", snapshot.display()))?;
            println!(
                "moved the read-model snapshot {} to {} (the server rebuilds it from the log)",
                snapshot.display(),
                to.display()
            );
        }
    }
    println!("the log now ends at position {}", outcome.head);
    if let Some(identity) = &outcome.identity {
        println!("log identity: {identity}");
    }
    let after = recovery::check(&dir)?;
    anyhow::ensure!(
        after.opens() && after.status == Status::Clean,
        "log still not clean after repair: {:?}",
        after.problems
    );
    Ok(ExitCode::SUCCESS)
}
