//! The conformance suite every [`EventStore`] backend runs (as quickwit's metastore tests).
//!
//! A backend's test file implements [`StoreFactory`] and invokes
//! [`conformance_tests!`](crate::conformance_tests), which expands to one `#[tokio::test]` per
//! case so failures are named; or it calls [`run_all`]. Each case takes a fresh, empty store
//! from the factory. Cases that need a restart use [`StoreFactory::reopen`]; backends that keep
//! nothing across restarts return `None` there and those cases check nothing more.
//!
//! ```ignore
//! verdict_store::conformance_tests!(my_backend_tests, MyFactory::new());
//! ```

pub mod faulty;
pub mod model;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use crate::{EventData, EventStore, ExpectedVersion, RecordedEvent, StoreError};

/// Makes stores for the suite.
#[async_trait::async_trait]
pub trait StoreFactory: Send + Sync {
    /// A fresh, empty store.
    async fn create(&self) -> Arc<dyn EventStore>;

    /// Closes `store` and opens the same data again, as a process restart would; `None` if
    /// the backend keeps nothing across restarts.
    async fn reopen(&self, store: Arc<dyn EventStore>) -> Option<Arc<dyn EventStore>>;
}

/// Runs every case in order; panics at the first failure.
pub async fn run_all(factory: &dyn StoreFactory) {
    empty_store(factory).await;
    append_and_read_back(factory).await;
    positions_are_gap_free_across_streams(factory).await;
    expected_version_no_stream(factory).await;
    expected_version_stream_exists(factory).await;
    expected_version_exact(factory).await;
    failed_batch_stores_nothing(factory).await;
    idempotent_retry_returns_original_positions(factory).await;
    idempotent_retry_of_a_prefix(factory).await;
    partial_duplicate_is_rejected(factory).await;
    duplicate_within_batch_is_rejected(factory).await;
    reused_id_with_other_content_is_rejected(factory).await;
    invalid_appends_are_rejected(factory).await;
    read_ranges(factory).await;
    concurrent_exact_appends_have_one_winner(factory).await;
    concurrent_appends_are_gap_free(factory).await;
    subscribe_catch_up_then_live(factory).await;
    subscribe_slow_consumer_does_not_block_writers(factory).await;
    subscription_ends_after_close(factory).await;
    appends_fail_after_close(factory).await;
    large_event_round_trips(factory).await;
    restart_keeps_everything(factory).await;
    identity_is_durable_and_unique(factory).await;
    subscription_resumes_after_restart(factory).await;
}

/// Expands to one `#[tokio::test]` per case, in a module named `$name`, each building its
/// factory with `$factory`.
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@cases $factory;
                empty_store,
                append_and_read_back,
                positions_are_gap_free_across_streams,
                expected_version_no_stream,
                expected_version_stream_exists,
                expected_version_exact,
                failed_batch_stores_nothing,
                idempotent_retry_returns_original_positions,
                idempotent_retry_of_a_prefix,
                partial_duplicate_is_rejected,
                duplicate_within_batch_is_rejected,
                reused_id_with_other_content_is_rejected,
                invalid_appends_are_rejected,
                read_ranges,
                concurrent_exact_appends_have_one_winner,
                concurrent_appends_are_gap_free,
                subscribe_catch_up_then_live,
                subscribe_slow_consumer_does_not_block_writers,
                subscription_ends_after_close,
                appends_fail_after_close,
                large_event_round_trips,
                restart_keeps_everything,
                identity_is_durable_and_unique,
                subscription_resumes_after_restart
            );
        }
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                $crate::conformance::$case(&factory).await;
            }
        )*
    };
}

/// A test event with a fresh id; the payload names it, so mix-ups show.
pub fn event(kind: &str, n: u64) -> EventData {
    EventData {
        event_id: Uuid::now_v7(),
        event_type: kind.to_owned(),
        schema_version: 1 + (n % 3) as u32,
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        metadata: Bytes::from(format!("meta-{n}")),
        recorded_at: 1_700_000_000_000_000 + n as i64,
    }
}

/// `count` test events.
pub fn events(kind: &str, count: u64) -> Vec<EventData> {
    (0..count).map(|n| event(kind, n)).collect()
}

fn assert_same_envelope(recorded: &RecordedEvent, sent: &EventData) {
    assert_eq!(
        recorded.to_event_data(),
        *sent,
        "stored envelope differs from the appended one"
    );
}

async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store.read_all(1, usize::MAX).await.expect("read_all")
}

/// A new store is empty.
pub async fn empty_store(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    assert_eq!(store.head().await.unwrap(), 0);
    assert!(store.read_all(0, 10).await.unwrap().is_empty());
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
    assert!(store.read_stream("nope", 1, 10).await.unwrap().is_empty());
    assert_eq!(store.stream_version("nope").await.unwrap(), 0);
}

/// What is appended reads back unchanged, numbered from 1.
pub async fn append_and_read_back(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let batch = events("Created", 3);
    let result = store
        .append("s-1", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(
        (
            result.first_position,
            result.last_position,
            result.stream_version
        ),
        (1, 3, 3)
    );
    assert_eq!(result.positions().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(store.head().await.unwrap(), 3);
    assert_eq!(store.stream_version("s-1").await.unwrap(), 3);
    let read = store.read_stream("s-1", 1, 100).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (r, sent)) in read.iter().zip(&batch).enumerate() {
        assert_eq!(r.position, i as u64 + 1);
        assert_eq!(r.stream_version, i as u64 + 1);
        assert_eq!(r.stream, "s-1");
        assert_same_envelope(r, sent);
    }
    assert_eq!(all_events(&*store).await, read);
}

/// Positions interleave across streams without gaps; versions count per stream.
pub async fn positions_are_gap_free_across_streams(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    for i in 0..30u64 {
        let stream = format!("s-{}", i % 3);
        let r = store
            .append(&stream, ExpectedVersion::Any, vec![event("E", i)])
            .await
            .unwrap();
        assert_eq!(r.first_position, i + 1);
        assert_eq!(r.stream_version, i / 3 + 1);
    }
    let all = all_events(&*store).await;
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    for s in 0..3 {
        let stream = store.read_stream(&format!("s-{s}"), 1, 100).await.unwrap();
        assert_eq!(
            stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(stream.windows(2).all(|w| w[0].position < w[1].position));
    }
}

fn assert_wrong_version(err: StoreError, want_current: u64) {
    match err {
        StoreError::WrongExpectedVersion { current, .. } => assert_eq!(current, want_current),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

/// `NoStream` admits only a stream that does not exist.
pub async fn expected_version_no_stream(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::NoStream, events("E", 2))
        .await
        .unwrap();
    let err = store
        .append("a", ExpectedVersion::NoStream, events("E", 1))
        .await
        .unwrap_err();
    assert_wrong_version(err, 2);
    assert_eq!(store.head().await.unwrap(), 2);
}

/// `StreamExists` admits only a stream with events.
pub async fn expected_version_stream_exists(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let err = store
        .append("a", ExpectedVersion::StreamExists, events("E", 1))
        .await
        .unwrap_err();
    assert_wrong_version(err, 0);
    assert_eq!(store.head().await.unwrap(), 0);
    store
        .append("a", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap();
    let r = store
        .append("a", ExpectedVersion::StreamExists, events("E", 1))
        .await
        .unwrap();
    assert_eq!(r.stream_version, 2);
}

/// `Exact(n)` admits only a stream with exactly n events; `Exact(0)` is a new stream.
pub async fn expected_version_exact(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::Exact(0), events("E", 2))
        .await
        .unwrap();
    assert_wrong_version(
        store
            .append("a", ExpectedVersion::Exact(0), events("E", 1))
            .await
            .unwrap_err(),
        2,
    );
    assert_wrong_version(
        store
            .append("a", ExpectedVersion::Exact(1), events("E", 1))
            .await
            .unwrap_err(),
        2,
    );
    assert_wrong_version(
        store
            .append("a", ExpectedVersion::Exact(3), events("E", 1))
            .await
            .unwrap_err(),
        2,
    );
    let r = store
        .append("a", ExpectedVersion::Exact(2), events("E", 1))
        .await
        .unwrap();
    assert_eq!((r.first_position, r.stream_version), (3, 3));
    assert_wrong_version(
        store
            .append("b", ExpectedVersion::Exact(1), events("E", 1))
            .await
            .unwrap_err(),
        0,
    );
}

/// A rejected batch leaves no trace: no events, no ids, no positions used.
pub async fn failed_batch_stores_nothing(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap();
    let rejected = events("E", 5);
    store
        .append("a", ExpectedVersion::NoStream, rejected.clone())
        .await
        .unwrap_err();
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(store.stream_version("a").await.unwrap(), 1);
    // The ids were not consumed: the same batch appends fine afterwards.
    let r = store
        .append("a", ExpectedVersion::Exact(1), rejected)
        .await
        .unwrap();
    assert_eq!((r.first_position, r.last_position), (2, 6));
}

/// Retrying a stored batch succeeds with the original positions and stores nothing.
pub async fn idempotent_retry_returns_original_positions(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let batch = events("E", 3);
    let first = store
        .append("a", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store
        .append("b", ExpectedVersion::Any, events("F", 2))
        .await
        .unwrap();
    store
        .append("a", ExpectedVersion::Any, events("G", 1))
        .await
        .unwrap();
    // Same ids, same (now stale) expected version: the lost-ack retry.
    let again = store
        .append("a", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, first);
    let again = store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.head().await.unwrap(), 6);
    assert_eq!(store.stream_version("a").await.unwrap(), 4);
    let ids: Vec<_> = all_events(&*store)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        6,
        "an id was stored twice"
    );
}

/// Retrying the leading part of a stored batch returns that part's positions.
pub async fn idempotent_retry_of_a_prefix(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let batch = events("E", 4);
    store
        .append("a", ExpectedVersion::Any, events("X", 1))
        .await
        .unwrap();
    store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let r = store
        .append("a", ExpectedVersion::Exact(1), batch[..2].to_vec())
        .await
        .unwrap();
    assert_eq!(
        (r.first_position, r.last_position, r.stream_version),
        (2, 3, 3)
    );
    assert_eq!(store.head().await.unwrap(), 5);
}

fn assert_duplicate(err: StoreError) {
    assert!(
        matches!(err, StoreError::DuplicateEventId { .. }),
        "expected DuplicateEventId, got {err:?}"
    );
}

/// A batch mixing stored and new ids, reordered ids, or ids stored on another stream is
/// rejected whole.
pub async fn partial_duplicate_is_rejected(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let batch = events("E", 2);
    store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let mut mixed = events("N", 1);
    mixed.push(batch[1].clone());
    assert_duplicate(
        store
            .append("a", ExpectedVersion::Any, mixed)
            .await
            .unwrap_err(),
    );
    let mut extended = batch.clone();
    extended.push(event("N", 9));
    assert_duplicate(
        store
            .append("a", ExpectedVersion::Any, extended)
            .await
            .unwrap_err(),
    );
    let reordered = vec![batch[1].clone(), batch[0].clone()];
    assert_duplicate(
        store
            .append("a", ExpectedVersion::Any, reordered)
            .await
            .unwrap_err(),
    );
    assert_duplicate(
        store
            .append("other", ExpectedVersion::Any, batch)
            .await
            .unwrap_err(),
    );
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.stream_version("other").await.unwrap(), 0);
}

/// A stored id sent again with another type, schema version or payload is rejected,
/// naming where the id is stored, and nothing is written; a retry that differs only in
/// metadata or `recorded_at` is still a retry.
pub async fn reused_id_with_other_content_is_rejected(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let batch = events("E", 3);
    store
        .append("a", ExpectedVersion::Any, events("X", 2))
        .await
        .unwrap();
    let first = store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let expect_conflict = |err: StoreError, want: u64| match err {
        StoreError::DuplicateEventId { position, .. } => assert_eq!(position, want),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    };
    // Another payload on the last event of the batch.
    let mut changed = batch.clone();
    changed[2].payload = Bytes::from_static(b"{\"amount\": 2}");
    expect_conflict(
        store
            .append("a", ExpectedVersion::Any, changed)
            .await
            .unwrap_err(),
        first.last_position,
    );
    // Another type, one event alone.
    let mut retyped = batch[1].clone();
    retyped.event_type = "Other".into();
    expect_conflict(
        store
            .append("a", ExpectedVersion::Any, vec![retyped])
            .await
            .unwrap_err(),
        first.first_position + 1,
    );
    // Another schema version.
    let mut upgraded = batch[0].clone();
    upgraded.schema_version += 1;
    expect_conflict(
        store
            .append("a", ExpectedVersion::Any, vec![upgraded])
            .await
            .unwrap_err(),
        first.first_position,
    );
    // Metadata and time differ: still the same event, the original positions.
    let mut retried = batch.clone();
    for e in &mut retried {
        e.metadata = Bytes::from_static(b"{\"correlation_id\": \"retry\"}");
        e.recorded_at += 1_000_000;
    }
    assert_eq!(
        store
            .append("a", ExpectedVersion::Any, retried)
            .await
            .unwrap(),
        first
    );
    assert_eq!(store.head().await.unwrap(), 5);
    let stored = all_events(&*store).await;
    assert_same_envelope(&stored[4], &batch[2]);
}

/// A batch repeating an id is rejected.
pub async fn duplicate_within_batch_is_rejected(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let e = event("E", 1);
    assert_duplicate(
        store
            .append("a", ExpectedVersion::Any, vec![e.clone(), e])
            .await
            .unwrap_err(),
    );
    let mut many = events("E", 40);
    many.push(many[17].clone());
    assert_duplicate(
        store
            .append("a", ExpectedVersion::Any, many)
            .await
            .unwrap_err(),
    );
    assert_eq!(store.head().await.unwrap(), 0);
}

/// Empty batches and bad stream names are rejected.
pub async fn invalid_appends_are_rejected(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    for (stream, batch) in [
        ("a", vec![]),
        ("", events("E", 1)),
        (&*"x".repeat(crate::MAX_STREAM_NAME + 1), events("E", 1)),
    ] {
        let err = store
            .append(stream, ExpectedVersion::Any, batch)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidAppend(_)), "got {err:?}");
    }
    assert_eq!(store.head().await.unwrap(), 0);
}

/// `from` and `max` bound reads as documented.
pub async fn read_ranges(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    for i in 0..20 {
        let stream = if i % 2 == 0 { "even" } else { "odd" };
        store
            .append(stream, ExpectedVersion::Any, vec![event("E", i)])
            .await
            .unwrap();
    }
    let page = store.read_all(5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(store.read_all(0, 1).await.unwrap()[0].position, 1);
    assert_eq!(store.read_all(20, 10).await.unwrap().len(), 1);
    assert!(store.read_all(21, 10).await.unwrap().is_empty());
    assert!(store.read_all(5, 0).await.unwrap().is_empty());
    let odd = store.read_stream("odd", 4, 2).await.unwrap();
    assert_eq!(
        odd.iter()
            .map(|e| (e.stream_version, e.position))
            .collect::<Vec<_>>(),
        vec![(4, 8), (5, 10)]
    );
    assert_eq!(store.read_stream("odd", 0, 100).await.unwrap().len(), 10);
    assert!(store.read_stream("odd", 11, 100).await.unwrap().is_empty());
}

/// Writers racing with the same `Exact` version: exactly one wins each round.
pub async fn concurrent_exact_appends_have_one_winner(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    for round in 0..25u64 {
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .append("race", ExpectedVersion::Exact(round), vec![event("E", w)])
                    .await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.stream_version, round + 1);
                }
                Err(e) => assert_wrong_version(e, round + 1),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(store.stream_version("race").await.unwrap(), 25);
}

/// Many concurrent writers: every acknowledged event is stored once, positions gap-free,
/// and each writer's own appends are in order.
pub async fn concurrent_appends_are_gap_free(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..25u64 {
                let stream = format!("w-{}", w % 4);
                let batch = events("E", 1 + i % 3);
                let r = store
                    .append(&stream, ExpectedVersion::Any, batch.clone())
                    .await
                    .unwrap();
                acks.push((r, batch));
            }
            acks
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let mut acked = 0;
    let all = all_events(&*store).await;
    for acks in done {
        assert!(acks
            .windows(2)
            .all(|w| w[0].0.last_position < w[1].0.first_position));
        for (r, batch) in acks {
            for (p, sent) in r.positions().zip(&batch) {
                assert_same_envelope(&all[p as usize - 1], sent);
                acked += 1;
            }
        }
    }
    assert_eq!(all.len(), acked);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.position == i as u64 + 1));
    for s in 0..4 {
        let stream = store
            .read_stream(&format!("w-{s}"), 1, usize::MAX)
            .await
            .unwrap();
        assert!(stream
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1));
    }
}

async fn next_event(sub: &mut crate::Subscription) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("subscription stalled")
        .expect("subscription ended")
        .expect("subscription failed")
}

/// A subscription replays history from its start, then delivers new events live.
pub async fn subscribe_catch_up_then_live(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    for i in 0..10 {
        store
            .append("a", ExpectedVersion::Any, vec![event("E", i)])
            .await
            .unwrap();
    }
    let mut from_start = store.subscribe(0).await.unwrap();
    let mut from_middle = store.subscribe(7).await.unwrap();
    for p in 1..=10 {
        assert_eq!(next_event(&mut from_start).await.position, p);
    }
    for p in 7..=10 {
        assert_eq!(next_event(&mut from_middle).await.position, p);
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..20 {
                store
                    .append("b", ExpectedVersion::Any, events("L", 1 + i % 2))
                    .await
                    .unwrap();
            }
        })
    };
    let mut p = 11;
    let head_after = 10 + (0..20).map(|i| 1 + i % 2).sum::<u64>();
    while p <= head_after {
        let e = next_event(&mut from_start).await;
        assert_eq!(e.position, p, "live delivery skipped or repeated");
        assert_eq!(next_event(&mut from_middle).await, e);
        p += 1;
    }
    writer.await.unwrap();
    let mut future = store.subscribe(head_after + 1).await.unwrap();
    store
        .append("c", ExpectedVersion::Any, events("F", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut future).await.position, head_after + 1);
}

/// A subscriber that reads nothing does not stop writers; it later reads everything.
pub async fn subscribe_slow_consumer_does_not_block_writers(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let mut sub = store.subscribe(1).await.unwrap();
    let n = (crate::SUBSCRIPTION_BUFFER * 3) as u64;
    let appends = async {
        for i in 0..n / 100 {
            store
                .append("a", ExpectedVersion::Any, events("E", 100))
                .await
                .unwrap();
            let _ = i;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), appends)
        .await
        .expect("writers blocked by an idle subscriber");
    for p in 1..=(n / 100) * 100 {
        assert_eq!(next_event(&mut sub).await.position, p);
    }
}

/// After `close`, a subscription delivers what was committed and then ends.
pub async fn subscription_ends_after_close(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::Any, events("E", 3))
        .await
        .unwrap();
    let mut sub = store.subscribe(1).await.unwrap();
    store.close().await.unwrap();
    for p in 1..=3 {
        assert_eq!(next_event(&mut sub).await.position, p);
    }
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("subscription did not end");
    assert!(end.is_none(), "expected the end of the feed, got {end:?}");
}

/// After `close`, appends fail as unavailable and reads still work.
pub async fn appends_fail_after_close(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::Any, events("E", 2))
        .await
        .unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let err = store
        .append("a", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 2);
    assert_eq!(store.head().await.unwrap(), 2);
}

/// A 1 MiB payload and a long stream name round-trip.
pub async fn large_event_round_trips(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let mut big = event("Big", 1);
    big.payload = Bytes::from(
        (0..1 << 20)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    big.metadata = Bytes::from(vec![0xAB; 4096]);
    let stream = "é".repeat(crate::MAX_STREAM_NAME / 2);
    store
        .append(&stream, ExpectedVersion::Any, vec![big.clone()])
        .await
        .unwrap();
    store
        .append("small", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap();
    let read = store.read_stream(&stream, 1, 1).await.unwrap();
    assert_same_envelope(&read[0], &big);
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 2);
}

/// After a restart every event, version, position and id is still there.
pub async fn restart_keeps_everything(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let first = events("E", 3);
    store
        .append("a", ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();
    store
        .append("b", ExpectedVersion::Any, events("F", 2))
        .await
        .unwrap();
    let before = all_events(&*store).await;
    let Some(store) = factory.reopen(store).await else {
        return;
    };
    assert_eq!(all_events(&*store).await, before);
    assert_eq!(store.head().await.unwrap(), 5);
    assert_eq!(store.stream_version("a").await.unwrap(), 3);
    // Idempotency and versions survive the restart.
    let again = store
        .append("a", ExpectedVersion::NoStream, first)
        .await
        .unwrap();
    assert_eq!(again.positions(), 1..=3);
    assert_wrong_version(
        store
            .append("a", ExpectedVersion::Exact(2), events("G", 1))
            .await
            .unwrap_err(),
        3,
    );
    let r = store
        .append("a", ExpectedVersion::Exact(3), events("G", 1))
        .await
        .unwrap();
    assert_eq!((r.first_position, r.stream_version), (6, 4));
    let Some(store) = factory.reopen(store).await else {
        return;
    };
    assert_eq!(store.head().await.unwrap(), 6);
    assert_eq!(store.read_stream("a", 4, 1).await.unwrap()[0].position, 6);
}

/// A store with an identity keeps it across restarts and writes, and another store has
/// another one: read models trust a snapshot only from the store it was built from.
pub async fn identity_is_durable_and_unique(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    let Some(identity) = store.identity() else {
        return;
    };
    assert!(!identity.is_empty());
    store
        .append("a", ExpectedVersion::Any, events("E", 2))
        .await
        .unwrap();
    assert_eq!(store.identity().as_deref(), Some(identity.as_str()));
    let other = factory.create().await;
    assert_ne!(other.identity(), Some(identity.clone()));
    let Some(store) = factory.reopen(store).await else {
        return;
    };
    assert_eq!(store.identity(), Some(identity));
}

/// A consumer that checkpointed position P resumes after a restart from P + 1: catch-up from
/// the reopened store, then live events, without gaps or repeats.
pub async fn subscription_resumes_after_restart(factory: &dyn StoreFactory) {
    let store = factory.create().await;
    store
        .append("a", ExpectedVersion::Any, events("E", 5))
        .await
        .unwrap();
    let mut sub = store.subscribe(1).await.unwrap();
    for p in 1..=3 {
        assert_eq!(next_event(&mut sub).await.position, p);
    }
    let checkpoint = 3;
    drop(sub);
    let store = factory.reopen(Arc::clone(&store)).await.unwrap_or(store);
    let mut sub = store.subscribe(checkpoint + 1).await.unwrap();
    assert_eq!(next_event(&mut sub).await.position, 4);
    assert_eq!(next_event(&mut sub).await.position, 5);
    let r = store
        .append("b", ExpectedVersion::NoStream, events("F", 2))
        .await
        .unwrap();
    assert_eq!(r.first_position, 6);
    assert_eq!(next_event(&mut sub).await.position, 6);
    let e = next_event(&mut sub).await;
    assert_eq!(
        (e.position, e.stream.as_str(), e.stream_version),
        (7, "b", 2)
    );
}
