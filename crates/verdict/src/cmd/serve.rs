//! `verdict serve`: the whole system in one process on the embedded log, or one of
//! several stateless nodes on a shared store (`--store postgres://...|nats://...`) whose
//! queries read PostgreSQL read models written by `verdict project`
//! (`--read-models postgres://...`).
//!
//! Configuration comes in layers: `verdict.toml` (or `--config`), then `VERDICT_*`
//! environment variables, then flags; the later wins.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use verdict_server::auth::ApiKey;
use verdict_server::ServerConfig;

/// Arguments of `verdict serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory of the event log and projection snapshots.
    #[arg(long, env = "VERDICT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "VERDICT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Configuration file (default: ./verdict.toml when present).
    #[arg(long, env = "VERDICT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "VERDICT_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Spin a core up to this many ms during each log fsync (for VMs whose idle vCPUs
    /// notice I/O completions late; 0 = off).
    #[arg(long, env = "VERDICT_FSYNC_SPIN_MS")]
    pub fsync_spin_ms: Option<u64>,
    /// Event store URL: `postgres://...`, `nats://h1:4222,h2:4222?replicas=3`, or `log:[DIR]`
    /// (default: the embedded log in the data directory).
    #[arg(long, env = "VERDICT_STORE")]
    pub store: Option<String>,
    /// PostgreSQL read models written by `verdict project` (`postgres://...[?schema=verdict_rm]`):
    /// this node then neither projects nor runs monitors, and answers queries from them.
    #[arg(long, env = "VERDICT_READ_MODELS")]
    pub read_models: Option<String>,
    /// Allow listening beyond loopback without API keys.
    #[arg(long, env = "VERDICT_ALLOW_PUBLIC")]
    pub allow_public: bool,
    /// Threads that run in-process (ONNX) models (default: half the cores, at least 1).
    #[arg(long, env = "VERDICT_INFERENCE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub inference_threads: Option<u16>,
    /// Async worker threads: HTTP, routing, upstream calls, appends (default: one per core).
    /// Fewer cuts latency at low load (each hand-off between workers wakes an idle core) and
    /// throughput under load; see docs/BENCHMARKS.md, "Proxy overhead".
    #[arg(long, env = "VERDICT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// `verdict.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    body_limit: Option<usize>,
    query_wait_ms: Option<u64>,
    allow_public: Option<bool>,
    #[serde(default)]
    models: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    api_keys: Vec<ApiKey>,
    #[serde(default)]
    webhooks: Vec<String>,
    fsync_spin_ms: Option<u64>,
    store: Option<String>,
    read_models: Option<String>,
    inference_threads: Option<u16>,
    worker_threads: Option<u16>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    shutdown_grace_ms: Option<u64>,
}

/// Reads `verdict.toml` (or `config`), empty when there is none.
pub fn file_config(config: Option<&PathBuf>) -> anyhow::Result<FileConfig> {
    let path = config.cloned().or_else(|| {
        let default = PathBuf::from("verdict.toml");
        default.exists().then_some(default)
    });
    Ok(match &path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => FileConfig::default(),
    })
}

impl FileConfig {
    /// `store = "..."`.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }
    /// `read_models = "..."`.
    pub fn read_models(&self) -> Option<&str> {
        self.read_models.as_deref()
    }
    /// `data_dir = "..."`.
    pub fn data_dir(&self) -> Option<&PathBuf> {
        self.data_dir.as_ref()
    }
    /// `[models]`.
    pub fn models(&self) -> impl Iterator<Item = (&String, &String)> {
        self.models.iter()
    }
    /// `webhooks = [...]`.
    pub fn webhooks(&self) -> &[String] {
        &self.webhooks
    }
}

/// The validated configuration: where to listen and how to serve.
pub fn resolve(args: &Args) -> anyhow::Result<(SocketAddr, ServerConfig, Option<usize>)> {
    let file = file_config(args.config.as_ref())?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("verdict-data"));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let allow_public = args.allow_public || file.allow_public.unwrap_or(false);
    check_exposure(listen, file.api_keys.is_empty(), allow_public)?;
    verdict_server::auth::validate_keys(&file.api_keys).map_err(anyhow::Error::msg)?;
    let mut config = ServerConfig::new(data_dir);
    config.allow_public = allow_public;
    let limits = &mut config.limits;
    if let Some(ms) = file.header_timeout_ms {
        limits.header_read = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = file.body_timeout_ms {
        limits.body_read = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = file.shutdown_grace_ms {
        limits.shutdown_grace = Duration::from_millis(ms);
    }
    limits.max_connections = match file.max_connections {
        Some(0) => bail!("max_connections must be at least 1"),
        Some(n) => n,
        None => default_max_connections(),
    };
    if let Some(limit) = args.body_limit.or(file.body_limit) {
        config.body_limit = limit;
    }
    if let Some(ms) = file.query_wait_ms {
        config.query_wait = Duration::from_millis(ms);
    }
    if let Some(url) = args.store.clone().or(file.store) {
        config.store = verdict_server::backend::StoreUrl::parse(&url)?;
        config.follow_store = config.store.is_shared();
    }
    if let Some(url) = args.read_models.clone().or(file.read_models) {
        if !config.store.is_shared() {
            bail!("--read-models needs a shared --store (postgres://... or nats://...): a `verdict project` process must read the same events");
        }
        config.read_models = Some(
            verdict_readmodel_postgres::ReadModelOptions::parse(&url).context("--read-models")?,
        );
    }
    config.api_keys = file.api_keys;
    config.webhooks = file.webhooks;
    if let Some(ms) = args.fsync_spin_ms.or(file.fsync_spin_ms) {
        config.fsync_spin = Duration::from_millis(ms);
    }
    config.models = file.models.into_iter().collect();
    match args.inference_threads.or(file.inference_threads) {
        Some(0) => bail!("inference_threads must be at least 1"),
        Some(n) => config.inference_threads = Some(usize::from(n)),
        None => {}
    }
    let workers = match args.worker_threads.or(file.worker_threads) {
        Some(0) => bail!("worker_threads must be at least 1"),
        n => n.map(usize::from),
    };
    Ok((listen, config, workers))
}

/// Without API keys only loopback is served, unless the operator says otherwise
/// (`serve` and `demo` alike).
pub(crate) fn check_exposure(
    listen: SocketAddr,
    no_keys: bool,
    allow_public: bool,
) -> anyhow::Result<()> {
    if no_keys && !listen.ip().is_loopback() && !allow_public {
        bail!("refusing to listen on {listen} without API keys: configure [[api_keys]] in verdict.toml, listen on loopback, or pass --allow-public");
    }
    Ok(())
}

/// Connections served at once by default: at most 1,024, and at most half the open-file
/// limit, so idle sockets can never take the descriptors the log, snapshots and model
/// servers need (EMFILE).
fn default_max_connections() -> usize {
    let files = super::open_file_limit().unwrap_or(1024);
    (files / 2).clamp(16, 1024) as usize
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The async runtime of `verdict serve`, with `workers` worker threads.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// One async worker per core, as tokio's default.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `verdict serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    super::raise_open_file_limit();
    let (listen, config, workers) = resolve(&args)?;
    let rt = runtime(workers.unwrap_or_else(default_workers))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let data_dir = config.data_dir.clone();
        let backend = config.store.backend();
        let read_models = config.read_models.is_some();
        if config.store.is_shared() && !read_models {
            tracing::warn!("shared store without --read-models: this node projects and runs the monitors itself; run one such node, or `verdict project` with --read-models on every node");
        }
        let server = verdict_server::start(config, listener).await?;
        tracing::info!(addr = %server.addr, data_dir = %data_dir.display(), backend, read_models, "verdict serving");
        eprintln!(
            "verdict serving on http://{} (store: {backend}; data in {}{})",
            server.addr,
            data_dir.display(),
            if read_models { "; queries from PostgreSQL read models" } else { "" }
        );
        shutdown_signal().await;
        eprintln!("verdict: shutting down (flushing and checkpointing)");
        server.shutdown().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
