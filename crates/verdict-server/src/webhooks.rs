//! Alert delivery to webhooks: every `AlertRaised` and `AlertResolved` is POSTed as JSON
//! to each configured URL, at least once.
//!
//! The deliverer follows the store like a projector, with its own checkpoint file
//! (`webhooks.checkpoint`, written atomically after an event reached every URL). A failed
//! POST (connection error, timeout, non-2xx) is retried with exponential backoff, without
//! limit, so a receiver that is down for a while gets every alert once it is back; after
//! a restart delivery resumes at the checkpoint, which can repeat the last alert (at
//! least once, never lost). Receivers deduplicate by `event_id`.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use verdict_app::health::Health;
use verdict_store::{EventStore, RecordedEvent};

/// Backoff between attempts: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub first: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

fn read_checkpoint(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_checkpoint(path: &Path, position: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(position.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The JSON body a webhook receives.
pub fn payload(e: &RecordedEvent) -> serde_json::Value {
    let env = verdict_app::codec::envelope(e);
    json!({
        "event_id": env.event_id,
        "type": env.event_type,
        "position": env.position,
        "recorded_at": env.recorded_at,
        "alert": env.data,
    })
}

/// The component the deliverer reports as.
pub const WEBHOOKS: &str = "webhooks";

/// Failed attempts at one delivery before the deliverer reports itself down.
const DOWN_AFTER_ATTEMPTS: u32 = 3;

/// POSTs `body` to `url` until it is accepted (2xx) or `shutdown` flips; returns the
/// number of attempts, or `None` if shut down first. From the third failed attempt on,
/// [`WEBHOOKS`] is down in `health` until the delivery succeeds.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    backoff: Backoff,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<u32> {
    let mut delay = backoff.first;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match client
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Some(attempt),
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("{url}: {e}"),
        };
        tracing::warn!(
            url,
            attempt,
            "webhook delivery failed ({failure}); retrying"
        );
        if attempt >= DOWN_AFTER_ATTEMPTS {
            health.down(
                WEBHOOKS,
                format!("alert delivery failing after {attempt} attempts: {failure}"),
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return None,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Follows the store and delivers every alert event to every URL, until `shutdown`. A
/// failed subscription is retried from the checkpoint with backoff, [`WEBHOOKS`] down
/// meanwhile.
pub async fn run(
    store: Arc<dyn EventStore>,
    urls: Vec<String>,
    data_dir: PathBuf,
    backoff: Backoff,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    if urls.is_empty() {
        return;
    }
    health.register(WEBHOOKS);
    let checkpoint = data_dir.join("webhooks.checkpoint");
    let mut next = read_checkpoint(&checkpoint) + 1;
    let client = reqwest::Client::new();
    let mut retry = verdict_app::health::Backoff::default();
    // The position of a delivered alert not yet in the checkpoint file.
    let mut unsaved: Option<u64> = None;
    loop {
        let settle = tokio::time::sleep(verdict_app::health::SETTLE);
        tokio::pin!(settle);
        let mut confirmed = false;
        let failure = match store.subscribe(next).await {
            Ok(mut sub) => loop {
                let event = tokio::select! {
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                    () = &mut settle, if !confirmed => {
                        // Following again without error: up, unless a checkpoint is
                        // still unsaved (the next save attempt decides).
                        confirmed = true;
                        if unsaved.is_none() {
                            health.up(WEBHOOKS);
                        }
                        continue;
                    }
                    next = sub.next() => next,
                };
                let event = match event {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => break format!("following the store: {e}"),
                    None if *shutdown.borrow() => return,
                    None => break "the store's feed ended (store closed?)".to_owned(),
                };
                retry.reset();
                if event.event_type == "AlertRaised" || event.event_type == "AlertResolved" {
                    let body = payload(&event);
                    for url in &urls {
                        if deliver(&client, url, &body, backoff, &health, &mut shutdown)
                            .await
                            .is_none()
                        {
                            return; // shutting down: the checkpoint stays before this event
                        }
                    }
                    unsaved = Some(event.position);
                }
                next = event.position + 1;
                // Every delivered alert up to here may be checkpointed at this event; a
                // failed save is retried at the next event (delivery goes on meanwhile; a
                // restart may repeat alerts until a save works).
                if unsaved.is_some() {
                    match write_checkpoint(&checkpoint, event.position) {
                        Ok(()) => {
                            unsaved = None;
                            health.up(WEBHOOKS);
                        }
                        Err(e) => health.down(WEBHOOKS, format!("saving the checkpoint: {e}")),
                    }
                }
            },
            Err(e) => format!("subscribing at {next}: {e}"),
        };
        health.down(WEBHOOKS, failure);
        if !verdict_app::health::pause(retry.next_delay(), &mut shutdown).await {
            return;
        }
    }
}
