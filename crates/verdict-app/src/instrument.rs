//! An `EventStore` decorator that measures appends (latency and batch size) for
//! `/metrics`, whatever the backend.

use async_trait::async_trait;
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use verdict_store::{
    AppendResult, EventData, EventStore, ExpectedVersion, RecordedEvent, StoreError, Subscription,
};

/// Append measurements.
#[derive(Debug)]
pub struct StoreStats {
    /// Append latency in microseconds (until durable).
    pub append_micros: Mutex<Histogram<u64>>,
    /// Events per append.
    pub batch_events: Mutex<Histogram<u64>>,
    /// Failed appends.
    pub append_errors: std::sync::atomic::AtomicU64,
}

impl Default for StoreStats {
    fn default() -> Self {
        let h = |max| Histogram::new_with_bounds(1, max, 2).expect("valid histogram bounds");
        Self {
            append_micros: Mutex::new(h(60_000_000)),
            batch_events: Mutex::new(h(1_000_000)),
            append_errors: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Wraps a store and records every append into [`StoreStats`].
pub struct Instrumented {
    inner: Arc<dyn EventStore>,
    /// The measurements.
    pub stats: Arc<StoreStats>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            stats: Arc::new(StoreStats::default()),
        }
    }
}

#[async_trait]
impl EventStore for Instrumented {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        let n = events.len() as u64;
        let started = Instant::now();
        let result = self.inner.append(stream, expected, events).await;
        let micros = started.elapsed().as_micros() as u64;
        match &result {
            Ok(_) => {
                self.stats
                    .append_micros
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(micros.max(1));
                self.stats
                    .batch_events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(n.max(1));
            }
            Err(_) => {
                self.stats
                    .append_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, max).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from_position, max).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }

    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError> {
        self.inner.subscribe(from_position).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }

    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }

    fn health(&self) -> Result<(), String> {
        self.inner.health()
    }
}
