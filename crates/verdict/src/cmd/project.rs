//! `verdict project`: the projector, the six monitors and the webhook deliverer as their
//! own process, on a shared store, writing PostgreSQL read models.
//!
//! One process is active at a time: it holds a PostgreSQL advisory lock on the connection
//! it writes through (see `verdict_readmodel_postgres`). Others stand by, trying the lock
//! every second. An active projector that loses its connection (and so its lock) exits with
//! status 1, for its supervisor to restart it as a standby.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use verdict_app::monitor::MonitorRunner;
use verdict_app::service::{CommandService, SystemClock};
use verdict_readmodel_postgres::{
    open_projections, run_projector, ProjectorOptions, ReadModelOptions, Writer, STANDBY_POLL,
};
use verdict_server::backend::{redact, StoreUrl};

/// Arguments of `verdict project`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Event store URL (`postgres://...` or `nats://...`), as given to `verdict serve`.
    #[arg(long, env = "VERDICT_STORE")]
    pub store: Option<String>,
    /// PostgreSQL read models to write (`postgres://...[?schema=verdict_rm]`).
    #[arg(long, env = "VERDICT_READ_MODELS")]
    pub read_models: Option<String>,
    /// Configuration file (default: ./verdict.toml when present): `store`, `read_models`,
    /// `[models]` (the monitors' guardrail stop needs the experiments' models) and `webhooks`.
    #[arg(long, env = "VERDICT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the webhook deliverer's checkpoint.
    #[arg(long, env = "VERDICT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Monitors run after every projected batch and at least this often (ms).
    #[arg(long, default_value_t = 5000)]
    pub monitor_every_ms: u64,
    /// Save the whole projector state as the snapshot row at least this often (s).
    #[arg(long, default_value_t = 30)]
    pub snapshot_every_s: u64,
}

/// Runs `verdict project` until SIGTERM or Ctrl-C, or until it loses its lock.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    super::raise_open_file_limit();
    let file = super::serve::file_config(args.config.as_ref())?;
    let Some(store_url) = args.store.clone().or(file.store().map(str::to_owned)) else {
        bail!("verdict project needs --store (postgres://... or nats://...), VERDICT_STORE or `store` in verdict.toml");
    };
    let store_url = StoreUrl::parse(&store_url)?;
    if !store_url.is_shared() {
        bail!("verdict project needs a shared store (postgres://... or nats://...): the embedded log belongs to one `verdict serve` process");
    }
    let Some(rm_url) = args
        .read_models
        .clone()
        .or(file.read_models().map(str::to_owned))
    else {
        bail!("verdict project needs --read-models postgres://..., VERDICT_READ_MODELS or `read_models` in verdict.toml");
    };
    let rm = ReadModelOptions::parse(&rm_url).context("--read-models")?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir().cloned())
        .unwrap_or_else(|| PathBuf::from("verdict-data"));
    let mut registry = verdict_serve::Registry::with_defaults();
    for (name, uri) in file.models() {
        registry.register(name, uri);
    }
    let webhooks = file.webhooks().to_vec();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(async move {
            super::serve::shutdown_signal().await;
            let _ = shutdown.send(true);
        });
        let store = store_url
            .open(&data_dir, Duration::ZERO)
            .await
            .context("opening the event store")?;
        // Stand by until this process holds the lock.
        let writer = loop {
            if *rx.borrow() {
                return Ok(ExitCode::SUCCESS);
            }
            match Writer::connect(rm.clone()).await {
                Ok(w) => match w.try_lock().await {
                    Ok(true) => break w,
                    Ok(false) => {
                        tracing::info!(read_models = %redact(&rm.url), schema = %rm.schema, "another projector is active: standing by");
                        // Keep the connection (and retry on it) rather than reconnecting.
                        let mut w = w;
                        loop {
                            let mut stop = rx.clone();
                            tokio::select! {
                                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return Ok(ExitCode::SUCCESS),
                                _ = tokio::time::sleep(STANDBY_POLL) => {}
                            }
                            match w.try_lock().await {
                                Ok(true) => break,
                                Ok(false) => continue,
                                Err(e) => {
                                    tracing::warn!(error = %e, "standby connection failed: reconnecting");
                                    match Writer::connect(rm.clone()).await {
                                        Ok(n) => w = n,
                                        Err(e) => {
                                            tracing::warn!(error = %e, "cannot reach the read-model database");
                                        }
                                    }
                                }
                            }
                        }
                        break w;
                    }
                    Err(e) => tracing::warn!(error = %e, "taking the projector lock"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot reach the read-model database"),
            }
            tokio::time::sleep(STANDBY_POLL).await;
        };
        let (projections, checkpoint) = open_projections(&writer, &*store).await?;
        tracing::info!(
            backend = store_url.backend(),
            snapshot = projections.position(),
            checkpoint,
            "projector lock taken: projecting into PostgreSQL read models"
        );
        eprintln!(
            "verdict project: active (store: {}, read models: schema {})",
            store_url.backend(),
            rm.schema
        );
        // The store may be failing over right now (a standby takes over when the active
        // projector died, possibly for the same reason): retry for a minute.
        let mut attempts = 0;
        let (rebuilt_from, commands) = loop {
            let opened = async {
                let head = store.head().await?;
                let commands =
                    CommandService::open(store.clone(), registry.clone(), Arc::new(SystemClock))
                        .await?;
                anyhow::Ok((head, commands))
            };
            match opened.await {
                Ok((head, commands)) => break (head, Arc::new(commands)),
                Err(e) if attempts < 60 => {
                    attempts += 1;
                    tracing::warn!(error = %e, "rebuilding the command side for the monitors: retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    return Err(e.context("rebuilding the command side for the monitors"))
                }
            }
        };
        // No HTTP here: failures are logged the moment they happen and retried.
        let health = verdict_app::health::Health::new();
        let follower = tokio::spawn(commands.clone().follow(
            rebuilt_from + 1,
            health.clone(),
            rx.clone(),
        ));
        let runner = Arc::new(
            MonitorRunner::new(commands, projections.clone(), Arc::new(SystemClock))
                .with_health(health.clone()),
        );
        let monitors = tokio::spawn(runner.run(
            Duration::from_millis(args.monitor_every_ms),
            Duration::from_millis(200),
            rx.clone(),
        ));
        let deliveries = tokio::spawn(verdict_server::webhooks::run(
            store.clone(),
            webhooks,
            data_dir,
            verdict_server::webhooks::Backoff::default(),
            health,
            rx.clone(),
        ));
        let options = ProjectorOptions {
            snapshot_every: Duration::from_secs(args.snapshot_every_s),
            ..ProjectorOptions::default()
        };
        let result = run_projector(
            store.clone(),
            projections,
            writer,
            checkpoint,
            options,
            rx.clone(),
        )
        .await;
        monitors.abort();
        deliveries.abort();
        follower.abort();
        let _ = store.close().await;
        match result {
            Ok(()) => {
                eprintln!("verdict project: stopped (final snapshot committed)");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                tracing::error!(error = %e, "projector stopped: lock or database lost");
                eprintln!("verdict project: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}
