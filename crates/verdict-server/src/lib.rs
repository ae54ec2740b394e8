//! verdict's HTTP server: routes, auth, OpenAPI, and the one place a backend is chosen.
//!
//! [`start`] opens the store [`ServerConfig::store`] names (the embedded log in the data
//! directory by default, or PostgreSQL or JetStream, see [`backend`]), loads the
//! projections' snapshot, rebuilds the command side, starts the projector and serves the
//! API on a listener; [`Server::shutdown`] stops accepting, drains requests, saves a final
//! checkpoint and closes the store.
//!
//! With [`ServerConfig::read_models`] set, the node is one of several: it neither projects
//! nor runs monitors (a `verdict project` process does), its queries answer from the
//! PostgreSQL read-model tables through a follower
//! ([`verdict_readmodel_postgres::follow`]), and its command side follows the shared
//! store's tail ([`ServerConfig::follow_store`]).
//!
//! - [`api`]: the route table, handlers and the generated OpenAPI document.
//! - [`backend`]: the `--store` URL and the backend it opens.
//! - [`auth`]: API keys with roles.
//! - [`dashboard`]: the HTML dashboard with server-drawn SVG charts.
//! - [`error`]: HTTP error mapping.
//! - [`extract`]: extractors whose rejections name the field.
//! - [`guard`]: loopback-only Host, no cross-site writes, JSON bodies.
//! - [`listen`]: the accept loop: timeouts, connection limit, shutdown deadline.
//! - [`metrics`]: `GET /metrics` in the Prometheus text format.
//! - [`readiness`]: `GET /readyz` from the components' health.
//! - [`webhooks`]: at-least-once alert delivery to configured URLs.

pub mod api;
pub mod auth;
pub mod backend;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod guard;
pub mod listen;
pub mod metrics;
pub mod readiness;
pub mod webhooks;

use auth::ApiKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use verdict_app::health::supervise;
use verdict_app::monitor::{MonitorRunner, MONITOR_RUNNER};
use verdict_app::projector::{self, CheckpointPolicy, Projections};
use verdict_app::service::FOLLOWER;
use verdict_app::service::{Clock, CommandService, SystemClock};
use verdict_serve::Registry;
use verdict_store::EventStore;

/// Everything the server needs to know, already validated by the binary.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the event log and snapshots live.
    pub data_dir: PathBuf,
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Longest a query waits for `min_position`.
    pub query_wait: Duration,
    /// API keys; empty means no authentication.
    pub api_keys: Vec<ApiKey>,
    /// Model names to URIs, on top of the defaults.
    pub models: Vec<(String, String)>,
    /// How often projections are checkpointed.
    pub checkpoint: CheckpointPolicy,
    /// Monitors run after every projected batch and at least this often.
    pub monitor_every: Duration,
    /// URLs that receive every alert (POST JSON).
    pub webhooks: Vec<String>,
    /// Retry schedule of webhook deliveries.
    pub webhook_backoff: webhooks::Backoff,
    /// Keep a core busy up to this long during each log fsync (zero: off); see
    /// `verdict_store_log::LogOptions::spin_during_sync` — on VMs whose idle vCPUs halt,
    /// it turns ~4 ms fsync completions into ~0.2 ms.
    pub fsync_spin: Duration,
    /// The event store (default: the embedded log in `data_dir`).
    pub store: backend::StoreUrl,
    /// Read the projections from these PostgreSQL read-model tables instead of projecting
    /// (a `verdict project` process writes them); no monitors run on this node.
    pub read_models: Option<verdict_readmodel_postgres::ReadModelOptions>,
    /// Follow the store's tail on the command side (other nodes append to it too); on by
    /// default for shared stores.
    pub follow_store: bool,
    /// How often the read-model follower polls the checkpoint.
    pub read_model_poll: Duration,
    /// Threads that run in-process (ONNX) models; `None`: the process-wide pool, sized by
    /// `verdict_serve::onnx::InferencePool::default_threads`.
    pub inference_threads: Option<usize>,
    /// Timeouts and the connection limit of the HTTP listener.
    pub limits: listen::HttpLimits,
    /// Without API keys, answer requests for any `Host` (the operator chose to serve
    /// beyond loopback without keys); otherwise only loopback names ([`guard`]).
    pub allow_public: bool,
}

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            body_limit: 1 << 20,
            query_wait: api::DEFAULT_QUERY_WAIT,
            api_keys: Vec::new(),
            models: Vec::new(),
            checkpoint: CheckpointPolicy::default(),
            monitor_every: Duration::from_secs(5),
            webhooks: Vec::new(),
            webhook_backoff: webhooks::Backoff::default(),
            fsync_spin: Duration::ZERO,
            store: backend::StoreUrl::Log(None),
            read_models: None,
            follow_store: false,
            read_model_poll: Duration::from_millis(50),
            inference_threads: None,
            limits: listen::HttpLimits::default(),
            allow_public: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The event store could not be opened.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The read models could not be loaded.
    #[error(transparent)]
    ReadModels(#[from] verdict_readmodel_postgres::ReadModelError),
    /// The event log could not be opened.
    #[error("opening the event log in {path}: {message}")]
    Store {
        /// Its directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Projections could not be loaded.
    #[error(transparent)]
    Projections(#[from] verdict_app::projector::ProjectionError),
    /// The command side could not be rebuilt.
    #[error("rebuilding the command side: {0}")]
    App(#[from] verdict_app::AppError),
    /// Binding or serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is unsafe or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The command side.
    pub commands: Arc<CommandService>,
    /// The read side.
    pub projections: Arc<Projections>,
    /// The event store (instrumented).
    pub store: Arc<dyn EventStore>,
    /// Append measurements of the store.
    pub store_stats: Arc<verdict_app::instrument::StoreStats>,
    /// Configuration.
    pub config: ServerConfig,
    /// Health of the background tasks (`/readyz`, `verdict_component_up`).
    pub health: verdict_app::health::Health,
    /// The token the dashboard's forms carry (random per process).
    pub csrf: String,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("commands", &self.commands)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state over a store (the projections start from `projections`).
    pub async fn new(
        store: Arc<dyn EventStore>,
        projections: Arc<Projections>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let mut registry = Registry::with_defaults();
        if let Some(threads) = config.inference_threads {
            registry = registry.with_pool(verdict_serve::onnx::InferencePool::with_threads(Some(
                threads,
            )));
        }
        for (name, uri) in &config.models {
            registry.register(name, uri);
        }
        // Every append, whoever makes it, is measured for /metrics.
        let instrumented = verdict_app::instrument::Instrumented::new(store);
        let store_stats = instrumented.stats.clone();
        let store: Arc<dyn EventStore> = Arc::new(instrumented);
        let commands = Arc::new(CommandService::open(store.clone(), registry, clock).await?);
        Ok(Self(Arc::new(Inner {
            commands,
            projections,
            store,
            store_stats,
            config,
            health: verdict_app::health::Health::new(),
            // Two v7 ids: 148 random bits (the timestamps add none).
            csrf: format!(
                "{}{}",
                uuid::Uuid::now_v7().simple(),
                uuid::Uuid::now_v7().simple()
            ),
        })))
    }
}

/// The routes with everything in front of them: the door checks ([`guard`]), then the
/// body read within its deadline and limit ([`listen::read_body`]).
pub fn app(state: AppState) -> axum::Router {
    let (body_read, body_limit) = (state.config.limits.body_read, state.config.body_limit);
    let keys: Arc<[auth::ApiKey]> = state.config.api_keys.clone().into();
    api::router(state.clone())
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            listen::read_body(body_read, body_limit, keys.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn_with_state(state, guard::guard))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

/// A handler's panic (a bug) as the API's JSON error, logged; the server goes on.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    tracing::error!(panic = %message, "a request handler panicked");
    axum::response::IntoResponse::into_response(error::ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed on this request (a bug; it is logged); the request may be retried",
    ))
}

/// A running server.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    projector: tokio::task::JoinHandle<Result<(), verdict_app::projector::ProjectionError>>,
    monitors: tokio::task::JoinHandle<()>,
    deliveries: tokio::task::JoinHandle<()>,
    follower: Option<tokio::task::JoinHandle<()>>,
    store: Arc<dyn EventStore>,
    /// Handler state (for in-process callers such as the demo).
    pub state: AppState,
}

/// Opens the store `config.store` names (by default the embedded log in
/// `config.data_dir`) and serves on `listener`.
pub async fn start(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
) -> Result<Server, ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = config
        .store
        .open(&config.data_dir, config.fsync_spin)
        .await?;
    start_with_store(config, store, listener).await
}

/// Serves over any store (tests use the in-memory one).
pub async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn EventStore>,
    listener: tokio::net::TcpListener,
) -> Result<Server, ServerError> {
    auth::validate_keys(&config.api_keys).map_err(ServerError::Config)?;
    let projections = match &config.read_models {
        Some(options) => {
            let mut reader = verdict_readmodel_postgres::Reader::connect(options).await?;
            verdict_readmodel_postgres::load_projections(&mut reader).await?
        }
        None => Projections::load_for(&config.data_dir.join("projections.json"), &*store).await?,
    };
    // The command side rebuilds from the log up to at least this head; its follower
    // (shared stores) goes on from there.
    let rebuilt_from = store
        .head()
        .await
        .map_err(|e| ServerError::App(verdict_app::AppError::Unavailable(e.to_string())))?;
    let state = AppState::new(
        store.clone(),
        projections.clone(),
        config.clone(),
        Arc::new(SystemClock),
    )
    .await?;
    let (shutdown, rx) = watch::channel(false);
    let health = state.health.clone();
    let follower = (config.follow_store || config.read_models.is_some()).then(|| {
        let (commands, health, stop) = (state.commands.clone(), health.clone(), rx.clone());
        tokio::spawn(supervise(FOLLOWER, health.clone(), rx.clone(), move || {
            // After a panic, on from where it got to (applying again is idempotent).
            let from = commands.followed().map_or(rebuilt_from + 1, |p| p + 1);
            let task = commands.clone().follow(from, health.clone(), stop.clone());
            async move {
                task.await;
                Ok(())
            }
        }))
    });
    let (projector, monitors, deliveries) = match &config.read_models {
        Some(options) => {
            // Another process projects, runs the monitors and delivers webhooks.
            let (options, projections, poll) =
                (options.clone(), projections.clone(), config.read_model_poll);
            let (h, stop) = (health.clone(), rx.clone());
            let follower = tokio::spawn(supervise(
                verdict_readmodel_postgres::READ_MODEL_FOLLOWER,
                health.clone(),
                rx.clone(),
                move || {
                    let task = verdict_readmodel_postgres::follow(
                        options.clone(),
                        projections.clone(),
                        poll,
                        h.clone(),
                        stop.clone(),
                    );
                    async move {
                        task.await;
                        Ok(())
                    }
                },
            ));
            let projector = tokio::spawn(async move {
                let _ = follower.await;
                Ok(())
            });
            (projector, tokio::spawn(async {}), tokio::spawn(async {}))
        }
        None => {
            let projector = tokio::spawn(projector::run(
                store.clone(),
                projections.clone(),
                config.checkpoint,
                health.clone(),
                rx.clone(),
            ));
            let runner = Arc::new(
                MonitorRunner::new(state.commands.clone(), projections, Arc::new(SystemClock))
                    .with_health(health.clone()),
            );
            let (every, stop) = (config.monitor_every, rx.clone());
            let monitors = tokio::spawn(supervise(
                MONITOR_RUNNER,
                health.clone(),
                rx.clone(),
                move || {
                    let task = runner
                        .clone()
                        .run(every, Duration::from_millis(200), stop.clone());
                    async move {
                        task.await;
                        Ok(())
                    }
                },
            ));
            let deliveries = if config.webhooks.is_empty() {
                tokio::spawn(async {})
            } else {
                let (store, urls, dir) = (
                    state.store.clone(),
                    config.webhooks.clone(),
                    config.data_dir.clone(),
                );
                let (backoff, h, stop) = (config.webhook_backoff, health.clone(), rx.clone());
                tokio::spawn(supervise(
                    webhooks::WEBHOOKS,
                    health.clone(),
                    rx.clone(),
                    move || {
                        let task = webhooks::run(
                            store.clone(),
                            urls.clone(),
                            dir.clone(),
                            backoff,
                            h.clone(),
                            stop.clone(),
                        );
                        async move {
                            task.await;
                            Ok(())
                        }
                    },
                ))
            };
            (projector, monitors, deliveries)
        }
    };
    let app = app(state.clone());
    let addr = listener.local_addr()?;
    let http = tokio::spawn(listen::serve(
        listener,
        app,
        config.limits,
        state.health.clone(),
        rx,
    ));
    Ok(Server {
        addr,
        shutdown,
        http,
        projector,
        monitors,
        deliveries,
        follower,
        store,
        state,
    })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Stops accepting, lets requests in flight finish, saves the projections'
    /// checkpoint and closes the store (every acknowledged append is durable already).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = self.monitors.await;
        let _ = self.deliveries.await;
        if let Some(follower) = self.follower {
            let _ = follower.await;
        }
        let projected = self
            .projector
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = self.store.close().await;
        served?;
        projected?;
        Ok(())
    }

    /// A future that resolves once the server stopped on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.http.is_finished()
    }
}
