//! Side-by-side benchmark of the embedded log, SQLite (WAL, synchronous=FULL) and PostgreSQL,
//! plus the disk's raw sequential write rate and fdatasync latency, in one run.
//!
//! ```text
//! cargo run --release -p verdict-store-log --example bench_store -- [--secs S] [--dir DIR]
//!     [--pg "host=127.0.0.1 user=postgres dbname=test"] [--skip-pg] [--index-events N]
//!     | --writers-only W | --replay-only N | --index-only N
//! ```
//!
//! Every scenario appends events of a 200-byte payload. Single-event appends run for `--secs`
//! seconds with 1, 16 and 256 concurrent writers (each writer appends to its own stream and
//! waits for its acknowledgement before the next append); batched appends send 1,000 events per
//! append from one writer; replay reads everything back in pages of 10,000. `--index-events N`
//! also measures the log's index memory (RSS growth of a reopen) for N events.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verdict_store::{EventData, EventStore, ExpectedVersion};
use verdict_store_log::{LogOptions, LogStore};

const PAYLOAD: usize = 200;
const BATCH: usize = 1000;
const PAGE: usize = 10_000;

struct Config {
    secs: f64,
    dir: PathBuf,
    pg: Option<String>,
    index_events: u64,
    replay_only: u64,
    writers_only: Option<usize>,
    busy_cpu: bool,
    log_spin: bool,
}

fn parse_args() -> Config {
    let mut c = Config {
        secs: 3.0,
        dir: std::env::temp_dir().join("verdict-bench-store"),
        pg: Some("host=127.0.0.1 user=postgres dbname=test".into()),
        index_events: 0,
        replay_only: 0,
        writers_only: None,
        busy_cpu: false,
        log_spin: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => c.secs = args.next().expect("--secs S").parse().expect("seconds"),
            "--dir" => c.dir = args.next().expect("--dir DIR").into(),
            "--pg" => c.pg = Some(args.next().expect("--pg CONNINFO")),
            "--skip-pg" => c.pg = None,
            "--busy-cpu" => c.busy_cpu = true,
            "--log-spin" => c.log_spin = true,
            "--writers-only" => {
                c.writers_only = Some(
                    args.next()
                        .expect("--writers-only N")
                        .parse()
                        .expect("count"),
                )
            }
            "--replay-only" => {
                c.replay_only = args
                    .next()
                    .expect("--replay-only N")
                    .parse()
                    .expect("count")
            }
            "--index-only" => {
                c.index_events = args.next().expect("--index-only N").parse().expect("count");
                c.replay_only = u64::MAX;
            }
            "--index-events" => {
                c.index_events = args
                    .next()
                    .expect("--index-events N")
                    .parse()
                    .expect("count")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    c
}

/// Real files without `fdatasync` (diagnostics only: NOT durable).
#[derive(Debug)]
struct NoSync;

struct NoSyncFile(std::fs::File);

impl verdict_store_log::storage::LogFile for NoSyncFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl verdict_store_log::Storage for NoSync {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn verdict_store_log::storage::LogFile>> {
        Ok(Box::new(NoSyncFile(
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(path)?,
        )))
    }

    fn open_append(
        &self,
        path: &Path,
    ) -> std::io::Result<Box<dyn verdict_store_log::storage::LogFile>> {
        Ok(Box::new(NoSyncFile(
            OpenOptions::new().append(true).open(path)?,
        )))
    }

    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

static PAYLOAD_BYTES: [u8; PAYLOAD] = [b'x'; PAYLOAD];
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A bench event. Ids are time-ordered like UUIDv7 (a per-run prefix and a counter) but cost
/// no `getrandom` call, and the payload is shared: the producer's cost stays out of the
/// figures for every system alike.
fn event(i: u64) -> EventData {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let id = uuid::Uuid::from_u64_pair(prefix, NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let mut e = EventData::new(id, "BenchEvent", bytes::Bytes::from_static(&PAYLOAD_BYTES));
    e.recorded_at = i as i64;
    e
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

/// One row of the results table.
struct Row {
    scenario: String,
    log: f64,
    sqlite: f64,
    pg: Option<f64>,
}

fn main() {
    let cfg = parse_args();
    // The log's options: `--log-spin` turns on `spin_during_sync` (see LogOptions).
    let log_options = || LogOptions {
        spin_during_sync: if cfg.log_spin {
            Duration::from_millis(2)
        } else {
            Duration::ZERO
        },
        ..LogOptions::default()
    };
    fresh_dir(&cfg.dir);
    // On this VM an idle vCPU halts, and an fdatasync completion that arrives meanwhile is
    // noticed only at the next timer tick (~4 ms). `--busy-cpu` keeps one core spinning for the
    // whole run, for every system alike, which brings fdatasync back to ~0.2 ms.
    let spinning = Arc::new(AtomicBool::new(cfg.busy_cpu));
    if cfg.busy_cpu {
        let spinning = Arc::clone(&spinning);
        std::thread::spawn(move || {
            while spinning.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(writers) = cfg.writers_only {
        // The log alone, for profiling: single-event appends with `writers` writers.
        // VERDICT_BENCH_NOSYNC=1 replaces fdatasync with nothing: the pipeline's CPU ceiling.
        let options = if std::env::var_os("VERDICT_BENCH_NOSYNC").is_some() {
            LogOptions {
                storage: Arc::new(NoSync),
                ..LogOptions::default()
            }
        } else {
            log_options()
        };
        let store = LogStore::open(cfg.dir.join("log"), options).unwrap();
        let r = rt.block_on(log_single(&store, writers, cfg.secs));
        println!("log single-event appends, {writers} writers: {r:.0} events/s");
        rt.block_on(store.close()).unwrap();
        let _ = std::fs::remove_dir_all(&cfg.dir);
        return;
    }
    if cfg.replay_only == u64::MAX {
        index_memory(&rt, &cfg.dir.join("index"), cfg.index_events);
        let _ = std::fs::remove_dir_all(&cfg.dir);
        return;
    }
    if cfg.replay_only > 0 {
        replay_only(&rt, &cfg.dir.join("replay"), cfg.replay_only);
        let _ = std::fs::remove_dir_all(&cfg.dir);
        return;
    }
    println!(
        "# verdict event store benchmark ({} s per timed scenario, {PAYLOAD}-byte payloads)",
        cfg.secs
    );
    println!("dir: {}", cfg.dir.display());
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let (raw_mib_s, fsync_p50, fsync_p99) = raw_disk(&cfg.dir);
    println!("raw sequential write (1 MiB writes, 1 GiB, one fsync): {raw_mib_s:.0} MiB/s");
    println!("fdatasync after a 256-byte append: p50 {fsync_p50:.0} µs, p99 {fsync_p99:.0} µs");
    println!(
        "(one fsync per event would cap a writer at {:.0} events/s)",
        1e6 / fsync_p50
    );

    let mut rows = Vec::new();
    let log_dir = cfg.dir.join("log");
    let sqlite_path = cfg.dir.join("sqlite.db");
    let pg = cfg
        .pg
        .as_ref()
        .and_then(|conninfo| match rt.block_on(Pg::connect(conninfo)) {
            Ok(pg) => Some(pg),
            Err(e) => {
                println!("PostgreSQL unavailable ({e}); skipping it");
                None
            }
        });
    let store = LogStore::open(&log_dir, log_options()).unwrap();
    let sqlite = Sqlite::create(&sqlite_path);
    for writers in [1usize, 16, 256] {
        let log = rt.block_on(log_single(&store, writers, cfg.secs));
        let lite = sqlite.single(writers, cfg.secs);
        let p = pg
            .as_ref()
            .map(|pg| rt.block_on(pg.single(writers, cfg.secs)));
        rows.push(Row {
            scenario: format!("single-event appends, {writers} writers (events/s)"),
            log,
            sqlite: lite,
            pg: p,
        });
        print_row(rows.last().unwrap());
    }
    for writers in [1usize, 4, 16] {
        let (log, log_bytes) = rt.block_on(log_batched(&store, writers, cfg.secs));
        let lite = sqlite.batched(writers, cfg.secs);
        let p = pg
            .as_ref()
            .map(|pg| rt.block_on(pg.batched(writers, cfg.secs)));
        rows.push(Row {
            scenario: format!("batched appends of {BATCH}, {writers} writers (events/s)"),
            log,
            sqlite: lite,
            pg: p,
        });
        print_row(rows.last().unwrap());
        let log_mib_s = log_bytes / (1 << 20) as f64;
        println!(
            "  log, batched, {writers} writers: {log_mib_s:.0} MiB/s of records = {:.0} % of the raw sequential rate",
            100.0 * log_mib_s / raw_mib_s
        );
    }

    let head = rt.block_on(store.head()).unwrap();
    rt.block_on(store.close()).unwrap();
    drop(store);
    // Replay from a freshly opened store (index rebuilt from the segments, page cache warm).
    let started = Instant::now();
    let store = LogStore::open(&log_dir, LogOptions::default()).unwrap();
    let reopen = started.elapsed();
    println!(
        "log reopen (scan + index rebuild) of {head} events: {reopen:.2?} = {:.0} events/s",
        rate(head, reopen)
    );
    let log = log_replay(&store, head);
    let lite = sqlite.replay();
    let p = pg.as_ref().map(|pg| rt.block_on(pg.replay()));
    rows.push(Row {
        scenario: format!("replay of all events, pages of {PAGE} (events/s)"),
        log,
        sqlite: lite,
        pg: p,
    });
    print_row(rows.last().unwrap());
    rt.block_on(store.close()).unwrap();
    drop(store);

    println!();
    println!("| scenario | log | SQLite | PostgreSQL | log / SQLite | log / PostgreSQL |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let pg = r.pg.map_or("n/a".to_owned(), |p| format!("{p:.0}"));
        let pg_ratio =
            r.pg.map_or("n/a".to_owned(), |p| format!("{:.1}x", r.log / p));
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.1}x | {} |",
            r.scenario,
            r.log,
            r.sqlite,
            pg,
            r.log / r.sqlite,
            pg_ratio
        );
    }

    println!();
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if cfg.index_events > 0 {
        index_memory(&rt, &cfg.dir.join("index"), cfg.index_events);
    }
    if let Some(pg) = pg {
        rt.block_on(pg.drop_table());
    }
    let _ = std::fs::remove_dir_all(&cfg.dir);
}

fn print_row(r: &Row) {
    let pg = r.pg.map_or("n/a".to_owned(), |p| format!("{p:.0}"));
    println!(
        "{}: log {:.0}, SQLite {:.0}, PostgreSQL {pg}",
        r.scenario, r.log, r.sqlite
    );
}

/// Raw sequential write rate (MiB/s) and fdatasync latency (p50, p99 in µs).
fn raw_disk(dir: &Path) -> (f64, f64, f64) {
    let path = dir.join("raw");
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    // fdatasync latency first, before the 1 GiB write below disturbs the file system.
    let mut f = open();
    let rec = [0xa5u8; 256];
    let mut lat: Vec<f64> = (0..2000)
        .map(|_| {
            f.write_all(&rec).unwrap();
            let t = Instant::now();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    drop(f);
    let chunk = vec![0x5au8; 1 << 20];
    let mut f = open();
    let started = Instant::now();
    for _ in 0..1024 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_data().unwrap();
    let mib_s = 1024.0 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    std::thread::sleep(Duration::from_secs(1)); // let the unlink's journal work settle
    (mib_s, lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

async fn log_single(store: &LogStore, writers: usize, secs: f64) -> f64 {
    let (groups0, appends0) = store.group_stats();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, count) = (store.clone(), Arc::clone(&stop), Arc::clone(&count));
            tokio::spawn(async move {
                let stream = format!("single-{writers}-{w}");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event(i)])
                        .await
                        .unwrap();
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (groups, appends) = store.group_stats();
    let (groups, appends) = (groups - groups0, appends - appends0);
    println!(
        "  log, {writers} writers: {groups} group commits, {:.1} appends per fsync, {:.0} µs per group",
        appends as f64 / groups as f64,
        elapsed.as_secs_f64() * 1e6 / groups as f64
    );
    rate(count.load(Ordering::Relaxed), elapsed)
}

/// Events/s and record bytes/s of `writers` concurrent writers appending batches.
async fn log_batched(store: &LogStore, writers: usize, secs: f64) -> (f64, f64) {
    let before = dir_bytes(store.dir());
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < secs {
                    let batch: Vec<_> = (0..BATCH as u64).map(|i| event(n + i)).collect();
                    store
                        .append(&format!("batched-{w}"), ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                    n += BATCH as u64;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    let d = started.elapsed();
    let bytes = dir_bytes(store.dir()) - before;
    (rate(n, d), bytes as f64 / d.as_secs_f64())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn log_replay(store: &LogStore, head: u64) -> f64 {
    let started = Instant::now();
    let mut next = 1;
    let mut bytes = 0usize;
    while next <= head {
        let page = store.read_all_blocking(next, PAGE).unwrap();
        for e in &page {
            bytes += e.payload.len();
        }
        next += page.len() as u64;
    }
    assert_eq!(next - 1, head);
    std::hint::black_box(bytes);
    rate(head, started.elapsed())
}

/// Writes `n` events in batches, then replays them three times from a reopened store.
fn replay_only(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) {
    fresh_dir(dir);
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    rt.block_on(async {
        let mut i = 0;
        while i < n {
            let batch: Vec<_> = (0..BATCH as u64).map(|k| event(i + k)).collect();
            store
                .append(
                    &format!("stream-{}", (i / BATCH as u64) % 100),
                    ExpectedVersion::Any,
                    batch,
                )
                .await
                .unwrap();
            i += BATCH as u64;
        }
        store.close().await.unwrap();
    });
    drop(store);
    let started = Instant::now();
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    let took = started.elapsed();
    let head = rt.block_on(store.head()).unwrap();
    println!(
        "reopen (scan + index rebuild) of {head} events: {took:.2?} = {:.0} events/s",
        rate(head, took)
    );
    let rounds: u32 = std::env::var("VERDICT_REPLAY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for round in 1..=rounds {
        println!(
            "replay round {round}: {:.0} events/s",
            log_replay(&store, head)
        );
    }
    rt.block_on(store.close()).unwrap();
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn index_memory(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) {
    fresh_dir(dir);
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    let started = Instant::now();
    rt.block_on(async {
        // 1,000 streams, batches of 1,000: like telemetry streams.
        let mut i = 0;
        while i < n {
            let batch: Vec<_> = (0..BATCH as u64).map(|k| event(i + k)).collect();
            store
                .append(
                    &format!("stream-{}", (i / BATCH as u64) % 1000),
                    ExpectedVersion::Any,
                    batch,
                )
                .await
                .unwrap();
            i += BATCH as u64;
        }
        store.close().await.unwrap();
    });
    println!(
        "index: wrote {n} events in {:.1?} ({} MiB on disk)",
        started.elapsed(),
        dir_bytes(dir) >> 20
    );
    drop(store);
    let before = rss_bytes();
    let started = Instant::now();
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    let took = started.elapsed();
    let after = rss_bytes();
    println!(
        "index: reopen of {n} events took {took:.2?}; RSS grew by {} MiB ({:.1} bytes/event)",
        (after.saturating_sub(before)) >> 20,
        after.saturating_sub(before) as f64 / n as f64
    );
    rt.block_on(store.close()).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A row read back: position, stream, version, id, type, payload, metadata, recorded_at.
type SqliteRow = (i64, String, i64, Vec<u8>, String, Vec<u8>, Vec<u8>, i64);

struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    fn create(path: &Path) -> Self {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE events (position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL,
               version INTEGER NOT NULL, event_id BLOB NOT NULL UNIQUE, type TEXT NOT NULL,
               payload BLOB NOT NULL, metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL,
               UNIQUE (stream, version));",
        )
        .unwrap();
        Self {
            path: path.to_owned(),
        }
    }

    fn conn(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.execute_batch("PRAGMA synchronous=FULL;").unwrap();
        c.busy_timeout(Duration::from_secs(60)).unwrap();
        c
    }

    /// Appends `events` to `stream` in one transaction, like the log's append: read the
    /// stream's version, insert with the next versions.
    fn append(c: &mut rusqlite::Connection, stream: &str, events: &[EventData]) {
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let v: i64 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?1",
                [stream],
                |r| r.get(0),
            )
            .unwrap();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO events (stream, version, event_id, type, payload, metadata, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for (i, e) in events.iter().enumerate() {
                ins.execute(rusqlite::params![
                    stream,
                    v + 1 + i as i64,
                    &e.event_id.as_bytes()[..],
                    e.event_type,
                    &e.payload[..],
                    &e.metadata[..],
                    e.recorded_at
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn single(&self, writers: usize, secs: f64) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (stop, count, mut c) = (Arc::clone(&stop), Arc::clone(&count), self.conn());
                std::thread::spawn(move || {
                    let stream = format!("single-{writers}-{w}");
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        Self::append(&mut c, &stream, &[event(i)]);
                        i += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        rate(count.load(Ordering::Relaxed), started.elapsed())
    }

    fn batched(&self, writers: usize, secs: f64) -> f64 {
        let started = Instant::now();
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let mut c = self.conn();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while started.elapsed().as_secs_f64() < secs {
                        let batch: Vec<_> = (0..BATCH as u64).map(|i| event(n + i)).collect();
                        Self::append(&mut c, &format!("batched-{w}"), &batch);
                        n += BATCH as u64;
                    }
                    n
                })
            })
            .collect();
        let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        rate(n, started.elapsed())
    }

    fn replay(&self) -> f64 {
        let c = self.conn();
        let started = Instant::now();
        let mut stmt = c
            .prepare(
                "SELECT position, stream, version, event_id, type, payload, metadata, recorded_at
                 FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .unwrap();
        let (mut after, mut n, mut bytes) = (0i64, 0u64, 0usize);
        loop {
            let page: Vec<SqliteRow> = stmt
                .query_map(rusqlite::params![after, PAGE as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.0;
            n += page.len() as u64;
            bytes += page.iter().map(|r| r.5.len()).sum::<usize>();
        }
        std::hint::black_box(bytes);
        rate(n, started.elapsed())
    }
}

struct Pg {
    clients: Vec<Arc<tokio_postgres::Client>>,
}

/// Connections opened to PostgreSQL; writers share them round-robin (the server allows 100).
const PG_CONNECTIONS: usize = 64;
const PG_TABLE: &str = "verdict_bench_events";

impl Pg {
    async fn connect(conninfo: &str) -> Result<Self, tokio_postgres::Error> {
        let mut clients = Vec::new();
        for _ in 0..PG_CONNECTIONS {
            let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            clients.push(Arc::new(client));
        }
        clients[0]
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {PG_TABLE};
                 CREATE TABLE {PG_TABLE} (position bigserial PRIMARY KEY, stream text NOT NULL,
                   version bigint NOT NULL, event_id uuid NOT NULL UNIQUE, type text NOT NULL,
                   payload bytea NOT NULL, metadata bytea NOT NULL, recorded_at bigint NOT NULL,
                   UNIQUE (stream, version));"
            ))
            .await?;
        Ok(Self { clients })
    }

    async fn drop_table(&self) {
        let _ = self.clients[0]
            .batch_execute(&format!("DROP TABLE IF EXISTS {PG_TABLE}"))
            .await;
    }

    async fn single(&self, writers: usize, secs: f64) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let sql = format!(
            "INSERT INTO {PG_TABLE} (stream, version, event_id, type, payload, metadata, recorded_at)
             SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6 FROM {PG_TABLE} WHERE stream = $1"
        );
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let client = Arc::clone(&self.clients[w % self.clients.len()]);
                let (stop, count, sql) = (Arc::clone(&stop), Arc::clone(&count), sql.clone());
                tokio::spawn(async move {
                    let stream = format!("single-{writers}-{w}");
                    let stmt = client.prepare(&sql).await.unwrap();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // One INSERT per append, autocommit: one durable commit each.
                        let e = event(i);
                        client
                            .execute(
                                &stmt,
                                &[
                                    &stream,
                                    &e.event_id,
                                    &e.event_type,
                                    &&e.payload[..],
                                    &&e.metadata[..],
                                    &e.recorded_at,
                                ],
                            )
                            .await
                            .unwrap();
                        i += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        rate(count.load(Ordering::Relaxed), started.elapsed())
    }

    async fn batched(&self, writers: usize, secs: f64) -> f64 {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let client = Arc::clone(&self.clients[w % self.clients.len()]);
                tokio::spawn(async move {
                    let stream = format!("batched-{w}");
                    let sql = format!(
                        "INSERT INTO {PG_TABLE} (stream, version, event_id, type, payload, metadata, recorded_at)
                         SELECT $1, v.n + coalesce((SELECT max(version) FROM {PG_TABLE} WHERE stream = $1), 0),
                                v.id, v.t, v.p, v.m, v.r
                         FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::bytea[], $6::bytea[], $7::bigint[])
                           AS v(n, id, t, p, m, r)"
                    );
                    let stmt = client.prepare(&sql).await.unwrap();
                    let mut n = 0u64;
                    while started.elapsed().as_secs_f64() < secs {
                        let batch: Vec<_> = (0..BATCH as u64).map(|i| event(n + i)).collect();
                        let nums: Vec<i64> = (1..=BATCH as i64).collect();
                        let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
                        let types: Vec<_> = batch.iter().map(|e| e.event_type.clone()).collect();
                        let payloads: Vec<&[u8]> = batch.iter().map(|e| &e.payload[..]).collect();
                        let metas: Vec<&[u8]> = batch.iter().map(|e| &e.metadata[..]).collect();
                        let times: Vec<i64> = batch.iter().map(|e| e.recorded_at).collect();
                        client
                            .execute(&stmt, &[&stream, &nums, &ids, &types, &payloads, &metas, &times])
                            .await
                            .unwrap();
                        n += BATCH as u64;
                    }
                    n
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        rate(n, started.elapsed())
    }

    async fn replay(&self) -> f64 {
        let client = &self.clients[0];
        let stmt = client
            .prepare(&format!(
                "SELECT position, stream, version, event_id, type, payload, metadata, recorded_at
                 FROM {PG_TABLE} WHERE position > $1 ORDER BY position LIMIT $2"
            ))
            .await
            .unwrap();
        let started = Instant::now();
        let (mut after, mut n, mut bytes) = (0i64, 0u64, 0usize);
        loop {
            let rows = client
                .query(&stmt, &[&after, &(PAGE as i64)])
                .await
                .unwrap();
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for r in &rows {
                let _stream: String = r.get(1);
                let _id: uuid::Uuid = r.get(3);
                let _type: String = r.get(4);
                let payload: Vec<u8> = r.get(5);
                bytes += payload.len();
            }
            n += rows.len() as u64;
        }
        std::hint::black_box(bytes);
        rate(n, started.elapsed())
    }
}
