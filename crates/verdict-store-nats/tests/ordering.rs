//! JetStream-specific checks: racing writers on several connections never let a reader
//! skip, racing conditional batches have one winner and never interleave, the batch limit,
//! and the server version check.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::NatsFactory;
use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion, StoreError};
use verdict_store_nats::{NatsError, NatsOptions, NatsStore, MAX_ATOMIC_BATCH};

const WRITERS: u64 = 16;
const APPENDS_PER_WRITER: u64 = 20;

async fn follow(store: Arc<NatsStore>, from: u64, total: u64) -> Vec<u64> {
    let mut sub = store.subscribe(from).await.unwrap();
    let mut seen = Vec::new();
    for next in from.max(1)..=total {
        let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended early")
            .expect("subscription failed");
        assert_eq!(e.position, next, "subscription skipped or repeated");
        seen.push(e.position);
    }
    seen
}

async fn poll(store: Arc<NatsStore>, total: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut next = 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while next <= total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poller stalled at {next}"
        );
        for e in store.read_all(next, 7).await.unwrap() {
            assert_eq!(e.position, next, "read_all skipped a position");
            seen.push(e.position);
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_let_a_reader_skip() {
    let factory = NatsFactory::new();
    let options = factory.fresh_options();
    // Separate connections, as separate processes would have; the reader learns of the
    // writers' appends only through its watcher.
    let writer_a = Arc::new(NatsStore::open(options.clone()).await.unwrap());
    let writer_b = Arc::new(NatsStore::open(options.clone()).await.unwrap());
    let reader = Arc::new(NatsStore::open(options.clone()).await.unwrap());
    let total: u64 = (0..WRITERS)
        .flat_map(|w| (0..APPENDS_PER_WRITER).map(move |i| 1 + (w + i) % 3))
        .sum();
    let readers = vec![
        tokio::spawn(follow(Arc::clone(&reader), 1, total)),
        tokio::spawn(follow(Arc::clone(&writer_a), 1, total)),
        tokio::spawn(poll(Arc::clone(&reader), total)),
    ];
    let mut writes = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            Arc::clone(&writer_a)
        } else {
            Arc::clone(&writer_b)
        };
        writes.push(tokio::spawn(async move {
            for i in 0..APPENDS_PER_WRITER {
                // Few streams, so `Any` appends collide on the subject's last sequence and
                // must re-read and retry.
                let stream = format!("s-{}", (w + i) % 4);
                store
                    .append(&stream, ExpectedVersion::Any, events("E", 1 + (w + i) % 3))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(
            r.await.unwrap(),
            (1..=total).collect::<Vec<_>>(),
            "reader {i}"
        );
    }
    assert_eq!(reader.head().await.unwrap(), total);
    let all = reader.read_all(1, usize::MAX).await.unwrap();
    for s in 0..4 {
        let name = format!("s-{s}");
        let stream: Vec<_> = all.iter().filter(|e| e.stream == name).collect();
        assert!(
            stream
                .iter()
                .enumerate()
                .all(|(i, e)| e.stream_version == i as u64 + 1),
            "stream {name} has versions out of order"
        );
        assert_eq!(
            reader.stream_version(&name).await.unwrap(),
            stream.len() as u64
        );
    }
}

/// Conditional multi-event appends racing on one stream: the server checks the expected
/// subject sequence at the batch's commit, so exactly one batch wins each round and no
/// two batches interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_have_one_winner_and_stay_whole() {
    let factory = NatsFactory::new();
    let options = factory.fresh_options();
    let stores: Vec<_> = [0, 1]
        .iter()
        .map(|_| NatsStore::open(options.clone()))
        .collect();
    let mut opened = Vec::new();
    for s in stores {
        opened.push(Arc::new(s.await.unwrap()));
    }
    for round in 0..15u64 {
        let mut tasks = Vec::new();
        for w in 0..4usize {
            let store = Arc::clone(&opened[w % 2]);
            tasks.push(tokio::spawn(async move {
                store
                    .append("race", ExpectedVersion::Exact(round * 3), events("B", 3))
                    .await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.stream_version, round * 3 + 3);
                    assert_eq!(r.last_position - r.first_position, 2);
                }
                Err(StoreError::WrongExpectedVersion { current, .. }) => {
                    assert_eq!(current, round * 3 + 3)
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let stream = opened[0].read_stream("race", 1, usize::MAX).await.unwrap();
    assert_eq!(stream.len(), 45);
    for (i, e) in stream.iter().enumerate() {
        assert_eq!((e.stream_version, e.position), (i as u64 + 1, i as u64 + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_the_atomic_limit_are_refused() {
    let factory = NatsFactory::new();
    let store = NatsStore::open(factory.fresh_options()).await.unwrap();
    let err = store
        .append(
            "a",
            ExpectedVersion::Any,
            events("E", MAX_ATOMIC_BATCH as u64 + 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
    let r = store
        .append(
            "a",
            ExpectedVersion::Any,
            events("E", MAX_ATOMIC_BATCH as u64),
        )
        .await
        .unwrap();
    assert_eq!(r.positions(), 1..=MAX_ATOMIC_BATCH as u64);
    assert_eq!(
        store.read_stream("a", 1, usize::MAX).await.unwrap().len(),
        MAX_ATOMIC_BATCH
    );
}

/// Debian's nats-server 2.9 has no atomic batches (and its conditional publishes were not
/// serializable in clusters): the store refuses it. Skipped where it is not installed.
#[tokio::test]
async fn servers_older_than_2_12_are_refused() {
    let debian = std::path::Path::new("/usr/sbin/nats-server");
    if !debian.exists() {
        eprintln!("skipped: no /usr/sbin/nats-server");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(debian)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut connected = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = if connected {
        Some(NatsStore::open(NatsOptions::new(format!("nats://127.0.0.1:{port}"))).await)
    } else {
        None
    };
    let _ = child.kill();
    let _ = child.wait();
    match result.expect("the Debian server listened") {
        Err(NatsError::ServerTooOld(v)) => assert!(v.starts_with("2.")),
        other => panic!("expected ServerTooOld, got {other:?}"),
    }
}

/// Beyond the duplicate window, retries are still recognised by their id markers, whatever
/// their expected version; ids stored on another stream are refused as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_beyond_the_duplicate_window() {
    let factory = NatsFactory::new();
    let mut options = factory.fresh_options();
    options.duplicate_window = Duration::from_millis(500);
    let store = NatsStore::open(options).await.unwrap();
    let batch = events("E", 3);
    let first = store
        .append("a", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store
        .append("a", ExpectedVersion::Any, events("F", 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = store
        .append("a", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, first);
    let prefix = store
        .append("a", ExpectedVersion::Exact(0), batch[..2].to_vec())
        .await
        .unwrap();
    assert_eq!(prefix.positions(), 1..=2);
    let mut mixed = events("N", 1);
    mixed.push(batch[1].clone());
    let err = store
        .append("a", ExpectedVersion::Exact(1), mixed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEventId { position: 2, .. }),
        "{err:?}"
    );
    // An unconditional retry after the window: the original positions, nothing stored.
    let any = store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(any, first);
    let exists = store
        .append("a", ExpectedVersion::StreamExists, batch[1..].to_vec())
        .await
        .unwrap();
    assert_eq!(exists.positions(), 2..=3);
    // The same ids on another stream, with a version that holds: a duplicate.
    let err = store
        .append("b", ExpectedVersion::Any, batch[2..].to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEventId { position: 3, .. }),
        "{err:?}"
    );
    assert_eq!(store.head().await.unwrap(), 4);
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 4);
    // A fresh event after all that lands at the next position.
    let next = store
        .append("b", ExpectedVersion::Any, events("G", 1))
        .await
        .unwrap();
    assert_eq!(next.positions(), 5..=5);
}

/// A stream written by an earlier layout (no id markers) is refused, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_the_marker_layout_are_refused() {
    let factory = NatsFactory::new();
    let options = factory.fresh_options();
    let client = async_nats::connect(options.url.clone()).await.unwrap();
    let config = serde_json::json!({
        "name": options.stream,
        "subjects": [format!("{}.>", options.subject_prefix)],
        "storage": "file",
        "allow_direct": true,
        "allow_atomic": true,
    });
    let reply = client
        .request(
            format!("$JS.API.STREAM.CREATE.{}", options.stream),
            config.to_string().into(),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&reply.payload).contains("error"));
    match NatsStore::open(options).await {
        Err(NatsError::InvalidOptions(msg)) => assert!(msg.contains("layout"), "{msg}"),
        other => panic!("expected InvalidOptions, got {other:?}"),
    }
}

/// With an id retention, markers expire (events never do): a retry within it is recognised,
/// one after it is stored again, and positions stay gap-free either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_retention_bounds_the_marker_horizon() {
    let factory = NatsFactory::with_duplicate_window(Duration::ZERO);
    let mut options = factory.fresh_options();
    options.id_retention = Some(Duration::from_secs(1));
    let store = NatsStore::open(options.clone()).await.unwrap();
    let batch = events("E", 2);
    let first = store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let again = store
        .append("a", ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, first);
    // The server expires the markers some time after their second, one by one; until all
    // have gone a retry is still recognised (and changes nothing) or, with only some gone,
    // refused as a duplicate, so retry until it is stored again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let late = loop {
        match store.append("a", ExpectedVersion::Any, batch.clone()).await {
            Ok(r) if r != first => break r,
            Ok(_) | Err(StoreError::DuplicateEventId { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the marker never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(late.positions(), 3..=4, "a retry older than the retention");
    let all = store.read_all(1, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(store.head().await.unwrap(), 4);
    // Below a second is refused; so is a retention on a stream that cannot expire markers.
    options.id_retention = Some(Duration::from_millis(500));
    assert!(matches!(
        NatsStore::open(options).await,
        Err(NatsError::InvalidOptions(_))
    ));
}
