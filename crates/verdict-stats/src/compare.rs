//! Two-arm comparisons: conversion (proportions) and means (Welch), with every derived figure.
//!
//! Each comparison reduces the arms to an effect and its standard error and derives the
//! fixed-horizon interval and p-value, the relative lift with its delta-method interval, the
//! always-valid interval and p-value, and the Bayesian chance to beat control and risk.
//! A figure that is undefined for the data is `None`, with the reason recorded in
//! [`Comparison::null_reasons`].

use crate::bayes::{beta_binomial, normal_approx, BayesResult};
use crate::dist::{cornish_fisher, normal_isf, normal_two_sided_p, t_isf, t_two_sided_p};
use crate::sequential::confidence_sequence;
use serde::Serialize;
use std::collections::BTreeMap;

/// Analysis settings shared by every comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Two-sided significance level, 0 < alpha < 1.
    pub alpha: f64,
    /// Tuning sample size N* of the confidence sequence.
    pub sequential_tuning: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: 0.05,
            sequential_tuning: crate::sequential::DEFAULT_TUNING,
        }
    }
}

/// Treatment-versus-control figures common to every metric; `None` serialises as `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Treatment minus control.
    pub diff: Option<f64>,
    /// Fixed-horizon confidence interval of `diff`.
    pub diff_ci: Option<[f64; 2]>,
    /// Relative lift, treatment / control − 1.
    pub relative: Option<f64>,
    /// Delta-method interval of `relative` (normal quantile).
    pub relative_ci: Option<[f64; 2]>,
    /// Fixed-horizon two-sided p-value.
    pub p_value: Option<f64>,
    /// Always-valid interval of `diff`.
    pub sequential_ci: Option<[f64; 2]>,
    /// Always-valid p-value.
    pub sequential_p_value: Option<f64>,
    /// Posterior probability that treatment beats control.
    pub chance_to_beat_control: Option<f64>,
    /// Expected loss of shipping the treatment, E[max(control − treatment, 0)].
    pub risk: Option<f64>,
    /// Expected loss of keeping the control, E[max(treatment − control, 0)].
    pub risk_control: Option<f64>,
    /// For each field that is `null`, why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub null_reasons: BTreeMap<&'static str, &'static str>,
}

impl Comparison {
    /// Last line of defence for "never NaN": a figure that overflowed on extreme input
    /// (a subnormal control mean, variances near 1e308) becomes `null` with a reason
    /// instead of serialising as a bare `null`.
    fn finalize(&mut self) {
        const OVERFLOW: &str = "not representable (numerical overflow on extreme input)";
        let mut bad = Vec::new();
        let mut scalar = |name: &'static str, v: &mut Option<f64>| {
            if v.is_some_and(|x| !x.is_finite()) {
                *v = None;
                bad.push(name);
            }
        };
        scalar("diff", &mut self.diff);
        scalar("relative", &mut self.relative);
        scalar("p_value", &mut self.p_value);
        scalar("sequential_p_value", &mut self.sequential_p_value);
        scalar("chance_to_beat_control", &mut self.chance_to_beat_control);
        scalar("risk", &mut self.risk);
        scalar("risk_control", &mut self.risk_control);
        let mut interval = |name: &'static str, v: &mut Option<[f64; 2]>| {
            if v.is_some_and(|[lo, hi]| !(lo.is_finite() && hi.is_finite())) {
                *v = None;
                bad.push(name);
            }
        };
        interval("diff_ci", &mut self.diff_ci);
        interval("relative_ci", &mut self.relative_ci);
        interval("sequential_ci", &mut self.sequential_ci);
        for name in bad {
            self.null_reasons.insert(name, OVERFLOW);
        }
    }

    fn undefined(&mut self, fields: &[&'static str], reason: &'static str) {
        for f in fields {
            self.null_reasons.entry(f).or_insert(reason);
        }
    }
}

const INFERENCE: [&str; 9] = [
    "diff_ci",
    "relative_ci",
    "p_value",
    "sequential_ci",
    "sequential_p_value",
    "chance_to_beat_control",
    "risk",
    "risk_control",
    "relative",
];

/// Conversion counts of one arm: `conversions` users converted out of `users`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Users in the arm.
    pub users: f64,
    /// Users with at least one conversion.
    pub conversions: f64,
}

/// Result for a conversion metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversionResult {
    /// Treatment conversion rate x/n.
    pub rate: Option<f64>,
    /// Figures against control.
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// z = Φ⁻¹(1 − α/2). The usual alphas are tabulated (checked against [`normal_isf`] in the
/// tests) because the quantile would otherwise be recomputed for every metric of every variant.
fn z_crit(alpha: f64) -> f64 {
    match alpha {
        // Correctly rounded (mpmath, 40 digits).
        0.05 => 1.959_963_984_540_054_3,
        0.01 => 2.575_829_303_548_901,
        0.1 => 1.644_853_626_951_472_6,
        _ => normal_isf(alpha / 2.0),
    }
}

/// Relative lift and its delta-method interval given the means and the variances of the means.
fn relative(cmp: &mut Comparison, m_c: f64, vm_c: f64, m_t: f64, vm_t: f64, z: f64) {
    if m_c == 0.0 {
        cmp.undefined(&["relative", "relative_ci"], "control mean is zero");
        return;
    }
    // (m_t − m_c)/m_c rather than m_t/m_c − 1: no cancellation for small lifts.
    let rel = (m_t - m_c) / m_c;
    cmp.relative = Some(rel);
    // Delta method, vm_t/m_c² + m_t²·vm_c/m_c⁴, factored so that m_c⁴ cannot overflow.
    let r = m_t / m_c;
    let var = (vm_t + r * r * vm_c) / (m_c * m_c);
    if var > 0.0 && var.is_finite() {
        let half = z * var.sqrt();
        cmp.relative_ci = Some([rel - half, rel + half]);
    } else {
        cmp.undefined(&["relative_ci"], "zero variance");
    }
}

fn sequential(cmp: &mut Comparison, diff: f64, se: f64, n_total: f64, s: &Settings) {
    let seq = confidence_sequence(diff, se, n_total, s.alpha, s.sequential_tuning);
    cmp.sequential_ci = Some(seq.ci);
    cmp.sequential_p_value = Some(seq.p_value);
}

fn set_bayes(cmp: &mut Comparison, b: BayesResult) {
    cmp.chance_to_beat_control = Some(b.chance_to_beat_control);
    cmp.risk = Some(b.risk);
    cmp.risk_control = Some(b.risk_control);
}

/// Compares conversion rates: pooled two-proportion z-test (statsmodels `proportions_ztest`),
/// unpooled Wald interval, delta-method relative interval, confidence sequence on the Wald
/// standard error, and exact Beta-binomial chance to beat control.
pub fn conversion(c: Counts, t: Counts, s: &Settings) -> ConversionResult {
    let mut cmp = Comparison::default();
    let rate = (t.users >= 1.0).then(|| t.conversions / t.users);
    if c.users < 2.0 || t.users < 2.0 {
        if c.users >= 1.0 && t.users >= 1.0 {
            cmp.diff = Some(t.conversions / t.users - c.conversions / c.users);
        } else {
            cmp.undefined(&["diff"], "an arm has no users");
        }
        cmp.undefined(&INFERENCE, "fewer than 2 users in an arm");
        return ConversionResult {
            rate,
            comparison: cmp,
        };
    }
    let (p_c, p_t) = (c.conversions / c.users, t.conversions / t.users);
    let diff = p_t - p_c;
    cmp.diff = Some(diff);
    let z = z_crit(s.alpha);
    // Pooled variance for the test, as statsmodels `proportions_ztest`.
    let pooled = (c.conversions + t.conversions) / (c.users + t.users);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / c.users + 1.0 / t.users)).sqrt();
    if se_pooled > 0.0 {
        cmp.p_value = Some(normal_two_sided_p(diff / se_pooled));
    } else {
        cmp.undefined(
            &["p_value"],
            "zero pooled variance (no arm has both outcomes)",
        );
    }
    let (vm_c, vm_t) = (p_c * (1.0 - p_c) / c.users, p_t * (1.0 - p_t) / t.users);
    let se = (vm_c + vm_t).sqrt();
    if se > 0.0 {
        cmp.diff_ci = Some([diff - z * se, diff + z * se]);
        sequential(&mut cmp, diff, se, c.users + t.users, s);
    } else {
        cmp.undefined(
            &["diff_ci", "sequential_ci", "sequential_p_value"],
            "zero variance in both arms",
        );
    }
    relative(&mut cmp, p_c, vm_c, p_t, vm_t, z);
    set_bayes(
        &mut cmp,
        beta_binomial(c.conversions, c.users, t.conversions, t.users),
    );
    cmp.finalize();
    ConversionResult {
        rate,
        comparison: cmp,
    }
}

/// Sample moments of one arm: size, mean and per-unit variance (n − 1 denominator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Units in the arm.
    pub n: f64,
    /// Mean per unit.
    pub mean: f64,
    /// Per-unit sample variance.
    pub variance: f64,
}

impl Moments {
    /// Moments from a count, a sum and a sum of squares. A centred sum of squares within
    /// the rounding noise of the sums (16 ulp of Σx²) is taken as exactly zero: when every
    /// user has the same value, Σx² − (Σx)²/n would otherwise leave a spurious 1e-12 that
    /// makes every difference "significant".
    pub fn from_sums(n: f64, sum: f64, sum_squares: f64) -> Moments {
        if n < 1.0 {
            return Moments {
                n,
                mean: 0.0,
                variance: 0.0,
            };
        }
        let mean = sum / n;
        let centred = sum_squares - sum * mean;
        let variance = if n >= 2.0 && centred > 16.0 * f64::EPSILON * sum_squares.abs() {
            centred / (n - 1.0)
        } else {
            0.0
        };
        Moments { n, mean, variance }
    }
}

/// Result for a mean-per-unit metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanResult {
    /// Treatment mean per unit.
    pub mean: Option<f64>,
    /// Figures against control.
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// Compares means: Welch t-test (scipy `ttest_ind_from_stats(equal_var=False)`) and the
/// Welch–Satterthwaite interval of the difference, delta-method relative interval with the
/// normal quantile, confidence sequence on the Welch standard error, and the normal
/// approximation for chance to beat control and risk.
///
/// `base_c`/`base_t` are the means used for the relative lift; they differ from the arm
/// means only for CUPED, where GrowthBook divides by the unadjusted control mean.
pub fn means(c: Moments, t: Moments, base: Option<(f64, f64)>, s: &Settings) -> MeanResult {
    let mut cmp = Comparison::default();
    let mean = (t.n >= 1.0).then_some(t.mean);
    if c.n < 2.0 || t.n < 2.0 {
        if c.n >= 1.0 && t.n >= 1.0 {
            cmp.diff = Some(t.mean - c.mean);
        } else {
            cmp.undefined(&["diff"], "an arm has no users");
        }
        cmp.undefined(&INFERENCE, "fewer than 2 users in an arm");
        return MeanResult {
            mean,
            comparison: cmp,
        };
    }
    let diff = t.mean - c.mean;
    cmp.diff = Some(diff);
    let (vm_c, vm_t) = (c.variance / c.n, t.variance / t.n);
    let var = vm_c + vm_t;
    let z = z_crit(s.alpha);
    let (base_c, base_t) = base.unwrap_or((c.mean, t.mean));
    if var > 0.0 && var.is_finite() {
        let se = var.sqrt();
        // Welch–Satterthwaite on variances scaled to at most 1, so that squaring neither
        // underflows (1e-300) nor overflows (1e300).
        let scale = vm_c.max(vm_t);
        let (a, b) = (vm_c / scale, vm_t / scale);
        let df = (a + b) * (a + b) / (a * a / (c.n - 1.0) + b * b / (t.n - 1.0));
        cmp.p_value = Some(t_two_sided_p(diff / se, df));
        // At large df the quantile follows from the tabulated z without a Newton solve.
        let t_crit = if df >= 1e4 && z <= crate::dist::CORNISH_FISHER_MAX_Z {
            cornish_fisher(z, df)
        } else {
            t_isf(s.alpha / 2.0, df)
        };
        let half = t_crit * se;
        cmp.diff_ci = Some([diff - half, diff + half]);
        sequential(&mut cmp, diff, se, c.n + t.n, s);
        set_bayes(&mut cmp, normal_approx(diff, se));
    } else {
        cmp.undefined(
            &[
                "diff_ci",
                "p_value",
                "sequential_ci",
                "sequential_p_value",
                "chance_to_beat_control",
                "risk",
                "risk_control",
            ],
            "zero variance in both arms",
        );
    }
    if base_c == 0.0 {
        cmp.undefined(&["relative", "relative_ci"], "control mean is zero");
    } else {
        // Relative lift of the (possibly adjusted) difference over the base control mean.
        let rel = diff / base_c;
        // vm_t/b_c² + b_t²·vm_c/b_c⁴, factored so that b_c⁴ cannot overflow.
        let r = base_t / base_c;
        let v = (vm_t + r * r * vm_c) / (base_c * base_c);
        cmp.relative = Some(rel);
        if v > 0.0 && v.is_finite() {
            let half = z * v.sqrt();
            cmp.relative_ci = Some([rel - half, rel + half]);
        } else {
            cmp.undefined(&["relative_ci"], "zero variance");
        }
    }
    cmp.finalize();
    MeanResult {
        mean,
        comparison: cmp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabulated_quantiles_are_exact() {
        for alpha in [0.05, 0.01, 0.1] {
            let (tab, computed) = (z_crit(alpha), normal_isf(alpha / 2.0));
            assert!(
                (tab - computed).abs() <= 4.0 * f64::EPSILON * tab,
                "{alpha}: {tab} vs {computed}"
            );
        }
    }

    #[test]
    fn spotify_ztest_reference() {
        // control 1000/10000, treatment 1100/10000 (research notes §4.2/§4.3).
        let r = conversion(
            Counts {
                users: 10000.0,
                conversions: 1000.0,
            },
            Counts {
                users: 10000.0,
                conversions: 1100.0,
            },
            &Settings::default(),
        );
        let c = &r.comparison;
        let ci = c.diff_ci.unwrap();
        assert!(
            (ci[0] - 0.001_504).abs() < 1e-6 && (ci[1] - 0.018_496).abs() < 1e-6,
            "{ci:?}"
        );
        let rci = c.relative_ci.unwrap();
        assert!(
            (rci[0] - 0.010_870).abs() < 1e-6 && (rci[1] - 0.189_130).abs() < 1e-6,
            "{rci:?}"
        );
    }

    #[test]
    fn gbstats_welch_reference() {
        // A (1396.87, 52377.9767, 3407), B (2422.7, 134698.29, 3461): Δ 0.29, p 0.020158402643587.
        let a = Moments::from_sums(3407.0, 1396.87, 52377.9767);
        let b = Moments::from_sums(3461.0, 2422.7, 134698.29);
        let r = means(a, b, None, &Settings::default());
        let p = r.comparison.p_value.unwrap();
        assert!((p / 0.020_158_402_643_587 - 1.0).abs() < 1e-9, "{p}");
        let ci = r.comparison.diff_ci.unwrap();
        assert!(
            (ci[0] - 0.04538).abs() < 1e-5 && (ci[1] - 0.53462).abs() < 1e-5,
            "{ci:?}"
        );
    }

    #[test]
    fn undefined_figures_are_null_with_reasons() {
        let r = conversion(
            Counts {
                users: 100.0,
                conversions: 0.0,
            },
            Counts {
                users: 100.0,
                conversions: 0.0,
            },
            &Settings::default(),
        );
        assert_eq!(r.comparison.p_value, None);
        assert_eq!(r.comparison.relative, None);
        assert!(r.comparison.null_reasons.contains_key("p_value"));
        assert!((r.comparison.chance_to_beat_control.unwrap() - 0.5).abs() < 1e-9);
    }
}
