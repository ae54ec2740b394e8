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

/// POSTs `body` to `url` until it is accepted (2xx) or `shutdown` flips; returns the
/// number of attempts, or `None` if shut down first.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    backoff: Backoff,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<u32> {
    let mut delay = backoff.first;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Some(attempt),
            Ok(r) => {
                tracing::warn!(url, status = %r.status(), attempt, "webhook refused; retrying")
            }
            Err(e) => tracing::warn!(url, error = %e, attempt, "webhook failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return None,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Follows the store and delivers every alert event to every URL, until `shutdown`.
pub async fn run(
    store: Arc<dyn EventStore>,
    urls: Vec<String>,
    data_dir: PathBuf,
    backoff: Backoff,
    mut shutdown: watch::Receiver<bool>,
) {
    if urls.is_empty() {
        return;
    }
    let checkpoint = data_dir.join("webhooks.checkpoint");
    let from = read_checkpoint(&checkpoint) + 1;
    let client = reqwest::Client::new();
    let mut sub = match store.subscribe(from).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "webhooks cannot follow the store");
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
            next = sub.next() => next,
        };
        let event = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::error!(error = %e, "webhook subscription failed");
                return;
            }
            None => return,
        };
        if event.event_type == "AlertRaised" || event.event_type == "AlertResolved" {
            let body = payload(&event);
            for url in &urls {
                if deliver(&client, url, &body, backoff, &mut shutdown)
                    .await
                    .is_none()
                {
                    return; // shutting down: the checkpoint stays before this event
                }
            }
            if let Err(e) = write_checkpoint(&checkpoint, event.position) {
                tracing::error!(error = %e, "cannot save the webhook checkpoint");
            }
        }
    }
}
