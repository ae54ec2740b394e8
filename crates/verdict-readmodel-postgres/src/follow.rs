//! The follower of a serve node: keeps in-memory [`Projections`] equal to the tables.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use verdict_app::health::Health;
use verdict_app::Projections;

/// The component the follower reports as.
pub const READ_MODEL_FOLLOWER: &str = "read_model_follower";

use crate::{ReadModelError, ReadModelOptions, Reader};

/// Polls the checkpoint every `poll` and loads what changed into `projections`, until
/// `shutdown`. Connection failures mark [`READ_MODEL_FOLLOWER`] down and are retried (the
/// node keeps answering from what it has; `?min_position=` waits time out meanwhile).
pub async fn follow(
    options: ReadModelOptions,
    projections: Arc<Projections>,
    poll: Duration,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    health.register(READ_MODEL_FOLLOWER);
    let mut reader: Option<Reader> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = step(&options, &mut reader, &projections).await {
            health.down(READ_MODEL_FOLLOWER, e.to_string());
            reader = None;
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        health.up(READ_MODEL_FOLLOWER);
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn step(
    options: &ReadModelOptions,
    reader: &mut Option<Reader>,
    projections: &Projections,
) -> Result<(), ReadModelError> {
    if reader.is_none() {
        *reader = Some(Reader::connect(options).await?);
    }
    let r = reader.as_mut().expect("connected");
    let since = projections.position();
    if r.checkpoint().await? <= since {
        return Ok(());
    }
    let changes = r.changes_since(since).await?;
    let position = changes.position;
    projections
        .update(position, move |model| changes.apply(model))
        .await;
    Ok(())
}
