//! Simulated power cuts: while concurrent writers append, the file layer is frozen at a random
//! instant, the segments are copied, and everything after each file's last successful fsync is
//! damaged the way a power cut may damage it (cut at any byte, 4 KiB pages lost anywhere in
//! it, or kept). The copy must open, and every append acknowledged before the cut must be
//! there exactly once, in order. (LazyFS's "lose unsynced writes", done in process.)

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;
use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_log::{FaultyStorage, LogOptions, LogStore};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Damages `data` after `durable` bytes as a power cut may; returns the kept bytes.
fn power_cut(mut data: Vec<u8>, durable: u64, rng: &mut Rng) -> Vec<u8> {
    let durable = (durable as usize).min(data.len());
    let unsynced = data.len() - durable;
    match rng.below(4) {
        0 => {} // everything reached the disk
        1 => data.truncate(durable + rng.below(unsynced as u64 + 1) as usize),
        mode => {
            // Lose whole pages that lie entirely in the unsynced part, in any order.
            let first_page = durable.div_ceil(4096);
            for page in first_page..data.len().div_ceil(4096) {
                if rng.below(2) == 0 {
                    let end = ((page + 1) * 4096).min(data.len());
                    data[page * 4096..end].fill(0);
                }
            }
            if mode == 3 {
                data.truncate(durable + rng.below(unsynced as u64 + 1) as usize);
            }
        }
    }
    data
}

#[derive(Clone, Debug)]
struct Ack {
    first: u64,
    stream: String,
    ids: Vec<Uuid>,
}

/// Returns whether recovery had a torn tail to remove.
async fn one_cut(seed: u64) -> bool {
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let faults = FaultyStorage::new();
    let options = LogOptions {
        storage: Arc::new(faults.clone()),
        // Small enough that segments roll (and the manifest is rewritten) during the run.
        segment_size: 256 << 10,
        ..LogOptions::default()
    };
    let store = Arc::new(LogStore::open(&dir, options).unwrap());
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..24u64 {
        let (store, acks, stop) = (Arc::clone(&store), Arc::clone(&acks), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let stream = format!("w-{w}");
            let mut version = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // ~1.5 KB events, so one group spans several 4 KiB pages and a lost page can
                // have valid records after it.
                let mut batch = events("P", 1 + (w + i) % 3);
                for e in &mut batch {
                    e.payload = vec![b'p'; 1200 + (i as usize * 37) % 600].into();
                }
                i += 1;
                let ids = batch.iter().map(|e| e.event_id).collect();
                // Only the writer itself writes its stream, so the exact version always holds.
                let Ok(r) = store
                    .append(&stream, ExpectedVersion::Exact(version), batch)
                    .await
                else {
                    break;
                };
                version = r.stream_version;
                acks.lock().unwrap().push(Ack {
                    first: r.first_position,
                    stream: stream.clone(),
                    ids,
                });
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20 + rng.below(120))).await;

    // The power cut: acknowledgements so far, then a consistent image of the files.
    let acked = acks.lock().unwrap().clone();
    let image: Vec<(String, Vec<u8>, u64)> = faults.frozen(|durable| {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log") || p.ends_with("MANIFEST"))
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                // The manifest is replaced by an fsynced rename: whole or not at all.
                let d = match durable.get(&p) {
                    Some(&d) => d,
                    None if p.ends_with("MANIFEST") => data.len() as u64,
                    None => 0,
                };
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    data,
                    d,
                )
            })
            .collect()
    });
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    store.close().await.unwrap();

    let cut = tmp.path().join("after-power-cut");
    std::fs::create_dir(&cut).unwrap();
    for (name, data, durable) in image {
        std::fs::write(cut.join(name), power_cut(data, durable, &mut rng)).unwrap();
    }
    let torn = matches!(
        verdict_store_log::recovery::check(&cut).unwrap().status,
        verdict_store_log::Status::TornTail { .. }
    );
    check(&cut, &acked, seed).await;
    torn
}

async fn check(dir: &Path, acked: &[Ack], seed: u64) {
    let store = LogStore::open(dir, LogOptions::default())
        .unwrap_or_else(|e| panic!("seed {seed}: a power cut must be recoverable: {e}"));
    let all = store.read_all(1, usize::MAX).await.unwrap();
    let mut ids = HashSet::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "seed {seed}: gap");
        assert!(ids.insert(e.event_id), "seed {seed}: duplicate");
        let v = versions.entry(&e.stream).or_default();
        *v += 1;
        assert_eq!(e.stream_version, *v, "seed {seed}: version gap");
    }
    for ack in acked {
        for (i, id) in ack.ids.iter().enumerate() {
            let p = ack.first + i as u64;
            let e = all
                .get(p as usize - 1)
                .unwrap_or_else(|| panic!("seed {seed}: acknowledged position {p} lost"));
            assert_eq!(
                (e.event_id, e.stream.as_str()),
                (*id, ack.stream.as_str()),
                "seed {seed}"
            );
        }
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_simulated_power_cuts() {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("power cut base seed {base}");
    let mut torn = 0;
    for round in 0..30 {
        torn += u32::from(one_cut(base.wrapping_add(round * 0x9E37_79B9)).await);
    }
    println!("{torn} of 30 power cuts left a torn tail");
    assert!(
        torn > 0,
        "no power cut damaged anything: the test tests nothing"
    );
}
