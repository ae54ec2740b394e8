//! `verdict replay`: rebuilds the projections from position zero, with a progress bar
//! and the rate, and replaces the snapshot atomically. Run it with the server stopped.
//!
//! With `--store URL` it reads a shared store (PostgreSQL, JetStream) instead of the
//! embedded log, which may be live; `--results ID` prints that experiment's `/results`
//! JSON computed from the fresh replay (and writes no snapshot): the reference the
//! cluster test compares a serving node's answer with.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use verdict_app::projector::{self, Projections};
use verdict_store::EventStore;

/// Arguments of `verdict replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the server.
    #[arg(long, env = "VERDICT_DATA_DIR", default_value = "verdict-data")]
    pub data_dir: PathBuf,
    /// Event store URL (`postgres://...`, `nats://...`); default the embedded log.
    #[arg(long, env = "VERDICT_STORE")]
    pub store: Option<String>,
    /// Print this experiment's results (JSON) from the replay instead of saving a snapshot.
    #[arg(long)]
    pub results: Option<String>,
}

/// Runs `verdict replay`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store: Arc<dyn EventStore> = match &args.store {
            Some(url) => verdict_server::backend::StoreUrl::parse(url)?
                .open(&args.data_dir, std::time::Duration::ZERO)
                .await?,
            None => {
                let dir = verdict_store_log::log_dir(&args.data_dir);
                let log = verdict_store_log::LogStore::open(
                    &dir,
                    verdict_store_log::LogOptions::default(),
                )
                .with_context(|| format!("opening {} (is a server running on it?)", dir.display()))?;
                Arc::new(log)
            }
        };
        let bar = if args.results.is_some() {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "replaying {bar:40} {pos}/{len} events {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let model = projector::replay(store.as_ref(), |pos, head| {
            bar.set_length(head);
            bar.set_position(pos);
        })
        .await?;
        bar.finish_and_clear();
        let elapsed = started.elapsed().as_secs_f64();
        let events = model.position;
        if let Some(id) = &args.results {
            let results = verdict_app::queries::results(&model, id)?;
            store.close().await?;
            println!("{}", serde_json::to_string_pretty(&results)?);
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let snapshot = args.data_dir.join("projections.json");
        let projections = Projections::new(model, Some(snapshot.clone()));
        projections.save().await?;
        store.close().await?;
        println!(
            "replayed {events} events in {elapsed:.2}s ({:.0} events/s); peak memory {}; snapshot {}",
            events as f64 / elapsed.max(1e-9),
            peak_memory().unwrap_or_else(|| "unknown".into()),
            snapshot.display()
        );
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The process's peak resident set (Linux `VmHWM`), e.g. `812 MiB`.
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(format!("{} MiB", kib / 1024))
}
