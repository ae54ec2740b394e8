//! Gap-free global order under concurrency: writers on several store instances (as several
//! processes would be) race while readers follow `subscribe` and poll `read_all`; every
//! reader must see positions 1..=N, each once, in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{drop_schemas, fresh_options, url};
use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion, RecordedEvent};
use verdict_store_postgres::{PgOptions, PgStore, MIGRATIONS};

const WRITERS: u64 = 24;
const APPENDS_PER_WRITER: u64 = 25;

/// Follows a subscription until it has delivered `total` events; panics on a gap or repeat.
async fn follow(store: Arc<PgStore>, from: u64, total: u64) -> Vec<u64> {
    let mut sub = store.subscribe(from).await.unwrap();
    let mut seen = Vec::new();
    let mut next = from.max(1);
    while next <= total {
        let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended early")
            .expect("subscription failed");
        assert_eq!(e.position, next, "subscription skipped or repeated");
        seen.push(e.position);
        next += 1;
    }
    seen
}

/// Polls `read_all` from its last position like a checkpointing projector; panics if a page
/// does not continue exactly where the previous one ended.
async fn poll(store: Arc<PgStore>, total: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut next = 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while next <= total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poller stalled at {next}"
        );
        let page: Vec<RecordedEvent> = store.read_all(next, 7).await.unwrap();
        for e in page {
            assert_eq!(
                e.position, next,
                "read_all skipped past an uncommitted position"
            );
            seen.push(e.position);
            next += 1;
        }
        tokio::task::yield_now().await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_let_a_reader_skip() {
    let options = fresh_options();
    // Two writer instances and a reader instance: the readers learn of the writers' commits
    // only through NOTIFY (or the poll), never through a local announcement.
    let writer_a = Arc::new(PgStore::open(options.clone()).await.unwrap());
    let writer_b = Arc::new(PgStore::open(options.clone()).await.unwrap());
    let reader = Arc::new(PgStore::open(options.clone()).await.unwrap());

    let mut writes = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            Arc::clone(&writer_a)
        } else {
            Arc::clone(&writer_b)
        };
        writes.push(tokio::spawn(async move {
            let mut count = 0;
            for i in 0..APPENDS_PER_WRITER {
                let size = 1 + (w + i) % 3;
                // Mostly distinct streams, some shared, so versions and positions interleave.
                let stream = format!("s-{}", (w * 7 + i) % 10);
                store
                    .append(&stream, ExpectedVersion::Any, events("E", size))
                    .await
                    .unwrap();
                count += size;
            }
            count
        }));
    }
    let total: u64 = (0..WRITERS)
        .flat_map(|w| (0..APPENDS_PER_WRITER).map(move |i| 1 + (w + i) % 3))
        .sum();
    let readers = vec![
        tokio::spawn(follow(Arc::clone(&reader), 1, total)),
        tokio::spawn(follow(Arc::clone(&writer_a), 1, total)),
        tokio::spawn(follow(Arc::clone(&reader), 40, total)),
        tokio::spawn(poll(Arc::clone(&reader), total)),
        tokio::spawn(poll(Arc::clone(&writer_b), total)),
    ];
    let mut written = 0;
    for w in writes {
        written += w.await.unwrap();
    }
    assert_eq!(written, total);
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.await.unwrap();
        let from = if i == 2 { 40 } else { 1 };
        assert_eq!(seen, (from..=total).collect::<Vec<_>>(), "reader {i}");
    }
    // A subscriber joining after the race catches up on the same history.
    assert_eq!(
        follow(Arc::clone(&reader), 1, total).await.len() as u64,
        total
    );
    assert_eq!(reader.head().await.unwrap(), total);
    let all = reader.read_all(1, usize::MAX).await.unwrap();
    for s in 0..10 {
        let stream: Vec<_> = all
            .iter()
            .filter(|e| e.stream == format!("s-{s}"))
            .collect();
        assert!(stream
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1));
    }
    for store in [writer_a, writer_b, reader] {
        store.close().await.unwrap();
    }
    drop_schemas(vec![options.schema]);
}

/// The regression case of the out-of-order-visibility bug class: while one writer holds
/// the position allocation open, a later append cannot commit, so no reader can see a later
/// position ahead of an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_append_holds_back_later_ones() {
    let options = fresh_options();
    let store = Arc::new(PgStore::open(options.clone()).await.unwrap());
    store
        .append("a", ExpectedVersion::Any, events("E", 2))
        .await
        .unwrap();
    let mut sub = store.subscribe(1).await.unwrap();

    // A slow writer, mid-append: it holds the head row as an append does.
    let (mut slow, conn) = tokio_postgres::connect(
        &format!("{} options='-c search_path={}'", url(), options.schema),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let tx = slow.transaction().await.unwrap();
    tx.execute("SELECT position FROM verdict_head FOR UPDATE", &[])
        .await
        .unwrap();

    let later = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append("b", ExpectedVersion::Any, events("F", 1))
                .await
        })
    };
    for p in 1..=2 {
        assert_eq!(sub.next().await.unwrap().unwrap().position, p);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !later.is_finished(),
        "an append committed while another held the allocation"
    );
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.read_all(3, 10).await.unwrap().len(), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "a subscriber saw an event while an earlier append was open"
    );

    tx.rollback().await.unwrap();
    let r = later.await.unwrap().unwrap();
    assert_eq!(r.positions(), 3..=3);
    assert_eq!(sub.next().await.unwrap().unwrap().position, 3);
    store.close().await.unwrap();
    drop_schemas(vec![options.schema]);
}

/// Stores opening the same new schema at once apply each migration exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once() {
    let options: PgOptions = fresh_options();
    let opens: Vec<_> = (0..6)
        .map(|_| tokio::spawn(PgStore::open(options.clone())))
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let applied: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".verdict_migrations",
                options.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, MIGRATIONS.len() as i64);
    stores[0]
        .append("a", ExpectedVersion::NoStream, events("E", 1))
        .await
        .unwrap();
    assert_eq!(stores[5].head().await.unwrap(), 1);
    for s in stores {
        s.close().await.unwrap();
    }
    drop_schemas(vec![options.schema]);
}

/// Bad schema names are refused before anything touches the database.
#[tokio::test]
async fn bad_schema_names_are_refused() {
    for bad in ["", "Upper", "1abc", "semi;colon", &"x".repeat(49)] {
        let err = PgStore::open(PgOptions::new(url()).with_schema(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(err, verdict_store_postgres::PgError::InvalidOptions(_)),
            "{bad}: {err}"
        );
    }
}
