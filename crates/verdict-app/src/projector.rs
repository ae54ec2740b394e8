//! The projector: follows the store and keeps the [`ReadModel`] current.
//!
//! Its checkpoint is the read model's own `position`, saved inside the same snapshot file
//! (written to a temporary file, fsynced, renamed), so state and checkpoint can never
//! disagree: a restart loads the snapshot and resumes at `position + 1` without double
//! counting. Queries wait on [`Projections::wait_for`] to read their own writes.

use crate::health::{pause, Backoff, Health};
use crate::readmodel::{Prepared, ReadModel};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, RwLock};
use verdict_store::{EventStore, RecordedEvent, StoreError};

/// Why projections could not be loaded, saved or advanced.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading or writing the snapshot failed.
    #[error("snapshot {path}: {source}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The snapshot exists but cannot be parsed.
    #[error("snapshot {path} is unreadable ({reason}); delete it or run `verdict replay`")]
    BadSnapshot {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A replay thread could not be started.
    #[error("starting a replay thread: {0}")]
    Thread(std::io::Error),
}

/// The shared read model and the position it has reached.
#[derive(Debug)]
pub struct Projections {
    model: RwLock<ReadModel>,
    position: watch::Sender<u64>,
    snapshot: Option<PathBuf>,
}

impl Projections {
    /// Projections starting from `model` (empty, or loaded from a snapshot).
    pub fn new(model: ReadModel, snapshot: Option<PathBuf>) -> Arc<Self> {
        let (position, _) = watch::channel(model.position);
        Arc::new(Self {
            model: RwLock::new(model),
            position,
            snapshot,
        })
    }

    /// Loads the snapshot at `path` if it exists.
    pub fn load(path: &Path) -> Result<Arc<Self>, ProjectionError> {
        Ok(Self::new(Self::read_snapshot(path)?, Some(path.to_owned())))
    }

    fn read_snapshot(path: &Path) -> Result<ReadModel, ProjectionError> {
        Ok(match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ProjectionError::BadSnapshot {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReadModel::default(),
            Err(source) => {
                return Err(ProjectionError::Snapshot {
                    path: path.to_owned(),
                    source,
                })
            }
        })
    }

    /// Loads the snapshot at `path` for `store`, trusting it only if it was built from
    /// that store: a snapshot claiming a position beyond the store's head (the log was cut
    /// back by a repair, or is another log) or naming another store identity is discarded
    /// with a warning, and the projection is rebuilt from the log. The model is stamped
    /// with the store's identity.
    pub async fn load_for(
        path: &Path,
        store: &dyn EventStore,
    ) -> Result<Arc<Self>, ProjectionError> {
        let mut model = Self::read_snapshot(path)?;
        let head = store.head().await?;
        let why = match untrusted(&model, head, store.identity().as_deref()) {
            Some(why) => Some(why),
            None => other_history(&model, store).await?,
        };
        if let Some(why) = why {
            tracing::warn!(snapshot = %path.display(), "discarding the projections' snapshot: {why}; rebuilding from the log");
            model = ReadModel::default();
        }
        model.store_identity = store.identity();
        Ok(Self::new(model, Some(path.to_owned())))
    }

    /// Read access to the model.
    pub async fn read(&self) -> tokio::sync::RwLockReadGuard<'_, ReadModel> {
        self.model.read().await
    }

    /// The position the model reflects.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// A receiver that changes whenever the projected position moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Waits until the model reflects `position`, at most `timeout`; false on timeout.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.position.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies a page of stored events.
    pub async fn apply(&self, events: &[RecordedEvent]) {
        let Some(last) = events.last() else { return };
        let mut model = self.model.write().await;
        apply_page(&mut model, events);
        if model.position == last.position {
            model.last_event_id = Some(last.event_id);
        }
        drop(model);
        self.position.send_replace(last.position);
    }

    /// Changes the model with `f` and moves its position to `position` under one write
    /// lock: for followers of a read model kept elsewhere (PostgreSQL), which load the
    /// rows that changed up to a checkpoint instead of applying events. The position
    /// never moves backwards.
    pub async fn update(&self, position: u64, f: impl FnOnce(&mut ReadModel)) {
        let mut model = self.model.write().await;
        f(&mut model);
        model.position = model.position.max(position);
        let reached = model.position;
        drop(model);
        self.position.send_replace(reached);
    }

    /// Saves the model and its checkpoint atomically (temp file, fsync, rename).
    pub async fn save(&self) -> Result<(), ProjectionError> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        let bytes = {
            let model = self.model.read().await;
            serde_json::to_vec(&*model).map_err(|e| ProjectionError::BadSnapshot {
                path: path.clone(),
                reason: e.to_string(),
            })?
        };
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| ProjectionError::Snapshot {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?
    }
}

/// Why a read model cannot have been built from a store at `head` with `identity`; `None`
/// when it can. A snapshot without an identity (written before identities existed) is
/// trusted when it is not ahead of the log.
pub fn untrusted(model: &ReadModel, head: u64, identity: Option<&str>) -> Option<String> {
    if model.position > head {
        return Some(format!(
            "it reflects position {} but the log ends at {head}",
            model.position
        ));
    }
    match (model.store_identity.as_deref(), identity) {
        (Some(built_from), Some(store)) if built_from != store => Some(format!(
            "it was built from store {built_from}, this is store {store}"
        )),
        _ => None,
    }
}

/// Why `model` was built from another history than `store`'s, though not ahead of it: the
/// store holds another event at the model's position. `None` when it is the same event,
/// or the model records none (written before event ids were kept).
pub async fn other_history(
    model: &ReadModel,
    store: &dyn EventStore,
) -> Result<Option<String>, StoreError> {
    let Some(expected) = model.last_event_id.filter(|_| model.position > 0) else {
        return Ok(None);
    };
    let found = store.read_all(model.position, 1).await?;
    Ok(match found.first() {
        Some(e) if e.position == model.position && e.event_id == expected => None,
        Some(e) => Some(format!(
            "its position {} holds event {expected} in the snapshot but {} in the log",
            model.position, e.event_id
        )),
        None => Some(format!(
            "the log has no event at its position {}",
            model.position
        )),
    })
}

/// Applies stored events to `model`, skipping (and counting) undecodable ones.
fn apply_page(model: &mut ReadModel, events: &[RecordedEvent]) {
    for e in events {
        if let Err(err) = model.apply_stored(
            e.position,
            e.recorded_at,
            &e.event_type,
            e.schema_version,
            &e.payload,
        ) {
            tracing::warn!(position = e.position, error = %err, "skipping undecodable event");
            model.skip_undecodable(e.position);
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ProjectionError> {
    use std::io::Write;
    let err = |source| ProjectionError::Snapshot {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

/// How often the projector saves its snapshot.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// At most this long between saves while events arrive.
    pub every: Duration,
    /// Or after this many events.
    pub events: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(10),
            events: 200_000,
        }
    }
}

/// The component the projector reports its following as.
pub const PROJECTOR: &str = "projector";
/// The component the projector reports its snapshot writes as.
pub const SNAPSHOT: &str = "snapshot";

/// Follows the store from the model's position until `shutdown` flips to true, then
/// saves a final snapshot. Events are applied in pages of up to 1,024.
///
/// Nothing ends it but shutdown: a store error marks [`PROJECTOR`] down and resubscribes
/// after a backoff; a failed snapshot write marks [`SNAPSHOT`] down and is retried with
/// backoff (even while no events arrive) while the projection goes on from memory. Only
/// the final save's error is returned.
pub async fn run(
    store: Arc<dyn EventStore>,
    projections: Arc<Projections>,
    policy: CheckpointPolicy,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    health.register(PROJECTOR);
    health.register(SNAPSHOT);
    let mut saver = Saver::new(policy, health.clone());
    let mut backoff = Backoff::default();
    loop {
        let before = projections.position();
        // Its own task, so that a panic (a bug in a fold) is a failure to report and
        // retry, not the silent end of all projecting.
        let task = tokio::spawn(follow_owned(
            store.clone(),
            projections.clone(),
            saver,
            health.clone(),
            shutdown.clone(),
        ));
        let failure = match task.await {
            Ok((s, result)) => {
                saver = s;
                match result {
                    Ok(()) if *shutdown.borrow() => break,
                    Ok(()) => "the store's feed ended (store closed?)".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => {
                saver = Saver::new(policy, health.clone());
                crate::health::join_failure(e)
            }
        };
        health.down(PROJECTOR, failure);
        // It got somewhere since the last failure: a new outage, retry soon.
        backoff.reset_if(projections.position() > before);
        if !pause(backoff.next_delay(), &mut shutdown).await {
            break;
        }
    }
    let saved = projections.save().await;
    match &saved {
        Ok(()) => health.up(SNAPSHOT),
        Err(e) => health.down(SNAPSHOT, e.to_string()),
    }
    saved
}

/// When the projector saves: by policy while saves succeed, by backoff after a failure.
struct Saver {
    policy: CheckpointPolicy,
    health: Health,
    since_save: u64,
    last_save: Instant,
    /// Set after a failed save: the next attempt is due then, events or not.
    retry_at: Option<tokio::time::Instant>,
    backoff: Backoff,
}

impl Saver {
    fn new(policy: CheckpointPolicy, health: Health) -> Self {
        Self {
            policy,
            health,
            since_save: 0,
            last_save: Instant::now(),
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
        }
    }

    fn due(&self) -> bool {
        match self.retry_at {
            Some(at) => tokio::time::Instant::now() >= at,
            None => {
                self.since_save >= self.policy.events
                    || (self.since_save > 0 && self.last_save.elapsed() >= self.policy.every)
            }
        }
    }

    async fn save(&mut self, projections: &Projections) {
        match projections.save().await {
            Ok(()) => {
                self.since_save = 0;
                self.last_save = Instant::now();
                self.retry_at = None;
                self.backoff.reset();
                self.health.up(SNAPSHOT);
            }
            Err(e) => {
                self.health.down(SNAPSHOT, e.to_string());
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff.next_delay());
            }
        }
    }

    /// Resolves when a retry of a failed save is due; never while saves succeed.
    async fn retry_due(&self) {
        match self.retry_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

async fn follow_owned(
    store: Arc<dyn EventStore>,
    projections: Arc<Projections>,
    mut saver: Saver,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> (Saver, Result<(), ProjectionError>) {
    let result = follow(&*store, &projections, &mut saver, &health, &mut shutdown).await;
    (saver, result)
}

/// One subscription's worth of projecting: `Ok` at shutdown or when the store closed.
async fn follow(
    store: &dyn EventStore,
    projections: &Projections,
    saver: &mut Saver,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let mut sub = store.subscribe(projections.position() + 1).await?;
    // Up again once the feed has delivered or stayed quiet without error for a while, so a
    // feed that fails at once does not flap between up and down.
    let mut confirmed = false;
    let settle = tokio::time::sleep(crate::health::SETTLE);
    tokio::pin!(settle);
    let mut page = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            biased;
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return Ok(()),
            () = saver.retry_due() => saver.save(projections).await,
            () = &mut settle, if !confirmed => {
                confirmed = true;
                health.up(PROJECTOR);
            }
            next = sub.next() => {
                if !confirmed && matches!(next, Some(Ok(_))) {
                    confirmed = true;
                    health.up(PROJECTOR);
                }
                match next {
                    Some(Ok(e)) => page.push(e),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                }
                // Take whatever else is already buffered, without waiting.
                while page.len() < 1024 {
                    match tokio::time::timeout(Duration::ZERO, sub.next()).await {
                        Ok(Some(Ok(e))) => page.push(e),
                        Ok(Some(Err(e))) => {
                            projections.apply(&page).await;
                            return Err(e.into());
                        }
                        _ => break,
                    }
                }
                projections.apply(&page).await;
                saver.since_save += page.len() as u64;
                page.clear();
                if saver.due() {
                    saver.save(projections).await;
                }
            }
        }
    }
}

/// Rebuilds a read model from position zero by reading the whole log in pages,
/// reporting `(position, head)` after each page.
pub async fn replay(
    store: &dyn EventStore,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReadModel, ProjectionError> {
    let head = store.head().await?;
    let mut model = ReadModel::default();
    // A pipeline over pages: the store reads ahead (its own threads), PARSERS threads parse
    // pages round-robin (JSON parsing is most of a replay's work), and this task applies
    // them in position order — the only part that must be sequential.
    const PARSERS: usize = 2;
    let mut to_parsers = Vec::with_capacity(PARSERS);
    let mut from_parsers = Vec::with_capacity(PARSERS);
    for i in 0..PARSERS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
        let (ptx, prx) = tokio::sync::mpsc::channel::<(Vec<RecordedEvent>, Vec<Prepared>)>(2);
        std::thread::Builder::new()
            .name(format!("verdict-replay-{i}"))
            .spawn(move || {
                while let Some(page) = rx.blocking_recv() {
                    let prepared = page
                        .iter()
                        .map(|e| Prepared::of_stored(&e.event_type, e.schema_version, &e.payload))
                        .collect();
                    if ptx.blocking_send((page, prepared)).is_err() {
                        return;
                    }
                }
            })
            .map_err(ProjectionError::Thread)?;
        to_parsers.push(tx);
        from_parsers.push(prx);
    }
    let reader = async move {
        let mut from = 1;
        let mut k = 0;
        while from <= head {
            let page = store.read_all(from, 8192).await?;
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            if to_parsers[k % PARSERS].send(page).await.is_err() {
                break;
            }
            k += 1;
        }
        Ok::<(), StoreError>(())
    };
    let applier = async {
        let mut k = 0;
        while let Some((page, prepared)) = from_parsers[k % PARSERS].recv().await {
            k += 1;
            for (e, p) in page.iter().zip(prepared) {
                if let Err(err) = model.apply_prepared(e.position, e.recorded_at, p) {
                    tracing::warn!(position = e.position, error = %err, "skipping undecodable event");
                    model.skip_undecodable(e.position);
                }
            }
            if let Some(last) = page.last() {
                progress(last.position.min(head), head);
            }
        }
    };
    let (read, ()) = tokio::join!(reader, applier);
    read?;
    model.store_identity = store.identity();
    if model.position > 0 {
        model.last_event_id = store
            .read_all(model.position, 1)
            .await?
            .first()
            .filter(|e| e.position == model.position)
            .map(|e| e.event_id);
    }
    Ok(model)
}
