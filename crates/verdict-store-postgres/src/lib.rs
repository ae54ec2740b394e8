//! [`PgStore`]: verdict's [`EventStore`] on PostgreSQL (13 or newer).
//!
//! # Layout
//!
//! Each store lives in its own schema: a `verdict_events` table with one row per event,
//! unique on `event_id` and on `(stream, version)`, and a one-row `verdict_head` table holding
//! the last allocated global position. [`migrate`] creates and upgrades them.
//!
//! # Gap-free global order: serialized position allocation
//!
//! A `bigserial` position is handed out at INSERT but becomes visible at COMMIT, and
//! transactions commit out of order: a reader could see position 11 before 10, checkpoint 11
//! and skip 10 for ever (the bug Marten, Axon and others keep fixing); rolled-back
//! transactions also leave permanent holes, which the numbering contract forbids.
//!
//! This store instead **allocates positions inside the append transaction from the
//! `verdict_head` row**: the transaction's first statement is
//! `SELECT position FROM verdict_head FOR UPDATE`, which takes that row's lock and keeps it
//! until COMMIT or ROLLBACK, and its last writes the new head. So appends are serialized,
//! each one's positions follow the last committed ones, and a rejected or failed append
//! allocates nothing (no holes). PostgreSQL marks a transaction committed and visible before
//! it releases its locks, so when the next transaction gets the row, its predecessor is
//! already visible to every new snapshot: **the committed events are always exactly
//! positions `1..=head`**, and a reader can never see position P+1 without P. The checks of
//! an append (idempotency by id, expected version) run after the lock is taken, so they see
//! every earlier append and cannot race. This holds across processes: several stores on
//! one schema share the row.
//!
//! Serialized commits cannot share a WAL flush, so each store commits **in groups**
//! (module `group`): one writer task takes every append waiting at that moment, decides them all
//! under one lock hold and commits them in one transaction, one flush.
//!
//! The alternative, sequence positions read only below the `pg_snapshot_xmin` safe horizon,
//! lets writers commit in parallel, but its positions have holes (rollbacks, sequence
//! caching) so it cannot give dense 1, 2, 3… numbering, and one long transaction anywhere in
//! the database stalls every reader. The price of the choice made here is one commit at a
//! time per database: within a process group commit recovers the throughput, but several
//! processes appending to one schema take turns (see docs/BENCHMARKS.md).
//!
//! # Durability
//!
//! An append is acknowledged when its COMMIT returns; with the server's default
//! `synchronous_commit = on` the commit record is flushed to disk first (use `remote_apply`
//! with a synchronous standby to survive the loss of the machine). Running with
//! `synchronous_commit = off` or `fsync = off` breaks the "acknowledged means durable"
//! guarantee; the store does not override the server's setting.
//!
//! # Subscriptions
//!
//! Every append sends `NOTIFY` (delivered at commit) on a channel named after the schema. A
//! listener task per store `LISTEN`s on its own connection; a notification only wakes it,
//! and it then reads `verdict_head` — a committed, visible value — before announcing it, so
//! a subscription is never told of a position it cannot yet read. It also re-reads the head
//! every [`PgOptions::poll_interval`], which covers notifications lost while its connection
//! was down. Subscriptions themselves are [`Subscription::spawn_polling`] over `read_all`.
//! Appends made through this store announce their head directly after COMMIT.

mod group;
mod migrate;
mod pool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tokio_postgres::{AsyncMessage, Config, NoTls, Row};
use uuid::Uuid;
use verdict_store::{
    validate_append, AppendResult, EventData, EventStore, ExpectedVersion, RecordedEvent,
    StoreError, Subscription,
};

pub use migrate::MIGRATIONS;
use pool::Pool;

/// Errors opening a [`PgStore`]; once open, the store reports [`StoreError`]s.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The options are unusable (bad URL, bad schema name).
    #[error("invalid PostgreSQL store options: {0}")]
    InvalidOptions(String),
    /// The server refused or failed a request.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl From<PgError> for StoreError {
    fn from(err: PgError) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

/// How to reach the database and where the store lives in it.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style connection string or URL, e.g. `postgres://postgres@127.0.0.1/verdict`.
    pub url: String,
    /// The schema holding the store's tables (created if missing): lowercase ASCII letters,
    /// digits and `_`, starting with a letter or `_`, at most 48 bytes.
    pub schema: String,
    /// The most connections the store opens for appends and reads (the listener has one
    /// more of its own).
    pub pool_size: usize,
    /// How often the listener re-reads the head even without notifications.
    pub poll_interval: Duration,
}

impl PgOptions {
    /// Options with the default schema `verdict`, 8 connections and a 1 s poll.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "verdict".into(),
            pool_size: 8,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// The same options with another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

fn validate_schema(schema: &str) -> Result<(), PgError> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && !schema.as_bytes()[0].is_ascii_digit()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidOptions(format!(
            "schema {schema:?} must be 1-48 bytes of [a-z0-9_], not starting with a digit"
        )))
    }
}

/// An [`EventStore`] in a PostgreSQL schema. Cloning shares the same store.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    schema: String,
    /// The random id the store was created with (`verdict_identity`).
    identity: String,
    /// The NOTIFY channel: per schema, since channels are per database.
    pub(crate) channel: String,
    /// `true` once closed. Appends hold it shared for their whole run, so `close` taking it
    /// exclusively waits for the appends in flight.
    closed: RwLock<bool>,
    /// The committed head announced to subscriptions; dropped by `close`, which ends them
    /// once they have delivered everything.
    head_tx: Mutex<Option<watch::Sender<u64>>>,
    head_rx: watch::Receiver<u64>,
    /// Tells the listener task to stop.
    stop: watch::Sender<bool>,
    /// Appends waiting for the writer task, which commits them in groups.
    appends: mpsc::Sender<group::Request>,
}

const EVENT_COLUMNS: &str =
    "position, stream, version, event_id, event_type, schema_version, payload, metadata, recorded_at";

pub(crate) fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("postgres: {err}"))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn recorded(row: &Row) -> Result<RecordedEvent, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("stored {what} out of range"));
    Ok(RecordedEvent {
        position: u64::try_from(row.get::<_, i64>(0)).map_err(|_| bad("position"))?,
        stream: row.get(1),
        stream_version: u64::try_from(row.get::<_, i64>(2)).map_err(|_| bad("version"))?,
        event_id: row.get(3),
        event_type: row.get(4),
        schema_version: u32::try_from(row.get::<_, i64>(5)).map_err(|_| bad("schema version"))?,
        payload: bytes::Bytes::from(row.get::<_, Vec<u8>>(6)),
        metadata: bytes::Bytes::from(row.get::<_, Vec<u8>>(7)),
        recorded_at: row.get(8),
    })
}

impl PgStore {
    /// Connects, creates or upgrades the schema, and starts the listener.
    pub async fn open(options: PgOptions) -> Result<Self, PgError> {
        validate_schema(&options.schema)?;
        let mut config: Config = options
            .url
            .parse()
            .map_err(|e| PgError::InvalidOptions(format!("connection string: {e}")))?;
        // Every connection resolves the store's unqualified table names in its schema.
        config.options(format!("-c search_path={}", options.schema));
        let pool = Pool::new(config, options.pool_size);
        {
            let mut client = pool.connect().await?;
            migrate::migrate(&mut client, &options.schema).await?;
        }
        let (head, identity) = {
            let client = pool.get().await?;
            let identity: String = client
                .query_one("SELECT identity FROM verdict_identity", &[])
                .await?
                .get(0);
            (read_head(&client).await?, identity)
        };
        let (head_tx, head_rx) = watch::channel(head);
        let (stop, stop_rx) = watch::channel(false);
        let (appends, requests) = mpsc::channel(group::QUEUE);
        let inner = Arc::new(Inner {
            appends,
            pool,
            channel: format!("verdict_{}", options.schema),
            schema: options.schema,
            identity,
            closed: RwLock::new(false),
            head_tx: Mutex::new(Some(head_tx)),
            head_rx,
            stop,
        });
        tokio::spawn(group::write(Arc::downgrade(&inner), requests));
        tokio::spawn(listen(
            Arc::downgrade(&inner),
            stop_rx,
            options.poll_interval,
        ));
        Ok(Self { inner })
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }
}

async fn read_head(client: &tokio_postgres::Client) -> Result<u64, tokio_postgres::Error> {
    let head: i64 = client
        .query_one("SELECT position FROM verdict_head", &[])
        .await?
        .get(0);
    Ok(head.max(0) as u64)
}

impl Inner {
    /// Announces `head` if it is ahead of the last announcement; `false` once closed.
    pub(crate) fn announce(&self, head: u64) -> bool {
        let guard = self.head_tx.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(tx) => {
                tx.send_if_modified(|h| {
                    let newer = head > *h;
                    if newer {
                        *h = head;
                    }
                    newer
                });
                true
            }
            None => false,
        }
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM verdict_events
                     WHERE position >= $1 ORDER BY position LIMIT $2"
                ),
                &[&to_i64(from), &to_i64(max as u64)],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(recorded).collect()
    }
}

/// The listener task: wakes on NOTIFY (or every `poll`), reads the committed head and
/// announces it. Holds the store weakly, so it ends when the store is dropped or closed.
async fn listen(inner: Weak<Inner>, mut stop: watch::Receiver<bool>, poll: Duration) {
    loop {
        let (connected, channel) = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let config = strong.pool.config().clone();
            (config.connect(NoTls).await, strong.channel.clone())
        };
        let (client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "event store listener cannot connect; retrying");
                tokio::select! {
                    () = tokio::time::sleep(poll) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let (wake_tx, mut wake) = mpsc::unbounded_channel::<()>();
        // The connection must be polled for notifications to arrive and for queries to run.
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(_) = message {
                    if wake_tx.send(()).is_err() {
                        return;
                    }
                }
            }
        });
        let listening = client
            .batch_execute(&format!("LISTEN {}", migrate::quote_ident(&channel)))
            .await;
        if let Err(err) = listening {
            tracing::warn!(%err, "event store listener cannot LISTEN; retrying");
            driver.abort();
            continue;
        }
        loop {
            // Read after LISTEN, so a commit between the two is seen by this read or notified.
            match read_head(&client).await {
                Ok(head) => match inner.upgrade() {
                    Some(strong) if strong.announce(head) => {}
                    _ => {
                        driver.abort();
                        return;
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, "event store listener lost its connection; reconnecting");
                    break;
                }
            }
            tokio::select! {
                woke = wake.recv() => {
                    if woke.is_none() {
                        break; // connection ended
                    }
                    // One head read covers every notification already queued.
                    while wake.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {
                    driver.abort();
                    return;
                }
            }
        }
        driver.abort();
    }
}

/// What an id's event carries, for telling a retry from a reused id.
#[derive(Debug)]
pub(crate) enum Content<'a> {
    /// Read back from the table.
    Stored {
        event_type: String,
        schema_version: i64,
        payload: Vec<u8>,
    },
    /// Admitted earlier in the same group.
    Pending(&'a EventData),
}

impl Content<'_> {
    fn matches(&self, sent: &EventData) -> bool {
        match self {
            Content::Stored {
                event_type,
                schema_version,
                payload,
            } => {
                *event_type == sent.event_type
                    && *schema_version == i64::from(sent.schema_version)
                    && payload[..] == sent.payload[..]
            }
            Content::Pending(e) => {
                e.event_type == sent.event_type
                    && e.schema_version == sent.schema_version
                    && e.payload == sent.payload
            }
        }
    }
}

/// Where stored event ids are: `event_id -> (position, stream, version, content)`.
pub(crate) type StoredIds<'a> = HashMap<Uuid, (i64, String, i64, Content<'a>)>;

/// The result of `events` if they are a retry of a stored batch; `stored` holds at least one
/// of the batch's ids. Same ids with another type, schema version or payload are a reused
/// id, never a retry.
pub(crate) fn check_retry(
    stream: &str,
    events: &[EventData],
    stored: &StoredIds<'_>,
) -> Result<AppendResult, StoreError> {
    let Some((first, ..)) = stored.get(&events[0].event_id) else {
        let (event_id, position) = events
            .iter()
            .find_map(|e| stored.get(&e.event_id).map(|s| (e.event_id, s.0)))
            .expect("found holds at least one of the batch's ids");
        return Err(StoreError::DuplicateEventId {
            event_id,
            position: position as u64,
        });
    };
    let first = *first;
    let mut version = 0;
    for (i, e) in events.iter().enumerate() {
        match stored.get(&e.event_id) {
            Some((p, s, v, content))
                if *p == first + i as i64 && s == stream && content.matches(e) =>
            {
                version = *v
            }
            Some((p, ..)) => {
                return Err(StoreError::DuplicateEventId {
                    event_id: e.event_id,
                    position: *p as u64,
                })
            }
            // A new id after stored ones: the batch is no retry; name the first stored.
            None => {
                return Err(StoreError::DuplicateEventId {
                    event_id: events[0].event_id,
                    position: first as u64,
                })
            }
        }
    }
    Ok(AppendResult {
        first_position: first as u64,
        last_position: (first + events.len() as i64 - 1) as u64,
        stream_version: version as u64,
    })
}

#[async_trait::async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(stream, &events)?;
        let closed = self.inner.closed.read().await;
        if *closed {
            return Err(StoreError::Unavailable("store is closed".into()));
        }
        let (reply, answer) = oneshot::channel();
        let request = group::Request {
            stream: stream.to_owned(),
            expected,
            events,
            reply,
        };
        if self.inner.appends.send(request).await.is_err() {
            return Err(StoreError::Unavailable(
                "the store's writer has stopped".into(),
            ));
        }
        let result = answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the store's writer has stopped".into(),
            ))
        });
        drop(closed);
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.inner.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM verdict_events
                     WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
                ),
                &[&stream, &to_i64(from_version), &to_i64(max as u64)],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(recorded).collect()
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from_position, max).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let client = self.inner.pool.get().await.map_err(unavailable)?;
        let version: i64 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM verdict_events WHERE stream = $1",
                &[&stream],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        Ok(version as u64)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let client = self.inner.pool.get().await.map_err(unavailable)?;
        read_head(&client).await.map_err(unavailable)
    }

    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError> {
        let inner = Arc::clone(&self.inner);
        Ok(Subscription::spawn_polling(
            from_position,
            self.inner.head_rx.clone(),
            move |from, max| {
                let inner = Arc::clone(&inner);
                Box::pin(async move { inner.read_all(from, max).await })
            },
        ))
    }

    async fn close(&self) -> Result<(), StoreError> {
        let mut closed = self.inner.closed.write().await;
        *closed = true;
        self.inner
            .head_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.stop.send_replace(true);
        Ok(())
    }

    fn identity(&self) -> Option<String> {
        Some(self.inner.identity.clone())
    }
}
