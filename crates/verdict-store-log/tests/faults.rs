//! Faults injected under the writer: failed write, failed fsync, short write, ENOSPC. The
//! writer must fail the group, poison itself, fail later appends fast, and never have
//! acknowledged anything that is not on disk after a reopen.

use std::collections::HashSet;
use std::sync::Arc;

use verdict_store::conformance::events;
use verdict_store::{EventData, EventStore, ExpectedVersion, StoreError};
use verdict_store_log::storage::{Fault, EIO, ENOSPC};
use verdict_store_log::{FaultyStorage, LogOptions, LogStore};

fn open_faulty(dir: &std::path::Path, faults: &FaultyStorage) -> LogStore {
    let options = LogOptions {
        storage: Arc::new(faults.clone()),
        segment_size: 8192,
        ..LogOptions::default()
    };
    LogStore::open(dir, options).unwrap()
}

fn assert_unavailable(err: &StoreError, mentions: &str) {
    match err {
        StoreError::Unavailable(msg) => assert!(
            msg.contains(mentions),
            "{msg:?} should mention {mentions:?}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Runs one fault scenario: some acknowledged appends, the fault under a group of concurrent
/// appends, then checks poisoning and, after a reopen, the acknowledged-writes invariants.
async fn scenario(inject: impl FnOnce(&FaultyStorage), mentions: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let faults = FaultyStorage::new();
    let store = Arc::new(open_faulty(tmp.path(), &faults));
    let mut acked: Vec<(u64, EventData)> = Vec::new();
    for i in 0..30u64 {
        let batch = events("Before", 1 + i % 3);
        let r = store
            .append("s", ExpectedVersion::Any, batch.clone())
            .await
            .unwrap();
        acked.extend(r.positions().zip(batch));
    }
    inject(&faults);
    // A group of concurrent appends meets the fault.
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let batch = events("During", 1 + w % 4);
            (
                store
                    .append(&format!("w-{w}"), ExpectedVersion::NoStream, batch.clone())
                    .await,
                batch,
            )
        }));
    }
    let mut failed_batches = Vec::new();
    for t in tasks {
        let (outcome, batch) = t.await.unwrap();
        match outcome {
            // Appends that made an earlier, healthy group are acknowledged normally.
            Ok(r) => acked.extend(r.positions().zip(batch)),
            Err(e) => {
                assert_unavailable(&e, mentions);
                failed_batches.push(batch);
            }
        }
    }
    // If the group was too small to reach the fault, later single appends reach it.
    for i in 0..10 {
        if !failed_batches.is_empty() {
            break;
        }
        let batch = events("Single", 1);
        match store
            .append(
                &format!("single-{i}"),
                ExpectedVersion::NoStream,
                batch.clone(),
            )
            .await
        {
            Ok(r) => acked.extend(r.positions().zip(batch)),
            Err(e) => {
                assert_unavailable(&e, mentions);
                failed_batches.push(batch);
            }
        }
    }
    assert!(!failed_batches.is_empty(), "the fault hit no append");
    assert!(store.poisoned().is_some());
    // Later appends fail fast with the reason.
    let later = store
        .append("s", ExpectedVersion::Any, events("After", 1))
        .await
        .unwrap_err();
    assert_unavailable(&later, mentions);
    assert_unavailable(&later, "reopen the store");
    // Reads still serve what was acknowledged.
    assert_eq!(
        store.head().await.unwrap(),
        acked.iter().map(|a| a.0).max().unwrap()
    );
    store.close().await.unwrap();

    // Reopen on the real file system.
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1),
        "positions not gap-free"
    );
    let mut ids = HashSet::new();
    assert!(
        all.iter().all(|e| ids.insert(e.event_id)),
        "an event is stored twice"
    );
    for (position, sent) in &acked {
        assert_eq!(
            all[*position as usize - 1].to_event_data(),
            *sent,
            "acknowledged event {position} lost"
        );
    }
    // A failed append's outcome is unknown, but all or nothing; a retry settles it once.
    for batch in failed_batches {
        let present = batch.iter().filter(|e| ids.contains(&e.event_id)).count();
        assert!(
            present == 0 || present == batch.len(),
            "a failed batch is partly stored"
        );
        let stream = all
            .iter()
            .find(|e| e.event_id == batch[0].event_id)
            .map(|e| e.stream.clone())
            .unwrap_or_else(|| "retry".to_owned());
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let after = store.read_all(1, usize::MAX).await.unwrap();
    let unique: HashSet<_> = after.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), after.len(), "a retry duplicated events");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_poisons_the_writer() {
    scenario(|f| f.fail_sync(1, Fault::Error(EIO)), "fdatasync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_poisons_the_writer() {
    scenario(|f| f.fail_write(1, Fault::Error(EIO)), "write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_poisons_the_writer() {
    scenario(|f| f.fail_write(1, Fault::Error(ENOSPC)), "No space left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_write_then_enospc_leaves_a_torn_tail_that_recovery_removes() {
    // 100 bytes of a group land, then the disk is full.
    scenario(|f| f.fail_write(1, Fault::Short(100)), "No space left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_fsync_failure_fails_only_its_group() {
    // The third group fails: the first two are acknowledged and survive.
    // (The third fsync may be a new segment's: the message names the EIO either way.)
    scenario(|f| f.fail_sync(3, Fault::Error(EIO)), "Input/output error").await;
}

#[tokio::test]
async fn a_failure_while_starting_a_segment_poisons_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = FaultyStorage::new();
    let store = open_faulty(tmp.path(), &faults);
    let mut acked = 0;
    // Fill the first segment up to the roll point (8 KiB of data; the file runs on in
    // preallocated zeros): the next append starts a segment.
    let data_len = || {
        verdict_store_log::recovery::check(tmp.path())
            .unwrap()
            .segments[0]
            .valid_len
    };
    while data_len() < 8192 {
        store
            .append("s", ExpectedVersion::Any, events("E", 10))
            .await
            .unwrap();
        acked += 10;
    }
    // Its header write hits a full disk.
    faults.fail_write(1, Fault::Error(ENOSPC));
    let err = store
        .append("s", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap_err();
    assert_unavailable(&err, "creating a new segment");
    store.close().await.unwrap();
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    assert_eq!(store.head().await.unwrap(), acked);
    // The half-created segment was cleaned up and appends go on.
    store
        .append("s", ExpectedVersion::Exact(acked), events("E", 1))
        .await
        .unwrap();
    store.close().await.unwrap();
}
