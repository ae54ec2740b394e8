//! The PostgreSQL read models against a real server (`VERDICT_PG_URL`, default the local
//! `test` database): a projector killed between snapshots and restarted writes tables
//! that, loaded by a follower, answer `/results`, the timeline and the alerts exactly as a
//! replay from position zero does; the SQL columns carry the same figures; and only one
//! projector holds the lock.

use serde_json::json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use verdict_app::projector;
use verdict_app::queries::{self, Bucket};
use verdict_app::service::{Clock, CommandService, ConversionRequest, PredictRequest};
use verdict_core::event::{AlertRaised, AlertResolved};
use verdict_core::Event;
use verdict_readmodel_postgres::{
    load_projections, open_projections, run_projector, ProjectorOptions, ReadModelOptions, Reader,
    Writer,
};
use verdict_serve::Registry;
use verdict_store::{EventStore, MemoryStore};

fn url() -> String {
    std::env::var("VERDICT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn fresh() -> ReadModelOptions {
    ReadModelOptions::parse(&format!("{}?schema=rmt_{}", url(), Uuid::now_v7().simple())).unwrap()
}

async fn drop_schema(options: &ReadModelOptions) {
    let (client, conn) = tokio_postgres::connect(&options.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", options.schema))
        .await
        .unwrap();
}

/// Seven minutes per reading: the traffic spans several hours.
#[derive(Debug)]
struct SteppingClock(AtomicI64);

impl Clock for SteppingClock {
    fn now_micros(&self) -> i64 {
        self.0.fetch_add(7 * 60 * 1_000_000, Ordering::Relaxed)
    }
}

async fn traffic(commands: &CommandService, users: std::ops::Range<u32>) -> u64 {
    let mut last = 0;
    for i in users {
        let p = commands
            .predict(PredictRequest {
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: json!({}),
            })
            .await
            .unwrap();
        last = p.position;
        if i % 3 == 0 {
            let c = ConversionRequest {
                event_id: None,
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                conversion_type: "purchase".into(),
                amount: f64::from(i % 17),
                variant: None,
                model_version: None,
            };
            last = commands.conversion(c).await.unwrap().position;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_projector_writes_tables_equal_to_a_replay() {
    let options = fresh();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(SteppingClock(AtomicI64::new(1_800_000_000_000_000)));
    let commands = CommandService::open(store.clone(), Registry::default(), clock)
        .await
        .unwrap();
    let spec =
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}});
    commands.create_experiment(spec, true).await.unwrap();
    traffic(&commands, 0..150).await;
    let alert_id = Uuid::now_v7();
    commands
        .append_event(Event::AlertRaised(AlertRaised {
            alert_id,
            experiment_id: "e".into(),
            monitor: "latency".into(),
            severity: "P2".into(),
            message: "slow".into(),
            evidence: json!({"p95": 250.0}),
        }))
        .await
        .unwrap();
    let half = traffic(&commands, 150..300).await;

    // First projector: small pages, a snapshot every 100 events; killed (task aborted,
    // connection dropped) once it passed the middle, without a final snapshot.
    let opts = ProjectorOptions {
        snapshot_every: Duration::from_secs(3600),
        snapshot_events: 100,
        page: 16,
        progress_every: Duration::from_secs(60),
    };
    let writer = Writer::connect(options.clone()).await.unwrap();
    assert!(writer.try_lock().await.unwrap());
    let (projections, checkpoint) = open_projections(&writer, &*store).await.unwrap();
    assert_eq!((projections.position(), checkpoint), (0, 0));
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_projector(
        store.clone(),
        projections.clone(),
        writer,
        checkpoint,
        opts,
        rx,
    ));
    assert!(projections.wait_for(half, Duration::from_secs(30)).await);
    task.abort();
    let _ = task.await;

    // The second projector took over the lock; more traffic arrived meanwhile.
    commands
        .append_event(Event::AlertResolved(AlertResolved {
            alert_id,
            experiment_id: "e".into(),
            monitor: "latency".into(),
            message: "fast again".into(),
            evidence: json!({"p95": 40.0}),
        }))
        .await
        .unwrap();
    let last = traffic(&commands, 300..420).await;
    let writer = Writer::connect(options.clone()).await.unwrap();
    let mut tries = 0;
    while !writer.try_lock().await.unwrap() {
        tries += 1;
        assert!(tries < 50, "the dead projector's lock was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (projections, checkpoint) = open_projections(&writer, &*store).await.unwrap();
    // The kill may have come between applying a page and committing it: the tables show
    // some position up to `half`, the snapshot an earlier one.
    assert!(
        checkpoint > 100 && checkpoint <= half,
        "checkpoint {checkpoint}"
    );
    assert!(
        projections.position() < checkpoint,
        "the snapshot ({}) should lag the checkpoint ({checkpoint}) for this test to mean anything",
        projections.position()
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_projector(
        store.clone(),
        projections.clone(),
        writer,
        checkpoint,
        opts,
        rx,
    ));
    assert!(projections.wait_for(last, Duration::from_secs(30)).await);
    stop.send_replace(true);
    task.await.unwrap().unwrap();

    // A follower's view of the tables equals a replay from zero.
    let replayed = projector::replay(store.as_ref(), |_, _| {}).await.unwrap();
    let mut reader = Reader::connect(&options).await.unwrap();
    assert_eq!(reader.checkpoint().await.unwrap(), last);
    let followed = load_projections(&mut reader).await.unwrap();
    let followed = followed.read().await;
    assert_eq!(followed.position, replayed.position);
    assert_eq!(
        queries::results(&followed, "e").unwrap(),
        queries::results(&replayed, "e").unwrap()
    );
    assert_eq!(
        queries::timeline(&followed, "e", Bucket::Hour).unwrap(),
        queries::timeline(&replayed, "e", Bucket::Hour).unwrap()
    );
    assert_eq!(
        queries::alerts(&followed, None),
        queries::alerts(&replayed, None)
    );
    assert!(replayed.experiments["e"].hours.len() > 3, "several hours");

    // The SQL columns agree with the model.
    let (client, conn) = tokio_postgres::connect(&options.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!(
                "SELECT variant, users, predictions, converted_users, revenue_sum \
                 FROM {}.variant_results ORDER BY variant_index",
                options.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let view = &replayed.experiments["e"];
    assert_eq!(rows.len(), view.variants.len());
    for (row, v) in rows.iter().zip(&view.variants) {
        assert_eq!(row.get::<_, i64>(1) as u64, v.users);
        assert_eq!(row.get::<_, i64>(2) as u64, v.predictions);
        assert_eq!(row.get::<_, i64>(3) as u64, v.converted_users);
        assert_eq!(row.get::<_, f64>(4), v.revenue_sum);
    }
    let hourly: i64 = client
        .query_one(
            &format!(
                "SELECT sum(new_users)::bigint FROM {}.timeline_hourly",
                options.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        hourly as u64,
        view.variants.iter().map(|v| v.users).sum::<u64>()
    );
    let resolved: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.alerts WHERE resolved_at IS NOT NULL",
                options.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(resolved, 1);
    drop_schema(&options).await;
}

#[tokio::test]
async fn one_projector_holds_the_lock_at_a_time() {
    let options = fresh();
    let a = Writer::connect(options.clone()).await.unwrap();
    let b = Writer::connect(options.clone()).await.unwrap();
    assert!(a.try_lock().await.unwrap());
    assert!(
        !b.try_lock().await.unwrap(),
        "a standby must not get the lock"
    );
    drop(a);
    let mut tries = 0;
    while !b.try_lock().await.unwrap() {
        tries += 1;
        assert!(tries < 50, "the lock was not released with its connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
    drop_schema(&options).await;
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let err = ReadModelOptions::parse("postgres://h/db?schema=Bad-Name").unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
    let ok = ReadModelOptions::parse("postgres://h/db?schema=rm&application_name=x").unwrap();
    assert_eq!(ok.schema, "rm");
    assert_eq!(ok.url, "postgres://h/db?application_name=x");
}

/// Snapshots and jsonb rows carry floats as JSON text: they must come back bit for bit,
/// or a projector restored from a snapshot (or a follower) drifts from a replay in the
/// last digits of revenue sums. serde_json's default parser is not correctly rounded;
/// the workspace enables its `float_roundtrip` feature.
#[test]
fn floats_survive_json_bit_for_bit() {
    let mut x = 0.1f64;
    for i in 0..200_000u64 {
        x = (x * 1.000_000_7 + (i % 97) as f64 / 3.0) % 1.0e7;
        let text = serde_json::to_string(&x).unwrap();
        let back: f64 = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{text}");
    }
}

/// Tables built from a store that has since been cut back (or from another store) are
/// never trusted: they are emptied, with the checkpoint, and rebuilt from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_ahead_of_their_store_are_rebuilt_from_it() {
    let options = fresh();
    let clock = Arc::new(SteppingClock(AtomicI64::new(1_800_000_000_000_000)));
    let spec =
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}});
    let long: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let commands = CommandService::open(long.clone(), Registry::default(), clock.clone())
        .await
        .unwrap();
    commands
        .create_experiment(spec.clone(), true)
        .await
        .unwrap();
    traffic(&commands, 0..40).await;
    let writer = Writer::connect(options.clone()).await.unwrap();
    assert!(writer.try_lock().await.unwrap());
    let model = verdict_readmodel_postgres::project_to_head(
        long.clone(),
        writer,
        ProjectorOptions::default(),
    )
    .await
    .unwrap();
    assert!(model.position > 40);

    // A shorter log: the tables claim positions it never had.
    let short: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let commands = CommandService::open(short.clone(), Registry::default(), clock)
        .await
        .unwrap();
    commands.create_experiment(spec, true).await.unwrap();
    let head = traffic(&commands, 0..3).await;
    let writer = Writer::connect(options.clone()).await.unwrap();
    assert!(writer.try_lock().await.unwrap());
    let (projections, checkpoint) = open_projections(&writer, &*short).await.unwrap();
    assert_eq!((projections.position(), checkpoint), (0, 0));
    let rows: i64 = {
        let mut reader = Reader::connect(&options).await.unwrap();
        let loaded = load_projections(&mut reader).await.unwrap();
        assert_eq!(loaded.position(), 0);
        let n = loaded.read().await.experiments.len() as i64;
        n
    };
    assert_eq!(rows, 0, "rows of the longer log survived");
    // Projecting again gives the short log's figures.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_projector(
        short.clone(),
        projections.clone(),
        writer,
        checkpoint,
        ProjectorOptions::default(),
        rx,
    ));
    assert!(projections.wait_for(head, Duration::from_secs(30)).await);
    let users: u64 = projections.read().await.experiments["e"]
        .variants
        .iter()
        .map(|v| v.users)
        .sum();
    assert_eq!(users, 3);
    // The projector must be done writing before its schema goes.
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    drop_schema(&options).await;
}
