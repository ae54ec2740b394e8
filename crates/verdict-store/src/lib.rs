//! The `EventStore` trait, its in-memory implementation and the shared conformance suite.
//!
//! The store knows nothing of experiments: an event is an opaque payload inside a small
//! envelope ([`EventData`] to append, [`RecordedEvent`] read back). Every backend —
//! [`MemoryStore`] here, the embedded log in `verdict-store-log`, and later PostgreSQL and
//! NATS JetStream — implements [`EventStore`] and passes the same suite,
//! [`conformance`] (behind the `conformance` feature).
//!
//! # Numbering
//!
//! * Global positions start at **1** and are gap-free: the n-th event ever committed has
//!   position n, and [`EventStore::head`] is the position of the last committed event (0 when
//!   the store is empty). The events of one append occupy consecutive positions.
//! * Stream versions start at **1**: the n-th event of a stream has `stream_version` n, and
//!   the *current version* of a stream is the number of events in it (0 for a stream that does
//!   not exist). [`ExpectedVersion::Exact`]`(n)` means "the stream has exactly n events", so
//!   `Exact(0)` behaves like [`ExpectedVersion::NoStream`].
//! * Read ranges are inclusive of their start: `read_all(from, ..)` returns positions
//!   `>= from`, `read_stream(s, from, ..)` versions `>= from`; 0 and 1 both mean "from the
//!   beginning". A checkpointing consumer resumes from `checkpoint + 1`.
//!
//! # Guarantees every backend gives
//!
//! * An append of a batch to one stream is atomic and conditional on [`ExpectedVersion`].
//! * A reader that has seen position P never later sees a new event with a position below P.
//! * An append is acknowledged only when durable (for durable backends).
//! * Idempotency by `event_id`: if every id of a batch is already stored, consecutively and in
//!   the same order, in the same stream, the append succeeds without writing and returns the
//!   original positions — whatever the expected version says, so a client can retry a request
//!   whose answer it lost — provided each stored event has the same `event_type`,
//!   `schema_version` and `payload` as the one sent (metadata and `recorded_at` may differ).
//!   Ids stored elsewhere, only some of them, or with a different type or payload, are a
//!   [`StoreError::DuplicateEventId`] naming the stored position: a reused id never silently
//!   drops new data.
//! * An error of kind [`StoreError::Unavailable`] (I/O failure, poisoned writer, closed store)
//!   is an *unknown outcome*: the append may or may not have been stored; retry it with the
//!   same ids.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;

pub use memory::MemoryStore;

/// The largest batch one append may carry; bigger batches are [`StoreError::InvalidAppend`].
pub const MAX_BATCH_EVENTS: usize = 100_000;

/// The longest stream name, in bytes.
pub const MAX_STREAM_NAME: usize = 1024;

/// An event to append: the envelope the store understands, around an opaque payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventData {
    /// Client-generated id (UUIDv7 suggested); the idempotency key.
    pub event_id: Uuid,
    /// The event's type name, opaque to the store.
    pub event_type: String,
    /// Version of the payload's schema, so readers can upcast old shapes.
    pub schema_version: u32,
    /// The event itself, opaque bytes (JSON in verdict).
    pub payload: Bytes,
    /// Correlation/causation ids and the like, opaque bytes.
    pub metadata: Bytes,
    /// When the event happened, unix microseconds, given by the caller (the store reads no
    /// clock, so replays and tests are deterministic).
    pub recorded_at: i64,
}

impl EventData {
    /// A new event with empty metadata, schema version 1 and `recorded_at` 0.
    pub fn new(event_id: Uuid, event_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            event_id,
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: Bytes::new(),
            recorded_at: 0,
        }
    }
}

/// An event as stored: the appended envelope plus where the store put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position, from 1, gap-free across all streams.
    pub position: u64,
    /// The stream the event was appended to.
    pub stream: String,
    /// Position within the stream, from 1.
    pub stream_version: u64,
    /// See [`EventData::event_id`].
    pub event_id: Uuid,
    /// See [`EventData::event_type`].
    pub event_type: String,
    /// See [`EventData::schema_version`].
    pub schema_version: u32,
    /// See [`EventData::payload`].
    pub payload: Bytes,
    /// See [`EventData::metadata`].
    pub metadata: Bytes,
    /// See [`EventData::recorded_at`].
    pub recorded_at: i64,
}

impl RecordedEvent {
    /// The envelope as it was appended (what a retry would send).
    pub fn to_event_data(&self) -> EventData {
        EventData {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            recorded_at: self.recorded_at,
        }
    }
}

/// The condition an append puts on the stream's current version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check (traffic events).
    Any,
    /// The stream must not exist yet (current version 0).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must have exactly this many events.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `current` satisfies this condition.
    pub fn admits(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::StreamExists => current > 0,
            Self::Exact(n) => current == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(n) => write!(f, "exactly {n}"),
        }
    }
}

/// What a successful append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the batch's first event.
    pub first_position: u64,
    /// Position of the batch's last event; the batch occupies `first..=last`.
    pub last_position: u64,
    /// Stream version of the batch's last event (the stream's version right after the batch).
    pub stream_version: u64,
}

impl AppendResult {
    /// The global positions of the batch, in order.
    pub fn positions(&self) -> std::ops::RangeInclusive<u64> {
        self.first_position..=self.last_position
    }
}

/// Errors every backend returns; callers match on them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream's current version did not satisfy the expected version; nothing was stored.
    #[error("wrong expected version on stream {stream:?}: expected {expected}, current version is {current}")]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual current version (0 = no stream).
        current: u64,
    },
    /// An event id of the batch is already stored, but not as this very batch on this stream
    /// (or the batch repeats an id); nothing was stored.
    #[error("event id {event_id} is already stored at position {position} (not as a retry of this batch)")]
    DuplicateEventId {
        /// The offending id.
        event_id: Uuid,
        /// Where it is stored (0 when the batch itself repeats it).
        position: u64,
    },
    /// The append is malformed (empty batch, empty or oversized stream name, too many events).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The backend cannot serve the request: I/O failure, poisoned writer, closed store. For an
    /// append the outcome is unknown: retry with the same event ids.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Data read back failed validation (checksum, framing).
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
}

/// A future returned by the paging function of [`Subscription::spawn_polling`].
pub type PageFuture = Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send>>;

/// The store contract every backend implements. Object safe: the server holds an
/// `Arc<dyn EventStore>` and chooses the backend at run time.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream's version satisfies `expected`;
    /// returns their positions once they are durable.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError>;

    /// Up to `max` events of `stream` with `stream_version >= from_version`, in order. An unknown
    /// stream reads as empty.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `max` events with `position >= from_position`, in position order.
    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The current version of `stream`: its number of events, 0 if it does not exist.
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// Position of the last committed event; 0 when the store is empty.
    async fn head(&self) -> Result<u64, StoreError>;

    /// Every event from `from_position` on: first those already stored (catch-up), then new
    /// ones as they are committed (live), in position order without gaps or repeats. Delivery
    /// is pull-based through a bounded buffer, so a slow subscriber never slows writers; it
    /// just falls behind and catches up by reading.
    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError>;

    /// Stops accepting appends and waits for those in flight to finish (durable or failed).
    /// Reads keep working. Idempotent.
    async fn close(&self) -> Result<(), StoreError>;

    /// A random id the store was given when it was created, kept durably with its data, so
    /// a read model can tell the log it was built from (a snapshot taken from another log,
    /// or from a log since recreated, must not be trusted). `None` for stores with no
    /// durable identity (in-memory).
    fn identity(&self) -> Option<String> {
        None
    }

    /// Whether appends can currently succeed: `Err(reason)` while the write path is
    /// broken (a poisoned writer waiting to recover, a lost connection). Health checks
    /// report it; it never blocks.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Whether a stored event and a resent one carry the same event (metadata and time aside).
pub fn same_content(stored: &RecordedEvent, sent: &EventData) -> bool {
    stored.event_type == sent.event_type
        && stored.schema_version == sent.schema_version
        && stored.payload == sent.payload
}

/// Checks what every backend checks before an append touches storage.
pub fn validate_append(stream: &str, events: &[EventData]) -> Result<(), StoreError> {
    if stream.is_empty() {
        return Err(StoreError::InvalidAppend("empty stream name".into()));
    }
    if stream.len() > MAX_STREAM_NAME {
        return Err(StoreError::InvalidAppend(format!(
            "stream name of {} bytes exceeds {MAX_STREAM_NAME}",
            stream.len()
        )));
    }
    if events.is_empty() {
        return Err(StoreError::InvalidAppend("empty batch".into()));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(StoreError::InvalidAppend(format!(
            "batch of {} events exceeds {MAX_BATCH_EVENTS}",
            events.len()
        )));
    }
    // Quadratic only for tiny batches; large ones use a set.
    if events.len() <= 16 {
        for (i, e) in events.iter().enumerate() {
            if events[..i].iter().any(|o| o.event_id == e.event_id) {
                return Err(StoreError::DuplicateEventId {
                    event_id: e.event_id,
                    position: 0,
                });
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        for e in events {
            if !seen.insert(e.event_id) {
                return Err(StoreError::DuplicateEventId {
                    event_id: e.event_id,
                    position: 0,
                });
            }
        }
    }
    Ok(())
}

/// A catch-up-then-live feed of events, see [`EventStore::subscribe`].
///
/// Dropping it stops the feed.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<RecordedEvent, StoreError>>,
}

/// How many events a subscription buffers ahead of its consumer.
pub const SUBSCRIPTION_BUFFER: usize = 1024;

impl Subscription {
    /// The next event, waiting for one to be committed if the subscriber is caught up.
    /// `None` when the store closed and every committed event was delivered; an `Err` is
    /// delivered once, then the feed ends.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        self.rx.recv().await
    }

    /// Wraps a channel fed by a backend's own task.
    pub fn from_channel(rx: mpsc::Receiver<Result<RecordedEvent, StoreError>>) -> Self {
        Self { rx }
    }

    /// The generic subscription every pull-based backend can use: a task reads pages with
    /// `read_page(from, max)` and, once caught up, waits for `head` to move. The bounded
    /// channel is the backpressure: the task reads no further than its consumer takes.
    ///
    /// `head` must only ever announce positions whose events `read_page` can return; when
    /// its sender is dropped (store closed) the feed ends after the last committed event.
    pub fn spawn_polling<F>(
        from_position: u64,
        mut head: watch::Receiver<u64>,
        read_page: F,
    ) -> Self
    where
        F: Fn(u64, usize) -> PageFuture + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let read_page = Arc::new(read_page);
        tokio::spawn(async move {
            let mut next = from_position.max(1);
            let mut closed = false;
            loop {
                let committed = *head.borrow_and_update();
                if next <= committed {
                    let want = ((committed - next + 1) as usize).min(SUBSCRIPTION_BUFFER);
                    match read_page(next, want).await {
                        Ok(page) => {
                            if page.is_empty() {
                                // The head said otherwise: never skip, report it.
                                let _ = tx
                                    .send(Err(StoreError::Corrupt(format!(
                                        "position {next} is committed but unreadable"
                                    ))))
                                    .await;
                                return;
                            }
                            for event in page {
                                if event.position != next {
                                    let _ = tx
                                        .send(Err(StoreError::Corrupt(format!(
                                            "expected position {next}, read {}",
                                            event.position
                                        ))))
                                        .await;
                                    return;
                                }
                                next += 1;
                                if tx.send(Ok(event)).await.is_err() {
                                    return; // subscriber gone
                                }
                            }
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    }
                    continue;
                }
                if closed {
                    return;
                }
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            // Store closed: deliver what is committed, then end.
                            closed = true;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Self { rx }
    }
}
