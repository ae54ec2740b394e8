//! The command side following the store's tail, for several nodes on one shared store.
//!
//! A node rebuilds its write model from the log at start; with other nodes (and the
//! projector's monitors) appending to the same store, it must also learn what they wrote
//! afterwards: lifecycle events (created, started, paused, traffic, stopped) and first
//! exposures (`UserAssigned`, for sticky variants and outcome attribution).
//!
//! Applying is idempotent, so the follower may start below the position the rebuild
//! reached and sees this node's own appends too: a lifecycle event applies only when its
//! stream version is the next one of the experiment (a gap reloads the experiment's
//! stream), and an exposure only records a user not yet assigned (the first one wins, as in
//! the read model; two nodes can only disagree about a user they both exposed for the
//! first time at the same moment across a traffic change).

use super::*;
use crate::health::{pause, Backoff, Health};
use tokio::sync::watch;

/// The component the command side's store follower reports as.
pub const FOLLOWER: &str = "command_follower";

impl CommandService {
    /// Applies the events from `from` on as they are committed, until `shutdown` flips to
    /// true. A failed subscription marks [`FOLLOWER`] down in `health` and is retried, with
    /// backoff, from the last applied position.
    pub async fn follow(
        self: Arc<Self>,
        from: u64,
        health: Health,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut next = from.max(1);
        self.followed_next.store(next, Ordering::Release);
        health.register(FOLLOWER);
        let mut backoff = Backoff::default();
        loop {
            let failure = match self.store.subscribe(next).await {
                Ok(mut sub) => {
                    // Up once it delivers or runs quietly for a while (no flapping).
                    let settle = tokio::time::sleep(crate::health::SETTLE);
                    tokio::pin!(settle);
                    let mut confirmed = false;
                    loop {
                        tokio::select! {
                            biased;
                            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                            () = &mut settle, if !confirmed => {
                                confirmed = true;
                                health.up(FOLLOWER);
                            }
                            event = sub.next() => match event {
                                Some(Ok(r)) => {
                                    if !confirmed {
                                        confirmed = true;
                                        health.up(FOLLOWER);
                                    }
                                    next = r.position + 1;
                                    self.apply_followed(&r).await;
                                    self.followed_next.store(next, Ordering::Release);
                                    backoff.reset();
                                }
                                Some(Err(e)) => break format!("following from {next}: {e}"),
                                None if *shutdown.borrow() => return,
                                None => break format!("the store's feed ended at {next} (store closed?)"),
                            }
                        }
                    }
                }
                Err(e) => format!("subscribing at {next}: {e}"),
            };
            health.down(FOLLOWER, failure);
            if !pause(backoff.next_delay(), &mut shutdown).await {
                return;
            }
        }
    }

    /// Applies one stored event to the write model if it is news to it.
    pub async fn apply_followed(&self, recorded: &verdict_store::RecordedEvent) {
        let t = recorded.event_type.as_str();
        if !(t.starts_with("Experiment") || t == "TrafficChanged" || t == "UserAssigned") {
            return;
        }
        let Ok(event) = codec::decode(recorded) else {
            return;
        };
        match &event {
            Event::UserAssigned(a) => {
                let Ok(live) = self.live(&a.experiment_id) else {
                    return;
                };
                let Some(def) = &live.state.definition else {
                    return;
                };
                if let Some(i) = def.variants.iter().position(|v| v.key == a.variant) {
                    self.assignments
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(a.experiment_id.clone())
                        .or_default()
                        .entry(a.user_id.clone())
                        .or_insert(i as u32);
                }
            }
            e if e.is_lifecycle() => {
                let id = e.experiment_id().to_owned();
                let current = self.live(&id).ok();
                let version = current.as_ref().map_or(0, |l| l.state.version);
                if recorded.stream_version <= version {
                    return; // already applied (our own append, or the rebuild)
                }
                if recorded.stream_version > version + 1 {
                    // Missed something: reload the whole stream.
                    if let Err(err) = self.refresh(&id).await {
                        tracing::warn!(experiment = %id, error = %err, "command-side follower could not reload");
                    }
                    return;
                }
                if current.is_none() {
                    // A new experiment: load its models before taking the lock (one that
                    // cannot load becomes a failing stand-in, see make_live_existing).
                    let _ = self.load_models(&evolve(Experiment::default(), e)).await;
                }
                let mut map = self.experiments.write().unwrap_or_else(|e| e.into_inner());
                let current = map.get(&id).cloned();
                if current.as_ref().map_or(0, |l| l.state.version) != version {
                    return; // changed meanwhile by this node's own command: it is current
                }
                let state = evolve(
                    current
                        .as_ref()
                        .map(|l| l.state.clone())
                        .unwrap_or_default(),
                    e,
                );
                let live = match current {
                    Some(l) => match state.compile() {
                        Some(router) => Live {
                            state,
                            router,
                            models: l.models.clone(),
                            shadows: l.shadows.clone(),
                        },
                        None => return,
                    },
                    None => match self.make_live_existing(state) {
                        Ok(l) => l,
                        Err(err) => {
                            tracing::error!(experiment = %id, error = %err, "experiment's models cannot be loaded");
                            return;
                        }
                    },
                };
                map.insert(id, Arc::new(live));
            }
            _ => {}
        }
    }
}
