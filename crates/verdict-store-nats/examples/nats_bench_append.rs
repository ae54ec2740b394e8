//! Durable appends per second on the JetStream store at 1, 16 and 256 concurrent writers.
//!
//! Each writer appends single 256-byte events to its own stream (`ExpectedVersion::Any`,
//! so each is a conditional publish after a direct get of the subject's last message) for
//! a fixed time. Durable only if the servers run with `sync_interval: always`. Prints
//! appends/s and latency percentiles.
//!
//! ```text
//! cargo run --release -p verdict-store-nats --example nats_bench_append -- \
//!     --url nats://127.0.0.1:4222[,nats://…] [--replicas 1|3] [--seconds 5]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use verdict_store::{EventData, EventStore, ExpectedVersion};
use verdict_store_nats::{NatsOptions, NatsStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let url = arg("--url").expect("--url nats://host:port");
    let replicas: usize = arg("--replicas").map_or(1, |s| s.parse().expect("--replicas N"));
    let seconds: u64 = arg("--seconds").map_or(5, |s| s.parse().expect("--seconds N"));
    for writers in [1usize, 16, 256] {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let mut options = NatsOptions::new(url.clone());
        options.stream = format!("BENCH_{tag}");
        options.subject_prefix = format!("bench{tag}");
        options.replicas = replicas;
        let store = Arc::new(NatsStore::open(options.clone()).await.expect("open"));
        let (rate, p50, p99) = run(Arc::clone(&store) as _, writers, seconds).await;
        println!(
            "jetstream R{replicas} writers={writers:>3}: {rate:>8.0} appends/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms"
        );
        store.close().await.unwrap();
        // Leave nothing behind on the server.
        let first = url.split(',').next().unwrap_or_default();
        let client = async_nats::connect(first).await.unwrap();
        let _ = client
            .request(
                format!("$JS.API.STREAM.DELETE.{}", options.stream),
                Bytes::new(),
            )
            .await;
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
