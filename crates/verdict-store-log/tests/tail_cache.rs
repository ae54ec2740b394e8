//! The tail cache serves recent events from memory: whatever it serves must equal what the
//! segments hold. Reads while the store is open (recent ones from the cache, older ones and
//! ranges crossing its start from files) are compared with the same reads after a reopen,
//! when the cache is empty and every read goes to the files.

use verdict_store::conformance::event;
use verdict_store::{EventStore, ExpectedVersion, RecordedEvent};
use verdict_store_log::{LogOptions, LogStore};

/// More events than the cache holds, so reads cross its start.
const EVENTS: u64 = 6000;

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
    while n < EVENTS {
        // Batches of 1 to 3 events on a few streams, payloads of varying size.
        let size = (batch % 3 + 1).min(EVENTS - n);
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
    let mut live = Vec::new();
    while live.len() < EVENTS as usize {
        live.push(sub.next().await.expect("feed open").expect("event"));
    }
    let open_reads = reads(&store).await;
    store.close().await.unwrap();
    drop(sub);
    drop(store);

    let store = LogStore::open(&path, options).unwrap();
    let all = store.read_all(1, usize::MAX).await.unwrap();
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
