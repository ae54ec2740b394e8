//! The projector into PostgreSQL: follows the store, applies every page to the in-memory
//! [`ReadModel`] and commits the rows the page touched with the checkpoint (see the crate
//! doc for why a restart never double counts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use verdict_app::readmodel::ReadModel;
use verdict_app::Projections;
use verdict_store::EventStore;

use crate::{Batch, Dirty, ReadModelError, Writer};

/// How often the projector saves the whole model as the snapshot row, and how it batches.
#[derive(Debug, Clone, Copy)]
pub struct ProjectorOptions {
    /// Snapshot at most this long after the last one while events arrive.
    pub snapshot_every: Duration,
    /// Or after this many events.
    pub snapshot_events: u64,
    /// The largest page applied and committed at once.
    pub page: usize,
    /// Log progress this often.
    pub progress_every: Duration,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            snapshot_every: Duration::from_secs(30),
            snapshot_events: 200_000,
            page: 4096,
            progress_every: Duration::from_secs(5),
        }
    }
}

/// Loads the writer's snapshot into projections (empty when there is none) and returns
/// them with the tables' checkpoint.
pub async fn open_projections(
    writer: &Writer,
    store: &dyn EventStore,
) -> Result<(Arc<Projections>, u64), ReadModelError> {
    let (mut checkpoint, snapshot) = writer.load().await?;
    let mut model = snapshot.unwrap_or_default();
    // The tables are trusted only by the store they were built from (see
    // `verdict_app::projector::untrusted`); otherwise they are emptied and rebuilt.
    let head = store.head().await?;
    let identity = store.identity();
    let mut claimed = model.clone();
    claimed.position = checkpoint;
    claimed.store_identity = match writer.store_identity().await? {
        Some(recorded) => Some(recorded),
        None => model.store_identity.clone(),
    };
    let why = match verdict_app::projector::untrusted(&claimed, head, identity.as_deref()) {
        Some(why) => Some(why),
        None => verdict_app::projector::other_history(&model, store).await?,
    };
    if let Some(why) = why {
        tracing::warn!(
            "discarding the PostgreSQL read models: {why}; rebuilding them from the log"
        );
        writer.reset(identity.as_deref()).await?;
        checkpoint = 0;
        model = Default::default();
    } else if claimed.store_identity.is_none() {
        writer.record_identity(identity.as_deref()).await?;
    }
    model.store_identity = identity;
    if model.position > checkpoint {
        return Err(ReadModelError::Corrupt(format!(
            "snapshot at {} is ahead of the checkpoint {checkpoint}",
            model.position
        )));
    }
    Ok((Projections::new(model, None), checkpoint))
}

/// Runs the projector until `shutdown` turns true (then commits a final snapshot) or a
/// PostgreSQL error (a lost connection, and with it the lock: the process should exit). A
/// failing store (a JetStream leader change, a PostgreSQL store restarting) is waited out:
/// the projector subscribes again from its position.
///
/// `projections` must come from [`open_projections`] on the same writer, `checkpoint`
/// being the checkpoint it returned.
pub async fn run_projector(
    store: Arc<dyn EventStore>,
    projections: Arc<Projections>,
    mut writer: Writer,
    checkpoint: u64,
    options: ProjectorOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReadModelError> {
    let mut sub = store.subscribe(projections.position() + 1).await?;
    let mut dirty = Dirty::default();
    let mut page = Vec::with_capacity(options.page);
    let mut since_snapshot = 0u64;
    let mut last_snapshot = Instant::now();
    let mut last_progress = Instant::now();
    let mut applied_since_progress = 0u64;
    let mut ping = tokio::time::interval(Duration::from_secs(2));
    let mut store_failed: Option<verdict_store::StoreError> = None;
    if projections.position() < checkpoint {
        tracing::info!(
            snapshot = projections.position(),
            checkpoint,
            "re-applying events between the snapshot and the checkpoint (rows are not rewritten until the checkpoint)"
        );
    }
    loop {
        tokio::select! {
            biased;
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
            _ = ping.tick() => {
                // An idle projector notices a lost connection (and lock) too.
                writer.ping().await?;
                continue;
            }
            next = sub.next() => {
                match next {
                    Some(Ok(e)) => page.push(e),
                    Some(Err(e)) => store_failed = Some(e),
                    None => break,
                }
                while store_failed.is_none() && page.len() < options.page {
                    match tokio::time::timeout(Duration::ZERO, sub.next()).await {
                        Ok(Some(Ok(e))) => page.push(e),
                        Ok(Some(Err(e))) => store_failed = Some(e),
                        _ => break,
                    }
                }
            }
        }
        if let Some(err) = store_failed.take() {
            // Commit what was read, then follow the store again from there.
            if !page.is_empty() {
                for e in &page {
                    dirty.note(e);
                }
                projections.apply(&page).await;
                page.clear();
                if projections.position() >= checkpoint {
                    let batch = build(&projections, &dirty, false).await?;
                    writer.commit(batch).await?;
                    dirty = Dirty::default();
                }
            }
            tracing::warn!(error = %err, position = projections.position(), "event store failed: subscribing again");
            loop {
                tokio::select! {
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                writer.ping().await?;
                match store.subscribe(projections.position() + 1).await {
                    Ok(s) => {
                        sub = s;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "event store still failing"),
                }
            }
            continue;
        }
        if page.is_empty() {
            continue;
        }
        for e in &page {
            dirty.note(e);
        }
        projections.apply(&page).await;
        since_snapshot += page.len() as u64;
        applied_since_progress += page.len() as u64;
        page.clear();
        if projections.position() < checkpoint {
            continue; // still below what the tables show: never move rows backwards
        }
        let snapshot = since_snapshot >= options.snapshot_events
            || last_snapshot.elapsed() >= options.snapshot_every;
        let batch = build(&projections, &dirty, snapshot).await?;
        writer.commit(batch).await?;
        dirty = Dirty::default();
        if snapshot {
            since_snapshot = 0;
            last_snapshot = Instant::now();
        }
        if last_progress.elapsed() >= options.progress_every {
            let secs = last_progress.elapsed().as_secs_f64();
            tracing::info!(
                position = projections.position(),
                rate = format!("{:.0} events/s", applied_since_progress as f64 / secs),
                "projected into PostgreSQL"
            );
            last_progress = Instant::now();
            applied_since_progress = 0;
        }
    }
    if projections.position() >= checkpoint {
        let batch = build(&projections, &dirty, true).await?;
        writer.commit(batch).await?;
        tracing::info!(
            position = projections.position(),
            "final snapshot committed"
        );
    }
    Ok(())
}

async fn build(
    projections: &Projections,
    dirty: &Dirty,
    snapshot: bool,
) -> Result<Batch, ReadModelError> {
    let mut batch = None;
    projections
        .update(0, |model| {
            batch = Some(Batch::build(model, dirty, snapshot))
        })
        .await;
    batch.expect("built")
}

/// Replays `store` from zero into the writer's tables and returns the model (for the
/// benchmark and tests): the same code path as [`run_projector`], stopping at the head.
pub async fn project_to_head(
    store: Arc<dyn EventStore>,
    writer: Writer,
    options: ProjectorOptions,
) -> Result<ReadModel, ReadModelError> {
    let head = store.head().await?;
    let (projections, checkpoint) = open_projections(&writer, &*store).await?;
    let (stop, rx) = watch::channel(false);
    let run = tokio::spawn(run_projector(
        store,
        projections.clone(),
        writer,
        checkpoint,
        options,
        rx,
    ));
    let mut positions = projections.subscribe();
    let _ = positions.wait_for(|p| *p >= head).await;
    let _ = stop.send(true);
    run.await
        .map_err(|e| ReadModelError::Corrupt(format!("projector task: {e}")))??;
    let model = projections.read().await.clone();
    Ok(model)
}
