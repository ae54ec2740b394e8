//! The single writer: one OS thread that owns the active segment, assigns positions, and
//! commits groups of appends with one `write` and one `fdatasync` each.
//!
//! A thread rather than a tokio task because `write` and `fdatasync` block; callers talk to
//! it over a bounded channel (their backpressure) and get answers on oneshots.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use verdict_store::{AppendResult, EventData, ExpectedVersion, StoreError};

use crate::format::{self, RecordRef, FLAG_BATCH_END, SEGMENT_HEADER_LEN};
use crate::index::{self, Index};
use crate::recovery::segment_path;
use crate::storage::{LogFile, Storage};
use crate::{DirLock, LogOptions, Shared};

/// How long the writer waits for stragglers of a group, see `Writer::run`: a fraction of an
/// fsync (~130-170 µs here), so it adds little latency and can halve the fsyncs.
const GATHER: std::time::Duration = std::time::Duration::from_micros(50);

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

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub options: LogOptions,
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub active: Box<dyn LogFile>,
    /// Segment number of `active`.
    pub active_no: u32,
    /// Bytes in `active` (all durable).
    pub active_len: u64,
    /// Position the next event gets.
    pub next_position: u64,
    pub head_tx: watch::Sender<u64>,
    pub stopped_tx: watch::Sender<bool>,
    pub lock: DirLock,
    /// Spins during fsyncs, see `LogOptions::spin_during_sync`.
    pub spinner: Option<Spinner>,
}

/// An append as the writer handles it: stream, expectation, events, where to answer.
type Append = (
    String,
    ExpectedVersion,
    Vec<EventData>,
    oneshot::Sender<Result<AppendResult, StoreError>>,
);

type Reply = (
    oneshot::Sender<Result<AppendResult, StoreError>>,
    Result<AppendResult, StoreError>,
);

impl Writer {
    /// The thread's body: runs until closed, all handles dropped, or poisoned.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut group: Vec<Request> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        // Appends in the previous group: the writers it answered are likely about to send again.
        let mut last_group = 0usize;
        while let Some(first) = rx.blocking_recv() {
            // Group commit: take everything queued, up to the limits. If fewer appends are
            // queued than the last group had, wait a little (yielding, at most GATHER) for the
            // writers just answered to come back; otherwise groups alternate between a few
            // appends and the rest, and every other fsync is wasted.
            let mut bytes = request_bytes(&first);
            group.push(first);
            let deadline = std::time::Instant::now() + GATHER;
            while group.len() < self.options.max_group_appends
                && bytes < self.options.max_group_bytes
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
            let appends: Vec<_> = group
                .drain(..)
                .filter_map(|req| match req {
                    Request::Append {
                        stream,
                        expected,
                        events,
                        reply,
                    } => Some((stream, expected, events, reply)),
                    Request::Close => {
                        closing = true;
                        None
                    }
                })
                .collect();
            if closing {
                // Refuse new requests; those already queued are still committed.
                rx.close();
            }
            if appends.is_empty() {
                continue;
            }
            if let Err(reason) = self.commit(appends, &mut buf) {
                let reason = self.shared.poison.get_or_init(|| reason).clone();
                rx.close();
                while let Some(req) = rx.blocking_recv() {
                    if let Request::Append { reply, .. } = req {
                        let _ = reply.send(Err(StoreError::Unavailable(poisoned_message(&reason))));
                    }
                }
                break;
            }
        }
        let Writer {
            active,
            lock,
            head_tx,
            stopped_tx,
            ..
        } = self;
        drop(active);
        drop(head_tx); // ends subscriptions once they caught up
        drop(lock);
        stopped_tx.send_replace(true);
    }

    /// Decides, encodes, writes and syncs one group, then answers it. On an I/O error every
    /// append of the group is answered with the error, and the error is returned: the writer
    /// is poisoned (after a failed fsync the kernel may have dropped the dirty pages, so
    /// retrying could acknowledge data that is not on disk).
    fn commit(&mut self, appends: Vec<Append>, buf: &mut Vec<u8>) -> Result<(), String> {
        // Poison before answering, so a caller that saw the error also sees the poison.
        let fail = |shared: &Shared, replies: Vec<Reply>, reason: String| {
            let reason = shared.poison.get_or_init(|| reason).clone();
            for (reply, _) in replies {
                let _ = reply.send(Err(StoreError::Unavailable(poisoned_message(&reason))));
            }
            reason
        };
        if self.active_len >= self.options.segment_size {
            if let Err(e) = self.roll() {
                let replies = appends
                    .into_iter()
                    .map(|(_, _, _, r)| (r, Ok(dummy())))
                    .collect();
                return Err(fail(
                    &self.shared,
                    replies,
                    format!("creating a new segment: {e}"),
                ));
            }
        }
        buf.clear();
        let group_first = self.next_position;
        let mut replies: Vec<Reply> = Vec::with_capacity(appends.len());
        {
            let shared = Arc::clone(&self.shared);
            let mut idx = shared.index.write().unwrap_or_else(|e| e.into_inner());
            for (stream, expected, events, reply) in appends {
                let outcome = self.decide(&mut idx, &stream, expected, &events, group_first, buf);
                replies.push((reply, outcome));
            }
        }
        if !buf.is_empty() {
            if let Err(e) = write_all(&mut *self.active, buf) {
                return Err(fail(
                    &self.shared,
                    replies,
                    format!("write to segment {} failed: {e}", self.active_no),
                ));
            }
            let spin = self.spinner.as_ref().map(Spinner::start);
            let synced = self.active.sync_data();
            drop(spin);
            if let Err(e) = synced {
                return Err(fail(
                    &self.shared,
                    replies,
                    format!("fdatasync of segment {} failed: {e}", self.active_no),
                ));
            }
            self.active_len += buf.len() as u64;
            let head = self.next_position - 1;
            self.shared.head.store(head, Ordering::Release);
            self.shared.groups.fetch_add(1, Ordering::Relaxed);
            self.shared
                .group_appends
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            self.head_tx.send_replace(head);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        Ok(())
    }

    /// Checks one append against the index (which already includes this group's earlier
    /// appends) and, if admitted, encodes it into `buf` and indexes it.
    fn decide(
        &mut self,
        idx: &mut Index,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
        group: u64,
        buf: &mut Vec<u8>,
    ) -> Result<AppendResult, StoreError> {
        if let Some(&first) = idx.ids.get(&events[0].event_id) {
            // A retry if every id sits at consecutive positions of this stream.
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
            self.next_position += 1;
        }
        Ok(AppendResult {
            first_position: first,
            last_position: self.next_position - 1,
            stream_version: current + events.len() as u64,
        })
    }

    /// Starts a new segment named by the next position: create, write the header, fsync the
    /// file and the directory, and only then put records in it.
    fn roll(&mut self) -> std::io::Result<()> {
        let (file, read) = create_segment(&*self.storage, &self.dir, self.next_position)?;
        let mut files = self.shared.files.write().unwrap_or_else(|e| e.into_inner());
        files.push(Arc::new(read));
        self.active_no = u32::try_from(files.len() - 1).expect("fewer than 2^32 segments");
        drop(files);
        self.active = file;
        self.active_len = SEGMENT_HEADER_LEN as u64;
        Ok(())
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

fn dummy() -> AppendResult {
    AppendResult {
        first_position: 0,
        last_position: 0,
        stream_version: 0,
    }
}

/// The message every append gets once the writer is poisoned.
pub(crate) fn poisoned_message(reason: &str) -> String {
    format!("the log writer stopped after an I/O error ({reason}); nothing after the last acknowledged append is durable; reopen the store")
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
