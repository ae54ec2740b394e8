//! The tail cache serves recent events from memory: whatever it serves must equal what the
//! segments hold. Reads while the store is open (recent ones from the cache, older ones and
//! ranges crossing its start from files) are compared with the same reads after a reopen,
//! when the cache is empty and every read goes to the files. The appends come one at a time
//! (each commits inline) and then concurrently (the writer thread's groups), with rejected
//! appends and idempotent retries among them, which must not reach the cache.

use std::sync::Arc;

use verdict_store::conformance::event;
use verdict_store::{EventData, EventStore, ExpectedVersion, RecordedEvent, StoreError};
use verdict_store_log::{LogOptions, LogStore};

/// Events appended one batch at a time: more than the cache holds, so reads cross its start.
const SEQUENTIAL: u64 = 6000;
/// Rounds of concurrent appends after those, and appends per round.
const ROUNDS: u64 = 40;
const PER_ROUND: u64 = 16;
/// Every event: each concurrent append adds one event, retries and rejections none.
const EVENTS: u64 = SEQUENTIAL + ROUNDS * PER_ROUND;

/// Ranges read before and after the reopen: from the start, across the cache's start, the
/// newest few (cached), single events, and past the head.
fn ranges() -> Vec<(u64, usize)> {
    vec![
        (1, 100),
        (1, usize::MAX),
        (EVENTS - 5000, 2000),
        (EVENTS - 4200, 400),
        (EVENTS - 100, 100),
        (EVENTS - 100, 1000),
        (EVENTS, 1),
        (EVENTS + 1, 10),
        (EVENTS - 3000, 1),
    ]
}

async fn reads(store: &LogStore) -> Vec<Vec<RecordedEvent>> {
    let mut out = Vec::new();
    for (from, max) in ranges() {
        out.push(store.read_all(from, max).await.expect("read_all"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_equal_reads_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let options = LogOptions {
        // Several segments, so cached events also sit in a segment rolled meanwhile.
        segment_size: 64 << 10,
        ..LogOptions::default()
    };
    let store = LogStore::open(&path, options.clone()).unwrap();
    // A live subscription from the start reads through the cache as it catches up.
    let mut sub = store.subscribe(1).await.unwrap();
    let mut n = 0;
    let mut batch = 0;
    while n < SEQUENTIAL {
        // Batches of 1 to 3 events on a few streams, payloads of varying size.
        let size = (batch % 3 + 1).min(SEQUENTIAL - n);
        let events = (n..n + size)
            .map(|k| {
                let mut e = event(&format!("Kind{}", k % 4), k);
                e.payload = format!(
                    "{{\"n\":{k},\"pad\":\"{}\"}}",
                    "x".repeat((k % 97) as usize)
                )
                .into_bytes()
                .into();
                e
            })
            .collect();
        store
            .append(
                &format!("stream-{}", batch % 5),
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
        n += size;
        batch += 1;
    }
    // Concurrent rounds: groups of several appends, with a rejected append and (from the
    // second round on) a retry of the round's first append among the admitted ones.
    let store = Arc::new(store);
    let mut earlier: Option<(String, Vec<EventData>)> = None;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for k in 0..PER_ROUND {
            let s = Arc::clone(&store);
            let stream = format!("c-{}", k % 4);
            let events = vec![event("Concurrent", round * PER_ROUND + k)];
            if k == 0 {
                earlier = Some((stream.clone(), events.clone()));
            }
            tasks.push(tokio::spawn(async move {
                s.append(&stream, ExpectedVersion::Any, events).await
            }));
            if k == PER_ROUND / 2 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let rejected = store
                        .append("stream-0", ExpectedVersion::Exact(1), vec![event("No", 0)])
                        .await;
                    assert!(
                        matches!(rejected, Err(StoreError::WrongExpectedVersion { .. })),
                        "{rejected:?}"
                    );
                    rejected
                }));
            }
        }
        if round > 0 {
            let (stream, events) = earlier.clone().expect("set in round 0");
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store.append(&stream, ExpectedVersion::Any, events).await
            }));
        }
        let (mut admitted, mut rejected) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => admitted += 1,
                Err(StoreError::WrongExpectedVersion { .. }) => rejected += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(rejected, 1);
        assert_eq!(
            admitted,
            PER_ROUND + u64::from(round > 0),
            "the retry is answered too"
        );
    }
    let (groups, appends) = store.group_stats();
    assert!(
        appends > groups,
        "no group carried two appends ({groups} groups): the writer thread's path is untested"
    );
    let mut live = Vec::new();
    while live.len() < EVENTS as usize {
        live.push(sub.next().await.expect("feed open").expect("event"));
    }
    let open_reads = reads(&store).await;
    let (cached, from_files) = store.read_stats();
    assert!(
        cached > 0 && from_files > 0,
        "both kinds of read happened: {cached} cached, {from_files} from files"
    );
    store.close().await.unwrap();
    drop(sub);
    drop(store);

    let store = LogStore::open(&path, options).unwrap();
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(
        store.read_stats(),
        (0, 1),
        "a reopened store reads from its files"
    );
    assert_eq!(all.len(), EVENTS as usize);
    assert_eq!(live, all, "the live feed differs from the segments");
    let reopened_reads = reads(&store).await;
    for (((from, max), open), reopened) in ranges().into_iter().zip(open_reads).zip(reopened_reads)
    {
        assert_eq!(open, reopened, "read_all({from}, {max}) differs");
    }
    // The ranges are not vacuous.
    assert_eq!(store.read_all(EVENTS - 100, 1000).await.unwrap().len(), 101);
    store.close().await.unwrap();
}
