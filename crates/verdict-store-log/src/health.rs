//! The writer's health: why an I/O error stopped it, the backoff between probes, and the
//! probe that makes the active segment trustworthy again (cut back to the last acknowledged
//! group, rewritten and synced) so appends resume without a reopen.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::index;
use crate::recovery::segment_path;
use crate::writer::{lock_core, CommitError, Core, PREALLOCATE};
use crate::Shared;

/// The first wait before a poisoned writer probes the disk again; doubled after each failed
/// probe, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why the writer is stopped, and when it may probe again.
#[derive(Debug)]
pub(crate) struct Poison {
    pub reason: String,
    since: Instant,
    next_probe: Instant,
    backoff: Duration,
    failed_probes: u32,
}

/// The writer's health, behind `Shared::health`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub poison: Option<Poison>,
    /// A probe thread is running (at most one).
    prober: bool,
}

/// Whether a poisoned writer may probe now (an append then goes on to `commit`, which
/// probes); false while it waits out its backoff.
pub(crate) fn probe_due(shared: &Shared) -> bool {
    lock(&shared.health)
        .poison
        .as_ref()
        .is_none_or(|p| Instant::now() >= p.next_probe)
}

/// Why the writer is stopped, if it is.
pub(crate) fn poison_reason(shared: &Shared) -> Option<String> {
    if !shared.poisoned.load(Ordering::Acquire) {
        return None;
    }
    lock(&shared.health)
        .poison
        .as_ref()
        .map(|p| p.reason.clone())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    /// Poisons the writer after a failed write or sync: logs it, drops the active handle
    /// (its state is suspect), and starts the probe thread.
    pub(crate) fn fail(&mut self, shared: &Shared, reason: String) -> CommitError {
        tracing::error!(
            dir = %self.dir.display(),
            segment = self.active_no,
            head = self.next_position - 1,
            "event log write failed, appends are refused until the writer recovers: {reason}"
        );
        self.active = None;
        let now = Instant::now();
        let mut health = lock(&shared.health);
        health.poison = Some(Poison {
            reason: reason.clone(),
            since: now,
            next_probe: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF,
            failed_probes: 0,
        });
        // Before answering, so a caller that saw the error also sees the poison.
        shared.poisoned.store(true, Ordering::Release);
        if !health.prober {
            health.prober = true;
            let (core, sh) = (self.me.clone(), self.shared.clone());
            let spawned = std::thread::Builder::new()
                .name("verdict-log-probe".into())
                .spawn(move || probe_loop(&core, &sh));
            if spawned.is_err() {
                // Appends still probe when due.
                health.prober = false;
            }
        }
        CommitError::Poisoned(reason)
    }

    /// If the writer is poisoned and its backoff has passed, tries to recover it; `Ok` once
    /// it accepts appends again.
    pub(crate) fn probe(&mut self, shared: &Shared) -> Result<(), CommitError> {
        {
            let health = lock(&shared.health);
            let Some(p) = &health.poison else {
                return Ok(());
            };
            if Instant::now() < p.next_probe {
                return Err(CommitError::Poisoned(p.reason.clone()));
            }
        }
        let result = self.reopen_tail(shared);
        let mut health = lock(&shared.health);
        let p = health
            .poison
            .as_mut()
            .expect("only the core holder clears it");
        match result {
            Ok(cut) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    segment = self.active_no,
                    head = self.next_position - 1,
                    down_ms = p.since.elapsed().as_millis() as u64,
                    failed_probes = p.failed_probes,
                    file_bytes_cut = cut,
                    "event log writer recovered after \"{}\": the tail was cut back to the last \
                     acknowledged group, rewritten and synced; appends accepted again",
                    p.reason
                );
                health.poison = None;
                shared.poisoned.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                p.failed_probes += 1;
                p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                p.next_probe = Instant::now() + p.backoff;
                if p.failed_probes.is_power_of_two() {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        failed_probes = p.failed_probes,
                        "event log writer still failing, appends refused: {e}"
                    );
                }
                Err(CommitError::Poisoned(p.reason.clone()))
            }
        }
    }

    /// Makes the active segment trustworthy again after a failed write or sync: removes a
    /// half-created next segment, cuts the active one back to the end of the last
    /// acknowledged group (`active_len`; the failed group's bytes were never acknowledged),
    /// writes its preallocated zeros again and syncs file and directory through the storage
    /// layer. Never trusts an earlier fsync of the failed pages (fsyncgate): what it relies
    /// on it writes again. Returns how many bytes it cut.
    fn reopen_tail(&mut self, shared: &Shared) -> Result<u64, String> {
        self.active = None;
        let next = segment_path(&self.dir, self.next_position);
        if next != self.active_path && next.exists() {
            std::fs::remove_file(&next)
                .map_err(|e| format!("removing the half-created {}: {e}", next.display()))?;
        }
        // A roll may have failed after its manifest rename (e.g. in the directory fsync):
        // make the manifest on disk the one the writer goes on with.
        self.manifest
            .store(&self.dir)
            .map_err(|e| format!("rewriting the manifest: {e}"))?;
        let io =
            |what: &str, e: std::io::Error| format!("{what} {}: {e}", self.active_path.display());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.active_path)
            .map_err(|e| io("opening", e))?;
        let had = f.metadata().map_err(|e| io("reading", e))?.len();
        // Durably: failed-group bytes past the zeros rewritten below must not come back
        // after a power cut (recovery would read them as a later write group).
        f.set_len(self.active_len)
            .and_then(|()| f.sync_all())
            .map_err(|e| io("truncating", e))?;
        drop(f);
        let mut file = self
            .storage
            .open_append(&self.active_path)
            .map_err(|e| io("reopening", e))?;
        // The probe: write (zeros from the acknowledged end on, which also rewrites the page
        // the failed group shared with it) and sync, file and directory.
        let target = (self.active_len + PREALLOCATE).next_multiple_of(4096);
        let zeroed = file.preallocate(target).map_err(|e| io("writing", e))?;
        file.sync_data().map_err(|e| io("fdatasync of", e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| format!("syncing directory {}: {e}", self.dir.display()))?;
        self.verify_last(shared)?;
        self.zeroed_to = if zeroed { target } else { u64::MAX };
        self.active = Some(file);
        Ok(had.saturating_sub(self.active_len))
    }

    /// Reads the last acknowledged record back, if it is in the active segment: a tail the
    /// probe cannot read is not one to append to.
    fn verify_last(&self, shared: &Shared) -> Result<(), String> {
        let head = self.next_position - 1;
        if head == 0 {
            return Ok(());
        }
        let loc = {
            let idx = shared.index.read().unwrap_or_else(|e| e.into_inner());
            idx.locs[head as usize - 1]
        };
        let (seg, offset) = index::unpack(loc);
        if seg != self.active_no {
            return Ok(());
        }
        let files = shared.files.read().unwrap_or_else(|e| e.into_inner());
        let rec = crate::read_one(&files[seg as usize].file, seg, offset)
            .map_err(|e| format!("reading back the last acknowledged record: {e}"))?;
        if rec.position != head {
            return Err(format!(
                "reading back the last acknowledged record: found position {}, expected {head}",
                rec.position
            ));
        }
        Ok(())
    }
}

/// The probe thread of a poisoned writer: waits out each backoff and probes, until the
/// writer recovered or the store is closed or dropped.
fn probe_loop(core: &Weak<Mutex<Core>>, shared: &Weak<Shared>) {
    loop {
        let wait = {
            let Some(sh) = shared.upgrade() else { return };
            let mut health = lock(&sh.health);
            match &health.poison {
                Some(p) => p.next_probe.saturating_duration_since(Instant::now()),
                None => {
                    health.prober = false;
                    return;
                }
            }
        };
        // A background thread waiting out a backoff, not a test waiting for timing.
        std::thread::sleep(wait);
        let (Some(core), Some(sh)) = (core.upgrade(), shared.upgrade()) else {
            return;
        };
        let mut core = lock_core(&core);
        if core.closed {
            lock(&sh.health).prober = false;
            return;
        }
        let _ = core.probe(&sh);
    }
}

/// The message every append gets once the writer is poisoned.
pub(crate) fn poisoned_message(reason: &str) -> String {
    format!("the log writer stopped after an I/O error ({reason}); appends in flight have an unknown outcome (retry them with the same event ids); appends are refused until the writer has rewritten its tail, which it retries every 0.1-1 s")
}
