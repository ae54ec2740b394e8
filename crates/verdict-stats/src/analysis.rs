//! The analysis contract of `verdict analyze` and `/results`: one JSON document of
//! per-variant summary statistics in, one document of results out.
//!
//! Input (unknown fields are ignored; all counts may be given as integral numbers):
//!
//! ```json
//! {"alpha": 0.05, "control": "control", "weights": {"control": 0.5, "treatment": 0.5},
//!  "sequential_tuning": 5000, "mde": 0.05, "power": 0.8, "baseline_rate": 0.1,
//!  "variants": [{"key": "control", "users": 10000, "conversions": 1000,
//!                "revenue": {"sum": 52340.5, "sum_squares": 8823411.2},
//!                "pre": {"sum": 50000.0, "sum_squares": 8000000.0, "sum_products": 7000000.0},
//!                "predictions": {"sum": 30000, "sum_squares": 120000, "sum_products": 4000}}]}
//! ```
//!
//! Only `variants` (with `key` and `users`) is required. `alpha` defaults to 0.05, `control`
//! to the variant named "control" (else the first), `weights` to an equal split,
//! `sequential_tuning` (N*) to 5000, `power` to 0.8 and `baseline_rate` to the observed
//! control conversion rate. `pre` is the pre-period covariate of revenue for CUPED
//! (`sum_products` = Σ revenue·pre); `predictions` are predictions per user for the ratio
//! metric conversions per prediction (`sum_products` = Σ over converting users of their
//! predictions), or a plain total, which gives the ratio without inference.
//!
//! Output: `srm`, one entry per non-control variant in input order with `conversion`,
//! `revenue_per_user` (`null` without revenue data), `revenue_per_user_cuped` and
//! `conversions_per_prediction` when their inputs are present, `adjusted_p_values`
//! (`holm` and `benjamini_hochberg`, each keyed by metric, over every variant × metric
//! fixed-horizon p-value that is defined), and `power`. Undefined figures are `null`, with
//! the reason under `null_reasons`.

mod input;

pub use input::{
    AnalysisInput, PreSums, Predictions, Sums, VariantInput, MAX_COUNT, MAX_SUM, MAX_SUM_SQUARES,
};

use crate::adjust::{cuped, ratio, CupedSums, RatioSums};
use crate::compare::{
    conversion, means, Comparison, ConversionResult, Counts, MeanResult, Moments, Settings,
};
use crate::multiple::{benjamini_hochberg, holm};
use crate::power::{users_per_variant, PowerUndefined};
use crate::srm::{chi_square, SrmUndefined, SRM_THRESHOLD};
use serde::Serialize;

/// Sample ratio mismatch result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmOutput {
    /// Chi-square p-value.
    pub p_value: Option<f64>,
    /// True when p < 0.001.
    pub mismatch: bool,
    /// Pearson's statistic.
    pub chi_square: Option<f64>,
    /// Why the p-value is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_reason: Option<&'static str>,
}

/// CUPED-adjusted revenue per user: the mean comparison plus θ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CupedOutput {
    /// Pooled θ.
    pub theta: f64,
    /// The adjusted comparison.
    #[serde(flatten)]
    pub result: MeanResult,
}

/// Ratio metric result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatioOutput {
    /// Treatment ratio ΣM/ΣD.
    pub ratio: Option<f64>,
    /// Figures against control.
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// Results for one non-control variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantOutput {
    /// Variant key.
    pub key: String,
    /// Users assigned.
    pub users: u64,
    /// Conversion, `null` without conversion data.
    pub conversion: Option<ConversionResult>,
    /// Revenue per user, `null` without revenue data.
    pub revenue_per_user: Option<MeanResult>,
    /// CUPED-adjusted revenue per user, present when `pre` sums are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_per_user_cuped: Option<CupedOutput>,
    /// Conversions per prediction, present when predictions are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversions_per_prediction: Option<RatioOutput>,
    /// Adjusted p-values by method, then by metric.
    pub adjusted_p_values: AdjustedPValues,
}

/// Holm and Benjamini–Hochberg adjusted p-values of one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdjustedPValues {
    /// Holm step-down.
    pub holm: MetricPValues,
    /// Benjamini–Hochberg step-up.
    pub benjamini_hochberg: MetricPValues,
}

/// One adjusted p-value per metric: absent when the metric is absent, `null` when its
/// p-value is undefined.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricPValues {
    /// Conversion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Option<f64>>,
    /// Revenue per user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_per_user: Option<Option<f64>>,
    /// Conversions per prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversions_per_prediction: Option<Option<f64>>,
}

impl MetricPValues {
    fn slot(&mut self, metric: Metric) -> &mut Option<Option<f64>> {
        match metric {
            Metric::Conversion => &mut self.conversion,
            Metric::Revenue => &mut self.revenue_per_user,
            Metric::Ratio => &mut self.conversions_per_prediction,
        }
    }
}

/// The control's own figures, for reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlOutput {
    /// Control key.
    pub key: String,
    /// Users assigned.
    pub users: u64,
    /// Control conversion rate.
    pub conversion_rate: Option<f64>,
    /// Control revenue per user.
    pub revenue_per_user: Option<f64>,
}

/// Sample size progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerOutput {
    /// Baseline conversion rate used.
    pub baseline_rate: Option<f64>,
    /// Relative minimum detectable effect.
    pub relative_mde: Option<f64>,
    /// Two-sided alpha.
    pub alpha: f64,
    /// Target power.
    pub power: f64,
    /// Cohen's h.
    pub effect_size: Option<f64>,
    /// Users per variant needed (statsmodels `NormalIndPower`, not rounded).
    pub users_per_variant: Option<f64>,
    /// The same, rounded up to whole users.
    pub users_per_variant_ceil: Option<u64>,
    /// Smallest variant's users over `users_per_variant` (above 1 once reached).
    pub share_reached: Option<f64>,
    /// Why fields are null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_reason: Option<&'static str>,
}

/// The whole analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisOutput {
    /// Alpha used.
    pub alpha: f64,
    /// The control.
    pub control: ControlOutput,
    /// Sample ratio mismatch.
    pub srm: SrmOutput,
    /// One entry per non-control variant, in input order.
    pub variants: Vec<VariantOutput>,
    /// Sample size.
    pub power: PowerOutput,
}

/// Metrics that enter the multiple-testing family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Conversion,
    Revenue,
    Ratio,
}

const FAMILY: [Metric; 3] = [Metric::Conversion, Metric::Revenue, Metric::Ratio];

/// Runs every analysis on a validated request.
pub fn analyze(input: &AnalysisInput) -> AnalysisOutput {
    let s = &input.settings;
    let ctl = &input.variants[input.control];
    let users: Vec<f64> = input.variants.iter().map(|v| v.users).collect();
    let srm = match chi_square(&users, &input.weights) {
        Ok(r) => SrmOutput {
            p_value: Some(r.p_value),
            mismatch: r.p_value < SRM_THRESHOLD,
            chi_square: Some(r.chi_square),
            null_reason: None,
        },
        Err(e) => SrmOutput {
            p_value: None,
            mismatch: false,
            chi_square: None,
            null_reason: Some(match e {
                SrmUndefined::NoUsers => "no users",
                SrmUndefined::TooFewVariants => "fewer than two variants with positive weight",
            }),
        },
    };
    let mut variants = Vec::with_capacity(input.variants.len() - 1);
    for (i, v) in input.variants.iter().enumerate() {
        if i == input.control {
            continue;
        }
        variants.push(analyze_variant(ctl, v, s));
    }
    adjust_family(&mut variants);
    let conversion_rate = ctl
        .conversions
        .filter(|_| ctl.users >= 1.0)
        .map(|x| x / ctl.users);
    let control = ControlOutput {
        key: ctl.key.clone(),
        // Validated as a non-negative integer on input.
        users: ctl.users as u64,
        conversion_rate,
        revenue_per_user: ctl
            .revenue
            .filter(|_| ctl.users >= 1.0)
            .map(|r| r.sum / ctl.users),
    };
    let power = power_output(input, conversion_rate);
    AnalysisOutput {
        alpha: s.alpha,
        control,
        srm,
        variants,
        power,
    }
}

fn analyze_variant(ctl: &VariantInput, v: &VariantInput, s: &Settings) -> VariantOutput {
    let conversion_result = match (ctl.conversions, v.conversions) {
        (Some(xc), Some(xt)) => Some(conversion(
            Counts {
                users: ctl.users,
                conversions: xc,
            },
            Counts {
                users: v.users,
                conversions: xt,
            },
            s,
        )),
        _ => None,
    };
    let revenue = match (ctl.revenue, v.revenue) {
        (Some(rc), Some(rt)) => Some(means(
            Moments::from_sums(ctl.users, rc.sum, rc.sum_squares),
            Moments::from_sums(v.users, rt.sum, rt.sum_squares),
            None,
            s,
        )),
        _ => None,
    };
    let cuped_result = match (ctl.revenue, ctl.pre, v.revenue, v.pre) {
        (Some(rc), Some(pc), Some(rt), Some(pt)) => {
            let sums = |n: f64, r: Sums, p: PreSums| CupedSums {
                n,
                sum: r.sum,
                sum_squares: r.sum_squares,
                pre_sum: p.sum,
                pre_sum_squares: p.sum_squares,
                sum_products: p.sum_products,
            };
            let (theta, mc, mt) = cuped(&sums(ctl.users, rc, pc), &sums(v.users, rt, pt));
            // GrowthBook divides the adjusted difference by the unadjusted control mean.
            let base = (ctl.users >= 1.0 && v.users >= 1.0)
                .then(|| (rc.sum / ctl.users, rt.sum / v.users));
            Some(CupedOutput {
                theta,
                result: means(mc, mt, base, s),
            })
        }
        _ => None,
    };
    let ratio_result = match (ctl.predictions, v.predictions) {
        (Some(pc), Some(pt)) => Some(ratio_output(ctl, pc, v, pt, s)),
        _ => None,
    };
    VariantOutput {
        key: v.key.clone(),
        users: v.users as u64,
        conversion: conversion_result,
        revenue_per_user: revenue,
        revenue_per_user_cuped: cuped_result,
        conversions_per_prediction: ratio_result,
        adjusted_p_values: AdjustedPValues::default(),
    }
}

fn ratio_output(
    c: &VariantInput,
    pc: Predictions,
    t: &VariantInput,
    pt: Predictions,
    s: &Settings,
) -> RatioOutput {
    let sums = |v: &VariantInput, p: Predictions| -> Option<RatioSums> {
        let x = v.conversions?;
        match p {
            Predictions::Sums {
                sum,
                sum_squares,
                sum_products,
            } => Some(RatioSums {
                n: v.users,
                m_sum: x,
                // The numerator is a 0/1 indicator per user, so Σm² = Σm.
                m_sum_squares: x,
                d_sum: sum,
                d_sum_squares: sum_squares,
                sum_products,
            }),
            Predictions::Total(_) => None,
        }
    };
    let total = |v: &VariantInput, p: Predictions| -> (f64, f64) {
        let d = match p {
            Predictions::Total(d) => d,
            Predictions::Sums { sum, .. } => sum,
        };
        (v.conversions.unwrap_or(0.0), d)
    };
    let (xt, dt) = total(t, pt);
    let (xc, dc) = total(c, pc);
    let rt = (dt != 0.0).then(|| xt / dt);
    let rc = (dc != 0.0).then(|| xc / dc);
    match (
        sums(c, pc).as_ref().and_then(ratio),
        sums(t, pt).as_ref().and_then(ratio),
    ) {
        (Some(mc), Some(mt)) => {
            let r = means(mc, mt, None, s);
            RatioOutput {
                ratio: r.mean,
                comparison: r.comparison,
            }
        }
        _ => {
            let mut cmp = Comparison::default();
            let reason = if rt.is_none() || rc.is_none() {
                "no predictions in an arm"
            } else {
                "per-user prediction sums not given"
            };
            if let (Some(a), Some(b)) = (rc, rt) {
                cmp.diff = Some(b - a);
                if a != 0.0 {
                    cmp.relative = Some(b / a - 1.0);
                }
            }
            for f in [
                "diff",
                "diff_ci",
                "relative",
                "relative_ci",
                "p_value",
                "sequential_ci",
                "sequential_p_value",
                "chance_to_beat_control",
                "risk",
                "risk_control",
            ] {
                let is_null = match f {
                    "diff" => cmp.diff.is_none(),
                    "relative" => cmp.relative.is_none(),
                    _ => true,
                };
                if is_null {
                    cmp.null_reasons.insert(f, reason);
                }
            }
            RatioOutput {
                ratio: rt,
                comparison: cmp,
            }
        }
    }
}

/// The metric's fixed-horizon p-value: `None` when the metric is absent, `Some(None)` when
/// its p-value is undefined.
fn p_of(v: &VariantOutput, metric: Metric) -> Option<Option<f64>> {
    match metric {
        Metric::Conversion => v.conversion.as_ref().map(|c| c.comparison.p_value),
        Metric::Revenue => v.revenue_per_user.as_ref().map(|c| c.comparison.p_value),
        Metric::Ratio => v
            .conversions_per_prediction
            .as_ref()
            .map(|c| c.comparison.p_value),
    }
}

/// Holm and BH over every defined (variant, metric) p-value of the analysis.
fn adjust_family(variants: &mut [VariantOutput]) {
    let mut slots = Vec::with_capacity(variants.len() * FAMILY.len());
    let mut ps = Vec::with_capacity(variants.len() * FAMILY.len());
    for (vi, v) in variants.iter_mut().enumerate() {
        for m in FAMILY {
            match p_of(v, m) {
                Some(Some(p)) => {
                    slots.push((vi, m));
                    ps.push(p);
                }
                Some(None) => {
                    *v.adjusted_p_values.holm.slot(m) = Some(None);
                    *v.adjusted_p_values.benjamini_hochberg.slot(m) = Some(None);
                }
                None => {}
            }
        }
    }
    let (h, bh) = (holm(&ps), benjamini_hochberg(&ps));
    for (k, &(vi, m)) in slots.iter().enumerate() {
        let a = &mut variants[vi].adjusted_p_values;
        *a.holm.slot(m) = Some(Some(h[k]));
        *a.benjamini_hochberg.slot(m) = Some(Some(bh[k]));
    }
}

fn power_output(input: &AnalysisInput, control_rate: Option<f64>) -> PowerOutput {
    let alpha = input.settings.alpha;
    let baseline = input.baseline_rate.or(control_rate);
    let mut out = PowerOutput {
        baseline_rate: baseline,
        relative_mde: input.mde,
        alpha,
        power: input.power,
        effect_size: None,
        users_per_variant: None,
        users_per_variant_ceil: None,
        share_reached: None,
        null_reason: None,
    };
    let (Some(mde), Some(base)) = (input.mde, baseline) else {
        out.null_reason = Some(if input.mde.is_none() {
            "no mde given"
        } else {
            "no baseline rate (no control conversions data)"
        });
        return out;
    };
    match users_per_variant(base, mde, alpha, input.power) {
        Ok(s) => {
            out.effect_size = Some(s.effect_size);
            out.users_per_variant = Some(s.users_per_variant);
            out.users_per_variant_ceil = Some(s.users_per_variant.ceil() as u64);
            let smallest = input
                .variants
                .iter()
                .map(|v| v.users)
                .fold(f64::INFINITY, f64::min);
            out.share_reached = Some(smallest / s.users_per_variant);
        }
        Err(e) => {
            out.null_reason = Some(match e {
                PowerUndefined::Baseline => "baseline rate is not strictly between 0 and 1",
                PowerUndefined::Mde => "mde is zero or moves the rate outside [0, 1]",
                PowerUndefined::Power => "power must exceed alpha",
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use serde_json::{json, Value};

    fn reason_of(doc: Value) -> (String, String) {
        match AnalysisInput::from_json(&doc) {
            Err(Error::InvalidInput { field, reason }) => (field, reason),
            Ok(_) => panic!("accepted {doc}"),
        }
    }

    #[test]
    fn counts_beyond_2_pow_53_are_refused() {
        let v = |users: Value, conv: Value| {
            json!({"variants": [{"key": "control", "users": 10},
            {"key": "t", "users": users, "conversions": conv}]})
        };
        // 2^53 itself is exact and accepted.
        assert!(AnalysisInput::from_json(&v(json!(9_007_199_254_740_992u64), json!(1))).is_ok());
        // 2^53 + 1 rounds to 2^53 in f64: refused, not silently changed.
        let (field, reason) = reason_of(v(json!(9_007_199_254_740_993u64), json!(1)));
        assert_eq!(field, "variants[1].users");
        assert!(reason.contains("2^53"), "{reason}");
        assert_eq!(reason_of(v(json!(1e17), json!(1))).0, "variants[1].users");
        assert_eq!(
            reason_of(v(
                json!(9_007_199_254_740_992u64),
                json!(9_007_199_254_740_994u64)
            ))
            .0,
            "variants[1].conversions"
        );
    }

    #[test]
    fn sums_whose_squares_overflow_are_refused() {
        let rev = |sum: f64, ss: f64| {
            json!({"variants": [
            {"key": "control", "users": 10, "revenue": {"sum": 1, "sum_squares": 1}},
            {"key": "t", "users": 10, "revenue": {"sum": sum, "sum_squares": ss}}]})
        };
        // 1e155² overflows to infinity; before the cap this gave null results.
        assert_eq!(reason_of(rev(1e155, 1e300)).0, "variants[1].revenue.sum");
        assert_eq!(reason_of(rev(-1e155, 1e300)).0, "variants[1].revenue.sum");
        assert_eq!(
            reason_of(rev(1.0, 1e305)).0,
            "variants[1].revenue.sum_squares"
        );
        let pre = json!({"variants": [
            {"key": "control", "users": 10, "revenue": {"sum": 1, "sum_squares": 1},
             "pre": {"sum": 1, "sum_squares": 1, "sum_products": 1e301}},
            {"key": "t", "users": 10}]});
        assert_eq!(reason_of(pre).0, "variants[0].pre.sum_products");
        let pred = json!({"variants": [
            {"key": "control", "users": 10, "conversions": 1, "predictions": 1e200},
            {"key": "t", "users": 10, "conversions": 1, "predictions": 1}]});
        assert_eq!(reason_of(pred).0, "variants[0].predictions");
        let weights = json!({"weights": [1e308, 1e308], "variants": [
            {"key": "control", "users": 10}, {"key": "t", "users": 10}]});
        assert_eq!(reason_of(weights).0, "weights");
    }

    #[test]
    fn the_largest_accepted_inputs_give_finite_results() {
        // Every field at its cap, consistent with Cauchy–Schwarz (n·Σx² ≥ (Σx)²).
        let n = MAX_COUNT;
        let arm = |key: &str, sum: f64| {
            json!({"key": key, "users": n, "conversions": n / 2.0,
            "revenue": {"sum": sum, "sum_squares": MAX_SUM_SQUARES},
            "pre": {"sum": sum / 2.0, "sum_squares": MAX_SUM_SQUARES / 4.0,
                    "sum_products": MAX_SUM_SQUARES / 4.0}})
        };
        let doc = json!({"mde": 0.05, "variants": [arm("control", MAX_SUM), arm("t", -MAX_SUM)]});
        let out = analyze(&AnalysisInput::from_json(&doc).unwrap());
        let v = &out.variants[0];
        let revenue = &v.revenue_per_user.as_ref().unwrap().comparison;
        let cuped = &v.revenue_per_user_cuped.as_ref().unwrap().result.comparison;
        for c in [revenue, cuped, &v.conversion.as_ref().unwrap().comparison] {
            assert!(c.diff.is_some_and(f64::is_finite), "{c:?}");
            assert!(c.p_value.is_some_and(f64::is_finite), "{c:?}");
            assert!(c.null_reasons.is_empty(), "{c:?}");
        }
    }

    fn field_of(doc: Value) -> String {
        match AnalysisInput::from_json(&doc) {
            Err(Error::InvalidInput { field, .. }) => field,
            Ok(_) => panic!("accepted {doc}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let v = |users: Value| json!({"variants": [{"key": "control", "users": 10}, {"key": "t", "users": users}]});
        assert_eq!(field_of(v(json!(-1))), "variants[1].users");
        assert_eq!(field_of(v(json!(2.5))), "variants[1].users");
        assert_eq!(field_of(v(json!("7"))), "variants[1].users");
        assert_eq!(
            field_of(json!({"variants": [{"key": "a", "users": 1}]})),
            "variants"
        );
        assert_eq!(field_of(json!([])), "$");
        assert_eq!(
            field_of(json!({"variants": [{"key": "a", "users": 1}, {"key": "a", "users": 1}]})),
            "variants[1].key"
        );
        assert_eq!(
            field_of(
                json!({"sequential_tuning": 0, "variants": [{"key": "a", "users": 1}, {"key": "b", "users": 1}]})
            ),
            "sequential_tuning"
        );
        assert_eq!(
            field_of(json!({"variants": [
                {"key": "a", "users": 5, "revenue": {"sum": 1, "sum_squares": 1}, "pre": {"sum": 1, "sum_squares": 1}},
                {"key": "b", "users": 1}]})),
            "variants[0].pre.sum_products"
        );
    }

    #[test]
    fn converted_users_win_over_conversion_events() {
        let doc = json!({"variants": [
            {"key": "control", "users": 100, "conversions": 250, "converted_users": 40},
            {"key": "t", "users": 100, "converted_users": 50}]});
        let out = analyze(&AnalysisInput::from_json(&doc).unwrap());
        assert_eq!(out.control.conversion_rate, Some(0.4));
        assert_eq!(out.variants[0].conversion.as_ref().unwrap().rate, Some(0.5));
    }

    #[test]
    fn prediction_totals_give_the_ratio_without_inference() {
        let doc = json!({"variants": [
            {"key": "control", "users": 100, "conversions": 10, "predictions": 400},
            {"key": "t", "users": 100, "conversions": 12, "predictions": 400}]});
        let out = analyze(&AnalysisInput::from_json(&doc).unwrap());
        let r = out.variants[0].conversions_per_prediction.as_ref().unwrap();
        assert_eq!(r.ratio, Some(0.03));
        assert!((r.comparison.diff.unwrap() - 0.005).abs() < 1e-15);
        assert_eq!(r.comparison.p_value, None);
        assert!(r.comparison.null_reasons.contains_key("p_value"));
    }

    #[test]
    fn a_single_user_arm_gives_nulls_with_reasons() {
        let doc = json!({"variants": [
            {"key": "control", "users": 1, "conversions": 1, "revenue": {"sum": 5, "sum_squares": 25}},
            {"key": "t", "users": 50, "conversions": 5, "revenue": {"sum": 100, "sum_squares": 900}}]});
        let out = analyze(&AnalysisInput::from_json(&doc).unwrap());
        let v = &out.variants[0];
        for c in [
            &v.conversion.as_ref().unwrap().comparison,
            &v.revenue_per_user.as_ref().unwrap().comparison,
        ] {
            assert!(c.diff.is_some());
            assert_eq!(
                (c.p_value, c.diff_ci, c.chance_to_beat_control),
                (None, None, None)
            );
            assert_eq!(
                c.null_reasons.get("p_value"),
                Some(&"fewer than 2 users in an arm")
            );
        }
        assert_eq!(v.adjusted_p_values.holm.conversion, Some(None));
        let text = serde_json::to_string(&out).unwrap();
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn power_is_null_with_a_reason_without_mde() {
        let doc = json!({"variants": [
            {"key": "control", "users": 100, "conversions": 10},
            {"key": "t", "users": 100, "conversions": 12}]});
        let out = analyze(&AnalysisInput::from_json(&doc).unwrap());
        assert_eq!(out.power.users_per_variant, None);
        assert_eq!(out.power.null_reason, Some("no mde given"));
        assert_eq!(out.power.baseline_rate, Some(0.1));
    }
}
