//! [`Faulty`]: an in-memory store that misbehaves on demand, for tests of what its callers
//! (projectors, monitors, health checks) do when a store fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::{
    AppendResult, EventData, EventStore, ExpectedVersion, MemoryStore, RecordedEvent, StoreError,
    Subscription,
};

/// A [`MemoryStore`] whose subscriptions, appends and health can be made to fail, and
/// whose identity is chosen.
#[derive(Debug, Default)]
pub struct Faulty {
    inner: MemoryStore,
    fail_subscribe: AtomicBool,
    refuse_appends_to: Mutex<Option<String>>,
    lose_acks_to: Mutex<Option<String>>,
    broken: Mutex<Option<String>>,
    identity: Option<String>,
}

impl Faulty {
    /// A working store without identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, reporting `identity`.
    pub fn with_identity(identity: &str) -> Self {
        Self {
            identity: Some(identity.to_owned()),
            ..Self::default()
        }
    }

    /// Subscriptions fail (`Unavailable`) while set.
    pub fn fail_subscribe(&self, fail: bool) {
        self.fail_subscribe.store(fail, Ordering::SeqCst);
    }

    /// Appends to streams starting with `prefix` fail (`Unavailable`, nothing stored) while
    /// set; `None` lets them through again.
    pub fn refuse_appends_to(&self, prefix: Option<&str>) {
        *self
            .refuse_appends_to
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = prefix.map(str::to_owned);
    }

    /// Appends to streams starting with `prefix` are stored but answered `Unavailable`
    /// while set: the lost acknowledgement, an unknown outcome to the caller.
    pub fn lose_acks_to(&self, prefix: Option<&str>) {
        *self.lose_acks_to.lock().unwrap_or_else(|e| e.into_inner()) = prefix.map(str::to_owned);
    }

    /// [`EventStore::health`] answers `Err(reason)` while set.
    pub fn break_with(&self, reason: Option<&str>) {
        *self.broken.lock().unwrap_or_else(|e| e.into_inner()) = reason.map(str::to_owned);
    }
}

#[async_trait::async_trait]
impl EventStore for Faulty {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        let refused = self
            .refuse_appends_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|prefix| stream.starts_with(prefix));
        if refused {
            return Err(StoreError::Unavailable("injected: appends refused".into()));
        }
        let result = self.inner.append(stream, expected, events).await;
        let lost = self
            .lose_acks_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|prefix| stream.starts_with(prefix));
        if lost && result.is_ok() {
            return Err(StoreError::Unavailable(
                "injected: acknowledgement lost".into(),
            ));
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, max).await
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from, max).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }

    async fn subscribe(&self, from: u64) -> Result<Subscription, StoreError> {
        if self.fail_subscribe.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected: subscriptions fail".into(),
            ));
        }
        self.inner.subscribe(from).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }

    fn identity(&self) -> Option<String> {
        self.identity.clone()
    }

    fn health(&self) -> Result<(), String> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}
