//! Faults injected under the writer: failed write, failed fsync, short write, ENOSPC, a disk
//! that stays broken. The writer must fail the group, refuse later appends while the fault
//! lasts (health says why), recover by itself once the disk works again (no reopen), keep
//! positions gap-free, and never have acknowledged anything that is not on disk after a
//! reopen.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Waits (polling the observable health, 10 s at most) until the writer has recovered.
async fn wait_healthy(store: &LogStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(reason) = store.health() {
        assert!(
            Instant::now() < deadline,
            "the writer did not recover: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the fault layer has failed `n` more operations: probes that met the fault.
async fn wait_failures(faults: &FaultyStorage, n: u64) {
    let target = faults.injected_failures() + n;
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.injected_failures() < target {
        assert!(Instant::now() < deadline, "the writer stopped probing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs one fault scenario: some acknowledged appends, the fault under a group of concurrent
/// appends; if `persists`, the writer stays stopped until the test heals the disk. Then it
/// must recover without a reopen: the failed group's events are gone, new appends take the
/// next positions, retries store the failed batches once, and a reopen sees exactly that.
async fn scenario(inject: impl FnOnce(&FaultyStorage), mentions: &str, persists: bool) {
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
    assert!(store.health().is_ok());
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
    let acked_head = acked.iter().map(|a| a.0).max().unwrap();
    if persists {
        // While the disk stays broken: unhealthy, appends refused with the reason, even
        // after the writer probed several times; nothing new acknowledged.
        assert!(store.poisoned().is_some());
        assert!(store.health().unwrap_err().contains(mentions));
        wait_failures(&faults, 3).await;
        let later = store
            .append("s", ExpectedVersion::Any, events("After", 1))
            .await
            .unwrap_err();
        assert_unavailable(&later, mentions);
        assert_unavailable(&later, "unknown outcome");
        assert!(store.health().is_err());
        faults.heal();
    }
    // Reads still serve what was acknowledged.
    assert_eq!(store.head().await.unwrap(), acked_head);
    wait_healthy(&store).await;
    assert!(store.poisoned().is_none());

    // Recovered without a reopen: the failed group's events were cut, not half-kept.
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len() as u64, acked_head);
    let stored: HashSet<_> = all.iter().map(|e| e.event_id).collect();
    for batch in &failed_batches {
        assert!(batch.iter().all(|e| !stored.contains(&e.event_id)));
    }
    // New appends take the next positions (the failed group's, reused: no gap).
    let batch = events("Recovered", 2);
    let r = store
        .append("s", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(r.first_position, acked_head + 1);
    acked.extend(r.positions().zip(batch));
    // A retry of each failed batch stores it, once (the second retry is idempotent).
    for batch in &failed_batches {
        let first = store
            .append("retry", ExpectedVersion::Any, batch.clone())
            .await
            .unwrap();
        let again = store
            .append("retry", ExpectedVersion::Any, batch.clone())
            .await
            .unwrap();
        assert_eq!(first, again);
        acked.extend(first.positions().zip(batch.iter().cloned()));
    }
    let before_reopen = store.read_all(1, usize::MAX).await.unwrap();
    store.close().await.unwrap();

    // Reopen on the real file system: exactly the acknowledged events.
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all, before_reopen);
    assert_eq!(all.len(), acked.len(), "an unacknowledged event survived");
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
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_stops_the_writer_until_it_recovers() {
    scenario(|f| f.fail_sync(1, Fault::Error(EIO)), "fdatasync", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_stops_the_writer_until_it_recovers() {
    scenario(|f| f.fail_write(1, Fault::Error(EIO)), "write", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_write_refuses_appends_until_space_is_freed() {
    scenario(|f| f.break_writes(ENOSPC), "No space left", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_fsync_refuses_appends_until_the_disk_works() {
    scenario(|f| f.break_syncs(ENOSPC), "No space left", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_on_fsync_refuses_appends_until_the_disk_works() {
    // fsyncgate: the failed group's pages may be marked clean; recovery rewrites, never
    // re-syncs them.
    scenario(|f| f.break_syncs(EIO), "fdatasync", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_write_then_enospc_leaves_a_torn_tail_that_recovery_cuts() {
    // 100 bytes of a group land, then the disk is full until healed.
    scenario(
        |f| f.fail_write(1, Fault::Short(100)),
        "No space left",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_fsync_failure_fails_only_its_group() {
    // The third group fails: the first two are acknowledged and survive.
    // (The third fsync may be a new segment's: the message names the EIO either way.)
    scenario(
        |f| f.fail_sync(3, Fault::Error(EIO)),
        "Input/output error",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_stays_broken_acknowledges_nothing_and_stays_unhealthy() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = FaultyStorage::new();
    let store = open_faulty(tmp.path(), &faults);
    store
        .append("s", ExpectedVersion::Any, events("E", 3))
        .await
        .unwrap();
    faults.break_syncs(EIO);
    assert!(store
        .append("s", ExpectedVersion::Any, events("E", 1))
        .await
        .is_err());
    // Through many probes and append attempts: nothing acknowledged, still unhealthy.
    for _ in 0..4 {
        wait_failures(&faults, 1).await;
        let err = store
            .append("s", ExpectedVersion::Any, events("E", 1))
            .await
            .unwrap_err();
        assert_unavailable(&err, "Input/output error");
        assert!(store.health().is_err());
        assert_eq!(store.head().await.unwrap(), 3);
    }
    store.close().await.unwrap();
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    assert_eq!(store.head().await.unwrap(), 3);
    assert!(store.health().is_ok());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_failure_while_starting_a_segment_is_recovered_from() {
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
    // The probe removes the half-created segment; appends go on without a reopen.
    wait_healthy(&store).await;
    store
        .append("s", ExpectedVersion::Exact(acked), events("E", 1))
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    assert_eq!(store.head().await.unwrap(), acked + 1);
    store.close().await.unwrap();
}
