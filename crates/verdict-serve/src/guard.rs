//! Per-model protection: a timeout, a concurrency limit and a circuit breaker around any
//! [`Model`], so a slow or dead backend costs the request path a bounded time and, once it
//! keeps failing, almost nothing.
//!
//! Options come from the model URI's fragment, e.g.
//! `v2:http://127.0.0.1:8080/v2/models/iris#timeout_ms=250&concurrency=16`. The fragment is
//! never sent to the upstream. Keys: `timeout_ms` (default 1000), `concurrency` (requests in
//! flight, default 64; more are refused at once as `overloaded`), `breaker_failures`
//! (consecutive timeouts/connection errors/5xx that open the breaker, default 5; 0 disables
//! it), `breaker_open_ms` (how long it stays open before one trial request, default 5000).
//! Backends read their own extra keys (see [`Options::take`]).

use crate::{Model, ModelError, Prediction};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Parsed URI options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Deadline for one prediction, including the wait for the backend.
    pub timeout: Duration,
    /// Maximum predictions in flight.
    pub concurrency: usize,
    /// Consecutive failures that open the breaker (0: never).
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_open: Duration,
    /// Backend-specific keys not consumed yet.
    pub extra: BTreeMap<String, String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1000),
            concurrency: 64,
            breaker_failures: 5,
            breaker_open: Duration::from_millis(5000),
            extra: BTreeMap::new(),
        }
    }
}

impl Options {
    /// Splits `rest#k=v&k=v` into `rest` and the options.
    pub fn split(uri: &str) -> Result<(&str, Options), String> {
        let (rest, fragment) = uri.split_once('#').unwrap_or((uri, ""));
        let mut o = Options::default();
        for pair in fragment.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("option `{pair}` is not key=value"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("option `{k}` must be a whole number, got `{v}`"))
            };
            match k {
                "timeout_ms" => o.timeout = Duration::from_millis(num(v)?.max(1)),
                "concurrency" => {
                    o.concurrency = usize::try_from(num(v)?.max(1)).unwrap_or(usize::MAX)
                }
                "breaker_failures" => {
                    o.breaker_failures = u32::try_from(num(v)?).unwrap_or(u32::MAX)
                }
                "breaker_open_ms" => o.breaker_open = Duration::from_millis(num(v)?),
                _ => {
                    o.extra.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok((rest, o))
    }

    /// Removes and returns a backend-specific key.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.extra.remove(key)
    }

    /// Fails when keys are left that no one consumed (a typo should not pass silently).
    pub fn finish(&self) -> Result<(), String> {
        match self.extra.keys().next() {
            Some(k) => Err(format!("unknown option `{k}`")),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is out; another is allowed only if it has not come back in time
    /// (a cancelled trial must not keep the breaker half-open forever).
    HalfOpen {
        trial_started: Instant,
    },
}

/// A consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (0: never) for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go out now.
    pub fn admit(&self) -> Result<(), ModelError> {
        let mut s = self.lock();
        let now = Instant::now();
        match *s {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(ModelError::Overloaded(format!(
                "circuit open for another {} ms",
                (until - now).as_millis()
            ))),
            State::HalfOpen { trial_started } if now < trial_started + self.open_for => Err(
                ModelError::Overloaded("circuit half-open, a trial request is out".into()),
            ),
            State::Open { .. } | State::HalfOpen { .. } => {
                *s = State::HalfOpen { trial_started: now };
                Ok(())
            }
        }
    }

    /// Records an outcome. Only failures that say the backend is unhealthy count.
    pub fn record(&self, outcome: Result<(), &ModelError>) {
        if self.threshold == 0 {
            return;
        }
        let unhealthy = matches!(
            outcome,
            Err(ModelError::Timeout(_)
                | ModelError::Connection(_)
                | ModelError::Upstream5xx { .. })
        );
        let mut s = self.lock();
        *s = match (*s, unhealthy) {
            (State::Closed { failures }, true) if failures + 1 >= self.threshold => State::Open {
                until: Instant::now() + self.open_for,
            },
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { .. }, true) => State::Open {
                until: Instant::now() + self.open_for,
            },
            // A late answer from before the breaker opened changes nothing.
            (open @ State::Open { .. }, _) => open,
            (_, false) => State::Closed { failures: 0 },
        };
    }

    /// `closed`, `open` or `half_open`, for metrics and tests.
    pub fn state(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

/// A model behind a timeout, a concurrency limit and a breaker.
#[derive(Debug)]
pub struct Guarded<M> {
    inner: M,
    timeout: Duration,
    limit: Arc<Semaphore>,
    concurrency: usize,
    breaker: Breaker,
}

impl<M: Model> Guarded<M> {
    /// Wraps `inner` with `options`.
    pub fn new(inner: M, options: &Options) -> Self {
        Self {
            inner,
            timeout: options.timeout,
            limit: Arc::new(Semaphore::new(options.concurrency)),
            concurrency: options.concurrency,
            breaker: Breaker::new(options.breaker_failures, options.breaker_open),
        }
    }

    /// The breaker, for metrics.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<M: Model> Model for Guarded<M> {
    async fn predict(&self, user_id: &str, input: &Value) -> Result<Prediction, ModelError> {
        self.predict_timed(user_id, input).await.map(|(p, _)| p)
    }

    async fn predict_timed(
        &self,
        user_id: &str,
        input: &Value,
    ) -> Result<(Prediction, Option<Duration>), ModelError> {
        self.breaker.admit()?;
        // Refuse at once rather than queue: a queue in front of a slow model only adds latency.
        let Ok(_permit) = self.limit.try_acquire() else {
            return Err(ModelError::Overloaded(format!(
                "{} predictions already in flight",
                self.concurrency
            )));
        };
        let result = match tokio::time::timeout(
            self.timeout,
            self.inner.predict_timed(user_id, input),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ModelError::Timeout(
                u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            )),
        };
        self.breaker.record(result.as_ref().map(|_| ()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails with `error` while `fail` is set; sleeps `delay` first.
    #[derive(Debug)]
    struct Scripted {
        fail: std::sync::atomic::AtomicBool,
        delay: Duration,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Model for Scripted {
        async fn predict(&self, _: &str, _: &Value) -> Result<Prediction, ModelError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fail.load(Ordering::SeqCst) {
                Err(ModelError::Upstream5xx {
                    status: 503,
                    body: String::new(),
                })
            } else {
                Ok(Prediction {
                    output: json!(1),
                    model_version: "s".into(),
                })
            }
        }
    }

    fn scripted(delay_ms: u64, fail: bool) -> Scripted {
        Scripted {
            fail: fail.into(),
            delay: Duration::from_millis(delay_ms),
            calls: AtomicU32::new(0),
        }
    }

    #[test]
    fn options_parse_and_reject_typos() {
        let (rest, mut o) =
            Options::split("v2:http://h/v2/models/m#timeout_ms=250&concurrency=3&input=x").unwrap();
        assert_eq!(rest, "v2:http://h/v2/models/m");
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.concurrency, 3);
        assert_eq!(o.take("input").as_deref(), Some("x"));
        assert!(o.finish().is_ok());
        let (_, o) = Options::split("onnx:m.onnx#timeot_ms=1").unwrap();
        assert!(o.finish().unwrap_err().contains("timeot_ms"));
        assert!(Options::split("x#timeout_ms=fast").is_err());
        assert!(Options::split("x#timeout_ms").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_classified() {
        let (_, o) = Options::split("x#timeout_ms=50").unwrap();
        let g = Guarded::new(scripted(200, false), &o);
        let e = g.predict("u", &json!({})).await.unwrap_err();
        assert_eq!(e, ModelError::Timeout(50));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_refuses_at_once() {
        let (_, o) = Options::split("x#concurrency=2&timeout_ms=10000").unwrap();
        let g = Arc::new(Guarded::new(scripted(100, false), &o));
        let spawn = |g: Arc<Guarded<Scripted>>| {
            tokio::spawn(async move { g.predict("u", &json!({})).await })
        };
        let (a, b) = (spawn(g.clone()), spawn(g.clone()));
        tokio::task::yield_now().await;
        let start = Instant::now();
        let e = g.predict("u", &json!({})).await.unwrap_err();
        assert_eq!(e.kind(), "overloaded");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
        assert!(g.predict("u", &json!({})).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_fails_fast_and_recovers_through_a_trial() {
        let (_, o) = Options::split("x#breaker_failures=3&breaker_open_ms=1000").unwrap();
        let g = Guarded::new(scripted(1, true), &o);
        for _ in 0..3 {
            assert_eq!(
                g.predict("u", &json!({})).await.unwrap_err().kind(),
                "upstream_5xx"
            );
        }
        assert_eq!(g.breaker().state(), "open");
        let e = g.predict("u", &json!({})).await.unwrap_err();
        assert_eq!(e.kind(), "overloaded", "{e}");
        assert_eq!(
            g.inner().calls.load(Ordering::SeqCst),
            3,
            "open breaker must not call"
        );
        // After the open period one trial goes out; it fails, so the breaker re-opens.
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(
            g.predict("u", &json!({})).await.unwrap_err().kind(),
            "upstream_5xx"
        );
        assert_eq!(g.breaker().state(), "open");
        // The backend heals; the next trial succeeds and closes the breaker.
        g.inner().fail.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(g.predict("u", &json!({})).await.is_ok());
        assert_eq!(g.breaker().state(), "closed");
    }

    #[test]
    fn client_errors_do_not_open_the_breaker() {
        let b = Breaker::new(2, Duration::from_secs(1));
        let e = ModelError::Upstream4xx {
            status: 400,
            body: String::new(),
        };
        for _ in 0..5 {
            b.record(Err(&e));
        }
        assert_eq!(b.state(), "closed");
        b.record(Err(&ModelError::Connection("refused".into())));
        b.record(Ok(()));
        b.record(Err(&ModelError::Connection("refused".into())));
        assert_eq!(b.state(), "closed", "a success resets the count");
    }
}
