//! Group commit, observed through a file layer whose `fdatasync` waits for the test's
//! permission: nothing is acknowledged or visible before its fsync returns, and appends that
//! queue up during one fsync share the next one. An append that finds the log idle syncs on
//! its own thread; appends that queue are committed by the writer thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_log::storage::LogFile;
use verdict_store_log::{LogOptions, LogStore, Storage};

/// Counts `write`s and `fdatasync`s; each fsync blocks until a permit is granted.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    permits: u64,
    writes: u64,
    syncs_started: u64,
    syncs_done: u64,
    open: bool,
    /// The name of the thread that ran each fsync, in order.
    syncers: Vec<String>,
    /// How long each fsync takes (a slow disk).
    delay: Duration,
    /// Skip the real `fdatasync`, so that a test timing fsyncs sees only `delay` and not
    /// the host disk's hiccups (a CI disk's fsync can take several ms).
    skip_real_sync: bool,
}

impl Gate {
    fn grant(&self, n: u64) {
        self.state.lock().unwrap().permits += n;
        self.changed.notify_all();
    }

    fn open_forever(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        let s = self.state.lock().unwrap();
        (s.writes, s.syncs_started, s.syncs_done)
    }

    /// Waits until `n` fsyncs have started (and are blocked).
    fn syncers(&self) -> Vec<String> {
        self.state.lock().unwrap().syncers.clone()
    }

    fn wait_started(&self, n: u64) {
        let s = self.state.lock().unwrap();
        let (_s, timeout) = self
            .changed
            .wait_timeout_while(s, Duration::from_secs(10), |s| s.syncs_started < n)
            .unwrap();
        assert!(!timeout.timed_out(), "fsync {n} never started");
    }
}

#[derive(Debug, Clone)]
struct GatedStorage(Arc<Gate>);

struct GatedFile {
    file: File,
    gate: Arc<Gate>,
}

impl LogFile for GatedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.gate.state.lock().unwrap().writes += 1;
        self.file.write(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.gate.state.lock().unwrap();
        s.syncs_started += 1;
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        s.syncers.push(name);
        self.gate.changed.notify_all();
        let mut s = self
            .gate
            .changed
            .wait_while(s, |s| !s.open && s.permits == 0)
            .unwrap();
        if !s.open {
            s.permits -= 1;
        }
        s.syncs_done += 1;
        let (delay, skip_real_sync) = (s.delay, s.skip_real_sync);
        drop(s);
        std::thread::sleep(delay);
        if skip_real_sync {
            return Ok(());
        }
        self.file.sync_data()
    }
}

impl Storage for GatedStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(GatedFile {
            file,
            gate: Arc::clone(&self.0),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(GatedFile {
            file,
            gate: Arc::clone(&self.0),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The writer thread's name (`verdict-log-writer`).
const WRITER: &str = "verdict-log-writer";

/// Opens a store on an always-open gate and makes `n` appends one after another; returns
/// the names of the threads that synced them.
async fn sequential_syncers(inline_commit: bool, n: u64) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    gate.open_forever();
    let options = LogOptions {
        storage: Arc::new(GatedStorage(Arc::clone(&gate))),
        inline_commit,
        // These tests are about where an idle append syncs, not about the slow-disk guard,
        // which a slow real fsync on the host would otherwise trip.
        inline_max_sync: Duration::from_secs(3600),
        ..LogOptions::default()
    };
    let store = LogStore::open(tmp.path(), options).unwrap();
    let (_, base, _) = gate.snapshot();
    for i in 0..n {
        let r = store
            .append("s", ExpectedVersion::Exact(i), events("E", 1))
            .await
            .unwrap();
        assert_eq!(r.first_position, i + 1);
    }
    store.close().await.unwrap();
    let syncers = gate.syncers();
    assert_eq!(syncers.len() as u64, base + n, "one fsync per append");
    syncers[base as usize..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_an_idle_log_sync_on_their_own_thread_unless_inline_commit_is_off() {
    let inline = sequential_syncers(true, 20).await;
    assert!(
        inline.iter().all(|t| t != WRITER),
        "an idle log's appends went to the writer thread: {inline:?}"
    );
    let queued = sequential_syncers(false, 20).await;
    assert!(queued.iter().all(|t| t == WRITER), "{queued:?}");
}

#[tokio::test]
async fn on_the_current_thread_runtime_appends_always_go_to_the_writer_thread() {
    // An inline fsync would stall the only thread the runtime has.
    let syncers = sequential_syncers(true, 5).await;
    assert!(syncers.iter().all(|t| t == WRITER), "{syncers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn with_a_single_worker_appends_always_go_to_the_writer_thread() {
    let syncers = sequential_syncers(true, 5).await;
    assert!(syncers.iter().all(|t| t == WRITER), "{syncers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_slow_fsync_appends_queue_until_the_disk_is_fast_again() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    gate.open_forever();
    // Only the gate's delay decides which fsync is slow: 0 or 500 ms against a 100 ms limit,
    // so neither the host disk nor a preempted thread can blur the two.
    gate.state.lock().unwrap().skip_real_sync = true;
    let options = LogOptions {
        storage: Arc::new(GatedStorage(Arc::clone(&gate))),
        inline_max_sync: Duration::from_millis(100),
        ..LogOptions::default()
    };
    let store = LogStore::open(tmp.path(), options).unwrap();
    let mut version = 0;
    let mut append_and_name_syncer = || {
        let store = &store;
        let gate = &gate;
        version += 1;
        let expected = ExpectedVersion::Exact(version - 1);
        async move {
            store.append("s", expected, events("E", 1)).await.unwrap();
            gate.syncers().last().cloned().unwrap()
        }
    };
    assert_ne!(
        append_and_name_syncer().await,
        WRITER,
        "idle and fast: inline"
    );
    gate.state.lock().unwrap().delay = Duration::from_millis(500);
    assert_ne!(
        append_and_name_syncer().await,
        WRITER,
        "nothing was slow yet"
    );
    for _ in 0..3 {
        assert_eq!(
            append_and_name_syncer().await,
            WRITER,
            "the last fsync was slow: the worker must not block on the next"
        );
    }
    gate.state.lock().unwrap().delay = Duration::ZERO;
    assert_eq!(
        append_and_name_syncer().await,
        WRITER,
        "the last fsync was still slow"
    );
    for _ in 0..3 {
        assert_ne!(append_and_name_syncer().await, WRITER, "fast again: inline");
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_or_visible_before_its_fsync_and_waiting_appends_share_one() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    gate.grant(1); // the first segment's header
    let options = LogOptions {
        storage: Arc::new(GatedStorage(Arc::clone(&gate))),
        ..LogOptions::default()
    };
    let store = Arc::new(LogStore::open(tmp.path(), options).unwrap());
    let (_, base_syncs, _) = gate.snapshot();

    // One append to the idle log: written by its own task's thread, then stuck in its fsync.
    let first = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append("a", ExpectedVersion::NoStream, events("E", 1))
                .await
        })
    };
    gate.wait_started(base_syncs + 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !first.is_finished(),
        "acknowledged before its fsync returned"
    );
    assert_eq!(store.head().await.unwrap(), 0, "visible before durable");
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
    assert_eq!(store.stream_version("a").await.unwrap(), 0);
    let mut sub = store.subscribe(1).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), sub.next())
            .await
            .is_err(),
        "delivered before durable"
    );

    // Fifty appends queue up behind that fsync.
    let queued: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .append(&format!("q-{i}"), ExpectedVersion::Any, events("Q", 2))
                    .await
            })
        })
        .collect();
    // Plenty of time for the free worker to run them all (each only queues its request); a
    // straggler would form a group of its own, whose fsync is never granted (caught below).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(queued.iter().all(|t| !t.is_finished()));

    // Release the first fsync: the first append is answered, and the fifty form one group.
    gate.grant(1);
    assert_eq!(first.await.unwrap().unwrap().first_position, 1);
    gate.wait_started(base_syncs + 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.head().await.unwrap(), 1);
    assert!(
        queued.iter().all(|t| !t.is_finished()),
        "acknowledged before the group's fsync"
    );
    gate.grant(1);
    let mut positions = Vec::new();
    for t in queued {
        let r = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a queued append missed the group and waits for a third fsync")
            .unwrap()
            .unwrap();
        positions.extend(r.positions());
    }
    positions.sort_unstable();
    assert_eq!(positions, (2..=101).collect::<Vec<_>>());
    let (writes, syncs, done) = gate.snapshot();
    assert_eq!(
        syncs - base_syncs,
        2,
        "fifty waiting appends should share one fsync"
    );
    assert_eq!(done, syncs);
    let syncers = gate.syncers();
    assert_ne!(
        syncers[base_syncs as usize], WRITER,
        "the append to an idle log should sync on its own thread"
    );
    assert_eq!(
        syncers[base_syncs as usize + 1],
        WRITER,
        "the queued group belongs to the writer thread"
    );
    assert!(
        writes <= base_syncs + 2,
        "one write per group: {writes} writes"
    );
    assert_eq!(sub.next().await.unwrap().unwrap().position, 1);
    gate.open_forever();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_with_other_content_in_the_same_group_is_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    gate.grant(1); // the first segment's header
    let options = LogOptions {
        storage: Arc::new(GatedStorage(Arc::clone(&gate))),
        ..LogOptions::default()
    };
    let store = Arc::new(LogStore::open(tmp.path(), options).unwrap());
    let (_, base_syncs, _) = gate.snapshot();
    // One append holds the disk; three more queue behind it and form one group: an event,
    // the same event again (a retry), and its id with another payload.
    let blocker = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append("x", ExpectedVersion::Any, events("E", 1))
                .await
        })
    };
    gate.wait_started(base_syncs + 1);
    let event = events("E", 1).remove(0);
    let mut other = event.clone();
    other.payload = bytes::Bytes::from_static(b"{\"other\":true}");
    let queued: Vec<_> = [event.clone(), event.clone(), other]
        .into_iter()
        .map(|e| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append("a", ExpectedVersion::Any, vec![e]).await })
        })
        .collect();
    // Time for the free worker to queue all three (each only sends its request).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.open_forever();
    blocker.await.unwrap().unwrap();
    let mut stored_at = Vec::new();
    let mut conflicts = Vec::new();
    for t in queued {
        match t.await.unwrap() {
            Ok(r) => stored_at.push(r.first_position),
            Err(verdict_store::StoreError::DuplicateEventId { position, .. }) => {
                conflicts.push(position)
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Whichever content came first is stored once; the other is a conflict naming it.
    assert_eq!(stored_at.len() + conflicts.len(), 3);
    assert!(!stored_at.is_empty() && !conflicts.is_empty());
    assert!(stored_at.iter().chain(&conflicts).all(|&p| p == 2));
    assert_eq!(store.head().await.unwrap(), 2);
    let (_, syncs, _) = gate.snapshot();
    assert_eq!(syncs - base_syncs, 2, "the three shared one group");
    store.close().await.unwrap();
}
