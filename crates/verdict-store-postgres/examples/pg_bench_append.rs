//! Durable appends per second on the PostgreSQL store at 1, 16 and 256 concurrent writers.
//!
//! Each writer appends single 256-byte events to its own stream (`ExpectedVersion::Any`) for
//! a fixed time; every append is acknowledged only after its COMMIT (`synchronous_commit`
//! as the server has it, `on` by default). Prints appends/s and latency percentiles.
//!
//! ```text
//! cargo run --release -p verdict-store-postgres --example pg_bench_append -- \
//!     [--url "host=127.0.0.1 user=postgres dbname=test"] [--seconds 5] [--pool 64]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use verdict_store::{EventData, EventStore, ExpectedVersion};
use verdict_store_postgres::{PgOptions, PgStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let url = arg("--url").unwrap_or_else(|| "host=127.0.0.1 user=postgres dbname=test".into());
    let seconds: u64 = arg("--seconds").map_or(5, |s| s.parse().expect("--seconds N"));
    let pool: usize = arg("--pool").map_or(64, |s| s.parse().expect("--pool N"));
    for writers in [1usize, 16, 256] {
        let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let mut options = PgOptions::new(url.clone()).with_schema(schema.clone());
        options.pool_size = pool;
        let store = Arc::new(PgStore::open(options).await.expect("open"));
        let (rate, p50, p99) = run(Arc::clone(&store) as _, writers, seconds).await;
        println!(
            "postgres writers={writers:>3} pool={pool}: {rate:>8.0} appends/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms"
        );
        store.close().await.unwrap();
        drop(store);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}

/// Appends from `writers` tasks for `seconds`; returns (appends/s, p50 ms, p99 ms).
async fn run(store: Arc<dyn EventStore>, writers: usize, seconds: u64) -> (f64, f64, f64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let stream = format!("w-{w}");
                while Instant::now() < deadline {
                    let event =
                        EventData::new(uuid::Uuid::now_v7(), "Bench", Bytes::from(vec![b'x'; 256]));
                    let t = Instant::now();
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    (all.len() as f64 / elapsed, pct(0.5), pct(0.99))
}
