//! Queries the dashboard needs beyond the API's: the timeline annotated, per bucket,
//! with the cumulative comparison of every treatment against the control (the lift and
//! its always-valid interval), so the page can draw how the evidence built up.
//!
//! Built on [`queries::timeline`], so the figures are the API's own.

use crate::error::AppError;
use crate::queries::{self, Bucket};
use crate::readmodel::ReadModel;
use serde_json::{json, Value};
use verdict_stats::compare::{conversion, Counts, Settings};

/// [`queries::timeline`] plus, on every point, `start_unix` (seconds) and `lifts`: one
/// entry per variant (`null` for the control) with the cumulative conversion comparison
/// against the control up to the end of that bucket: `diff`, `relative`,
/// `sequential_ci` (of the difference), `relative_band` (that interval divided by the
/// control rate, the band drawn around the relative lift) and `sequential_p_value`.
pub fn lift_timeline(model: &ReadModel, id: &str, bucket: Bucket) -> Result<Value, AppError> {
    let mut timeline = queries::timeline(model, id, bucket)?;
    let def = model
        .experiments
        .get(id)
        .and_then(|v| v.state.definition.as_ref())
        .ok_or_else(|| AppError::NotFound(format!("experiment `{id}` not found")))?;
    let control_key = def.control().key.clone();
    let settings = Settings {
        alpha: def.alpha,
        ..Settings::default()
    };
    let Some(points) = timeline["points"].as_array_mut() else {
        return Ok(timeline);
    };
    for point in points {
        let start_unix = point["start"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp());
        let variants = point["variants"].as_array().cloned().unwrap_or_default();
        let counts = |v: &Value| Counts {
            users: v["users"].as_f64().unwrap_or(0.0),
            conversions: v["conversions"].as_f64().unwrap_or(0.0),
        };
        let control = variants.iter().find(|v| v["key"] == control_key.as_str());
        let lifts: Vec<Value> = variants
            .iter()
            .map(|v| match control {
                Some(c) if v["key"] != control_key.as_str() => {
                    lift(counts(c), counts(v), &settings)
                }
                _ => Value::Null,
            })
            .collect();
        point["start_unix"] = json!(start_unix);
        point["lifts"] = Value::Array(lifts);
    }
    Ok(timeline)
}

fn lift(control: Counts, treatment: Counts, settings: &Settings) -> Value {
    let r = conversion(control, treatment, settings).comparison;
    let control_rate = (control.users > 0.0).then(|| control.conversions / control.users);
    // The confidence sequence is on the difference; dividing by the control rate puts it
    // on the relative scale (treating the control rate as known, which is what the
    // relative lift itself does when it is read as a percentage of the control).
    let relative_band = match (r.sequential_ci, control_rate) {
        (Some([lo, hi]), Some(c)) if c > 0.0 => json!([lo / c, hi / c]),
        _ => Value::Null,
    };
    json!({
        "diff": r.diff,
        "relative": r.relative,
        "sequential_ci": r.sequential_ci,
        "relative_band": relative_band,
        "sequential_p_value": r.sequential_p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_is_the_sequential_interval_over_the_control_rate() {
        let s = Settings::default();
        let c = Counts {
            users: 1000.0,
            conversions: 100.0,
        };
        let t = Counts {
            users: 1000.0,
            conversions: 130.0,
        };
        let v = lift(c, t, &s);
        let rel = v["relative"].as_f64().unwrap();
        assert!((rel - 0.3).abs() < 1e-12, "{v}");
        let ci = v["sequential_ci"].as_array().unwrap();
        let band = v["relative_band"].as_array().unwrap();
        for (b, d) in band.iter().zip(ci) {
            assert!((b.as_f64().unwrap() - d.as_f64().unwrap() / 0.1).abs() < 1e-12);
        }
        assert!(band[0].as_f64().unwrap() < rel && rel < band[1].as_f64().unwrap());
    }

    #[test]
    fn no_band_without_control_conversions() {
        let zero = Counts {
            users: 10.0,
            conversions: 0.0,
        };
        let v = lift(zero, zero, &Settings::default());
        assert!(v["relative_band"].is_null(), "{v}");
    }
}
