//! `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! Per experiment and variant: requests, assignments, conversions, errors and a
//! prediction-latency histogram, all from the read model; the projector's position, the
//! store's head and the lag; store append latency and batch sizes from the
//! [`verdict_app::instrument`] decorator. Names follow Prometheus conventions: base units
//! (seconds), `_total` for counters, labels in snake case.

use hdrhistogram::Histogram;
use std::fmt::Write;
use verdict_app::instrument::StoreStats;
use verdict_app::readmodel::{Latency, ReadModel};

/// Latency bucket bounds in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
];
/// Batch size bucket bounds in events.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one histogram's buckets, sum and count. `scale` converts recorded units to the
/// exported unit (1e-6 for microseconds to seconds).
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    h: &Histogram<u64>,
    bounds: &[f64],
    scale: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for &le in bounds {
        let max_recorded = (le / scale).floor() as u64;
        let count = if h.is_empty() {
            0
        } else {
            h.count_between(0, max_recorded)
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.len());
    let sum = if h.is_empty() {
        0.0
    } else {
        h.mean() * h.len() as f64 * scale
    };
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}

fn latency(l: &Latency) -> &Histogram<u64> {
    &l.0
}

/// Shadow arms: calls, failures and agreement with the control, per experiment and arm.
fn shadow_metrics(out: &mut String, model: &ReadModel) {
    let rows: Vec<(String, String, String, &verdict_app::readmodel::ShadowStats)> = model
        .experiments
        .iter()
        .filter_map(|(id, v)| v.state.definition.as_ref().map(|d| (id, v, d)))
        .flat_map(|(id, v, d)| {
            d.shadows
                .iter()
                .zip(&v.shadows)
                .map(move |(sh, s)| (label(id), label(&sh.key), label(&sh.model), s))
        })
        .collect();
    type Get = fn(&verdict_app::readmodel::ShadowStats) -> u64;
    let series: [(&str, &str, Get); 4] = [
        (
            "verdict_shadow_predictions_total",
            "Shadow predictions (recorded, never served) per experiment and shadow arm.",
            |s| s.predictions,
        ),
        (
            "verdict_shadow_errors_total",
            "Failed shadow predictions per experiment and shadow arm.",
            |s| s.errors,
        ),
        (
            "verdict_shadow_compared_total",
            "Shadow predictions compared with the control's answer to the same request.",
            |s| s.compared,
        ),
        (
            "verdict_shadow_agreements_total",
            "Compared shadow predictions whose decision agreed with the control's.",
            |s| s.agreements,
        ),
    ];
    for (name, help, get) in series {
        header(out, name, "counter", help);
        for (e, k, m, s) in &rows {
            let _ = writeln!(
                out,
                "{name}{{experiment_id=\"{e}\",shadow=\"{k}\",model=\"{m}\"}} {}",
                get(s)
            );
        }
    }
}

/// Mirrors the command side dropped because its shadow budget was full, and those running.
pub fn shadow_calls(out: &mut String, dropped: u64, in_flight: usize) {
    header(
        out,
        "verdict_shadow_dropped_total",
        "counter",
        "Shadow calls skipped because too many were in flight (the request path never waits).",
    );
    let _ = writeln!(out, "verdict_shadow_dropped_total {dropped}");
    header(
        out,
        "verdict_shadow_in_flight",
        "gauge",
        "Shadow calls running: from the model call until their event is appended.",
    );
    let _ = writeln!(out, "verdict_shadow_in_flight {in_flight}");
}

/// Renders every metric.
pub fn render(model: &ReadModel, head: u64, stats: &StoreStats) -> String {
    let mut out = String::with_capacity(4096);
    let rows: Vec<(
        String,
        String,
        String,
        &verdict_app::readmodel::VariantStats,
    )> = model
        .experiments
        .iter()
        .filter_map(|(id, v)| v.state.definition.as_ref().map(|d| (id, v, d)))
        .flat_map(|(id, v, d)| {
            d.variants
                .iter()
                .zip(&v.variants)
                .map(move |(var, s)| (label(id), label(&var.key), label(&var.model), s))
        })
        .collect();
    let counter = |out: &mut String,
                   name: &str,
                   help: &str,
                   f: &dyn Fn(&verdict_app::readmodel::VariantStats) -> f64| {
        header(out, name, "counter", help);
        for (e, v, m, s) in &rows {
            let _ = writeln!(
                out,
                "{name}{{experiment_id=\"{e}\",variant=\"{v}\",model=\"{m}\"}} {}",
                f(s)
            );
        }
    };
    counter(
        &mut out,
        "verdict_prediction_requests_total",
        "Prediction requests (successful and failed) per experiment and variant.",
        &|s| (s.predictions + s.errors) as f64,
    );
    counter(
        &mut out,
        "verdict_prediction_errors_total",
        "Failed predictions per experiment and variant.",
        &|s| s.errors as f64,
    );
    counter(
        &mut out,
        "verdict_assignments_total",
        "Users assigned (first exposures) per experiment and variant.",
        &|s| s.users as f64,
    );
    counter(
        &mut out,
        "verdict_conversions_total",
        "Users with at least one conversion per experiment and variant.",
        &|s| s.converted_users as f64,
    );
    counter(
        &mut out,
        "verdict_conversion_events_total",
        "Conversion events per experiment and variant.",
        &|s| s.conversion_events as f64,
    );
    counter(
        &mut out,
        "verdict_revenue_total",
        "Revenue recorded per experiment and variant.",
        &|s| s.revenue_sum,
    );
    counter(
        &mut out,
        "verdict_interactions_total",
        "Interactions per experiment and variant.",
        &|s| s.interactions as f64,
    );
    shadow_metrics(&mut out, model);

    header(
        &mut out,
        "verdict_prediction_latency_seconds",
        "histogram",
        "Model latency of successful predictions, measured by the server.",
    );
    for (e, v, m, s) in &rows {
        let labels = format!("experiment_id=\"{e}\",variant=\"{v}\",model=\"{m}\"");
        histogram(
            &mut out,
            "verdict_prediction_latency_seconds",
            &labels,
            latency(&s.latency),
            LATENCY_BUCKETS,
            1e-6,
        );
    }

    header(
        &mut out,
        "verdict_experiment_running",
        "gauge",
        "1 when the experiment is running, else 0.",
    );
    for (id, v) in &model.experiments {
        let running = u8::from(v.state.status == verdict_core::Status::Running);
        let _ = writeln!(
            out,
            "verdict_experiment_running{{experiment_id=\"{}\",status=\"{}\"}} {running}",
            label(id),
            v.state.status
        );
    }
    header(
        &mut out,
        "verdict_alerts_active",
        "gauge",
        "Active (unresolved) alerts per experiment, monitor and severity.",
    );
    for (id, v) in &model.experiments {
        for a in v.alerts.iter().filter(|a| a.resolved_at.is_none()) {
            let _ = writeln!(
                out,
                "verdict_alerts_active{{experiment_id=\"{}\",monitor=\"{}\",severity=\"{}\"}} 1",
                label(id),
                label(&a.monitor),
                label(&a.severity)
            );
        }
    }

    header(
        &mut out,
        "verdict_projector_position",
        "gauge",
        "Last global position applied by the projector.",
    );
    let _ = writeln!(out, "verdict_projector_position {}", model.position);
    header(
        &mut out,
        "verdict_store_head_position",
        "gauge",
        "Last global position committed to the event store.",
    );
    let _ = writeln!(out, "verdict_store_head_position {head}");
    header(
        &mut out,
        "verdict_projector_lag_events",
        "gauge",
        "Events committed but not yet projected.",
    );
    let _ = writeln!(
        out,
        "verdict_projector_lag_events {}",
        head.saturating_sub(model.position)
    );
    header(
        &mut out,
        "verdict_projector_undecodable_events_total",
        "counter",
        "Stored events the projector could not decode and skipped.",
    );
    let _ = writeln!(
        out,
        "verdict_projector_undecodable_events_total {}",
        model.undecodable
    );

    header(
        &mut out,
        "verdict_store_append_duration_seconds",
        "histogram",
        "Time for an append to become durable.",
    );
    let appends = stats
        .append_micros
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    histogram(
        &mut out,
        "verdict_store_append_duration_seconds",
        "",
        &appends,
        LATENCY_BUCKETS,
        1e-6,
    );
    header(
        &mut out,
        "verdict_store_append_batch_events",
        "histogram",
        "Events per append.",
    );
    let batches = stats
        .batch_events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    histogram(
        &mut out,
        "verdict_store_append_batch_events",
        "",
        &batches,
        BATCH_BUCKETS,
        1.0,
    );
    header(
        &mut out,
        "verdict_store_append_errors_total",
        "counter",
        "Failed appends.",
    );
    let _ = writeln!(
        out,
        "verdict_store_append_errors_total {}",
        stats
            .append_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_consistent() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
        for us in [300, 800, 800, 4_000, 150_000] {
            h.record(us).unwrap();
        }
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "a=\"b\"", &h, LATENCY_BUCKETS, 1e-6);
        let line = |le: &str| {
            let prefix = format!("x_seconds_bucket{{a=\"b\",le=\"{le}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(
            (
                line("0.0005"),
                line("0.001"),
                line("0.005"),
                line("0.1"),
                line("0.2"),
                line("+Inf")
            ),
            (1, 3, 4, 4, 5, 5)
        );
        assert!(out.contains("x_seconds_count{a=\"b\"} 5"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
