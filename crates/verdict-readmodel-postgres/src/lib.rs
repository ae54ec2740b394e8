//! verdict's read models in PostgreSQL, for SQL tools (Metabase, Grafana) and for
//! stateless serve nodes.
//!
//! # What is written
//!
//! One schema (default `verdict_rm`) holds `experiments`, `variant_results`,
//! `timeline_hourly`, `alerts`, the `checkpoint` (one row: the global position every other
//! row reflects) and the projector's `snapshot`; `docs/READ_MODELS.md` documents every column.
//! [`Writer::commit`] writes the rows of the experiments a batch touched **and** the
//! checkpoint in **one transaction**, so a reader (one statement, or several in a
//! `REPEATABLE READ` transaction) always sees figures of one position.
//!
//! # Restarting without double counting
//!
//! The projector's full state, the in-memory [`ReadModel`] with its per-user maps (which
//! no table carries), is the source of every row: a row is always the *whole* current value
//! computed from that model, so writing it again is idempotent. The model itself is saved as
//! the `snapshot` row (position S) in the same transaction as a checkpoint, every
//! [`SnapshotPolicy`] and at shutdown, so S ≤ checkpoint C always. A restarted projector
//! loads the snapshot, re-applies S+1..C in memory **without writing rows** (the tables
//! already show C, and writing older values would move them backwards), collecting what it
//! touched, and from C on commits as usual: the first commit after C rewrites every row
//! touched since S. Events are applied once to the model (it ignores positions at or below
//! its own), rows only ever move forward, and nothing is counted twice.
//!
//! # One projector at a time
//!
//! [`Writer`] owns one dedicated connection. [`Writer::try_lock`] takes a session-level
//! advisory lock on it, and every commit goes through that same connection: if the
//! connection drops, PostgreSQL releases the lock, the next commit fails, and the projector
//! stops; a standby then takes the lock. A projector that lost its lock can therefore never
//! write after its successor started (the lock and the writes share one session).
//!
//! # Followers
//!
//! [`follow`] (module [`follow`]) keeps a serve node's in-memory [`Projections`] equal to the
//! tables: it polls the checkpoint and loads, in one `REPEATABLE READ` transaction, the rows
//! changed since the last position it loaded, then moves the projections' position to the
//! checkpoint, so `?min_position=` waits keep working. Followers carry no per-user maps.

pub mod follow;
pub mod project;

pub use follow::{follow, READ_MODEL_FOLLOWER};
pub use project::{open_projections, project_to_head, run_projector, ProjectorOptions};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::try_join_all;
use tokio_postgres::{Client, Config, NoTls};
use verdict_app::readmodel::{ExperimentView, ReadModel, HOUR_MICROS};
use verdict_app::Projections;
use verdict_store::RecordedEvent;

/// Errors of the PostgreSQL read models.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The options are unusable (bad URL, bad schema name).
    #[error("invalid read-model options: {0}")]
    InvalidOptions(String),
    /// The server refused or failed a request (or the connection is gone).
    #[error("postgres read models: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored snapshot or row cannot be decoded.
    #[error("read-model data is unreadable: {0}")]
    Corrupt(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] verdict_store::StoreError),
    /// Another projector holds the lock and this one was told not to wait.
    #[error("another projector holds the lock")]
    Locked,
}

/// Where the read models live.
#[derive(Clone, Debug)]
pub struct ReadModelOptions {
    /// libpq connection string or URL, without verdict's own parameters.
    pub url: String,
    /// Schema of the tables: `[a-z_][a-z0-9_]*`, at most 48 bytes.
    pub schema: String,
}

impl ReadModelOptions {
    /// Parses `postgres://...[?schema=NAME]`: `schema` is verdict's own parameter (default
    /// `verdict_rm`); every other parameter goes to the driver.
    pub fn parse(url: &str) -> Result<Self, ReadModelError> {
        let (base, params) = split_params(url);
        let mut schema = "verdict_rm".to_owned();
        let mut rest = Vec::new();
        for (k, v) in params {
            match k.as_str() {
                "schema" => schema = v,
                _ => rest.push(format!("{k}={v}")),
            }
        }
        validate_schema(&schema)?;
        let url = if rest.is_empty() {
            base
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        url.parse::<Config>()
            .map_err(|e| ReadModelError::InvalidOptions(format!("connection string: {e}")))?;
        Ok(Self { url, schema })
    }

    async fn connect(&self) -> Result<Client, ReadModelError> {
        let mut config: Config = self
            .url
            .parse()
            .map_err(|e| ReadModelError::InvalidOptions(format!("connection string: {e}")))?;
        config.options(format!("-c search_path={}", self.schema));
        config.application_name("verdict-read-models");
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "read-model connection closed");
            }
        });
        Ok(client)
    }
}

/// A PostgreSQL string literal (standard-conforming strings: only `'` needs doubling).
fn quote_literal(s: &str) -> String {
    format!("'{}'", pg_text(s).replace('\'', "''"))
}

/// Splits `base?k=v&k2=v2` into the base and its decoded-as-is parameters.
pub fn split_params(url: &str) -> (String, Vec<(String, String)>) {
    match url.split_once('?') {
        None => (url.to_owned(), Vec::new()),
        Some((base, query)) => (
            base.to_owned(),
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect(),
        ),
    }
}

fn validate_schema(schema: &str) -> Result<(), ReadModelError> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && !schema.as_bytes()[0].is_ascii_digit()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ReadModelError::InvalidOptions(format!(
            "schema {schema:?} must be 1-48 bytes of [a-z0-9_], not starting with a digit"
        )))
    }
}

/// The tables (idempotent DDL, run by every writer at connect).
pub const SCHEMA_SQL: &str = r#"
CREATE TABLE IF NOT EXISTS checkpoint (
    id int PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO checkpoint (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
ALTER TABLE checkpoint ADD COLUMN IF NOT EXISTS store_identity text;
CREATE TABLE IF NOT EXISTS snapshot (
    id int PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL,
    model bytea NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id text PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz,
    started_at timestamptz,
    stopped_at timestamptz,
    last_event_at timestamptz,
    users bigint NOT NULL,
    unattributed_conversions bigint NOT NULL,
    unattributed_interactions bigint NOT NULL,
    state jsonb NOT NULL,
    view jsonb NOT NULL,
    created_at_us bigint NOT NULL,
    started_at_us bigint,
    stopped_at_us bigint,
    last_event_at_us bigint NOT NULL,
    updated_position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS variant_results (
    experiment_id text NOT NULL,
    variant_index int NOT NULL,
    variant text NOT NULL,
    model text NOT NULL,
    is_control boolean NOT NULL,
    users bigint NOT NULL,
    predictions bigint NOT NULL,
    errors bigint NOT NULL,
    interactions bigint NOT NULL,
    converted_users bigint NOT NULL,
    conversion_events bigint NOT NULL,
    revenue_sum double precision NOT NULL,
    revenue_sum_squares double precision NOT NULL,
    latency_p50_ms double precision,
    latency_p95_ms double precision,
    latency_p99_ms double precision,
    latency_mean_ms double precision,
    stats jsonb NOT NULL,
    updated_position bigint NOT NULL,
    PRIMARY KEY (experiment_id, variant_index)
);
CREATE TABLE IF NOT EXISTS timeline_hourly (
    experiment_id text NOT NULL,
    hour timestamptz NOT NULL,
    hour_us bigint NOT NULL,
    variant_index int NOT NULL,
    variant text NOT NULL,
    new_users bigint NOT NULL,
    predictions bigint NOT NULL,
    errors bigint NOT NULL,
    newly_converted bigint NOT NULL,
    revenue double precision NOT NULL,
    latency_p95_ms double precision,
    bucket jsonb NOT NULL,
    updated_position bigint NOT NULL,
    PRIMARY KEY (experiment_id, hour_us, variant_index)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id uuid PRIMARY KEY,
    experiment_id text NOT NULL,
    monitor text NOT NULL,
    severity text NOT NULL,
    message text NOT NULL,
    evidence jsonb NOT NULL,
    raised_at timestamptz NOT NULL,
    resolved_at timestamptz,
    raised_position bigint NOT NULL,
    alert jsonb NOT NULL,
    updated_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_updated ON experiments (updated_position);
CREATE INDEX IF NOT EXISTS variant_results_updated ON variant_results (updated_position);
CREATE INDEX IF NOT EXISTS timeline_hourly_updated ON timeline_hourly (updated_position);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_position);
"#;

/// The advisory lock key of the projector: "verdict" in ASCII, xor the schema's hash, so
/// projectors of different schemas do not exclude each other.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (0x7665_7264_6963_7400_u64 ^ h) as i64
}

/// The experiments and hours a batch touched: the rows its commit rewrites.
#[derive(Debug, Default, Clone)]
pub struct Dirty {
    /// Experiment ids.
    pub experiments: BTreeSet<String>,
    /// (experiment id, hour start in unix micros).
    pub hours: BTreeSet<(String, i64)>,
}

impl Dirty {
    /// Notes the experiment (from the stream name: `experiment-ID` or `traffic-ID`) and
    /// hour of a stored event.
    pub fn note(&mut self, e: &RecordedEvent) {
        let id = e
            .stream
            .strip_prefix("experiment-")
            .or_else(|| e.stream.strip_prefix("traffic-"));
        if let Some(id) = id {
            if !self.experiments.contains(id) {
                self.experiments.insert(id.to_owned());
            }
            let hour = e.recorded_at.div_euclid(HOUR_MICROS) * HOUR_MICROS;
            if !self.hours.contains(&(id.to_owned(), hour)) {
                self.hours.insert((id.to_owned(), hour));
            }
        }
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty()
    }

    /// Adds everything of `other`.
    pub fn merge(&mut self, other: Dirty) {
        self.experiments.extend(other.experiments);
        self.hours.extend(other.hours);
    }
}

/// The projector's writer: one connection that holds the advisory lock and commits rows,
/// checkpoint and snapshots.
pub struct Writer {
    client: Client,
    options: ReadModelOptions,
    statements: Option<Statements>,
}

struct Statements {
    experiment: tokio_postgres::Statement,
    variant: tokio_postgres::Statement,
    hour: tokio_postgres::Statement,
    alert: tokio_postgres::Statement,
    checkpoint: tokio_postgres::Statement,
    snapshot: tokio_postgres::Statement,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("schema", &self.options.schema)
            .finish_non_exhaustive()
    }
}

fn micros_to_ts(column: &str) -> String {
    format!("to_timestamp({column}::bigint / 1000000.0)")
}

impl Writer {
    /// Connects and creates the schema and tables if missing.
    pub async fn connect(options: ReadModelOptions) -> Result<Self, ReadModelError> {
        let client = options.connect().await?;
        // Concurrent `CREATE ... IF NOT EXISTS` can still collide: serialize the DDL.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({}); CREATE SCHEMA IF NOT EXISTS {}; {SCHEMA_SQL} COMMIT;",
                lock_key(&options.schema) ^ 1,
                options.schema
            ))
            .await?;
        Ok(Self {
            client,
            options,
            statements: None,
        })
    }

    /// Tries to become the active projector (session advisory lock on this connection).
    pub async fn try_lock(&self) -> Result<bool, ReadModelError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&lock_key(&self.options.schema)],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Checks the connection (and so the lock) is still alive.
    pub async fn ping(&self) -> Result<(), ReadModelError> {
        self.client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The checkpoint and the snapshot (if any) the tables carry.
    pub async fn load(&self) -> Result<(u64, Option<ReadModel>), ReadModelError> {
        let checkpoint: i64 = self
            .client
            .query_one("SELECT position FROM checkpoint WHERE id = 1", &[])
            .await?
            .get(0);
        let snapshot = match self
            .client
            .query_opt("SELECT position, model FROM snapshot WHERE id = 1", &[])
            .await?
        {
            None => None,
            Some(row) => {
                let bytes: Vec<u8> = row.get(1);
                let model: ReadModel = serde_json::from_slice(&bytes)
                    .map_err(|e| ReadModelError::Corrupt(format!("snapshot: {e}")))?;
                let position: i64 = row.get(0);
                if model.position != position as u64 {
                    return Err(ReadModelError::Corrupt(format!(
                        "snapshot row says position {position}, its model {}",
                        model.position
                    )));
                }
                Some(model)
            }
        };
        Ok((checkpoint as u64, snapshot))
    }

    /// The identity of the store the tables were built from, if recorded.
    pub async fn store_identity(&self) -> Result<Option<String>, ReadModelError> {
        Ok(self
            .client
            .query_one("SELECT store_identity FROM checkpoint WHERE id = 1", &[])
            .await?
            .get(0))
    }

    /// Records the identity of the store the tables are built from (tables written
    /// before identities existed).
    pub async fn record_identity(&self, identity: Option<&str>) -> Result<(), ReadModelError> {
        self.client
            .execute(
                "UPDATE checkpoint SET store_identity = $1 WHERE id = 1",
                &[&identity],
            )
            .await?;
        Ok(())
    }

    /// Empties every read-model table and sets the checkpoint to 0 for the store named
    /// `identity`, in one transaction: the tables were built from another log (or one
    /// since cut back) and are rebuilt from position 1.
    pub async fn reset(&self, identity: Option<&str>) -> Result<(), ReadModelError> {
        // One simple query without BEGIN runs as one implicit transaction: all of it or,
        // on any error, none of it, and no transaction left open on the connection.
        let identity = identity.map_or("NULL".to_owned(), quote_literal);
        self.client
            .batch_execute(&format!(
                "TRUNCATE snapshot, experiments, variant_results, timeline_hourly, alerts; \
                 UPDATE checkpoint SET position = 0, store_identity = {identity}, updated_at = now() WHERE id = 1;"
            ))
            .await?;
        Ok(())
    }

    async fn prepare(&mut self) -> Result<(), ReadModelError> {
        if self.statements.is_some() {
            return Ok(());
        }
        let c = &self.client;
        let experiment = c
            .prepare(&format!(
                "INSERT INTO experiments (experiment_id, name, status, version, created_at, started_at, \
                 stopped_at, last_event_at, users, unattributed_conversions, unattributed_interactions, \
                 state, view, created_at_us, started_at_us, stopped_at_us, last_event_at_us, updated_position) \
                 VALUES ($1, $2, $3, $4, {}, {}, {}, {}, $9, $10, $11, $12::text::jsonb, $14::text::jsonb, $5, $6, $7, $8, $13) \
                 ON CONFLICT (experiment_id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status, \
                 version = EXCLUDED.version, created_at = EXCLUDED.created_at, started_at = EXCLUDED.started_at, \
                 stopped_at = EXCLUDED.stopped_at, last_event_at = EXCLUDED.last_event_at, users = EXCLUDED.users, \
                 unattributed_conversions = EXCLUDED.unattributed_conversions, \
                 unattributed_interactions = EXCLUDED.unattributed_interactions, state = EXCLUDED.state, view = EXCLUDED.view, \
                 created_at_us = EXCLUDED.created_at_us, started_at_us = EXCLUDED.started_at_us, \
                 stopped_at_us = EXCLUDED.stopped_at_us, last_event_at_us = EXCLUDED.last_event_at_us, \
                 updated_position = EXCLUDED.updated_position",
                micros_to_ts("$5"),
                micros_to_ts("$6"),
                micros_to_ts("$7"),
                micros_to_ts("$8")
            ))
            .await?;
        let variant = c
            .prepare(
                "INSERT INTO variant_results (experiment_id, variant_index, variant, model, is_control, users, \
                 predictions, errors, interactions, converted_users, conversion_events, revenue_sum, \
                 revenue_sum_squares, latency_p50_ms, latency_p95_ms, latency_p99_ms, latency_mean_ms, \
                 stats, updated_position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18::text::jsonb, $19) \
                 ON CONFLICT (experiment_id, variant_index) DO UPDATE SET variant = EXCLUDED.variant, \
                 model = EXCLUDED.model, is_control = EXCLUDED.is_control, users = EXCLUDED.users, \
                 predictions = EXCLUDED.predictions, errors = EXCLUDED.errors, interactions = EXCLUDED.interactions, \
                 converted_users = EXCLUDED.converted_users, conversion_events = EXCLUDED.conversion_events, \
                 revenue_sum = EXCLUDED.revenue_sum, revenue_sum_squares = EXCLUDED.revenue_sum_squares, \
                 latency_p50_ms = EXCLUDED.latency_p50_ms, latency_p95_ms = EXCLUDED.latency_p95_ms, \
                 latency_p99_ms = EXCLUDED.latency_p99_ms, latency_mean_ms = EXCLUDED.latency_mean_ms, \
                 stats = EXCLUDED.stats, updated_position = EXCLUDED.updated_position",
            )
            .await?;
        let hour = c
            .prepare(&format!(
                "INSERT INTO timeline_hourly (experiment_id, hour, hour_us, variant_index, variant, new_users, \
                 predictions, errors, newly_converted, revenue, latency_p95_ms, bucket, updated_position) \
                 VALUES ($1, {}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12) \
                 ON CONFLICT (experiment_id, hour_us, variant_index) DO UPDATE SET variant = EXCLUDED.variant, \
                 new_users = EXCLUDED.new_users, predictions = EXCLUDED.predictions, errors = EXCLUDED.errors, \
                 newly_converted = EXCLUDED.newly_converted, revenue = EXCLUDED.revenue, \
                 latency_p95_ms = EXCLUDED.latency_p95_ms, bucket = EXCLUDED.bucket, \
                 updated_position = EXCLUDED.updated_position",
                micros_to_ts("$2")
            ))
            .await?;
        let alert = c
            .prepare(&format!(
                "INSERT INTO alerts (alert_id, experiment_id, monitor, severity, message, evidence, raised_at, \
                 resolved_at, raised_position, alert, updated_position) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, {}, {}, $9, $10::text::jsonb, $11) \
                 ON CONFLICT (alert_id) DO UPDATE SET resolved_at = EXCLUDED.resolved_at, alert = EXCLUDED.alert, \
                 updated_position = EXCLUDED.updated_position \
                 WHERE alerts.alert IS DISTINCT FROM EXCLUDED.alert",
                micros_to_ts("$7"),
                micros_to_ts("$8")
            ))
            .await?;
        let checkpoint = c
            .prepare("UPDATE checkpoint SET position = $1, updated_at = now() WHERE id = 1 AND position <= $1")
            .await?;
        let snapshot = c
            .prepare(
                "INSERT INTO snapshot (id, position, model) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET position = EXCLUDED.position, model = EXCLUDED.model, saved_at = now()",
            )
            .await?;
        self.statements = Some(Statements {
            experiment,
            variant,
            hour,
            alert,
            checkpoint,
            snapshot,
        });
        Ok(())
    }

    /// Commits a [`Batch`] in one transaction: its rows, the checkpoint and the snapshot
    /// if it carries one.
    pub async fn commit(&mut self, batch: Batch) -> Result<(), ReadModelError> {
        self.prepare().await?;
        let st = self.statements.as_ref().expect("prepared");
        let position = batch.position as i64;
        let tx = self.client.transaction().await?;
        let params: Vec<Vec<&(dyn tokio_postgres::types::ToSql + Sync)>> = batch
            .rows
            .iter()
            .map(|(_, p)| p.iter().map(|b| b.as_sql()).collect())
            .collect();
        // Every row of the batch goes out pipelined (one round trip for all of them).
        try_join_all(batch.rows.iter().zip(&params).map(|((kind, _), p)| {
            let stmt = match kind {
                RowKind::Experiment => &st.experiment,
                RowKind::Variant => &st.variant,
                RowKind::Hour => &st.hour,
                RowKind::Alert => &st.alert,
            };
            tx.execute(stmt, p.as_slice())
        }))
        .await?;
        tx.execute(&st.checkpoint, &[&position]).await?;
        if let Some(bytes) = &batch.snapshot {
            tx.execute(&st.snapshot, &[&position, bytes]).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum RowKind {
    Experiment,
    Variant,
    Hour,
    Alert,
}

/// The rows of one commit, computed from the model (see [`Batch::build`]).
pub struct Batch {
    position: u64,
    rows: Vec<(RowKind, Vec<Box<dyn ToSqlSync>>)>,
    snapshot: Option<Vec<u8>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("position", &self.position)
            .field("rows", &self.rows.len())
            .field("snapshot", &self.snapshot.as_ref().map(Vec::len))
            .finish()
    }
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, ReadModelError> {
    serde_json::to_string(value)
        .map(pg_json)
        .map_err(|e| corrupt(what, e))
}

/// A string PostgreSQL's `text` takes: NUL, which it refuses (and which would stop the
/// projector on every restart), becomes U+FFFD. verdict refuses control characters at the
/// door; this keeps events stored before that, or written by other clients, from poisoning
/// the read models.
fn pg_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// JSON text `jsonb` takes: every `\u0000` escape (jsonb refuses it) becomes `\ufffd`.
/// Escapes are ASCII, so replacing them byte-wise keeps the text UTF-8.
fn pg_json(json: String) -> String {
    if !json.contains("\\u0000") {
        return json;
    }
    let b = json.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1..].starts_with(b"u0000") {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            } else {
                // Any other escape, `\\` included, is copied whole, so the parity of
                // backslashes is never misread.
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII escapes were replaced")
}

impl Batch {
    /// The rows of the experiments and hours in `dirty`, as of `model.position`, and the
    /// whole model when `snapshot`. Takes `&mut` only to serialize each experiment's own
    /// fields without its large parts (they are moved out and back, never copied).
    pub fn build(
        model: &mut ReadModel,
        dirty: &Dirty,
        snapshot: bool,
    ) -> Result<Self, ReadModelError> {
        let position = model.position as i64;
        let mut rows: Vec<(RowKind, Vec<Box<dyn ToSqlSync>>)> = Vec::new();
        for id in &dirty.experiments {
            let Some(view) = model.experiments.get_mut(id) else {
                continue;
            };
            let Some(def) = view.state.definition.clone() else {
                continue;
            };
            rows.push((RowKind::Experiment, experiment_row(id, view, position)?));
            let control = def.control().key.clone();
            for (i, (v, stats)) in def.variants.iter().zip(&view.variants).enumerate() {
                rows.push((
                    RowKind::Variant,
                    vec![
                        Box::new(pg_text(id)),
                        Box::new(i as i32),
                        Box::new(pg_text(&v.key)),
                        Box::new(pg_text(&v.model)),
                        Box::new(v.key == control),
                        Box::new(stats.users as i64),
                        Box::new(stats.predictions as i64),
                        Box::new(stats.errors as i64),
                        Box::new(stats.interactions as i64),
                        Box::new(stats.converted_users as i64),
                        Box::new(stats.conversion_events as i64),
                        Box::new(stats.revenue_sum),
                        Box::new(stats.revenue_sum_squares),
                        Box::new(stats.latency.quantile_ms(0.50)),
                        Box::new(stats.latency.quantile_ms(0.95)),
                        Box::new(stats.latency.quantile_ms(0.99)),
                        Box::new(stats.latency.mean_ms()),
                        Box::new(to_json("variant stats", stats)?),
                        Box::new(position),
                    ],
                ));
            }
            for a in &view.alerts {
                rows.push((
                    RowKind::Alert,
                    vec![
                        Box::new(a.alert_id),
                        Box::new(pg_text(&a.experiment_id)),
                        Box::new(pg_text(&a.monitor)),
                        Box::new(pg_text(&a.severity)),
                        Box::new(pg_text(&a.message)),
                        Box::new(pg_json(a.evidence.to_string())),
                        Box::new(a.raised_at),
                        Box::new(a.resolved_at),
                        Box::new(a.position as i64),
                        Box::new(to_json("alert", a)?),
                        Box::new(position),
                    ],
                ));
            }
        }
        for (id, hour) in &dirty.hours {
            let Some(view) = model.experiments.get(id) else {
                continue;
            };
            let (Some(def), Some(buckets)) = (view.state.definition.as_ref(), view.hours.get(hour))
            else {
                continue;
            };
            for (i, (v, b)) in def.variants.iter().zip(buckets).enumerate() {
                rows.push((
                    RowKind::Hour,
                    vec![
                        Box::new(pg_text(id)),
                        Box::new(*hour),
                        Box::new(i as i32),
                        Box::new(pg_text(&v.key)),
                        Box::new(b.new_users as i64),
                        Box::new(b.predictions as i64),
                        Box::new(b.errors as i64),
                        Box::new(b.newly_converted as i64),
                        Box::new(b.revenue),
                        Box::new(b.latency.quantile_ms(0.95)),
                        Box::new(to_json("bucket", b)?),
                        Box::new(position),
                    ],
                ));
            }
        }
        let snapshot = if snapshot {
            Some(serde_json::to_vec(&*model).map_err(|e| corrupt("snapshot", e))?)
        } else {
            None
        };
        Ok(Self {
            position: model.position,
            rows,
            snapshot,
        })
    }
}
/// A boxed SQL parameter.
trait ToSqlSync: Send + Sync {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}

impl<T: tokio_postgres::types::ToSql + Sync + Send> ToSqlSync for T {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

fn experiment_row(
    id: &str,
    view: &mut ExperimentView,
    position: i64,
) -> Result<Vec<Box<dyn ToSqlSync>>, ReadModelError> {
    let def = view.state.definition.as_ref().expect("checked");
    let users = view.variants.iter().map(|v| v.users).sum::<u64>() as i64;
    // The view's own fields (whatever they are, shadows included), without per-user state,
    // per-variant totals, hours and alerts, which have their own tables.
    let parts = (
        std::mem::take(&mut view.users),
        std::mem::take(&mut view.variants),
        std::mem::take(&mut view.hours),
        std::mem::take(&mut view.alerts),
    );
    let own = to_json("experiment", &*view);
    (view.users, view.variants, view.hours, view.alerts) = parts;
    Ok(vec![
        Box::new(pg_text(id)),
        Box::new(pg_text(&def.name)),
        Box::new(view.state.status.to_string()),
        Box::new(view.state.version as i64),
        Box::new(view.created_at),
        Box::new(view.started_at),
        Box::new(view.stopped_at),
        Box::new(view.last_event_at),
        Box::new(users),
        Box::new(view.unattributed_conversions as i64),
        Box::new(view.unattributed_interactions as i64),
        Box::new(to_json("state", &view.state)?),
        Box::new(position),
        Box::new(own?),
    ])
}

/// Rows loaded from the tables, to merge into a follower's model.
#[derive(Debug, Default)]
pub struct Changes {
    /// The checkpoint they reflect.
    pub position: u64,
    /// Experiments whose row changed, with every field but per-user state.
    pub experiments: BTreeMap<String, ExperimentView>,
    /// (experiment, variant index) -> stats.
    pub variants: Vec<(String, usize, verdict_app::readmodel::VariantStats)>,
    /// (experiment, hour, variant index) -> bucket.
    pub hours: Vec<(String, i64, usize, verdict_app::readmodel::BucketStats)>,
    /// Alerts that changed.
    pub alerts: Vec<verdict_app::readmodel::AlertView>,
}

impl Changes {
    /// Merges into `model` (which must be a follower's: no per-user maps).
    pub fn apply(self, model: &mut ReadModel) {
        for (id, mut view) in self.experiments {
            match model.experiments.get_mut(&id) {
                Some(old) => {
                    view.variants = std::mem::take(&mut old.variants);
                    view.hours = std::mem::take(&mut old.hours);
                    view.alerts = std::mem::take(&mut old.alerts);
                    let n = view
                        .state
                        .definition
                        .as_ref()
                        .map_or(0, |d| d.variants.len());
                    view.variants.resize(n, Default::default());
                    *old = view;
                }
                None => {
                    let n = view
                        .state
                        .definition
                        .as_ref()
                        .map_or(0, |d| d.variants.len());
                    view.variants.resize(n, Default::default());
                    model.experiments.insert(id, view);
                }
            }
        }
        for (id, i, stats) in self.variants {
            if let Some(view) = model.experiments.get_mut(&id) {
                if view.variants.len() <= i {
                    view.variants.resize(i + 1, Default::default());
                }
                view.variants[i] = stats;
            }
        }
        for (id, hour, i, bucket) in self.hours {
            if let Some(view) = model.experiments.get_mut(&id) {
                let n = view.variants.len().max(i + 1);
                let row = view.hours.entry(hour).or_default();
                if row.len() < n {
                    row.resize(n, Default::default());
                }
                row[i] = bucket;
            }
        }
        for alert in self.alerts {
            if let Some(view) = model.experiments.get_mut(&alert.experiment_id) {
                match view
                    .alerts
                    .iter_mut()
                    .find(|a| a.alert_id == alert.alert_id)
                {
                    Some(a) => *a = alert,
                    None => {
                        view.alerts.push(alert);
                        view.alerts.sort_by_key(|a| a.position);
                    }
                }
            }
        }
        model.position = model.position.max(self.position);
    }
}

/// A reader of the tables (the follower's side).
pub struct Reader {
    client: Client,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Corrupt(format!("{what}: {e}"))
}

impl Reader {
    /// Connects (the tables may not exist yet: [`Reader::checkpoint`] reads 0 then).
    pub async fn connect(options: &ReadModelOptions) -> Result<Self, ReadModelError> {
        Ok(Self {
            client: options.connect().await?,
        })
    }

    /// The checkpoint, or 0 while no projector has created the tables.
    pub async fn checkpoint(&self) -> Result<u64, ReadModelError> {
        match self
            .client
            .query_opt("SELECT position FROM checkpoint WHERE id = 1", &[])
            .await
        {
            Ok(row) => Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Everything that changed after `since`, as of one checkpoint (one snapshot of the
    /// database).
    pub async fn changes_since(&mut self, since: u64) -> Result<Changes, ReadModelError> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let position: i64 = match tx
            .query_opt("SELECT position FROM checkpoint WHERE id = 1", &[])
            .await
        {
            Ok(row) => row.map_or(0, |r| r.get(0)),
            // No projector has created the tables yet: nothing to load.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(Changes::default())
            }
            Err(e) => return Err(e.into()),
        };
        let mut changes = Changes {
            position: position as u64,
            ..Changes::default()
        };
        if position as u64 <= since {
            tx.commit().await?;
            return Ok(changes);
        }
        let since = since as i64;
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&since];
        let (experiments, variants, hours, alerts) = tokio::try_join!(
            tx.query(
                "SELECT experiment_id, view::text FROM experiments WHERE updated_position > $1",
                &args
            ),
            tx.query(
                "SELECT experiment_id, variant_index, stats::text FROM variant_results \
                 WHERE updated_position > $1",
                &args
            ),
            tx.query(
                "SELECT experiment_id, hour_us, variant_index, bucket::text FROM timeline_hourly \
                 WHERE updated_position > $1",
                &args
            ),
            tx.query(
                "SELECT alert::text FROM alerts WHERE updated_position > $1",
                &args
            ),
        )?;
        tx.commit().await?;
        for r in experiments {
            let view: ExperimentView =
                serde_json::from_str(r.get::<_, &str>(1)).map_err(|e| corrupt("experiment", e))?;
            changes.experiments.insert(r.get(0), view);
        }
        for r in variants {
            let stats =
                serde_json::from_str(r.get::<_, &str>(2)).map_err(|e| corrupt("stats", e))?;
            changes
                .variants
                .push((r.get(0), r.get::<_, i32>(1) as usize, stats));
        }
        for r in hours {
            let bucket =
                serde_json::from_str(r.get::<_, &str>(3)).map_err(|e| corrupt("bucket", e))?;
            changes
                .hours
                .push((r.get(0), r.get(1), r.get::<_, i32>(2) as usize, bucket));
        }
        for r in alerts {
            let alert =
                serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| corrupt("alert", e))?;
            changes.alerts.push(alert);
        }
        Ok(changes)
    }
}

/// Loads everything the tables hold into fresh follower projections.
pub async fn load_projections(
    reader: &mut Reader,
) -> Result<std::sync::Arc<Projections>, ReadModelError> {
    let mut model = ReadModel::default();
    reader.changes_since(0).await?.apply(&mut model);
    Ok(Projections::new(model, None))
}

/// How long a standby waits between attempts to take the lock.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod nul_tests {
    use super::*;

    #[test]
    fn nul_never_reaches_postgres() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        let v = serde_json::json!({"name": "a\u{0}b", "k\u{0}": ["\\u0000", "\\\u{0}"]});
        let text = pg_json(serde_json::to_string(&v).unwrap());
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], "a\u{FFFD}b");
        // A literal backslash followed by `u0000` is text, not an escape: kept.
        assert_eq!(back["k\u{FFFD}"][0], "\\u0000");
        assert_eq!(back["k\u{FFFD}"][1], "\\\u{FFFD}");
    }
}
