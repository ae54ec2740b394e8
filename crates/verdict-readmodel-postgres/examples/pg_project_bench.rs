//! Projector throughput into PostgreSQL read models vs the in-memory projection, on the
//! same events.
//!
//! Fills an in-memory store with experiment traffic (per user: `UserAssigned` and
//! `PredictionMade`, 30 % also a `ConversionRecorded`; two experiments; 500 users an
//! hour), then times (a) `projector::replay` (the in-memory projection `verdict replay`
//! runs) and (b) the `verdict project` code path (`run_projector`: pages of 4,096
//! events, each committed to a fresh schema with its rows and checkpoint in one
//! transaction, a snapshot every 30 s and at the end).
//!
//! ```text
//! cargo run --release -p verdict-readmodel-postgres --example pg_project_bench -- \
//!     [--url postgres://postgres@127.0.0.1:5432/test] [--users 100000]
//! ```

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use uuid::Uuid;
use verdict_app::codec;
use verdict_app::projector;
use verdict_core::event::{
    ConversionRecorded, ExperimentCreated, Lifecycle, Metadata, PredictionMade, UserAssigned,
};
use verdict_core::{Event, ExperimentSpec};
use verdict_readmodel_postgres::{project_to_head, ProjectorOptions, ReadModelOptions, Writer};
use verdict_store::{EventData, EventStore, ExpectedVersion, MemoryStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let url = arg("--url").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let users: u64 = arg("--users").map_or(100_000, |s| s.parse().expect("--users N"));

    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let t0 = 1_800_000_000_000_000i64;
    for exp in ["bench-a", "bench-b"] {
        let definition = ExperimentSpec::from_json(json!({
            "experiment_id": exp,
            "models": {"control": "builtin:a", "treatment": "builtin:b"},
        }))
        .unwrap()
        .validate()
        .unwrap();
        let events = [
            Event::ExperimentCreated(ExperimentCreated { definition }),
            Event::ExperimentStarted(Lifecycle {
                experiment_id: exp.into(),
                reason: None,
            }),
        ];
        let data: Vec<EventData> = events
            .iter()
            .map(|e| codec::encode(e, Uuid::now_v7(), t0, &Metadata::default()))
            .collect();
        store
            .append(&format!("experiment-{exp}"), ExpectedVersion::Any, data)
            .await
            .unwrap();
    }
    let mut batch = Vec::new();
    for u in 0..users {
        let exp = if u % 2 == 0 { "bench-a" } else { "bench-b" };
        let variant = if u % 3 == 0 { "treatment" } else { "control" };
        let at = t0 + (u as i64) * 3_600_000_000 / 500;
        let user = format!("user-{u}");
        let mut events = vec![
            Event::UserAssigned(UserAssigned {
                experiment_id: exp.into(),
                user_id: user.clone(),
                variant: variant.into(),
                model: "m".into(),
                bucket: Some(0.5),
                experiment_version: 2,
                reason: "hashed".into(),
            }),
            Event::PredictionMade(PredictionMade {
                experiment_id: exp.into(),
                user_id: user.clone(),
                variant: variant.into(),
                model: "m".into(),
                model_version: "1".into(),
                prediction_id: Uuid::now_v7(),
                input: json!({"context": "home"}),
                output: json!({"items": [1, 2, 3]}),
                latency_ms: 1.0 + (u % 50) as f64 / 10.0,
                model_ms: None,
                shadow: false,
                comparison: None,
            }),
        ];
        if u % 10 < 3 {
            events.push(Event::ConversionRecorded(ConversionRecorded {
                experiment_id: exp.into(),
                user_id: user,
                conversion_type: "purchase".into(),
                amount: (u % 97) as f64,
                variant: None,
            }));
        }
        batch.extend(
            events
                .iter()
                .map(|e| codec::encode(e, Uuid::now_v7(), at, &Metadata::default())),
        );
        if batch.len() >= 900 || u + 1 == users {
            store
                .append(
                    &format!("traffic-{exp}"),
                    ExpectedVersion::Any,
                    std::mem::take(&mut batch),
                )
                .await
                .unwrap();
        }
    }
    let head = store.head().await.unwrap();
    println!("{head} events, {users} users, 2 experiments");

    let started = Instant::now();
    let memory = projector::replay(store.as_ref(), |_, _| {}).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "in-memory projection (projector::replay):        {:>9.0} events/s ({secs:.2} s)",
        head as f64 / secs
    );

    let options = ReadModelOptions::parse(&format!(
        "{url}?schema=bench_rm_{}",
        Uuid::now_v7().simple()
    ))
    .unwrap();
    let writer = Writer::connect(options.clone()).await.unwrap();
    assert!(writer.try_lock().await.unwrap());
    let started = Instant::now();
    let projected = project_to_head(store.clone(), writer, ProjectorOptions::default())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "into PostgreSQL read models (verdict project):   {:>9.0} events/s ({secs:.2} s, incl. final snapshot)",
        head as f64 / secs
    );
    assert_eq!(projected.position, memory.position);
    let (client, conn) = tokio_postgres::connect(&options.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.timeline_hourly", options.schema),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!("({rows} hourly timeline rows written)");
    client
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", options.schema))
        .await
        .unwrap();
}
