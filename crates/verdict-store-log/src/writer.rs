//! The writer: the state that appends to the active segment (`Core`, behind a mutex), and
//! the thread that commits queued appends in groups with one `write` and one `fdatasync`.
//!
//! Two ways into `Core`, one at a time (the mutex): the writer thread, for appends queued on
//! its bounded channel (their backpressure; answers on oneshots), and, when the log is idle,
//! the appending task itself (`LogStore::append`, on its tokio worker). The second saves
//! two cross-thread wake-ups per append, which on a VM's idle vCPUs cost more than the
//! fsync; under load the channel forms the groups. Whoever holds the mutex assigns
//! positions, writes, syncs and publishes the head, so the order of groups on disk is the
//! order of their positions either way.
//!
//! A failed `write` or `fdatasync` poisons the writer: the group's appends fail
//! (`Unavailable`, unknown outcome), its index entries are taken back, and appends are
//! refused until a probe (by a later append, or a helper thread, with backoff) has cut the
//! active segment back to the end of the last acknowledged group and written and synced it
//! again (see `Core::reopen_tail`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::health::poisoned_message;

use tokio::sync::{mpsc, oneshot, watch};
use verdict_store::{
    same_content, AppendResult, EventData, ExpectedVersion, RecordedEvent, StoreError,
};

use crate::format::{self, RecordRef, FLAG_BATCH_END, SEGMENT_HEADER_LEN};
use crate::index::{self, Index};
use crate::recovery::segment_path;
use crate::storage::{LogFile, Storage};
use crate::{DirLock, LogOptions, Shared};

/// How long the writer waits for stragglers of a group, see `Writer::run`: a fraction of an
/// fsync (~130-170 µs here), so it adds little latency and can halve the fsyncs.
const GATHER: std::time::Duration = std::time::Duration::from_micros(50);

/// How far past the data the active segment is kept filled with zeros (see
/// `LogFile::preallocate`). Extending costs one larger write in the group that crosses the
/// mark (~0.3 ms for 256 KiB here), once per ~500 one-prediction appends, and saves a
/// journal commit in every fsync.
pub(crate) const PREALLOCATE: u64 = 256 << 10;

/// A message to the writer.
pub(crate) enum Request {
    /// Append a batch.
    Append {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    },
    /// Finish what is queued, then stop.
    Close,
}

/// The appending side of the log: whoever holds its mutex may commit.
pub(crate) struct Core {
    pub options: LogOptions,
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    /// The active segment; `None` once closed, or while poisoned (its handle may hold a
    /// failed write's state).
    pub active: Option<Box<dyn LogFile>>,
    /// Its path.
    pub active_path: PathBuf,
    /// Set by `close`.
    pub closed: bool,
    /// This core and the shared state, for the probe thread a failure starts.
    pub me: Weak<Mutex<Core>>,
    pub shared: Weak<Shared>,
    /// Segment number of `active`.
    pub active_no: u32,
    /// Bytes in `active` (all durable).
    pub active_len: u64,
    /// Position the next event gets.
    pub next_position: u64,
    /// `None` once closed: dropping it ends subscriptions once they caught up.
    pub head_tx: Option<watch::Sender<u64>>,
    /// Held until closed.
    pub lock: Option<DirLock>,
    /// Spins during fsyncs, see `LogOptions::spin_during_sync`.
    pub spinner: Option<Spinner>,
    /// The encoding buffer, reused between groups.
    pub buf: Vec<u8>,
    /// The group's events as readers will see them, for the tail cache once durable.
    pub fresh: Vec<RecordedEvent>,
    /// The log's identity and segment chain, rewritten at each roll.
    pub manifest: crate::manifest::Manifest,
    /// The active segment is zero-filled up to here (0 until the first append preallocates;
    /// `u64::MAX` if its file cannot).
    pub zeroed_to: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("dir", &self.dir)
            .field("open", &self.active.is_some())
            .field("active_no", &self.active_no)
            .field("active_len", &self.active_len)
            .field("next_position", &self.next_position)
            .finish_non_exhaustive()
    }
}

/// Locks `core`, ignoring poison: a panic inside `commit` leaves no half-made state that
/// the next commit would trust (the head only moves after a complete fsync).
pub(crate) fn lock_core(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer thread.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub core: Arc<Mutex<Core>>,
    pub stopped_tx: watch::Sender<bool>,
}

/// One append of a group: stream, expectation, events.
pub(crate) type Append = (String, ExpectedVersion, Vec<EventData>);

/// Why a commit failed: the writer is poisoned with this reason (or was closed).
#[derive(Debug)]
pub(crate) enum CommitError {
    Poisoned(String),
    Closed,
}

impl CommitError {
    pub(crate) fn to_store_error(&self) -> StoreError {
        match self {
            Self::Poisoned(reason) => StoreError::Unavailable(poisoned_message(reason)),
            Self::Closed => StoreError::Unavailable("the log store is closed".into()),
        }
    }
}

impl Writer {
    /// The thread's body: runs until closed, all handles dropped, or poisoned.
    pub fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut group: Vec<Request> = Vec::new();
        // Appends in the previous group: the writers it answered are likely about to send again.
        let mut last_group = 0usize;
        while let Some(first) = rx.blocking_recv() {
            self.shared.writer_busy.store(true, Ordering::SeqCst);
            // Taking the mutex may wait for an inline commit; whatever queues meanwhile
            // joins this group.
            let mut core = lock_core(&self.core);
            // Group commit: take everything queued, up to the limits. If fewer appends are
            // queued than the last group had, wait a little (yielding, at most GATHER) for the
            // writers just answered to come back; otherwise groups alternate between a few
            // appends and the rest, and every other fsync is wasted.
            let mut bytes = request_bytes(&first);
            group.push(first);
            let deadline = std::time::Instant::now() + GATHER;
            while group.len() < core.options.max_group_appends
                && bytes < core.options.max_group_bytes
            {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += request_bytes(&req);
                        group.push(req);
                    }
                    Err(_) if group.len() < last_group && std::time::Instant::now() < deadline => {
                        std::thread::yield_now();
                    }
                    Err(_) => break,
                }
            }
            last_group = group.len();
            let mut closing = false;
            let mut appends = Vec::with_capacity(group.len());
            let mut replies = Vec::with_capacity(group.len());
            for req in group.drain(..) {
                match req {
                    Request::Append {
                        stream,
                        expected,
                        events,
                        reply,
                    } => {
                        appends.push((stream, expected, events));
                        replies.push(reply);
                    }
                    Request::Close => closing = true,
                }
            }
            if closing {
                // Refuse new requests; those already queued are still committed.
                rx.close();
            }
            let committed = if appends.is_empty() {
                Ok(Vec::new())
            } else {
                core.commit(&self.shared, &appends)
            };
            self.shared
                .last_group
                .store(appends.len(), Ordering::Relaxed);
            drop(core);
            // Idle before the replies go out: a writer that gets its answer and appends again
            // at once must find the log idle, not race this thread to it.
            self.shared.writer_busy.store(false, Ordering::SeqCst);
            // A failed group poisons the core; the thread goes on (later appends are
            // refused fast until a probe recovers the writer, see `Core::commit`).
            match committed {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.to_store_error()));
                    }
                }
            }
        }
        // Closed (or every handle dropped): release the files and the directory lock under
        // the mutex, so no inline commit can start after this.
        lock_core(&self.core).close();
        self.stopped_tx.send_replace(true);
    }
}

impl Core {
    /// Decides, encodes, writes and syncs one group and returns each append's outcome, in
    /// order. On an I/O error nothing of the group is acknowledged and the writer is
    /// poisoned (after a failed fsync the kernel may have dropped the dirty pages, so
    /// retrying could acknowledge data that is not on disk); later commits fail at once
    /// until a probe has rewritten the tail (`reopen_tail`).
    pub fn commit(
        &mut self,
        shared: &Shared,
        appends: &[Append],
    ) -> Result<Vec<Result<AppendResult, StoreError>>, CommitError> {
        if self.closed {
            return Err(CommitError::Closed);
        }
        if shared.poisoned.load(Ordering::Acquire) {
            self.probe(shared)?;
        }
        if self.active_len >= self.options.segment_size {
            if let Err(e) = self.roll(shared) {
                return Err(self.fail(shared, format!("creating a new segment: {e}")));
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.fresh.clear();
        let group_first = self.next_position;
        let mut outcomes = Vec::with_capacity(appends.len());
        {
            let mut idx = shared.index.write().unwrap_or_else(|e| e.into_inner());
            for (stream, expected, events) in appends {
                let outcome = self.decide(
                    shared,
                    &mut idx,
                    stream,
                    *expected,
                    events,
                    group_first,
                    &mut buf,
                );
                outcomes.push(outcome);
            }
        }
        let result = if buf.is_empty() {
            Ok(outcomes)
        } else {
            // The group's trailer, in the same buffer and so the same write: a trailer that
            // verifies on disk proves the whole group reached it (see `format::GroupTrailer`).
            let records = u32::try_from(self.next_position - group_first)
                .expect("fewer than 2^32 records in a group");
            format::encode_group_trailer(&mut buf, 0, self.active_len, group_first, records);
            match self.write_and_sync(shared, &buf) {
                Ok(()) => {
                    shared
                        .group_appends
                        .fetch_add(appends.len() as u64, Ordering::Relaxed);
                    Ok(outcomes)
                }
                Err(reason) => {
                    // Nothing of the group was acknowledged: take its index entries back,
                    // so the next group reuses its positions and a retry is not taken for
                    // a stored duplicate.
                    shared
                        .index
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_since(
                            group_first,
                            self.fresh
                                .iter()
                                .rev()
                                .map(|e| (e.stream.as_str(), e.event_id)),
                        );
                    self.fresh.clear();
                    self.next_position = group_first;
                    Err(self.fail(shared, reason))
                }
            }
        };
        self.buf = buf;
        result
    }

    /// Writes the encoded group and syncs it; on success publishes the new head.
    fn write_and_sync(&mut self, shared: &Shared, buf: &[u8]) -> Result<(), String> {
        let active = self
            .active
            .as_mut()
            .expect("present unless poisoned or closed");
        let end = self.active_len + buf.len() as u64;
        if end > self.zeroed_to {
            // Best effort: a failed extension leaves zeros or nothing past the data, both of
            // which recovery takes as the end of the log; the append itself decides.
            let target = (end + PREALLOCATE).next_multiple_of(4096);
            self.zeroed_to = match active.preallocate(target) {
                Ok(true) => target,
                Ok(false) | Err(_) => u64::MAX,
            };
        }
        if let Err(e) = write_all(&mut **active, buf) {
            return Err(format!("write to segment {} failed: {e}", self.active_no));
        }
        let spin = self.spinner.as_ref().map(Spinner::start);
        let started = std::time::Instant::now();
        let synced = active.sync_data();
        shared.last_sync_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        drop(spin);
        if let Err(e) = synced {
            return Err(format!(
                "fdatasync of segment {} failed: {e}",
                self.active_no
            ));
        }
        self.active_len += buf.len() as u64;
        // Cached before the head moves: whatever a reader finds at or below the head is in
        // the cache or on disk.
        shared
            .tail
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.fresh.drain(..));
        let head = self.next_position - 1;
        shared.head.store(head, Ordering::Release);
        shared.groups.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = &self.head_tx {
            tx.send_replace(head);
        }
        Ok(())
    }

    /// Checks one append against the index (which already includes this group's earlier
    /// appends) and, if admitted, encodes it into `buf` and indexes it.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        shared: &Shared,
        idx: &mut Index,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
        group: u64,
        buf: &mut Vec<u8>,
    ) -> Result<AppendResult, StoreError> {
        if let Some(&first) = idx.ids.get(&events[0].event_id) {
            // A retry if every id sits at consecutive positions of this stream, each with the
            // same content.
            for (i, e) in events.iter().enumerate() {
                let at = first + i as u64;
                if idx.ids.get(&e.event_id) != Some(&at) || idx.version_of(stream, at).is_none() {
                    let position = idx.ids.get(&e.event_id).copied().unwrap_or(first);
                    return Err(StoreError::DuplicateEventId {
                        event_id: e.event_id,
                        position,
                    });
                }
            }
            for (i, e) in events.iter().enumerate() {
                let at = first + i as u64;
                if !self.same_as_stored(shared, idx, at, group, e)? {
                    return Err(StoreError::DuplicateEventId {
                        event_id: e.event_id,
                        position: at,
                    });
                }
            }
            let last = first + events.len() as u64 - 1;
            let stream_version = idx.version_of(stream, last).expect("checked above");
            return Ok(AppendResult {
                first_position: first,
                last_position: last,
                stream_version,
            });
        }
        if let Some((e, &position)) = events
            .iter()
            .find_map(|e| idx.ids.get(&e.event_id).map(|p| (e, p)))
        {
            return Err(StoreError::DuplicateEventId {
                event_id: e.event_id,
                position,
            });
        }
        let current = idx.streams.get(stream).map_or(0, |v| v.len() as u64);
        if !expected.admits(current) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                current,
            });
        }
        let first = self.next_position;
        let last_i = events.len() - 1;
        for (i, e) in events.iter().enumerate() {
            let offset = self.active_len + buf.len() as u64;
            format::encode_record(
                buf,
                &RecordRef {
                    position: self.next_position,
                    stream_version: current + i as u64 + 1,
                    group,
                    recorded_at: e.recorded_at,
                    event_id: e.event_id,
                    schema_version: e.schema_version,
                    flags: if i == last_i { FLAG_BATCH_END } else { 0 },
                    stream,
                    event_type: &e.event_type,
                    metadata: &e.metadata,
                    payload: &e.payload,
                },
            );
            idx.push(stream, e.event_id, index::pack(self.active_no, offset));
            self.fresh.push(RecordedEvent {
                position: self.next_position,
                stream: stream.to_owned(),
                stream_version: current + i as u64 + 1,
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                recorded_at: e.recorded_at,
            });
            self.next_position += 1;
        }
        Ok(AppendResult {
            first_position: first,
            last_position: self.next_position - 1,
            stream_version: current + events.len() as u64,
        })
    }

    /// Whether the event stored at `at` has `sent`'s type, schema version and payload. Only
    /// on the retry path: the stored event comes from this group (`at >= group`), the tail
    /// cache, or its segment.
    fn same_as_stored(
        &self,
        shared: &Shared,
        idx: &Index,
        at: u64,
        group: u64,
        sent: &EventData,
    ) -> Result<bool, StoreError> {
        if at >= group {
            return Ok(same_content(&self.fresh[(at - group) as usize], sent));
        }
        let cached = shared
            .tail
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .read(at, at);
        if let Some(stored) = cached.as_ref().and_then(|v| v.first()) {
            return Ok(same_content(stored, sent));
        }
        let (seg, offset) = index::unpack(idx.locs[at as usize - 1]);
        let files = shared.files.read().unwrap_or_else(|e| e.into_inner());
        let file = files
            .get(seg as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("no segment {seg}")))?;
        let rec = crate::read_one(&file.file, seg, offset)?;
        Ok(rec.event_type == sent.event_type
            && rec.schema_version == sent.schema_version
            && rec.payload == sent.payload)
    }

    /// Starts a new segment named by the next position: create, write the header, fsync the
    /// file and the directory, and only then put records in it.
    pub(crate) fn roll(&mut self, shared: &Shared) -> std::io::Result<()> {
        // Only the last segment may end in zeros (recovery reads zeros anywhere else as
        // damage), so the old one is cut to its data, durably, before the next exists.
        if let Some(old) = self.active.as_mut() {
            if old.trim()? {
                old.sync_data()?;
            }
        }
        let (file, read) = create_segment(&*self.storage, &self.dir, self.next_position)?;
        // Seal the old segment in the manifest, naming the new one, once the new one's header
        // is durable: a listed segment is never a torn creation, and an unlisted header-only
        // file after the active one is a roll that did not finish (removed on open).
        let mut manifest = self.manifest.clone();
        manifest.sealed.push(crate::manifest::SealedSegment {
            first: manifest.active_first,
            end: self.next_position,
            len: self.active_len,
        });
        manifest.active_first = self.next_position;
        manifest.store(&self.dir)?;
        self.manifest = manifest;
        self.active_path = read.path.clone();
        let mut files = shared.files.write().unwrap_or_else(|e| e.into_inner());
        files.push(Arc::new(read));
        self.active_no = u32::try_from(files.len() - 1).expect("fewer than 2^32 segments");
        drop(files);
        self.active = Some(file);
        self.active_len = SEGMENT_HEADER_LEN as u64;
        self.zeroed_to = 0;
        Ok(())
    }

    /// Releases the active segment, ends subscriptions (once caught up) and drops the
    /// directory lock; later commits fail with `CommitError::Closed`.
    fn close(&mut self) {
        // A closed log ends at its data; if this fails the zeros stay, which is still clean.
        if let Some(active) = self.active.as_mut() {
            if active.trim().unwrap_or(false) {
                let _ = active.sync_data();
            }
        }
        self.active = None;
        self.closed = true;
        self.head_tx = None;
        self.lock = None;
    }
}

/// Creates a segment durably; returns the append handle and a read handle.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &std::path::Path,
    first_position: u64,
) -> std::io::Result<(Box<dyn LogFile>, crate::Segment)> {
    let path = segment_path(dir, first_position);
    let mut file = storage.create(&path)?;
    write_all(&mut *file, &format::encode_segment_header(first_position))?;
    file.sync_data()?;
    storage.sync_dir(dir)?;
    Ok((file, crate::Segment::open(&path)?))
}

fn write_all(file: &mut dyn LogFile, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn request_bytes(req: &Request) -> usize {
    match req {
        Request::Append { events, .. } => events
            .iter()
            .map(|e| 96 + e.payload.len() + e.metadata.len())
            .sum(),
        Request::Close => 0,
    }
}

/// A helper thread that keeps a CPU busy while the writer waits in `fdatasync`.
pub(crate) struct Spinner {
    /// `(requests, stop)`: a new request wakes the thread for one sync.
    state: Arc<(std::sync::Mutex<(u64, bool)>, std::sync::Condvar)>,
    syncing: Arc<std::sync::atomic::AtomicBool>,
}

/// Stops the spinning when dropped (the sync returned).
pub(crate) struct SpinGuard<'a>(&'a Spinner);

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
    }
}

impl Spinner {
    /// Starts the helper thread; it spins at most `limit` per sync, then sleeps until the next.
    pub fn spawn(limit: std::time::Duration) -> std::io::Result<Self> {
        let state = Arc::new((
            std::sync::Mutex::new((0u64, false)),
            std::sync::Condvar::new(),
        ));
        let syncing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, sy) = (Arc::clone(&state), Arc::clone(&syncing));
        std::thread::Builder::new()
            .name("verdict-log-spin".into())
            .spawn(move || {
                let (lock, cvar) = &*st;
                let mut seen = 0u64;
                loop {
                    let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while g.0 == seen && !g.1 {
                        g = cvar.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    if g.1 {
                        return;
                    }
                    seen = g.0;
                    drop(g);
                    let until = std::time::Instant::now() + limit;
                    while sy.load(Ordering::Acquire) && std::time::Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            })?;
        Ok(Self { state, syncing })
    }

    /// Spins until the returned guard is dropped (or the limit passes).
    pub fn start(&self) -> SpinGuard<'_> {
        self.syncing.store(true, Ordering::Release);
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.state.1.notify_one();
        SpinGuard(self)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.state.1.notify_one();
    }
}
