//! The log's retry detection compares content: a stored id sent again with another type,
//! schema version or payload is a `DuplicateEventId` naming the stored position, whether the
//! stored event is in the tail cache, only in its segment, or in the same write group.
//! (The conformance suite covers the cached case; these force the others.)

use bytes::Bytes;
use verdict_store::conformance::events;
use verdict_store::{AppendResult, EventData, EventStore, ExpectedVersion, StoreError};
use verdict_store_log::{LogOptions, LogStore};

fn conflict_at(err: StoreError) -> u64 {
    match err {
        StoreError::DuplicateEventId { position, .. } => position,
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
}

/// Every way of changing a stored event is a conflict at its position; metadata is not.
async fn assert_content_compared(store: &LogStore, original: &[EventData], first: AppendResult) {
    let head = store.head().await.unwrap();
    let mut changed = original.to_vec();
    changed[1].payload = Bytes::from_static(b"{\"other\":true}");
    let err = store.append("a", ExpectedVersion::Any, changed).await;
    assert_eq!(conflict_at(err.unwrap_err()), first.last_position);
    let mut retyped = original.to_vec();
    retyped[0].event_type = "Other".into();
    let err = store.append("a", ExpectedVersion::Any, retyped).await;
    assert_eq!(conflict_at(err.unwrap_err()), first.first_position);
    let mut upgraded = original.to_vec();
    upgraded[1].schema_version += 1;
    let err = store.append("a", ExpectedVersion::Any, upgraded).await;
    assert_eq!(conflict_at(err.unwrap_err()), first.last_position);
    // The same content (metadata aside) is a retry: the original positions.
    let mut retried = original.to_vec();
    retried[0].metadata = Bytes::from_static(b"{\"retry\":1}");
    let r = store.append("a", ExpectedVersion::Any, retried).await;
    assert_eq!(r.unwrap(), first);
    assert_eq!(
        store.head().await.unwrap(),
        head,
        "a conflict wrote something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_is_compared_with_the_record_in_its_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_size: 64 << 10,
        ..LogOptions::default()
    };
    let store = LogStore::open(tmp.path(), options.clone()).unwrap();
    let original = events("E", 2);
    let first = store
        .append("a", ExpectedVersion::Any, original.clone())
        .await
        .unwrap();
    // Push the originals out of the tail cache (4,096 events), into an older segment.
    for _ in 0..50 {
        store
            .append("b", ExpectedVersion::Any, events("F", 100))
            .await
            .unwrap();
    }
    assert_content_compared(&store, &original, first).await;
    store.close().await.unwrap();
    // After a reopen nothing is cached at all.
    let store = LogStore::open(tmp.path(), options).unwrap();
    assert_content_compared(&store, &original, first).await;
    store.close().await.unwrap();
}
