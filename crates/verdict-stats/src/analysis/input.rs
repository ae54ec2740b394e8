//! Parsing and validation of the `verdict analyze` request (see [`super`] for the JSON
//! contract). Every error names the offending field.
//!
//! Inputs are refused, not computed into `null`/NaN, when f64 cannot carry them: counts
//! above [`MAX_COUNT`] (2^53, the last integer f64 represents exactly), sums above
//! [`MAX_SUM`] (their square, which every variance takes, would overflow) and sums of
//! squares or products above [`MAX_SUM_SQUARES`].

use crate::compare::Settings;
use crate::Error;
use serde_json::{Map, Value};

/// Largest accepted count (users, conversions): 2^53. Above it consecutive integers are
/// no longer distinct in f64, so a count would silently change.
pub const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// Largest accepted magnitude of a sum (Σx, a predictions total). Variances take its
/// square; at 1e150 the square (1e300) leaves headroom for the pooling of two arms and
/// the products with counts up to [`MAX_COUNT`].
pub const MAX_SUM: f64 = 1e150;

/// Largest accepted magnitude of a sum of squares or of products (Σx², Σxy): 1e300,
/// which two arms can pool without reaching f64's 1.8e308.
pub const MAX_SUM_SQUARES: f64 = 1e300;

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
    // serde_json reads integers above 2^64 as rounded floats; above 2^53 even a u64 is
    // rounded on the way to f64, so the count would not be the one sent.
    if x > MAX_COUNT || v.as_u64().is_some_and(|n| n > 1 << 53) {
        return Err(invalid(
            path,
            "too large: counts above 2^53 are not exact in f64",
        ));
    }
    Ok(x)
}

/// A number whose magnitude is at most `limit` (see [`MAX_SUM`], [`MAX_SUM_SQUARES`]).
fn bounded(v: &Value, path: &str, limit: f64, what: &str) -> Result<f64, Error> {
    let x = number(v, path)?;
    if x.abs() > limit {
        return Err(invalid(
            path,
            format!("too large: {what} beyond {limit:e} overflows f64 in the variance"),
        ));
    }
    Ok(x)
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| invalid(path, "expected an object"))
}

/// Which bound a required field gets.
#[derive(Clone, Copy)]
enum Kind {
    /// Σx: bounded by [`MAX_SUM`].
    Sum,
    /// Σx² or Σxy: bounded by [`MAX_SUM_SQUARES`].
    Square,
}

fn required(
    obj: &Map<String, Value>,
    names: &[&str],
    path: &str,
    kind: Kind,
) -> Result<(f64, String), Error> {
    let (v, name) =
        get(obj, names).ok_or_else(|| invalid(format!("{path}.{}", names[0]), "missing"))?;
    let field = format!("{path}.{name}");
    let x = match kind {
        Kind::Sum => bounded(v, &field, MAX_SUM, "a sum")?,
        Kind::Square => bounded(v, &field, MAX_SUM_SQUARES, "a sum of squares or products")?,
    };
    Ok((x, field))
}

/// Checks Cauchy–Schwarz, n·Σx² ≥ (Σx)², with a relative tolerance for rounding
/// (written as Σx² ≥ Σx·(Σx/n) so that no product overflows).
fn check_squares(n: f64, sum: f64, sum_squares: f64, field: &str) -> Result<(), Error> {
    let floor = if n > 0.0 { sum * (sum / n) } else { 0.0 };
    if sum_squares < 0.0 || (n > 0.0 && sum_squares < floor * (1.0 - 1e-9)) {
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
    let total = out.iter().sum::<f64>();
    if total <= 0.0 {
        return Err(invalid("weights", "weights must not all be zero"));
    }
    if !total.is_finite() {
        return Err(invalid("weights", "the weights' sum overflows f64"));
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
            let (sum, _) = required(r, &["sum"], &p, Kind::Sum)?;
            let (sum_squares, f) =
                required(r, &["sum_squares", "sum_of_squares"], &p, Kind::Square)?;
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
            let (sum, _) = required(r, &["sum", "covariate_sum"], &p, Kind::Sum)?;
            let (sum_squares, f) = required(
                r,
                &["sum_squares", "sum_of_squares", "covariate_sum_squares"],
                &p,
                Kind::Square,
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
                Kind::Square,
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
            let (sum, _) = required(r, &["sum"], &p, Kind::Sum)?;
            let (sum_squares, f) =
                required(r, &["sum_squares", "sum_of_squares"], &p, Kind::Square)?;
            check_squares(users, sum, sum_squares, &f)?;
            let (sum_products, _) = required(
                r,
                &[
                    "sum_products",
                    "sum_of_products",
                    "conversions_sum_products",
                ],
                &p,
                Kind::Square,
            )?;
            Some(Predictions::Sums {
                sum,
                sum_squares,
                sum_products,
            })
        }
        Some((v, _)) => Some(Predictions::Total(bounded(
            v,
            &format!("{path}.predictions"),
            MAX_SUM,
            "a sum",
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
