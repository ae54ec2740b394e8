//! The query side: listings, results with statistics, metrics and timelines, computed
//! from the read model (never from the command side).

use crate::codec::timestamp;
use crate::error::AppError;
use crate::readmodel::{
    BucketStats, ExperimentView, Latency, ReadModel, VariantStats, HOUR_MICROS,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use verdict_core::experiment::ExperimentDefinition;

fn view<'a>(model: &'a ReadModel, id: &str) -> Result<&'a ExperimentView, AppError> {
    model
        .experiments
        .get(id)
        .filter(|v| v.state.definition.is_some())
        .ok_or_else(|| AppError::NotFound(format!("experiment `{id}` not found")))
}

fn def(v: &ExperimentView) -> &ExperimentDefinition {
    v.state
        .definition
        .as_ref()
        .expect("views are created with a definition")
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn time(micros: Option<i64>) -> Value {
    micros.map_or(Value::Null, |m| Value::String(timestamp(m).to_rfc3339()))
}

fn latency_json(l: &Latency) -> Value {
    json!({
        "count": l.count(),
        "mean": l.mean_ms(),
        "p50": l.quantile_ms(0.50),
        "p95": l.quantile_ms(0.95),
        "p99": l.quantile_ms(0.99),
        "max": l.quantile_ms(1.0),
    })
}

/// A one-line summary of every experiment.
pub fn list_experiments(model: &ReadModel) -> Value {
    let items: Vec<Value> = model
        .experiments
        .values()
        .filter(|v| v.state.definition.is_some())
        .map(|v| {
            let d = def(v);
            json!({
                "experiment_id": d.experiment_id,
                "name": d.name,
                "status": v.state.status,
                "variants": d.variants.iter().map(|x| x.key.clone()).collect::<Vec<_>>(),
                "users": v.variants.iter().map(|x| x.users).sum::<u64>(),
                "active_alerts": v.alerts.iter().filter(|a| a.resolved_at.is_none()).count(),
                "created_at": time(Some(v.created_at)),
                "started_at": time(v.started_at),
                "stopped_at": time(v.stopped_at),
            })
        })
        .collect();
    json!({ "experiments": items, "position": model.position })
}

/// One experiment: its definition, status and lifecycle.
pub fn experiment(model: &ReadModel, id: &str) -> Result<Value, AppError> {
    let v = view(model, id)?;
    Ok(json!({
        "experiment_id": id,
        "status": v.state.status,
        "version": v.state.version,
        "definition": def(v),
        "stop": v.state.stop,
        "created_at": time(Some(v.created_at)),
        "started_at": time(v.started_at),
        "stopped_at": time(v.stopped_at),
        "position": model.position,
    }))
}

/// The `verdict analyze` input for an experiment's current totals.
pub fn analysis_input(v: &ExperimentView) -> Value {
    let d = def(v);
    let variants: Vec<Value> = d
        .variants
        .iter()
        .zip(&v.variants)
        .map(|(var, s)| {
            json!({
                "key": var.key,
                "users": s.users,
                "conversions": s.converted_users,
                "revenue": {"sum": s.revenue_sum, "sum_squares": s.revenue_sum_squares},
            })
        })
        .collect();
    let mut input = json!({
        "alpha": d.alpha,
        "control": d.control().key,
        "weights": d.variants.iter().map(|x| (x.key.clone(), json!(x.weight))).collect::<serde_json::Map<_, _>>(),
        "mde": d.mde,
        "power": d.power,
        "variants": variants,
    });
    if let Some(b) = d.baseline_rate {
        input["baseline_rate"] = json!(b);
    }
    input
}

/// Runs the statistics engine on the totals; `None` when there are too few variants.
pub fn analysis(v: &ExperimentView) -> Option<Value> {
    let input = verdict_stats::AnalysisInput::from_json(&analysis_input(v)).ok()?;
    serde_json::to_value(verdict_stats::analyze(&input)).ok()
}

/// A decision in words, from the primary metric's always-valid p-value (safe to read
/// at any time) and the sample-size plan.
fn decision(v: &ExperimentView, analysis: &Value) -> Value {
    let d = def(v);
    if analysis["srm"]["mismatch"] == Value::Bool(true) {
        return json!({"action": "investigate", "reason": "sample ratio mismatch: assignment or logging is broken; do not trust the lift"});
    }
    let metric = if d.primary_metric == "revenue_per_user" {
        "revenue_per_user"
    } else {
        "conversion"
    };
    let mut best: Option<(String, f64)> = None;
    let mut worse = Vec::new();
    if let Some(items) = analysis["variants"].as_array() {
        for item in items {
            let m = &item[metric];
            let (Some(p), Some(diff)) = (m["sequential_p_value"].as_f64(), m["diff"].as_f64())
            else {
                continue;
            };
            if p < d.alpha {
                let key = item["key"].as_str().unwrap_or_default().to_owned();
                if diff > 0.0 {
                    if best.as_ref().is_none_or(|(_, b)| diff > *b) {
                        best = Some((key, diff));
                    }
                } else {
                    worse.push(key);
                }
            }
        }
    }
    let reached = analysis["power"]["share_reached"].as_f64();
    if let Some((key, _)) = best {
        return json!({"action": "ship", "variant": key, "reason": format!("{key} beats the control on {metric} (always-valid p < {})", d.alpha)});
    }
    if !worse.is_empty() {
        return json!({"action": "stop", "variants": worse, "reason": format!("worse than the control on {metric} (always-valid p < {})", d.alpha)});
    }
    if reached.is_some_and(|r| r >= 1.0) {
        return json!({"action": "stop", "reason": "planned sample size reached without a significant difference: no detectable effect"});
    }
    json!({"action": "continue", "reason": "not enough evidence yet; keep the experiment running"})
}

/// The per-variant traffic figures that results and metrics share.
fn traffic_fields(
    var: &verdict_core::experiment::Variant,
    s: &VariantStats,
) -> serde_json::Map<String, Value> {
    let row = json!({
        "key": var.key,
        "model": var.model,
        "predictions": s.predictions,
        "errors": s.errors,
        "error_rate": ratio(s.errors, s.predictions + s.errors),
        "interactions": s.interactions,
        "latency_ms": latency_json(&s.latency),
    });
    row.as_object().cloned().unwrap_or_default()
}

/// Results: per-variant totals and the statistics against the control.
pub fn results(model: &ReadModel, id: &str) -> Result<Value, AppError> {
    let v = view(model, id)?;
    let d = def(v);
    let variants: Vec<Value> = d
        .variants
        .iter()
        .zip(&v.variants)
        .map(|(var, s)| {
            let mut row = traffic_fields(var, s);
            row.extend(
                json!({
                    "weight": var.weight,
                    "users": s.users,
                    "conversions": s.converted_users,
                    "conversion_events": s.conversion_events,
                    "conversion_rate": ratio(s.converted_users, s.users),
                    "revenue": s.revenue_sum,
                    "revenue_per_user": (s.users > 0).then(|| s.revenue_sum / s.users as f64),
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            );
            Value::Object(row)
        })
        .collect();
    let analysis = analysis(v).unwrap_or(Value::Null);
    Ok(json!({
        "experiment_id": id,
        "name": d.name,
        "status": v.state.status,
        "control": d.control().key,
        "primary_metric": d.primary_metric,
        "variants": variants,
        "comparisons": analysis["variants"],
        "srm": analysis["srm"],
        "sample_size": analysis["power"],
        "decision": decision(v, &analysis),
        "unattributed_conversions": v.unattributed_conversions,
        "unattributed_interactions": v.unattributed_interactions,
        "position": model.position,
    }))
}

/// Operational metrics per variant (traffic, errors, latency) and per shadow arm (its
/// calls, and agreement, output difference and latency against the control on the same
/// mirrored requests).
pub fn metrics(model: &ReadModel, id: &str) -> Result<Value, AppError> {
    let v = view(model, id)?;
    let d = def(v);
    let variants: Vec<Value> = d
        .variants
        .iter()
        .zip(&v.variants)
        .map(|(var, s)| {
            let mut row = traffic_fields(var, s);
            row.insert("requests".into(), json!(s.predictions + s.errors));
            // Where the latency goes: the model itself, and verdict's own overhead.
            row.insert("model_latency_ms".into(), latency_json(&s.model_latency));
            row.insert("overhead_ms".into(), latency_json(&s.overhead));
            Value::Object(row)
        })
        .collect();
    let ratio = |num: f64, den: u64| (den > 0).then(|| num / den as f64);
    let shadows: Vec<Value> = d
        .shadows
        .iter()
        .zip(&v.shadows)
        .map(|(sh, s)| {
            let p50 = |l: &Latency| l.quantile_ms(0.5);
            let p99 = |l: &Latency| l.quantile_ms(0.99);
            let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
            json!({
                "key": sh.key,
                "model": sh.model,
                "share": sh.share,
                "shadow_of": d.control().key,
                "predictions": s.predictions,
                "errors": s.errors,
                "error_rate": ratio(s.errors as f64, s.predictions + s.errors),
                "compared": s.compared,
                "agreement_rate": ratio(s.agreements as f64, s.compared),
                "mean_overlap": ratio(s.overlap_sum, s.overlap_count),
                "mean_abs_diff": ratio(s.diff_sum, s.diff_count),
                "latency_ms": latency_json(&s.latency),
                "control_latency_ms": latency_json(&s.control_latency),
                "latency_delta_ms": {
                    "p50": delta(p50(&s.latency), p50(&s.control_latency)),
                    "p99": delta(p99(&s.latency), p99(&s.control_latency)),
                },
            })
        })
        .collect();
    Ok(json!({
        "experiment_id": id,
        "variants": variants,
        "shadows": shadows,
        "position": model.position,
    }))
}

/// Bucket width for timelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

/// Per-bucket and cumulative figures per variant.
pub fn timeline(model: &ReadModel, id: &str, bucket: Bucket) -> Result<Value, AppError> {
    let v = view(model, id)?;
    let d = def(v);
    let n = d.variants.len();
    let width = match bucket {
        Bucket::Hour => HOUR_MICROS,
        Bucket::Day => 24 * HOUR_MICROS,
    };
    let mut merged: BTreeMap<i64, Vec<BucketStats>> = BTreeMap::new();
    for (hour, row) in &v.hours {
        let key = hour.div_euclid(width) * width;
        let target = merged
            .entry(key)
            .or_insert_with(|| vec![BucketStats::default(); n]);
        for (t, s) in target.iter_mut().zip(row) {
            t.new_users += s.new_users;
            t.predictions += s.predictions;
            t.errors += s.errors;
            t.newly_converted += s.newly_converted;
            t.revenue += s.revenue;
            // Merging histograms of equal settings cannot fail.
            let _ = t.latency.0.add(&s.latency.0);
        }
    }
    let mut cumulative_users = vec![0u64; n];
    let mut cumulative_converted = vec![0u64; n];
    let mut cumulative_revenue = vec![0f64; n];
    let points: Vec<Value> = merged
        .iter()
        .map(|(start, row)| {
            let per_variant: Vec<Value> = d
                .variants
                .iter()
                .zip(row)
                .enumerate()
                .map(|(i, (var, s))| {
                    cumulative_users[i] += s.new_users;
                    cumulative_converted[i] += s.newly_converted;
                    cumulative_revenue[i] += s.revenue;
                    json!({
                        "key": var.key,
                        "new_users": s.new_users,
                        "users": cumulative_users[i],
                        "predictions": s.predictions,
                        "errors": s.errors,
                        "error_rate": ratio(s.errors, s.predictions + s.errors),
                        "conversions": cumulative_converted[i],
                        "conversion_rate": ratio(cumulative_converted[i], cumulative_users[i]),
                        "revenue_per_user": (cumulative_users[i] > 0).then(|| cumulative_revenue[i] / cumulative_users[i] as f64),
                        "latency_p95_ms": s.latency.quantile_ms(0.95),
                    })
                })
                .collect();
            json!({"start": time(Some(*start)), "variants": per_variant})
        })
        .collect();
    Ok(json!({
        "experiment_id": id,
        "bucket": if bucket == Bucket::Hour { "hour" } else { "day" },
        "points": points,
        "position": model.position,
    }))
}

/// Every alert, newest first, optionally of one experiment.
pub fn alerts(model: &ReadModel, experiment: Option<&str>) -> Value {
    let mut all: Vec<Value> = model
        .experiments
        .iter()
        .filter(|(id, _)| experiment.is_none_or(|e| e == id.as_str()))
        .flat_map(|(_, v)| v.alerts.iter())
        .map(|a| {
            json!({
                "alert_id": a.alert_id,
                "experiment_id": a.experiment_id,
                "monitor": a.monitor,
                "severity": a.severity,
                "message": a.message,
                "evidence": a.evidence,
                "raised_at": time(Some(a.raised_at)),
                "resolved_at": time(a.resolved_at),
                "active": a.resolved_at.is_none(),
                "position": a.position,
            })
        })
        .collect();
    all.sort_by_key(|a| std::cmp::Reverse(a["position"].as_u64()));
    json!({"alerts": all, "position": model.position})
}
