//! Health of the background tasks: what `/readyz` and `verdict_component_up` report.
//!
//! Every background task (projector, snapshot writer, monitors, webhooks, followers) owns a
//! named component in one [`Health`] registry and marks it down with its cause the moment it
//! fails and up again once it has recovered; transitions are logged at once, so a failure
//! never stays silent until shutdown. [`supervise`] runs a task that can fail, restarting it
//! with [`Backoff`] (and catching panics) until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// One component's state as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentStatus {
    /// Its name (`projector`, `snapshot`, `monitors`, ...).
    pub name: String,
    /// Whether it works.
    pub up: bool,
    /// Why it does not, while down.
    pub error: Option<String>,
    /// How many times it went down since the process started.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct State {
    up: bool,
    error: Option<String>,
    failures: u64,
}

/// The registry of component states; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, State>>>,
}

impl Health {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, State>) -> R) -> R {
        // Held only to flip a flag; a panic elsewhere cannot leave a half-made entry.
        let mut map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    /// Registers `name` as up (a task that starts healthy).
    pub fn register(&self, name: &str) {
        self.with(|m| {
            m.entry(name.to_owned()).or_insert(State {
                up: true,
                ..State::default()
            });
        });
    }

    /// Marks `name` up; logs the recovery if it was down.
    pub fn up(&self, name: &str) {
        let recovered = self.with(|m| {
            let s = m.entry(name.to_owned()).or_default();
            let was_down = !s.up && s.failures > 0;
            s.up = true;
            s.error = None;
            was_down
        });
        if recovered {
            tracing::info!(component = name, "recovered");
        }
    }

    /// Marks `name` down because of `reason`; logs at once when the state or the reason
    /// changes (a task failing the same way on every retry logs once per change).
    pub fn down(&self, name: &str, reason: impl Into<String>) {
        let reason = reason.into();
        let changed = self.with(|m| {
            let s = m.entry(name.to_owned()).or_default();
            let changed = s.up || s.error.as_deref() != Some(reason.as_str()) || s.failures == 0;
            if s.up || s.failures == 0 {
                s.failures += 1;
            }
            s.up = false;
            s.error = Some(reason.clone());
            changed
        });
        if changed {
            tracing::error!(component = name, error = %reason, "component failed");
        }
    }

    /// Whether `name` is registered and up.
    pub fn is_up(&self, name: &str) -> bool {
        self.with(|m| m.get(name).is_some_and(|s| s.up))
    }

    /// Every component, by name.
    pub fn components(&self) -> Vec<ComponentStatus> {
        self.with(|m| {
            m.iter()
                .map(|(name, s)| ComponentStatus {
                    name: name.clone(),
                    up: s.up,
                    error: s.error.clone(),
                    failures: s.failures,
                })
                .collect()
        })
    }
}

/// How long a restarted feed must run without error (or deliver) before its component is
/// reported up again.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Exponential backoff between retries: doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    next: Duration,
}

impl Backoff {
    /// From `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next retry (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// [`Backoff::reset`] if `recovered`.
    pub fn reset_if(&mut self, recovered: bool) {
        if recovered {
            self.reset();
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Sleeps for `delay` unless `shutdown` flips first; false when shutting down.
pub async fn pause(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => false,
        () = tokio::time::sleep(delay) => !*shutdown.borrow(),
    }
}

/// Runs the task `make` builds until `shutdown` flips. A task that ends before then —
/// with an `Err`, a panic, or `Ok` (a feed that ended) — marks `name` down with the cause
/// and, after a backoff, a new task starts; the task marks itself up again once it works.
pub async fn supervise<F, Fut>(
    name: &'static str,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    health.register(name);
    let mut backoff = Backoff::default();
    loop {
        let outcome = tokio::spawn(make()).await;
        let reason = match outcome {
            Ok(Ok(())) if *shutdown.borrow() => return,
            Ok(Ok(())) => "ended unexpectedly".to_owned(),
            Ok(Err(reason)) => reason,
            Err(e) => join_failure(e),
        };
        if *shutdown.borrow() {
            return;
        }
        health.down(name, reason);
        if !pause(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}

/// What a task that did not return was: a panic with its message, or cancelled.
pub fn join_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("task ended: {e}");
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn down_then_up_is_reported_and_counted() {
        let h = Health::new();
        h.register("projector");
        assert!(h.is_up("projector"));
        h.down("projector", "snapshot: No space left on device");
        h.down("projector", "snapshot: No space left on device");
        let c = &h.components()[0];
        assert!(!c.up);
        assert_eq!(c.failures, 1);
        assert_eq!(
            c.error.as_deref(),
            Some("snapshot: No space left on device")
        );
        h.up("projector");
        assert!(h.is_up("projector"));
        h.down("projector", "again");
        assert_eq!(h.components()[0].failures, 2);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_restarts_a_failing_task_and_survives_panics() {
        let h = Health::new();
        let (tx, rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let stop = rx.clone();
        let task = tokio::spawn(supervise("worker", h.clone(), rx, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let mut stop = stop.clone();
            async move {
                match n {
                    0 => Err("store unavailable".to_owned()),
                    1 => panic!("boom"),
                    // A feed that ends by itself is a failure too.
                    2 => Ok(()),
                    _ => {
                        let _ = stop.wait_for(|s| *s).await;
                        Ok(())
                    }
                }
            }
        }));
        while runs.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = &h.components()[0];
        assert_eq!(c.failures, 1, "down three times in a row counts one outage");
        assert_eq!(c.error.as_deref(), Some("ended unexpectedly"));
        tx.send_replace(true);
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
