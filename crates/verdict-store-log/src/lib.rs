//! verdict's embedded, durable, segmented append-only event log: the default
//! [`EventStore`].
//!
//! * Segments of CRC32C-framed records in one directory (bytes in `FORMAT.md`).
//! * One writer at a time assigns gap-free positions and commits groups of appends with one
//!   `write` and one `fdatasync`; an append is acknowledged only after its group's fsync.
//!   Under load a writer thread forms the groups; an append that finds the log idle commits
//!   itself, on its own (tokio worker) thread, with no hand-off (see `writer`).
//! * An in-memory index (`index`) rebuilt from the segments on open, and the newest committed
//!   events kept in memory (`tail`), so live subscribers read them without touching files.
//! * Every write group ends with a trailer (in the same `write`) carrying a CRC32C per
//!   sector of the group. On open, a torn last group is truncated; damage before the tail,
//!   and damage inside a last group its trailer proves was written whole, are refused with
//!   [`LogError::Corrupt`] naming segment and offset; [`check`] reports, [`repair`] cuts the
//!   damage off after a backup.
//! * A write or fsync error poisons the writer: the group fails, later appends fail fast
//!   ([`EventStore::health`] says why) until a probe has cut the active segment back to its
//!   last acknowledged group and written and synced it again; then appends go on, no reopen.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use verdict_store::{EventData, EventStore, ExpectedVersion};
//! let store = verdict_store_log::LogStore::open("data/events", Default::default())?;
//! let event = EventData::new(uuid::Uuid::now_v7(), "Started", &b"{}"[..]);
//! store.append("experiment-1", ExpectedVersion::NoStream, vec![event]).await?;
//! # Ok(()) }
//! ```

pub mod format;
mod health;
pub mod index;
pub mod manifest;
pub mod recovery;
mod repair;
pub mod storage;
mod tail;
mod writer;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use verdict_store::{
    validate_append, AppendResult, EventData, EventStore, ExpectedVersion, RecordedEvent,
    StoreError, Subscription,
};

pub use recovery::{check, CheckReport, Problem, ProblemKind, SegmentInfo, Status};
pub use repair::{RepairAction, RepairOutcome};
pub use storage::{FaultyStorage, StdStorage, Storage};

use index::Index;
use writer::{Core, Request, Writer};

/// Errors of opening, checking and repairing a log directory.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A damaged record with valid data after it: acknowledged events may be lost, so the
    /// log refuses to open. `verdict store check` reports, `verdict store repair` truncates.
    #[error("log is corrupt in segment {} at offset {offset}: {reason} (run `verdict store check` for a report, `verdict store repair` to truncate at the damage after a backup)", segment.display())]
    Corrupt {
        /// The damaged segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `repair` cannot fix the log without guessing (which files belong to it, or events it
    /// would have to invent); nothing was changed by the step that refused.
    #[error("repair refused: {reason}")]
    Unrepairable {
        /// Why, and what to do.
        reason: String,
    },
    /// Another process (or store) has the directory open.
    #[error("log directory {} is in use by another process", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
}

impl LogError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        Self::Io { context, source }
    }
}

/// Tuning of a [`LogStore`].
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A new segment starts once the active one has this many bytes.
    pub segment_size: u64,
    /// Most bytes of events one group commit takes.
    pub max_group_bytes: usize,
    /// Most appends one group commit takes.
    pub max_group_appends: usize,
    /// Appends queued for the writer before callers wait (backpressure).
    pub queue_capacity: usize,
    /// The file layer under the writer; tests inject faults here.
    pub storage: Arc<dyn Storage>,
    /// Keep a CPU busy for up to this long during each group's `fdatasync` (zero: off).
    ///
    /// On VMs whose idle vCPUs halt without polling (Firecracker guests with
    /// `haltpoll.guest_halt_poll_ns=0`, like verdict's dev and CI machines), an fsync
    /// completion that arrives while every thread sleeps is noticed only at the next timer
    /// tick: ~4 ms instead of ~0.2 ms. A spinning helper thread avoids that, at the price of
    /// one core spinning while a sync is in flight. Leave it off on bare metal.
    pub spin_during_sync: std::time::Duration,
    /// Let an append that finds the log idle (writer thread parked, nothing queued, the last
    /// group a single append) write and fsync on its own thread, blocking its tokio worker
    /// for that long, instead of handing it to the writer thread and waiting to be woken.
    /// Only on tokio's multi-threaded runtime with at least two workers; elsewhere appends
    /// always queue. Durability and ordering are the same either way.
    pub inline_commit: bool,
    /// While the last fsync took longer than this, appends queue for the writer thread
    /// even when the log is idle: a disk that stalls must not stall a tokio worker again.
    pub inline_max_sync: std::time::Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_size: 256 << 20,
            max_group_bytes: 16 << 20,
            max_group_appends: 8192,
            queue_capacity: 8192,
            storage: Arc::new(StdStorage),
            spin_during_sync: std::time::Duration::ZERO,
            inline_commit: true,
            inline_max_sync: std::time::Duration::from_millis(1),
        }
    }
}

/// Exclusive lock on a log directory (`flock` on its `LOCK` file), held by the writer;
/// released when dropped or when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails with [`LogError::Locked`].
    pub fn acquire(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| LogError::Locked {
                dir: dir.to_owned(),
            },
        )?;
        Ok(Self { _file: file })
    }
}

/// State shared by the handle, the writer thread and subscriptions.
#[derive(Debug)]
pub(crate) struct Shared {
    index: RwLock<Index>,
    /// Read handles, by segment number.
    files: RwLock<Vec<Arc<Segment>>>,
    /// The durable head: readers never look past it.
    head: AtomicU64,
    /// Group commits done (one `write` + one `fdatasync` each) since open.
    groups: AtomicU64,
    /// Appends answered by those groups.
    group_appends: AtomicU64,
    head_rx: watch::Receiver<u64>,
    /// Set while an I/O error stops the writer (the append path's one check).
    poisoned: AtomicBool,
    /// Why, and when it may probe again (see `writer`).
    health: Mutex<health::Health>,
    /// The writer thread has a group in hand (from receiving it to answering it).
    writer_busy: AtomicBool,
    /// Appends in the last committed group; above one, the log is under load and appends
    /// queue for group commit rather than commit inline.
    last_group: AtomicUsize,
    /// The newest committed events (see `tail`).
    tail: RwLock<tail::Tail>,
    /// How long the last group's fsync took, in µs (see `LogOptions::inline_max_sync`).
    last_sync_micros: AtomicU64,
    /// Reads answered from the tail cache, and from the segment files.
    cached_reads: AtomicU64,
    file_reads: AtomicU64,
}

/// A segment as readers see it.
#[derive(Debug)]
pub(crate) struct Segment {
    /// For `pread`s.
    file: File,
    /// For opening a handle with its own offset (see `read_range`).
    path: PathBuf,
}

impl Segment {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            path: path.to_owned(),
        })
    }
}

/// The embedded log store. Cheap to clone (a handle).
#[derive(Clone, Debug)]
pub struct LogStore {
    shared: Arc<Shared>,
    core: Arc<Mutex<Core>>,
    /// See `manifest::Manifest::identity`; fixed while open.
    identity: String,
    /// `LogOptions::inline_commit`.
    inline: bool,
    /// `LogOptions::inline_max_sync`.
    inline_max_sync: std::time::Duration,
    tx: mpsc::Sender<Request>,
    stopped: watch::Receiver<bool>,
    dir: PathBuf,
}

/// Where the log lives inside verdict's data directory.
pub const LOG_SUBDIR: &str = "events";

/// The log directory of the data directory `data_dir`.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_SUBDIR)
}

/// Validates every record in `dir`; changes nothing. Takes the directory lock, so it fails
/// with [`LogError::Locked`] while a store has the log open (whose in-flight write would
/// look like a torn tail). See [`recovery::check`].
pub fn check_dir(dir: &Path) -> Result<CheckReport, LogError> {
    let _lock = DirLock::acquire(dir)?;
    recovery::check(dir)
}

/// Repairs the log in `dir` (see [`recovery::repair`]), taking the directory lock.
pub fn repair(dir: &Path, backup_stamp: &str) -> Result<RepairOutcome, LogError> {
    let _lock = DirLock::acquire(dir)?;
    repair::repair(dir, backup_stamp)
}

/// Replaces a version-1 segment holding only its header with a version-2 one, atomically
/// (temporary file, fsync, rename, directory fsync): the writer appends version-2 groups only.
fn upgrade_empty_segment(dir: &Path, path: &Path, first: u64) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension("log.tmp");
    let io = |e| LogError::io(format!("rewriting the header of {}", path.display()), e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&format::encode_segment_header(first))
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    recovery::sync_dir(dir)
}

fn store_manifest(m: &manifest::Manifest, dir: &Path) -> Result<(), LogError> {
    m.store(dir)
        .map_err(|e| LogError::io(format!("writing the manifest in {}", dir.display()), e))
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`: takes the lock, validates every record,
    /// truncates a torn tail, refuses corruption, rebuilds the index and starts the writer.
    ///
    /// Blocking: it reads every segment (about a second per million events on a busy
    /// 2-core machine); from async code call it through `tokio::task::spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        let lock = DirLock::acquire(&dir)?;
        let mut index = Index::default();
        let mut versions_ok = |batch: &[(format::Record, u32, u64)]| -> Result<(), String> {
            for (rec, seg, off) in batch {
                let current = index
                    .streams
                    .get(rec.stream.as_str())
                    .map_or(0, |v| v.len() as u64);
                if rec.stream_version != current + 1 {
                    return Err(format!(
                        "record {} is version {} of stream {:?}, expected {}",
                        rec.position,
                        rec.stream_version,
                        rec.stream,
                        current + 1
                    ));
                }
                if index.ids.contains_key(&rec.event_id) {
                    return Err(format!(
                        "record {} repeats event id {}",
                        rec.position, rec.event_id
                    ));
                }
                index.push(&rec.stream, rec.event_id, index::pack(*seg, *off));
            }
            Ok(())
        };
        let scan = recovery::scan(&dir, &mut versions_ok)?;
        if let Some(p) = scan.problems.first() {
            return Err(LogError::Corrupt {
                segment: p.segment.clone(),
                offset: p.offset,
                reason: format!("{}: {}", p.kind, p.detail),
            });
        }
        for p in &scan.torn_rolls {
            // A roll that crashed before the manifest named its segment: nothing in it.
            tracing::warn!(segment = %p.display(), "removing a segment file of an unfinished segment roll");
            std::fs::remove_file(p)
                .map_err(|e| LogError::io(format!("removing {}", p.display()), e))?;
        }
        if !scan.torn_rolls.is_empty() {
            recovery::sync_dir(&dir)?;
        }
        let mut segments = scan.segments;
        let mut new_generation = false;
        match &scan.status {
            Status::Clean => {}
            Status::TornTail {
                segment,
                truncate_at,
                discarded,
                records,
                remove,
                provable,
            } => {
                recovery::truncate_torn_tail(&dir, &scan.status)?;
                tracing::warn!(
                    segment = %segment.display(),
                    offset = truncate_at,
                    bytes = discarded,
                    records,
                    head = scan.head,
                    "cut a torn tail of {discarded} bytes ({records} record(s)) at offset {truncate_at}: \
                     a write group whose fdatasync never returned, so none of it was acknowledged"
                );
                if !provable {
                    // A checksum mismatch in a complete-looking record: it may have been
                    // acknowledged (bit rot in the last group), so read models built on it
                    // must not be trusted.
                    tracing::error!(
                        segment = %segment.display(),
                        offset = truncate_at,
                        "the cut tail does not look like an unfinished write; the log gets a new identity generation"
                    );
                    new_generation = true;
                }
                if !remove {
                    let last = segments
                        .last_mut()
                        .expect("a torn tail is in a scanned segment");
                    debug_assert_eq!(&last.path, segment);
                    last.valid_len = *truncate_at;
                    last.file_len = *truncate_at;
                }
            }
            Status::Corrupt {
                segment,
                offset,
                reason,
                kind,
                ..
            } => {
                return Err(LogError::Corrupt {
                    segment: segment.clone(),
                    offset: *offset,
                    reason: format!("{kind}: {reason}"),
                });
            }
        }
        // The writer writes version-2 segments only. An active version-1 segment (a log
        // written before group trailers) holding no records is replaced by a version-2 one
        // (atomically, before any handle to it is opened); one with records is sealed below
        // and a version-2 segment started after it.
        let mut seal_v1 = false;
        if let Some(last) = segments.last_mut() {
            if last.version == format::FORMAT_VERSION_1 {
                if last.valid_len == format::SEGMENT_HEADER_LEN as u64 {
                    upgrade_empty_segment(&dir, &last.path, last.first_position)?;
                    last.version = format::FORMAT_VERSION;
                    last.file_len = last.valid_len;
                } else {
                    seal_v1 = true;
                }
            }
        }
        let firsts: Vec<u64> = segments.iter().map(|s| s.first_position).collect();
        let storage = Arc::clone(&options.storage);
        let mut files = Vec::with_capacity(segments.len() + 1);
        for s in &segments {
            files.push(Arc::new(Segment::open(&s.path).map_err(|e| {
                LogError::io(format!("opening {}", s.path.display()), e)
            })?));
        }
        let next_position = scan.head + 1;
        let (active, active_len) = match segments.pop() {
            Some(last) => {
                if last.file_len > last.valid_len {
                    // Zeros the last run preallocated: cut them, so appends go on from the
                    // end of the data (and the file says where that is).
                    let cut = |e| LogError::io(format!("trimming {}", last.path.display()), e);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&last.path)
                        .map_err(cut)?;
                    f.set_len(last.valid_len).map_err(cut)?;
                    f.sync_data().map_err(cut)?;
                }
                let file = storage
                    .open_append(&last.path)
                    .map_err(|e| LogError::io(format!("opening {}", last.path.display()), e))?;
                (file, last.valid_len)
            }
            None => {
                let (file, read) =
                    writer::create_segment(&*storage, &dir, next_position).map_err(|e| {
                        LogError::io(
                            format!("creating the first segment in {}", dir.display()),
                            e,
                        )
                    })?;
                files.push(Arc::new(read));
                (file, format::SEGMENT_HEADER_LEN as u64)
            }
        };
        let active_no = u32::try_from(files.len() - 1).expect("fewer than 2^32 segments");
        let active_path = files.last().expect("an active segment").path.clone();
        let manifest = match scan.manifest {
            Some(mut m) => {
                if new_generation {
                    m.generation += 1;
                    store_manifest(&m, &dir)?;
                }
                m
            }
            None => {
                // A new log, or one written before manifests: its chain is what is there
                // now (the active segment was just created or scanned).
                let active_first = *firsts.last().unwrap_or(&next_position);
                let mut m = manifest::Manifest::new(active_first);
                m.sealed = segments
                    .iter()
                    .zip(firsts.iter().skip(1))
                    .map(|(s, &end)| manifest::SealedSegment {
                        first: s.first_position,
                        end,
                        len: s.file_len,
                    })
                    .collect();
                if !firsts.is_empty() {
                    tracing::info!(dir = %dir.display(), identity = %m.identity(), "gave a log written before manifests its manifest and identity");
                }
                store_manifest(&m, &dir)?;
                m
            }
        };
        let identity = manifest.identity();
        let (head_tx, head_rx) = watch::channel(scan.head);
        let (stopped_tx, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            files: RwLock::new(files),
            head: AtomicU64::new(scan.head),
            groups: AtomicU64::new(0),
            group_appends: AtomicU64::new(0),
            head_rx,
            poisoned: AtomicBool::new(false),
            health: Mutex::new(health::Health::default()),
            writer_busy: AtomicBool::new(false),
            last_group: AtomicUsize::new(0),
            tail: RwLock::new(tail::Tail::default()),
            last_sync_micros: AtomicU64::new(0),
            cached_reads: AtomicU64::new(0),
            file_reads: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let spinner = if options.spin_during_sync.is_zero() {
            None
        } else {
            Some(
                writer::Spinner::spawn(options.spin_during_sync)
                    .map_err(|e| LogError::io("starting the spinner thread".into(), e))?,
            )
        };
        let inline = options.inline_commit;
        let inline_max_sync = options.inline_max_sync;
        let core = Arc::new_cyclic(|me| {
            Mutex::new(Core {
                options,
                storage,
                dir: dir.clone(),
                active: Some(active),
                active_path,
                closed: false,
                me: me.clone(),
                shared: Arc::downgrade(&shared),
                active_no,
                active_len,
                next_position,
                head_tx: Some(head_tx),
                lock: Some(lock),
                spinner,
                buf: Vec::with_capacity(1 << 20),
                fresh: Vec::new(),
                zeroed_to: 0,
                manifest,
            })
        });
        if seal_v1 {
            let mut c = writer::lock_core(&core);
            c.roll(&shared).map_err(|e| {
                LogError::io(
                    format!(
                        "starting a version-{} segment after the version-1 segment {}",
                        format::FORMAT_VERSION,
                        c.active_path.display()
                    ),
                    e,
                )
            })?;
            tracing::info!(dir = %dir.display(), segment = %c.active_path.display(), "sealed the version-1 active segment; appends go to a new version-2 segment (write group trailers)");
        }
        let writer = Writer {
            shared: Arc::clone(&shared),
            core: Arc::clone(&core),
            stopped_tx,
        };
        std::thread::Builder::new()
            .name("verdict-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::io("starting the writer thread".into(), e))?;
        Ok(Self {
            shared,
            core,
            identity,
            inline,
            inline_max_sync,
            tx,
            stopped,
            dir,
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Group commits since open and the appends they carried: `appends / groups` is the
    /// average group size, i.e. how many appends shared one fsync.
    pub fn group_stats(&self) -> (u64, u64) {
        (
            self.shared.groups.load(Ordering::Relaxed),
            self.shared.group_appends.load(Ordering::Relaxed),
        )
    }

    /// Reads since open answered from the in-memory tail cache, and from the segment files
    /// (`read_all` calls and subscription pages).
    pub fn read_stats(&self) -> (u64, u64) {
        (
            self.shared.cached_reads.load(Ordering::Relaxed),
            self.shared.file_reads.load(Ordering::Relaxed),
        )
    }

    /// Why the writer is stopped, while an I/O error stops it (it recovers by itself once
    /// the disk works again; see [`EventStore::health`]).
    pub fn poisoned(&self) -> Option<String> {
        health::poison_reason(&self.shared)
    }

    /// Reads up to `max` events from `from_position` on the calling thread (no runtime
    /// needed); what `read_all` does, for replay tools and benchmarks.
    pub fn read_all_blocking(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all(&self.shared, from_position, max)
    }

    /// Commits `events` on this thread if the log is idle (see `LogOptions::inline_commit`);
    /// gives them back otherwise.
    fn try_inline(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<Result<AppendResult, StoreError>, Vec<EventData>> {
        let idle = self.inline
            && !self.shared.writer_busy.load(Ordering::SeqCst)
            && self.shared.last_group.load(Ordering::Relaxed) <= 1
            && self.tx.capacity() == self.tx.max_capacity()
            && self.shared.last_sync_micros.load(Ordering::Relaxed)
                <= self.inline_max_sync.as_micros() as u64;
        // Only where another worker keeps the runtime going meanwhile (see below).
        if !idle
            || !tokio::runtime::Handle::try_current().is_ok_and(|h| {
                h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    && h.metrics().num_workers() >= 2
            })
        {
            return Err(events);
        }
        let mut core = match self.core.try_lock() {
            Ok(core) => core,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(events),
        };
        let appends = [(stream.to_owned(), expected, events)];
        // This blocks the worker for one write + fdatasync (~0.1-0.3 ms), on purpose: only
        // when the log is idle, i.e. at low load, one worker at a time (the `try_lock`), with
        // the others free to steal its queued tasks. `block_in_place` would hand the worker's
        // core to another thread on every append, which cost more than it saved (1
        // connection, exact per-request p99 377-440 against 348-392 µs; docs/BENCHMARKS.md).
        let committed = core.commit(&self.shared, &appends);
        drop(core);
        self.shared.last_group.store(1, Ordering::Relaxed);
        Ok(match committed {
            Ok(mut outcomes) => outcomes.pop().expect("one outcome per append"),
            Err(e) => Err(e.to_store_error()),
        })
    }

    fn unavailable(&self) -> StoreError {
        match health::poison_reason(&self.shared) {
            Some(reason) => StoreError::Unavailable(health::poisoned_message(&reason)),
            None => StoreError::Unavailable("the log store is closed".into()),
        }
    }
}

/// How many bytes one `pread` of `read_all` covers at most.
const READ_CHUNK: u64 = 4 << 20;

/// Up to `max` events from `from`: from the tail cache if it holds them all, else from the
/// segments.
fn read_all(shared: &Shared, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
    match read_cached(shared, from, max) {
        Some(events) => Ok(events),
        None => read_all_disk(shared, from, max),
    }
}

/// Most events a subscription page takes from the tail cache at once: the copies are made
/// under the cache's read lock, which the committer waits for before it moves the head.
const CACHED_PAGE: usize = 256;

/// The positions `from..=end` a read of up to `max` events from `from` covers, at or below
/// the durable head; `None` if there are none.
fn committed_range(shared: &Shared, from: u64, max: usize) -> Option<(u64, u64)> {
    let head = shared.head.load(Ordering::Acquire);
    let from = from.max(1);
    if from > head || max == 0 {
        return None;
    }
    Some((from, head.min(from.saturating_add(max as u64 - 1))))
}

/// `read_all` for async callers: from the tail cache on the calling task (at most
/// `cached_max` events), else from the files on the blocking pool.
async fn read_all_async(
    shared: &Arc<Shared>,
    from: u64,
    max: usize,
    cached_max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if let Some(events) = read_cached(shared, from, max.min(cached_max)) {
        return Ok(events);
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || read_all_disk(&shared, from, max))
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
}

/// What `read_all` returns, if it needs no file read: the range is empty or in the tail
/// cache. Cheap enough for an async task to call inline.
fn read_cached(shared: &Shared, from: u64, max: usize) -> Option<Vec<RecordedEvent>> {
    let Some((from, end)) = committed_range(shared, from, max) else {
        return Some(Vec::new());
    };
    let events = shared
        .tail
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .read(from, end)?;
    shared.cached_reads.fetch_add(1, Ordering::Relaxed);
    Some(events)
}

fn read_all_disk(shared: &Shared, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
    let Some((from, end)) = committed_range(shared, from, max) else {
        return Ok(Vec::new());
    };
    shared.file_reads.fetch_add(1, Ordering::Relaxed);
    let locs = {
        let idx = shared.index.read().unwrap_or_else(|e| e.into_inner());
        idx.locs[from as usize - 1..end as usize].to_vec()
    };
    read_locs(shared, from, &locs, true)
}

/// Reads the records at `locs`; if `consecutive`, they are positions `first, first + 1, ..`
/// and are read in large chunks.
fn read_locs(
    shared: &Shared,
    first: u64,
    locs: &[u64],
    consecutive: bool,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let files = shared
        .files
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut out = Vec::with_capacity(locs.len());
    let mut i = 0;
    while i < locs.len() {
        let (seg, start) = index::unpack(locs[i]);
        let file = files
            .get(seg as usize)
            .ok_or_else(|| corrupt(format!("no segment {seg}")))?;
        // Extend over following records of the same segment, while the chunk stays small
        // (a group's trailer may lie between two records: each is decoded at its own offset).
        let mut j = i;
        if consecutive {
            while j + 1 < locs.len() {
                let (s, o) = index::unpack(locs[j + 1]);
                if s != seg || o - start > READ_CHUNK {
                    break;
                }
                j += 1;
            }
        }
        if j > i {
            let (_, end) = index::unpack(locs[j]);
            let chunk = read_range(file, start, (end - start) as usize)?;
            for (k, &loc) in locs.iter().enumerate().take(j).skip(i) {
                let off = (index::unpack(loc).1 - start) as usize;
                let (rec, _) = format::decode_record_at(&chunk, off).map_err(|e| {
                    corrupt(format!("segment {seg} offset {}: {e}", start + off as u64))
                })?;
                out.push(to_recorded(rec, first + k as u64, consecutive)?);
            }
            i = j;
        } else {
            out.push(to_recorded(
                read_one(&file.file, seg, start)?,
                first + i as u64,
                consecutive,
            )?);
            i += 1;
        }
    }
    Ok(out)
}

pub(crate) fn read_one(file: &File, seg: u32, offset: u64) -> Result<format::Record, StoreError> {
    let mut head = pread(file, offset, 4096)?;
    let len = format::frame_len(&head)
        .map_err(|e| corrupt(format!("segment {seg} offset {offset}: {e}")))?;
    if head.len() < len {
        head = pread(file, offset, len)?;
    }
    format::decode_record(&head)
        .map(|(r, _)| r)
        .map_err(|e| corrupt(format!("segment {seg} offset {offset}: {e}")))
}

/// Reads exactly `len` bytes at `offset` into a fresh buffer. Through `read_to_end` on a
/// handle of its own (own file offset): std reads into the spare capacity without zeroing it
/// first, which matters for multi-MiB replay chunks.
fn read_range(segment: &Segment, offset: u64, len: usize) -> Result<Bytes, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| StoreError::Unavailable(format!("reading the log: {e}"));
    let mut f = File::open(&segment.path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf).map_err(io)?;
    if buf.len() != len {
        return Err(corrupt(format!(
            "short read: {} of {len} bytes at offset {offset}",
            buf.len()
        )));
    }
    Ok(Bytes::from(buf))
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn pread(file: &File, offset: u64, len: usize) -> Result<Bytes, StoreError> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Unavailable(format!("reading the log: {e}"))),
        }
    }
    buf.truncate(got);
    Ok(Bytes::from(buf))
}

fn to_recorded(rec: format::Record, want: u64, check: bool) -> Result<RecordedEvent, StoreError> {
    if check && rec.position != want {
        return Err(corrupt(format!(
            "expected position {want}, read {}",
            rec.position
        )));
    }
    Ok(RecordedEvent {
        position: rec.position,
        stream: rec.stream,
        stream_version: rec.stream_version,
        event_id: rec.event_id,
        event_type: rec.event_type,
        schema_version: rec.schema_version,
        payload: rec.payload,
        metadata: rec.metadata,
        recorded_at: rec.recorded_at,
    })
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

#[async_trait::async_trait]
impl EventStore for LogStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(stream, &events)?;
        for e in &events {
            if e.event_type.len() > usize::from(u16::MAX) {
                return Err(StoreError::InvalidAppend(
                    "event type longer than 65535 bytes".into(),
                ));
            }
            let body = format::BODY_FIXED_LEN
                + stream.len()
                + e.event_type.len()
                + e.metadata.len()
                + e.payload.len();
            if body > format::MAX_BODY_LEN {
                return Err(StoreError::InvalidAppend(format!(
                    "event of {body} bytes exceeds the record limit of {} bytes",
                    format::MAX_BODY_LEN
                )));
            }
        }
        // While poisoned, refuse at once unless a probe is due (then `commit` probes).
        if self.shared.poisoned.load(Ordering::Acquire) && !health::probe_due(&self.shared) {
            return Err(self.unavailable());
        }
        let events = match self.try_inline(stream, expected, events) {
            Ok(committed) => return committed,
            Err(events) => events,
        };
        let (reply, answer) = oneshot::channel();
        let req = Request::Append {
            stream: stream.to_owned(),
            expected,
            events,
            reply,
        };
        self.tx.send(req).await.map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())?
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let head = self.shared.head.load(Ordering::Acquire);
        let (first, locs) = {
            let idx = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
            let Some(positions) = idx.streams.get(stream) else {
                return Ok(Vec::new());
            };
            let visible = positions.partition_point(|&p| p <= head);
            let start = (from_version.max(1) as usize - 1).min(visible);
            let end = visible.min(start.saturating_add(max));
            let locs: Vec<u64> = positions[start..end]
                .iter()
                .map(|&p| idx.locs[p as usize - 1])
                .collect();
            (start as u64 + 1, locs)
        };
        let shared = Arc::clone(&self.shared);
        let events = tokio::task::spawn_blocking(move || read_locs(&shared, 0, &locs, false))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))??;
        for (i, e) in events.iter().enumerate() {
            if e.stream != stream || e.stream_version != first + i as u64 {
                return Err(corrupt(format!(
                    "index points to the wrong record for {stream:?}"
                )));
            }
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all_async(&self.shared, from_position, max, usize::MAX).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let head = self.shared.head.load(Ordering::Acquire);
        Ok(self
            .shared
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version_at(stream, head))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.shared.head.load(Ordering::Acquire))
    }

    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError> {
        let shared = Arc::clone(&self.shared);
        Ok(Subscription::spawn_polling(
            from_position,
            self.shared.head_rx.clone(),
            move |from, max| {
                let shared = Arc::clone(&shared);
                Box::pin(async move { read_all_async(&shared, from, max, CACHED_PAGE).await })
            },
        ))
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity.clone())
    }

    fn health(&self) -> Result<(), String> {
        match health::poison_reason(&self.shared) {
            Some(reason) => Err(health::poisoned_message(&reason)),
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        // If the writer already stopped (closed or poisoned) the send fails; either way wait
        // until it has released its files and the directory lock.
        let _ = self.tx.send(Request::Close).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
        Ok(())
    }
}
