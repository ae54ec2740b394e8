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

use crate::adjust::{cuped, ratio, CupedSums, RatioSums};
use crate::compare::{
    conversion, means, Comparison, ConversionResult, Counts, MeanResult, Moments, Settings,
};
use crate::multiple::{benjamini_hochberg, holm};
use crate::power::{users_per_variant, PowerUndefined};
use crate::srm::{chi_square, SrmUndefined, SRM_THRESHOLD};
use crate::Error;
use serde::Serialize;
use serde_json::{Map, Value};

/// Sums of a per-user metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sums {
    /// Σ value.
    pub sum: f64,
    /// Σ value².
    pub sum_squares: f64,
}

/// Pre-period covariate sums for CUPED on revenue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreSums {
    /// Σ pre.
    pub sum: f64,
    /// Σ pre².
    pub sum_squares: f64,
    /// Σ revenue·pre.
    pub sum_products: f64,
}

/// Predictions per user, for conversions per prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Predictions {
    /// Only the total; the ratio has no interval.
    Total(f64),
    /// Per-user sums: Σ predictions, Σ predictions², Σ over converting users of predictions.
    Sums {
        /// Σ predictions.
        sum: f64,
        /// Σ predictions².
        sum_squares: f64,
        /// Σ conversion indicator × predictions.
        sum_products: f64,
    },
}

/// One variant's summary statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInput {
    /// Variant key.
    pub key: String,
    /// Users assigned.
    pub users: f64,
    /// Users with at least one conversion, if measured.
    pub conversions: Option<f64>,
    /// Revenue per user sums, if measured.
    pub revenue: Option<Sums>,
    /// Pre-period covariate of revenue, for CUPED.
    pub pre: Option<PreSums>,
    /// Predictions, for conversions per prediction.
    pub predictions: Option<Predictions>,
}

/// A validated analysis request.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisInput {
    /// Alpha and the sequential tuning.
    pub settings: Settings,
    /// Index of the control in `variants`.
    pub control: usize,
    /// Configured weights, aligned with `variants`.
    pub weights: Vec<f64>,
    /// Relative MDE for the power calculation, if given.
    pub mde: Option<f64>,
    /// Target power.
    pub power: f64,
    /// Baseline rate for the power calculation; the control's observed rate when `None`.
    pub baseline_rate: Option<f64>,
    /// The variants, control included.
    pub variants: Vec<VariantInput>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

fn get<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<(&'a Value, String)> {
    names.iter().find_map(|n| {
        obj.get(*n)
            .filter(|v| !v.is_null())
            .map(|v| (v, (*n).to_string()))
    })
}

fn number(v: &Value, path: &str) -> Result<f64, Error> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| invalid(path, "expected a finite number"))
}

fn count(v: &Value, path: &str) -> Result<f64, Error> {
    let x = number(v, path)?;
    if x < 0.0 || x.fract() != 0.0 {
        return Err(invalid(path, "expected a non-negative integer"));
    }
    Ok(x)
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| invalid(path, "expected an object"))
}

fn required(obj: &Map<String, Value>, names: &[&str], path: &str) -> Result<(f64, String), Error> {
    let (v, name) =
        get(obj, names).ok_or_else(|| invalid(format!("{path}.{}", names[0]), "missing"))?;
    let field = format!("{path}.{name}");
    Ok((number(v, &field)?, field))
}

/// Checks Cauchy–Schwarz, n·Σx² ≥ (Σx)², with a relative tolerance for rounding.
fn check_squares(n: f64, sum: f64, sum_squares: f64, field: &str) -> Result<(), Error> {
    if sum_squares < 0.0 || n * sum_squares < sum * sum * (1.0 - 1e-9) {
        return Err(invalid(
            field,
            "smaller than sum²/users: impossible for real data",
        ));
    }
    Ok(())
}

impl AnalysisInput {
    /// Parses and validates a request; errors name the offending field.
    pub fn from_json(doc: &Value) -> Result<AnalysisInput, Error> {
        let root = object(doc, "$")?;
        let alpha = match get(root, &["alpha"]) {
            Some((v, _)) => number(v, "alpha")?,
            None => 0.05,
        };
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(invalid("alpha", "must be between 0 and 1"));
        }
        let tuning = match get(
            root,
            &["sequential_tuning", "sequential_tuning_parameter", "n_star"],
        ) {
            Some((v, name)) => number(v, &name)?,
            None => crate::sequential::DEFAULT_TUNING,
        };
        if tuning <= 0.0 {
            return Err(invalid("sequential_tuning", "must be positive"));
        }
        let list = root
            .get("variants")
            .ok_or_else(|| invalid("variants", "missing"))?
            .as_array()
            .ok_or_else(|| invalid("variants", "expected an array"))?;
        if list.len() < 2 {
            return Err(invalid("variants", "need at least two variants"));
        }
        let mut variants = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            variants.push(parse_variant(v, &format!("variants[{i}]"))?);
        }
        for (i, v) in variants.iter().enumerate() {
            if variants[..i].iter().any(|w| w.key == v.key) {
                return Err(invalid(
                    format!("variants[{i}].key"),
                    format!("duplicate key {:?}", v.key),
                ));
            }
        }
        let control = match get(root, &["control"]) {
            Some((v, _)) => {
                let key = v
                    .as_str()
                    .ok_or_else(|| invalid("control", "expected a string"))?;
                variants
                    .iter()
                    .position(|v| v.key == key)
                    .ok_or_else(|| invalid("control", format!("no variant with key {key:?}")))?
            }
            None => variants
                .iter()
                .position(|v| v.key == "control")
                .unwrap_or(0),
        };
        let weights = match get(root, &["weights"]) {
            Some((v, _)) => parse_weights(v, &variants)?,
            None => vec![1.0; variants.len()],
        };
        let (mut mde, mut power, mut baseline_rate) = (None, 0.8, None);
        // The plan may sit at the top level or in a `power` object of the same fields.
        let mut read_plan = |obj: &Map<String, Value>, prefix: &str| -> Result<(), Error> {
            let mde_keys = [
                "mde",
                "relative_mde",
                "mde_relative",
                "minimum_detectable_effect",
            ];
            if let Some((v, name)) = get(obj, &mde_keys) {
                mde = Some(number(v, &format!("{prefix}{name}"))?);
            }
            if let Some((v, name)) = get(obj, &["baseline_rate", "baseline"]) {
                baseline_rate = Some(number(v, &format!("{prefix}{name}"))?);
            }
            if let Some((v, name)) = get(obj, &["power", "target_power"]) {
                match v {
                    Value::Number(_) => power = number(v, &format!("{prefix}{name}"))?,
                    Value::Object(_) if prefix.is_empty() => {}
                    _ => return Err(invalid(format!("{prefix}{name}"), "expected a number")),
                }
            }
            Ok(())
        };
        read_plan(root, "")?;
        if let Some(obj) = root.get("power").and_then(Value::as_object) {
            read_plan(obj, "power.")?;
        }
        if !(power > 0.0 && power < 1.0) {
            return Err(invalid("power", "must be between 0 and 1"));
        }
        Ok(AnalysisInput {
            settings: Settings {
                alpha,
                sequential_tuning: tuning,
            },
            control,
            weights,
            mde,
            power,
            baseline_rate,
            variants,
        })
    }
}

fn parse_weights(v: &Value, variants: &[VariantInput]) -> Result<Vec<f64>, Error> {
    let mut out = Vec::with_capacity(variants.len());
    match v {
        Value::Object(map) => {
            for var in variants {
                let field = format!("weights.{}", var.key);
                let w = map
                    .get(&var.key)
                    .ok_or_else(|| invalid(&field, "missing weight for this variant"))?;
                out.push(number(w, &field)?);
            }
        }
        Value::Array(list) => {
            if list.len() != variants.len() {
                return Err(invalid("weights", "expected one weight per variant"));
            }
            for (i, w) in list.iter().enumerate() {
                out.push(number(w, &format!("weights[{i}]"))?);
            }
        }
        _ => return Err(invalid("weights", "expected an object keyed by variant")),
    }
    if out.iter().any(|&w| w < 0.0) {
        return Err(invalid("weights", "weights must be non-negative"));
    }
    if out.iter().sum::<f64>() <= 0.0 {
        return Err(invalid("weights", "weights must not all be zero"));
    }
    Ok(out)
}

fn parse_variant(v: &Value, path: &str) -> Result<VariantInput, Error> {
    let obj = object(v, path)?;
    let key = obj
        .get("key")
        .ok_or_else(|| invalid(format!("{path}.key"), "missing"))?
        .as_str()
        .ok_or_else(|| invalid(format!("{path}.key"), "expected a string"))?
        .to_string();
    let (users_v, users_name) =
        get(obj, &["users", "n"]).ok_or_else(|| invalid(format!("{path}.users"), "missing"))?;
    let users = count(users_v, &format!("{path}.{users_name}"))?;
    // An explicit count of converting users wins over `conversions`, which some producers
    // use for conversion events.
    let conversions = match get(obj, &["converted_users", "conversions"]) {
        Some((c, name)) => {
            let field = format!("{path}.{name}");
            let x = count(c, &field)?;
            if x > users {
                return Err(invalid(field, "more converting users than users"));
            }
            Some(x)
        }
        None => None,
    };
    let revenue = match get(obj, &["revenue"]) {
        Some((r, _)) => {
            let p = format!("{path}.revenue");
            let r = object(r, &p)?;
            let (sum, _) = required(r, &["sum"], &p)?;
            let (sum_squares, f) = required(r, &["sum_squares", "sum_of_squares"], &p)?;
            check_squares(users, sum, sum_squares, &f)?;
            Some(Sums { sum, sum_squares })
        }
        None => None,
    };
    let pre = match get(obj, &["pre"]) {
        Some((r, _)) => {
            let p = format!("{path}.pre");
            let r = object(r, &p)?;
            // GrowthBook's column names are accepted too (covariate_sum, …).
            let (sum, _) = required(r, &["sum", "covariate_sum"], &p)?;
            let (sum_squares, f) = required(
                r,
                &["sum_squares", "sum_of_squares", "covariate_sum_squares"],
                &p,
            )?;
            check_squares(users, sum, sum_squares, &f)?;
            let (sum_products, _) = required(
                r,
                &[
                    "sum_products",
                    "sum_of_products",
                    "sum_product",
                    "post_pre_sum_of_products",
                    "main_covariate_sum_product",
                    "cross_sum",
                ],
                &p,
            )?;
            if revenue.is_none() {
                return Err(invalid(
                    format!("{path}.revenue"),
                    "required when pre is given (CUPED adjusts revenue)",
                ));
            }
            Some(PreSums {
                sum,
                sum_squares,
                sum_products,
            })
        }
        None => None,
    };
    let predictions = match get(obj, &["predictions"]) {
        Some((Value::Object(r), _)) => {
            let p = format!("{path}.predictions");
            let (sum, _) = required(r, &["sum"], &p)?;
            let (sum_squares, f) = required(r, &["sum_squares", "sum_of_squares"], &p)?;
            check_squares(users, sum, sum_squares, &f)?;
            let (sum_products, _) = required(
                r,
                &[
                    "sum_products",
                    "sum_of_products",
                    "conversions_sum_products",
                ],
                &p,
            )?;
            Some(Predictions::Sums {
                sum,
                sum_squares,
                sum_products,
            })
        }
        Some((v, _)) => Some(Predictions::Total(number(
            v,
            &format!("{path}.predictions"),
        )?)),
        None => None,
    };
    if predictions.is_some() && conversions.is_none() {
        return Err(invalid(
            format!("{path}.conversions"),
            "required when predictions are given",
        ));
    }
    Ok(VariantInput {
        key,
        users,
        conversions,
        revenue,
        pre,
        predictions,
    })
}

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
    use serde_json::json;

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
