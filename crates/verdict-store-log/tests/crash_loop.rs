//! The SIGKILL crash loop: a child process (this test binary, re-run in child mode) appends
//! with many concurrent writers and prints every acknowledged append; the parent kills it at a
//! random moment, reopens the log, and checks that every acknowledged event is there exactly
//! once, at its acknowledged position, in order; 25 cycles on one directory.
//!
//! SIGKILL keeps the page cache, so this tests the process-visible part (recovery, torn
//! tails mid-write, acknowledgement order); lost un-fsynced pages are covered by the fault
//! and recovery tests.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use verdict_store::{EventData, EventStore, ExpectedVersion};
use verdict_store_log::{LogOptions, LogStore};

const CHILD_ENV: &str = "VERDICT_CRASH_CHILD_DIR";
const WRITERS: u64 = 48;
const CYCLES: u64 = 25;

/// One acknowledged append as the child reported it.
#[derive(Clone, Debug)]
struct Ack {
    writer: u64,
    first: u64,
    stream: String,
    version: u64,
    ids: Vec<Uuid>,
}

fn parse(line: &str) -> Option<Ack> {
    let mut f = line.strip_prefix("ack ")?.split(' ');
    let writer = f.next()?.parse().ok()?;
    let first = f.next()?.parse().ok()?;
    let stream = f.next()?.to_owned();
    let version = f.next()?.parse().ok()?;
    let ids: Option<Vec<Uuid>> = f.next()?.split(',').map(|s| s.parse().ok()).collect();
    let ids = ids?;
    (f.next().is_none() && !ids.is_empty()).then_some(Ack {
        writer,
        first,
        stream,
        version,
        ids,
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: enough randomness for kill times and batch sizes.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Child mode: a no-op unless the parent set `CHILD_ENV`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(
            LogStore::open(
                &dir,
                LogOptions {
                    segment_size: 1 << 20,
                    ..LogOptions::default()
                },
            )
            .unwrap(),
        );
        // The harness has printed "test crash_child ... " without a newline.
        println!("\nready");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1) ^ std::process::id() as u64);
                // Half the writers own a stream and use exact versions; half share one.
                let own = format!("writer-{w}");
                let mut version = store.stream_version(&own).await.unwrap();
                loop {
                    let n = 1 + rng.next() % 4;
                    let batch: Vec<EventData> = (0..n)
                        .map(|_| {
                            let mut e = EventData::new(
                                Uuid::now_v7(),
                                "Crash",
                                vec![b'p'; 50 + (rng.next() % 400) as usize],
                            );
                            e.recorded_at = rng.next() as i64;
                            e
                        })
                        .collect();
                    let ids: Vec<String> = batch.iter().map(|e| e.event_id.to_string()).collect();
                    let (stream, expected) = if w % 2 == 0 {
                        (own.as_str(), ExpectedVersion::Exact(version))
                    } else {
                        ("shared", ExpectedVersion::Any)
                    };
                    let r = store.append(stream, expected, batch).await.unwrap();
                    version = if w % 2 == 0 {
                        r.stream_version
                    } else {
                        version
                    };
                    let line = format!(
                        "ack {w} {} {stream} {} {}\n",
                        r.first_position,
                        r.stream_version,
                        ids.join(",")
                    );
                    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash loop seed {seed}");
    let mut rng = Rng(seed);
    let mut acked: Vec<Ack> = Vec::new();
    let mut total_events = 0u64;
    for cycle in 0..CYCLES {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                // A line cut by the kill does not parse and is ignored: its append may or may
                // not be durable, which is allowed for an unreported append.
                if let Some(ack) = parse(&line) {
                    acks.push(ack);
                }
            }
            acks
        });
        // Every fifth cycle kills during startup/recovery; the others let writers run first.
        if cycle % 5 != 4 {
            ready_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child never became ready");
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let new_acks = reader.join().unwrap();
        for w in 0..WRITERS {
            let mine: Vec<_> = new_acks.iter().filter(|a| a.writer == w).collect();
            assert!(
                mine.windows(2).all(|p| p[0].first < p[1].first),
                "writer {w} saw its appends out of order"
            );
        }
        acked.extend(new_acks);

        let started = Instant::now();
        let store = LogStore::open(&dir, LogOptions::default()).unwrap();
        let all = store.read_all(1, usize::MAX).await.unwrap();
        let recovery = started.elapsed();
        let mut ids = HashSet::new();
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(
                e.position,
                i as u64 + 1,
                "cycle {cycle}: positions have a gap"
            );
            assert!(
                ids.insert(e.event_id),
                "cycle {cycle}: event {} stored twice",
                e.event_id
            );
            let v = versions.entry(&e.stream).or_default();
            *v += 1;
            assert_eq!(
                e.stream_version, *v,
                "cycle {cycle}: stream {} has a version gap",
                e.stream
            );
        }
        for ack in &acked {
            for (i, id) in ack.ids.iter().enumerate() {
                let p = ack.first + i as u64;
                let e = all
                    .get(p as usize - 1)
                    .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged position {p} lost"));
                assert_eq!(
                    e.event_id, *id,
                    "cycle {cycle}: acknowledged event moved or lost at {p}"
                );
                assert_eq!(e.stream, ack.stream);
            }
            assert_eq!(
                all[(ack.first + ack.ids.len() as u64 - 2) as usize].stream_version,
                ack.version
            );
        }
        total_events = all.len() as u64;
        println!("cycle {cycle}: {} acknowledged appends so far, {total_events} events, reopen+read {recovery:?}", acked.len());
        store.close().await.unwrap();
    }
    assert!(
        acked.len() > 1000,
        "the child acknowledged too little to test anything: {}",
        acked.len()
    );
    assert!(total_events > 0);
}
