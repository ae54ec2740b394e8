//! [`MemoryStore`]: the in-memory [`EventStore`], for tests and as the reference model.
//!
//! Everything lives in one `Vec` behind a lock; nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    same_content, validate_append, AppendResult, EventData, EventStore, ExpectedVersion,
    RecordedEvent, StoreError, Subscription,
};

/// An [`EventStore`] held in memory. Cloning shares the same store.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    // Announces the head after each append; subscriptions wait on it. Dropped by `close`,
    // which ends the subscriptions once they have delivered everything.
    head_tx: Mutex<Option<watch::Sender<u64>>>,
}

#[derive(Debug, Default)]
struct State {
    /// `events[p - 1]` has position `p`.
    events: Vec<RecordedEvent>,
    /// Positions of each stream's events, in version order.
    streams: HashMap<String, Vec<u64>>,
    /// Where each event id is stored.
    ids: HashMap<Uuid, u64>,
    closed: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (head_tx, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                head_tx: Mutex::new(Some(head_tx)),
            }),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (appends mutate
        // only after every check), so a poisoned lock is still consistent.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The original result if `events` is a retry of a stored batch, `Ok(None)` if none of
    /// its ids is stored.
    fn find_retry(
        &self,
        stream: &str,
        events: &[EventData],
    ) -> Result<Option<AppendResult>, StoreError> {
        let Some(&first) = self.ids.get(&events[0].event_id) else {
            if let Some((e, &p)) = events
                .iter()
                .find_map(|e| self.ids.get(&e.event_id).map(|p| (e, p)))
            {
                return Err(StoreError::DuplicateEventId {
                    event_id: e.event_id,
                    position: p,
                });
            }
            return Ok(None);
        };
        for (i, e) in events.iter().enumerate() {
            let at = first + i as u64;
            let stored = self.events.get(at as usize - 1);
            if stored.is_none_or(|s| {
                s.event_id != e.event_id || s.stream != stream || !same_content(s, e)
            }) {
                let position = self.ids.get(&e.event_id).copied().unwrap_or(first);
                return Err(StoreError::DuplicateEventId {
                    event_id: e.event_id,
                    position,
                });
            }
        }
        let last = first + events.len() as u64 - 1;
        Ok(Some(AppendResult {
            first_position: first,
            last_position: last,
            stream_version: self.events[last as usize - 1].stream_version,
        }))
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(stream, &events)?;
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(StoreError::Unavailable("store is closed".into()));
        }
        if let Some(result) = state.find_retry(stream, &events)? {
            return Ok(result);
        }
        let current = state.streams.get(stream).map_or(0, |v| v.len() as u64);
        if !expected.admits(current) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                current,
            });
        }
        let first = state.events.len() as u64 + 1;
        let n = events.len() as u64;
        for (i, e) in events.into_iter().enumerate() {
            let position = first + i as u64;
            state.ids.insert(e.event_id, position);
            state.events.push(RecordedEvent {
                position,
                stream: stream.to_owned(),
                stream_version: current + i as u64 + 1,
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
                recorded_at: e.recorded_at,
            });
        }
        state
            .streams
            .entry(stream.to_owned())
            .or_default()
            .extend(first..first + n);
        let head = state.events.len() as u64;
        // Announce while still holding the state lock, so heads are announced in order.
        if let Some(tx) = &*self.inner.head_tx.lock().unwrap_or_else(|e| e.into_inner()) {
            tx.send_replace(head);
        }
        drop(state);
        Ok(AppendResult {
            first_position: first,
            last_position: first + n - 1,
            stream_version: current + n,
        })
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let Some(positions) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(positions
            .iter()
            .skip(skip)
            .take(max)
            .map(|&p| state.events[p as usize - 1].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let skip = from_position.saturating_sub(1) as usize;
        Ok(state.events.iter().skip(skip).take(max).cloned().collect())
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .map_or(0, |v| v.len() as u64))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.state().events.len() as u64)
    }

    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError> {
        let store = self.clone();
        let current = self.state().events.len() as u64;
        let head = match &*self.inner.head_tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver whose sender is gone, so the feed ends after catch-up.
            None => watch::channel(current).1,
        };
        Ok(Subscription::spawn_polling(
            from_position,
            head,
            move |from, max| {
                let store = store.clone();
                Box::pin(async move { store.read_all(from, max).await })
            },
        ))
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.inner
            .head_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(())
    }
}
