//! `verdict store check|repair`: inspect and repair the embedded event log offline.
//!
//! `check` validates every record and reports; it changes nothing. `repair` makes a log
//! that refuses to open (damage before its tail) openable again by truncating at the last
//! complete batch before the damage, after copying every file it changes into a backup
//! directory beside the segments. Both refuse to run while a server has the log open.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use verdict_store_log::{recovery, RepairOutcome, Status};

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
        Action::Repair(dir) => repair(&verdict_store_log::log_dir(&dir.data_dir)),
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
    match &report.status {
        Status::Clean => {
            println!("status: clean");
            Ok(ExitCode::SUCCESS)
        }
        Status::TornTail {
            segment,
            truncate_at,
            discarded,
            ..
        } => {
            println!(
                "status: torn tail in {} at offset {truncate_at} ({discarded} bytes of an unacknowledged write); \
                 opening the store truncates it",
                segment.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::Corrupt {
            segment,
            offset,
            truncate_at,
            reason,
        } => {
            println!(
                "status: CORRUPT in {} at offset {offset}: {reason}",
                segment.display()
            );
            println!(
                "events after position {} are unreachable; `verdict store repair` truncates at offset {truncate_at} \
                 after a backup",
                report.head
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn repair(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "no event log at {}", dir.display());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let outcome = verdict_store_log::repair(dir, &stamp)
        .with_context(|| format!("repairing {}", dir.display()))?;
    match outcome {
        RepairOutcome::Clean => println!("log is clean; nothing to repair"),
        RepairOutcome::TruncatedTornTail { segment, len } => {
            println!(
                "truncated the torn tail of {} to {len} bytes",
                segment.display()
            )
        }
        RepairOutcome::TruncatedCorruption {
            segment,
            len,
            removed,
            backup,
            head,
        } => {
            println!(
                "truncated {} to {len} bytes at the damage",
                segment.display()
            );
            for p in removed {
                println!("removed later segment {}", p.display());
            }
            println!("originals backed up in {}", backup.display());
            println!("the log now ends at position {head}");
        }
    }
    let after = recovery::check(dir)?;
    anyhow::ensure!(
        after.status == Status::Clean,
        "log still not clean after repair: {:?}",
        after.status
    );
    Ok(ExitCode::SUCCESS)
}
