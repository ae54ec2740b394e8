//! `verdict bench`: workloads for benchmarks that would take too long through HTTP.
//!
//! `verdict bench log --data-dir D --events N` writes an embedded log of N events shaped like
//! the demo's traffic (exp-001, rec-v1 vs rec-v2: exposures, predictions with their inputs
//! and outputs, interactions, conversions), so `verdict replay --data-dir D` can be measured
//! on ten million events. Deterministic for a seed; events are encoded by the same codec the
//! server uses and appended through the `EventStore` trait in large batches.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use verdict_core::event::{
    lifecycle_stream, traffic_stream, ConversionRecorded, ExperimentCreated, Lifecycle, Metadata,
    PredictionMade, UserAssigned, UserInteracted,
};
use verdict_core::{Event, ExperimentSpec};
use verdict_store::{EventStore, ExpectedVersion};

/// Arguments of `verdict bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Write a log of simulated traffic for replay benchmarks.
    Log(LogArgs),
}

/// Arguments of `verdict bench log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Data directory to create (must not hold a log yet).
    #[arg(long)]
    data_dir: PathBuf,
    /// Events to write.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Distinct users (each gets an exposure, then predictions and outcomes).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `verdict bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Log(a) => log(a),
    }
}

/// SplitMix64: a tiny seeded generator, enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const T0: i64 = 1_790_000_000_000_000; // 2026-09-21, microseconds
const SPAN_MICROS: i64 = 14 * 24 * 3_600_000_000; // two weeks of traffic

fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    if args.users == 0 || args.events < 2 + args.users {
        bail!("--events must be at least --users + 2");
    }
    let dir = verdict_store_log::log_dir(&args.data_dir);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} already holds a log", dir.display());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store =
            verdict_store_log::LogStore::open(&dir, verdict_store_log::LogOptions::default())
                .with_context(|| format!("opening {}", dir.display()))?;
        let definition = ExperimentSpec::from_json(json!({
            "experiment_id": "exp-001",
            "name": "recommendation-model-v2",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "traffic_split": {"control": 50, "treatment": 50},
        }))
        .and_then(ExperimentSpec::validate)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut rng = Rng(args.seed);
        let mut id = || uuid::Uuid::from_u128(u128::from(rng.next()) << 64 | 0x7000);
        let lifecycle = [
            Event::ExperimentCreated(ExperimentCreated { definition }),
            Event::ExperimentStarted(Lifecycle {
                experiment_id: "exp-001".into(),
                reason: None,
            }),
        ];
        let data = lifecycle
            .iter()
            .map(|e| verdict_app::codec::encode(e, id(), T0, &Metadata::default()))
            .collect();
        store
            .append(
                &lifecycle_stream("exp-001"),
                ExpectedVersion::NoStream,
                data,
            )
            .await?;

        let bar = ProgressBar::new(args.events);
        bar.set_style(
            ProgressStyle::with_template("writing {bar:40} {pos}/{len} events {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let stream = traffic_stream("exp-001");
        let traffic = args.events - 2;
        // Every user gets an exposure; the rest is spread over users as predictions (70 %),
        // interactions (20 %) and conversions (10 %).
        let per_user = traffic as f64 / args.users as f64;
        let mut rng = Rng(args.seed ^ 0x5EED);
        let mut written = 0u64;
        let mut batch = Vec::with_capacity(8192);
        let mut user = 0u64;
        while written < traffic {
            let u = user % args.users;
            user += 1;
            let user_id = format!("user-{u}");
            let treatment = rng.next() & 1 == 1;
            let (variant, model) = if treatment {
                ("treatment", "rec-v2")
            } else {
                ("control", "rec-v1")
            };
            let at = T0 + (u as f64 / args.users as f64 * SPAN_MICROS as f64) as i64;
            let mut events = Vec::new();
            if user <= args.users {
                events.push(Event::UserAssigned(UserAssigned {
                    experiment_id: "exp-001".into(),
                    user_id: user_id.clone(),
                    variant: variant.into(),
                    model: model.into(),
                    bucket: Some(rng.unit()),
                    experiment_version: 2,
                    reason: "hashed".into(),
                }));
            }
            let more = (per_user - 1.0).max(0.0);
            let n = more.floor() as u64 + u64::from(rng.unit() < more.fract());
            for _ in 0..n {
                let r = rng.unit();
                events.push(if r < 0.7 {
                    let items: Vec<u64> = (0..5).map(|_| rng.next() % 1000).collect();
                    Event::PredictionMade(PredictionMade {
                        experiment_id: "exp-001".into(),
                        user_id: user_id.clone(),
                        variant: variant.into(),
                        model: model.into(),
                        model_version: format!("{model}@1"),
                        prediction_id: id(),
                        input: json!({"user_id": user_id, "context": "homepage"}),
                        output: json!({"items": items}),
                        latency_ms: 20.0 + rng.unit() * if treatment { 30.0 } else { 25.0 },
                        model_ms: None,
                        shadow: false,
                        comparison: None,
                    })
                } else if r < 0.9 {
                    Event::UserInteracted(UserInteracted {
                        experiment_id: "exp-001".into(),
                        user_id: user_id.clone(),
                        action: "click".into(),
                        item_id: Some((rng.next() % 1000).to_string()),
                        variant: Some(variant.into()),
                    })
                } else {
                    Event::ConversionRecorded(ConversionRecorded {
                        experiment_id: "exp-001".into(),
                        user_id: user_id.clone(),
                        conversion_type: "purchase".into(),
                        amount: (rng.unit() * 100.0 * 100.0).round() / 100.0,
                        variant: Some(variant.into()),
                    })
                });
            }
            for e in events.into_iter().take((traffic - written) as usize) {
                batch.push(verdict_app::codec::encode(
                    &e,
                    id(),
                    at,
                    &Metadata::default(),
                ));
                written += 1;
            }
            if batch.len() >= 8192 || written == traffic {
                let data = std::mem::replace(&mut batch, Vec::with_capacity(8192));
                store.append(&stream, ExpectedVersion::Any, data).await?;
                bar.set_position(written + 2);
            }
        }
        bar.finish_and_clear();
        let head = store.head().await?;
        store.close().await?;
        println!(
            "wrote {head} events ({} users) in {:.1}s to {}",
            args.users.min(user),
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
