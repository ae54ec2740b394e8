//! The six monitors of DESIGN.md, their alerts (as events) and the guardrail that stops
//! an experiment that hurts users.
//!
//! [`evaluate`] is pure: from an experiment's read model, the store lag and the time, it
//! says which monitors fire and why (the figures and window go into the alert's evidence).
//! Nothing fires below a minimum sample, and metric comparisons use the always-valid
//! (sequential) interval, so neither early noise nor hourly looks page anyone.
//! [`MonitorRunner`] evaluates after every projected batch and on a timer, appends
//! `AlertRaised` / `AlertResolved`, and on a P1 stops the experiment with `auto: true`.

use crate::health::Health;
use crate::queries;
use crate::readmodel::{BucketStats, ExperimentView, HOUR_MICROS};
use crate::service::{Clock, CommandService};
use crate::AppError;
use crate::Projections;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use verdict_core::event::{AlertRaised, AlertResolved};
use verdict_core::experiment::{Command, MonitorSettings, Status};
use verdict_core::Event;

/// What one monitor concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Monitor name.
    pub monitor: &'static str,
    /// `P1`, `P2` or `P3`.
    pub severity: &'static str,
    /// Whether the alert condition holds.
    pub firing: bool,
    /// A one-line summary.
    pub message: String,
    /// The figures behind it.
    pub evidence: Value,
}

/// Two-sided p-value of `users` of `total` landing in a variant of weight `weight` (normal
/// approximation to the binomial, as the SRM chi-square test is).
fn share_p_value(users: u64, total: u64, weight: f64) -> f64 {
    let (n, x) = (total as f64, users as f64);
    let sd = (n * weight * (1.0 - weight)).sqrt();
    if sd == 0.0 {
        // A weight of 0 or 1: any user on the wrong side is a certain mismatch.
        return if x == n * weight { 1.0 } else { 0.0 };
    }
    verdict_stats::dist::normal_two_sided_p((x - n * weight) / sd)
}

/// The six monitors' names.
pub const MONITORS: [&str; 6] = [
    "conversion",
    "latency_p95",
    "error_rate",
    "traffic_split",
    "store_lag",
    "sample_size",
];

fn window(view: &ExperimentView, now: i64, hours: u32) -> Vec<BucketStats> {
    let n = view.variants.len();
    let current = now.div_euclid(HOUR_MICROS) * HOUR_MICROS;
    let from = current - i64::from(hours) * HOUR_MICROS;
    let mut out = vec![BucketStats::default(); n];
    for (_, row) in view.hours.range(from..) {
        for (o, b) in out.iter_mut().zip(row) {
            o.predictions += b.predictions;
            o.errors += b.errors;
            o.new_users += b.new_users;
            let _ = o.latency.0.add(&b.latency.0);
        }
    }
    out
}

/// Evaluates every monitor of one experiment.
pub fn evaluate(view: &ExperimentView, store_lag: u64, now: i64) -> Vec<Finding> {
    let Some(def) = view.state.definition.as_ref() else {
        return Vec::new();
    };
    let m: &MonitorSettings = &def.monitors;
    let keys: Vec<&str> = def.variants.iter().map(|v| v.key.as_str()).collect();
    let win = window(view, now, m.window_hours);
    let window_evidence =
        json!({"hours": m.window_hours, "until": crate::codec::timestamp(now).to_rfc3339()});
    let mut findings = Vec::with_capacity(6);

    // Conversion per model: a treatment significantly worse by the always-valid interval.
    let analysis = queries::analysis(view);
    let mut worse = Vec::new();
    let mut figures = Vec::new();
    if let Some(items) = analysis
        .as_ref()
        .and_then(|a| a["variants"].as_array().cloned())
    {
        for item in items {
            let key = item["key"].as_str().unwrap_or_default().to_owned();
            let users_ok = view.variants.iter().all(|v| v.users >= m.min_sample);
            let hi = item["conversion"]["sequential_ci"][1].as_f64();
            figures.push(json!({"variant": key, "diff": item["conversion"]["diff"], "sequential_ci": item["conversion"]["sequential_ci"], "sequential_p_value": item["conversion"]["sequential_p_value"]}));
            if users_ok && hi.is_some_and(|h| h < 0.0) {
                worse.push(key);
            }
        }
    }
    let primary_is_conversion = def.primary_metric == "conversion";
    findings.push(Finding {
        monitor: "conversion",
        severity: if m.stop_on_primary_drop && primary_is_conversion { "P1" } else { "P2" },
        firing: !worse.is_empty(),
        message: if worse.is_empty() {
            "no variant converts significantly worse than the control".to_owned()
        } else {
            format!("{} converts significantly worse than the control (always-valid interval below zero)", worse.join(", "))
        },
        evidence: json!({"variants": figures, "worse": worse, "min_sample": m.min_sample}),
    });

    // Prediction latency p95 over the window.
    let mut slow = Vec::new();
    let lat: Vec<Value> = keys
        .iter()
        .zip(&win)
        .map(|(k, b)| {
            let p95 = b.latency.quantile_ms(0.95);
            if b.predictions >= m.min_sample && p95.is_some_and(|p| p > m.latency_p95_ms) {
                slow.push((*k).to_owned());
            }
            json!({"variant": k, "p95_ms": p95, "predictions": b.predictions})
        })
        .collect();
    findings.push(Finding {
        monitor: "latency_p95",
        severity: "P2",
        firing: !slow.is_empty(),
        message: if slow.is_empty() {
            format!("latency p95 under {} ms", m.latency_p95_ms)
        } else {
            format!("latency p95 of {} above {} ms", slow.join(", "), m.latency_p95_ms)
        },
        evidence: json!({"variants": lat, "threshold_ms": m.latency_p95_ms, "window": window_evidence}),
    });

    // Error rate over the window.
    let mut failing = Vec::new();
    let errs: Vec<Value> = keys
        .iter()
        .zip(&win)
        .map(|(k, b)| {
            let requests = b.predictions + b.errors;
            let rate = (requests > 0).then(|| b.errors as f64 / requests as f64);
            if requests >= m.min_sample && rate.is_some_and(|r| r > m.error_rate) {
                failing.push((*k).to_owned());
            }
            json!({"variant": k, "errors": b.errors, "requests": requests, "error_rate": rate})
        })
        .collect();
    findings.push(Finding {
        monitor: "error_rate",
        severity: "P1",
        firing: !failing.is_empty(),
        message: if failing.is_empty() {
            format!("error rates under {:.2}%", m.error_rate * 100.0)
        } else {
            format!("error rate of {} above {:.2}%", failing.join(", "), m.error_rate * 100.0)
        },
        evidence: json!({"variants": errs, "threshold": m.error_rate, "window": window_evidence, "failing": failing}),
    });

    // Traffic split: share of users against the weights, and the SRM test.
    let total: u64 = view.variants.iter().map(|v| v.users).sum();
    let srm_p = analysis.as_ref().and_then(|a| a["srm"]["p_value"].as_f64());
    let mut off = Vec::new();
    // Weights may sum to 1 ± 0.01 (validation's tolerance); compare against normalised ones,
    // as the SRM test does.
    let weight_sum: f64 = def.variants.iter().map(|v| v.weight).sum();
    let shares: Vec<Value> = def
        .variants
        .iter()
        .zip(&view.variants)
        .map(|(v, s)| {
            let share = (total > 0).then(|| s.users as f64 / total as f64);
            let weight = v.weight / weight_sum;
            // A share off its weight by more than `split_deviation` counts only when chance
            // cannot explain it (a two-sided binomial z test at `srm_p_value`): a correct 50/50
            // router is more than 5 pp off at 100 users 27 % of the time.
            let p_value = (total > 0).then(|| share_p_value(s.users, total, weight));
            if total >= m.min_sample
                && share.is_some_and(|x| (x - weight).abs() > m.split_deviation)
                && p_value.is_some_and(|p| p < m.srm_p_value)
            {
                off.push(v.key.clone());
            }
            json!({"variant": v.key, "users": s.users, "share": share, "weight": v.weight, "p_value": p_value})
        })
        .collect();
    let srm = total >= m.min_sample && srm_p.is_some_and(|p| p < m.srm_p_value);
    findings.push(Finding {
        monitor: "traffic_split",
        severity: "P2",
        firing: !off.is_empty() || srm,
        message: match (off.is_empty(), srm) {
            (true, false) => "traffic split as configured".to_owned(),
            (false, _) => format!(
                "share of {} deviates from its weight by more than {:.0} pp",
                off.join(", "),
                m.split_deviation * 100.0
            ),
            (true, true) => format!("sample ratio mismatch (p = {:.2e})", srm_p.unwrap_or(0.0)),
        },
        evidence: json!({"variants": shares, "srm_p_value": srm_p, "deviation": m.split_deviation}),
    });

    // Event store lag.
    findings.push(Finding {
        monitor: "store_lag",
        severity: "P2",
        firing: store_lag > m.store_lag,
        message: format!(
            "projections are {store_lag} events behind the head (threshold {})",
            m.store_lag
        ),
        evidence: json!({"lag": store_lag, "threshold": m.store_lag}),
    });

    // Sample size progress against the plan, at half the planned duration.
    let reached = analysis
        .as_ref()
        .and_then(|a| a["power"]["share_reached"].as_f64());
    let (behind, elapsed_share) = match (def.planned_duration_days, view.started_at) {
        (Some(days), Some(start)) => {
            let elapsed = (now - start) as f64 / (days * 24.0 * HOUR_MICROS as f64);
            (
                elapsed >= 0.5 && reached.is_some_and(|r| r < m.sample_progress),
                Some(elapsed),
            )
        }
        _ => (false, None),
    };
    findings.push(Finding {
        monitor: "sample_size",
        severity: "P3",
        firing: behind,
        message: if behind {
            "less than half the required sample at half the planned duration: extend the experiment".to_owned()
        } else {
            "sample size on track".to_owned()
        },
        evidence: json!({"share_reached": reached, "elapsed_share_of_plan": elapsed_share, "expected": m.sample_progress}),
    });
    findings
}

/// Evaluates the monitors and acts: alerts as events, guardrail stops.
pub struct MonitorRunner {
    commands: Arc<CommandService>,
    projections: Arc<Projections>,
    clock: Arc<dyn Clock>,
    /// (experiment, monitor) raised or resolved by this runner but not yet projected,
    /// so a slow projection does not make it act twice.
    pending: std::sync::Mutex<HashSet<(String, &'static str, bool)>>,
    /// Alerts whose raise had an unknown outcome (the store was unavailable), by
    /// (experiment, monitor): the next attempt sends the same event with the same id, so
    /// one that did land is not raised twice.
    unsure: std::sync::Mutex<Unsure>,
    health: Health,
}

/// Raises of unknown outcome: (experiment, monitor) -> the event id and event sent.
type Unsure = std::collections::HashMap<(String, &'static str), (Uuid, Event)>;

/// The component the monitor runner reports as.
pub const MONITOR_RUNNER: &str = "monitors";

impl std::fmt::Debug for MonitorRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorRunner").finish_non_exhaustive()
    }
}

/// One action the runner took (for logs and tests).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields are the experiment, the monitor and the alert
pub enum Action {
    /// An alert was raised.
    Raised {
        experiment_id: String,
        monitor: &'static str,
        alert_id: Uuid,
    },
    /// An alert was resolved.
    Resolved {
        experiment_id: String,
        monitor: &'static str,
        alert_id: Uuid,
    },
    /// A guardrail stopped an experiment.
    Stopped {
        experiment_id: String,
        alert_id: Uuid,
    },
}

impl MonitorRunner {
    /// A runner over the command side and the projections.
    pub fn new(
        commands: Arc<CommandService>,
        projections: Arc<Projections>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            commands,
            projections,
            clock,
            pending: std::sync::Mutex::new(HashSet::new()),
            unsure: std::sync::Mutex::new(std::collections::HashMap::new()),
            health: Health::new(),
        }
    }

    /// Reports to `health` as [`MONITOR_RUNNER`]: down while alerts cannot be raised, resolved
    /// or acted on (each is retried on the next tick).
    pub fn with_health(mut self, health: Health) -> Self {
        health.register(MONITOR_RUNNER);
        self.health = health;
        self
    }

    fn unsure_lock(&self) -> std::sync::MutexGuard<'_, Unsure> {
        self.unsure.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_pending(&self, key: &(String, &'static str, bool)) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Evaluates every running experiment once and acts on the findings.
    pub async fn tick(&self) -> Vec<Action> {
        let now = self.clock.now_micros();
        let head = self.commands.head().await.unwrap_or(0);
        let lag = head.saturating_sub(self.projections.position());
        // Decide under the read lock, act after releasing it (acting appends events,
        // which the projector needs the write lock to apply).
        let mut todo = Vec::new();
        let mut stops = Vec::new();
        {
            let model = self.projections.read().await;
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, view) in &model.experiments {
                if view.state.status != Status::Running {
                    continue;
                }
                let auto_stop = view
                    .state
                    .definition
                    .as_ref()
                    .is_some_and(|d| d.monitors.auto_stop);
                for f in evaluate(view, lag, now) {
                    let active = view
                        .alerts
                        .iter()
                        .rev()
                        .find(|a| a.monitor == f.monitor && a.resolved_at.is_none());
                    // Projected state wins over our memory once it has caught up.
                    pending.retain(|(e, m, raised)| {
                        !(e == id && *m == f.monitor && *raised == active.is_some())
                    });
                    let key_raise = (id.clone(), f.monitor, true);
                    let key_resolve = (id.clone(), f.monitor, false);
                    match (f.firing, active) {
                        (true, None) if !pending.contains(&key_raise) => {
                            pending.insert(key_raise);
                            todo.push((id.clone(), f, None, auto_stop));
                        }
                        (false, Some(a)) if !pending.contains(&key_resolve) => {
                            pending.insert(key_resolve);
                            todo.push((id.clone(), f, Some(a.alert_id), auto_stop));
                        }
                        (false, None) => {
                            // Quiet again before an unsure raise was settled: if it landed,
                            // the projection will show it active and it resolves then.
                            self.unsure_lock().remove(&(id.clone(), f.monitor));
                        }
                        // A P1 still firing on a running experiment: its stop failed (or is
                        // not projected yet); stop again, an already stopped one is fine.
                        (true, Some(a)) if a.severity == "P1" && auto_stop => {
                            stops.push((id.clone(), f.monitor, f.message.clone(), a.alert_id));
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut actions = Vec::new();
        let mut failure = None;
        for (id, f, active, auto_stop) in todo {
            match active {
                None => {
                    let key = (id.clone(), f.monitor);
                    let earlier = self.unsure_lock().remove(&key);
                    let (event_id, event) = earlier.unwrap_or_else(|| {
                        let event = Event::AlertRaised(AlertRaised {
                            alert_id: Uuid::now_v7(),
                            experiment_id: id.clone(),
                            monitor: f.monitor.to_owned(),
                            severity: f.severity.to_owned(),
                            message: f.message.clone(),
                            evidence: f.evidence.clone(),
                        });
                        (Uuid::now_v7(), event)
                    });
                    let Event::AlertRaised(raised) = &event else {
                        unreachable!("only raises are kept")
                    };
                    let alert_id = raised.alert_id;
                    if let Err(e) = self.commands.append_event_as(&event, event_id).await {
                        // Not raised: forget it, so the next tick tries again; if it may
                        // have landed, that try sends the same event.
                        if matches!(e, AppError::Unavailable(_)) {
                            self.unsure_lock().insert(key, (event_id, event));
                        }
                        self.forget_pending(&(id.clone(), f.monitor, true));
                        failure = Some(format!("raising the {} alert of {id}: {e}", f.monitor));
                        continue;
                    }
                    tracing::warn!(experiment = %id, monitor = f.monitor, severity = f.severity, "{}", f.message);
                    actions.push(Action::Raised {
                        experiment_id: id.clone(),
                        monitor: f.monitor,
                        alert_id,
                    });
                    if f.severity == "P1" && auto_stop {
                        stops.push((id.clone(), f.monitor, f.message.clone(), alert_id));
                    }
                }
                Some(alert_id) => {
                    let event = Event::AlertResolved(AlertResolved {
                        alert_id,
                        experiment_id: id.clone(),
                        monitor: f.monitor.to_owned(),
                        message: f.message.clone(),
                        evidence: f.evidence.clone(),
                    });
                    match self.commands.append_event(event).await {
                        Ok(_) => actions.push(Action::Resolved {
                            experiment_id: id.clone(),
                            monitor: f.monitor,
                            alert_id,
                        }),
                        Err(e) => {
                            self.forget_pending(&(id.clone(), f.monitor, false));
                            failure =
                                Some(format!("resolving the {} alert of {id}: {e}", f.monitor));
                        }
                    }
                }
            }
        }
        for (id, monitor, message, alert_id) in stops {
            let stop = Command::Stop {
                reason: Some(format!("guardrail {monitor}: {message}")),
                winner: None,
                auto: true,
                cause: Some(alert_id),
            };
            match self.commands.execute(&id, stop).await {
                Ok(_) => actions.push(Action::Stopped {
                    experiment_id: id.clone(),
                    alert_id,
                }),
                // Stopped already (by an earlier tick not yet projected, or a person).
                Err(AppError::Conflict(_)) => {}
                Err(e) => failure = Some(format!("the guardrail could not stop {id}: {e}")),
            }
        }
        match failure {
            Some(reason) => self.health.down(MONITOR_RUNNER, reason),
            None => self.health.up(MONITOR_RUNNER),
        }
        actions
    }

    /// Runs until `shutdown`: after every projected batch (at most every `min_gap`) and
    /// at least every `every`.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        min_gap: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut positions = self.projections.subscribe();
        loop {
            tokio::select! {
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                _ = positions.changed() => {}
                _ = tokio::time::sleep(every) => {}
            }
            self.tick().await;
            tokio::time::sleep(min_gap).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readmodel::ReadModel;
    use serde_json::json;
    use verdict_core::event::*;
    use verdict_core::ExperimentSpec;

    const T0: i64 = 1_800_000_000_000_000;

    fn model(monitors: Value) -> ReadModel {
        model_of(json!({
            "experiment_id": "e",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "monitors": monitors,
        }))
    }

    /// A started experiment `e` defined by `spec`.
    fn model_of(spec: Value) -> ReadModel {
        let definition = ExperimentSpec::from_json(spec).unwrap().validate().unwrap();
        let mut m = ReadModel::default();
        m.apply(
            1,
            T0,
            &Event::ExperimentCreated(ExperimentCreated { definition }),
        );
        m.apply(
            2,
            T0,
            &Event::ExperimentStarted(Lifecycle {
                experiment_id: "e".into(),
                reason: None,
            }),
        );
        m
    }

    fn traffic(m: &mut ReadModel, variant: &str, users: u32, failures: u32, latency_ms: f64) {
        for i in 0..users {
            let user = format!("{variant}-{i}");
            let p = m.position + 1;
            m.apply(
                p,
                T0,
                &Event::UserAssigned(UserAssigned {
                    experiment_id: "e".into(),
                    user_id: user.clone(),
                    variant: variant.into(),
                    model: "m".into(),
                    bucket: None,
                    experiment_version: 2,
                    reason: "hashed".into(),
                }),
            );
            let event = if i < failures {
                Event::PredictionFailed(PredictionFailed {
                    experiment_id: "e".into(),
                    user_id: user,
                    variant: variant.into(),
                    model: "m".into(),
                    prediction_id: Uuid::nil(),
                    error_kind: "timeout".into(),
                    message: String::new(),
                    latency_ms,
                    shadow: false,
                })
            } else {
                Event::PredictionMade(PredictionMade {
                    experiment_id: "e".into(),
                    user_id: user,
                    variant: variant.into(),
                    model: "m".into(),
                    model_version: "1".into(),
                    prediction_id: Uuid::nil(),
                    input: Value::Null,
                    output: Value::Null,
                    latency_ms,
                    model_ms: None,
                    shadow: false,
                    comparison: None,
                })
            };
            m.apply(p + 1, T0, &event);
        }
    }

    fn finding<'a>(fs: &'a [Finding], monitor: &str) -> &'a Finding {
        fs.iter().find(|f| f.monitor == monitor).unwrap()
    }

    #[test]
    fn error_rate_fires_above_threshold_only_with_enough_sample() {
        let mut m = model(json!({"min_sample": 100}));
        traffic(&mut m, "control", 99, 0, 5.0);
        traffic(&mut m, "treatment", 99, 10, 5.0);
        let fs = evaluate(&m.experiments["e"], 0, T0);
        assert!(
            !finding(&fs, "error_rate").firing,
            "99 requests are below the minimum sample"
        );
        traffic(&mut m, "treatment", 2, 0, 5.0); // 101 requests, 10 errors: ~9.9%
        let fs = evaluate(&m.experiments["e"], 0, T0);
        let f = finding(&fs, "error_rate");
        assert!(f.firing && f.severity == "P1", "{f:?}");
        assert_eq!(f.evidence["failing"], json!(["treatment"]));
        // Two hours later the window is empty: nothing fires.
        let fs = evaluate(&m.experiments["e"], 0, T0 + 3 * HOUR_MICROS);
        assert!(!finding(&fs, "error_rate").firing);
    }

    #[test]
    fn a_share_off_by_chance_does_not_fire_the_split_monitor() {
        // 56 vs 44 users against 50/50: 6 pp off, but z = 1.2 (p = 0.23).
        let mut m = model(json!({"min_sample": 100}));
        traffic(&mut m, "control", 56, 0, 5.0);
        traffic(&mut m, "treatment", 44, 0, 5.0);
        let f = finding(&evaluate(&m.experiments["e"], 0, T0), "traffic_split").clone();
        assert!(!f.firing, "{f:?}");
        // scipy: 2 * norm.sf(1.2)
        let p = f.evidence["variants"][0]["p_value"].as_f64().unwrap();
        assert!((p - 0.230_139_340_443_416_6).abs() < 1e-12, "{p}");
        // Ten times the users at the same shares: z = 3.79, no longer chance.
        traffic(&mut m, "control", 504, 0, 5.0);
        traffic(&mut m, "treatment", 396, 0, 5.0);
        let f = finding(&evaluate(&m.experiments["e"], 0, T0), "traffic_split").clone();
        assert!(f.firing, "{f:?}");
        assert!(f.message.contains("control, treatment"), "{}", f.message);
    }

    #[test]
    fn split_weights_are_normalised_like_the_srm_test() {
        // Three arms at 0.33 each (validation allows a sum of 0.99): an even split is exactly
        // as configured (p = 1); against the raw 0.33 it would look 0.33 pp off (p = 0.22).
        let mut m = model_of(json!({
            "experiment_id": "e",
            "variants": [
                {"key": "control", "model": "rec-v1", "weight": 0.33},
                {"key": "treatment", "model": "rec-v2", "weight": 0.33},
                {"key": "third", "model": "rec-v2", "weight": 0.33},
            ],
            "monitors": {"min_sample": 100},
        }));
        for v in ["control", "treatment", "third"] {
            traffic(&mut m, v, 10_000, 0, 5.0);
        }
        let f = finding(&evaluate(&m.experiments["e"], 0, T0), "traffic_split").clone();
        assert!(!f.firing, "{f:?}");
        for v in f.evidence["variants"].as_array().unwrap() {
            assert!(v["p_value"].as_f64().unwrap() > 1.0 - 1e-9, "{v}");
        }
    }

    #[test]
    fn latency_split_and_lag() {
        let mut m = model(json!({"min_sample": 50, "latency_p95_ms": 100.0}));
        traffic(&mut m, "control", 200, 0, 20.0);
        traffic(&mut m, "treatment", 60, 0, 250.0);
        let fs = evaluate(&m.experiments["e"], 20_000, T0);
        assert!(finding(&fs, "latency_p95").firing);
        assert_eq!(
            finding(&fs, "latency_p95").evidence["variants"][1]["variant"],
            "treatment"
        );
        // 200 vs 60 users against 50/50: both the share and SRM are off.
        assert!(finding(&fs, "traffic_split").firing);
        assert!(finding(&fs, "store_lag").firing);
        assert!(!finding(&evaluate(&m.experiments["e"], 10, T0), "store_lag").firing);
        assert!(
            !finding(&fs, "sample_size").firing,
            "no planned duration, nothing to be behind"
        );
    }
}
