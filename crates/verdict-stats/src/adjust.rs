//! Per-arm moments for CUPED-adjusted means and delta-method ratio metrics.
//!
//! Both reduce an arm to [`Moments`] (a mean and a per-unit variance), which the Welch
//! comparison in [`crate::compare::means`] then uses unchanged, exactly as GrowthBook's
//! `RegressionAdjustedStatistic` and `RatioStatistic` feed its t-test.

use crate::compare::Moments;

/// Sums of one arm for a metric y with a pre-period covariate x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CupedSums {
    /// Units in the arm.
    pub n: f64,
    /// Σy over units.
    pub sum: f64,
    /// Σy².
    pub sum_squares: f64,
    /// Σx of the pre-period covariate.
    pub pre_sum: f64,
    /// Σx².
    pub pre_sum_squares: f64,
    /// Σxy.
    pub sum_products: f64,
}

/// CUPED for two arms with θ pooled over both (GrowthBook `compute_theta`):
/// θ = Cov(y, x) / Var(x) over the pooled units, 0 when either pooled variance is 0.
/// Returns θ and each arm's adjusted moments: mean ȳ − θx̄, variance σ_y² + θ²σ_x² − 2θσ_xy.
pub fn cuped(c: &CupedSums, t: &CupedSums) -> (f64, Moments, Moments) {
    let n = c.n + t.n;
    let (sy, syy) = (c.sum + t.sum, c.sum_squares + t.sum_squares);
    let (sx, sxx) = (c.pre_sum + t.pre_sum, c.pre_sum_squares + t.pre_sum_squares);
    let sxy = c.sum_products + t.sum_products;
    // The 1/(n−1) factors of covariance and variance cancel in θ.
    let var_x = sxx - sx * sx / n;
    let var_y = syy - sy * sy / n;
    let theta = if n >= 2.0 && var_x > 0.0 && var_y > 0.0 {
        (sxy - sx * sy / n) / var_x
    } else {
        0.0
    };
    // A subnormal pre-period variance can overflow θ; no adjustment beats a wrong one.
    let theta = if theta.is_finite() { theta } else { 0.0 };
    (theta, adjusted(c, theta), adjusted(t, theta))
}

fn adjusted(a: &CupedSums, theta: f64) -> Moments {
    let y = Moments::from_sums(a.n, a.sum, a.sum_squares);
    let x = Moments::from_sums(a.n, a.pre_sum, a.pre_sum_squares);
    let cov = if a.n >= 2.0 {
        (a.sum_products - a.sum * a.pre_sum / a.n) / (a.n - 1.0)
    } else {
        0.0
    };
    let variance = (y.variance + theta * theta * x.variance - 2.0 * theta * cov).max(0.0);
    Moments {
        n: a.n,
        mean: y.mean - theta * x.mean,
        variance,
    }
}

/// Sums of one arm for a ratio metric ΣM / ΣD, both measured per unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioSums {
    /// Units in the arm.
    pub n: f64,
    /// ΣM, numerator.
    pub m_sum: f64,
    /// ΣM².
    pub m_sum_squares: f64,
    /// ΣD, denominator.
    pub d_sum: f64,
    /// ΣD².
    pub d_sum_squares: f64,
    /// ΣM·D.
    pub sum_products: f64,
}

/// Ratio ΣM/ΣD with the delta-method per-unit variance (GrowthBook `RatioStatistic`):
/// σ_M²/μ_D² + σ_D²μ_M²/μ_D⁴ − 2σ_MD·μ_M/μ_D³. `None` when ΣD is zero.
pub fn ratio(a: &RatioSums) -> Option<Moments> {
    if a.d_sum == 0.0 || a.n < 1.0 {
        return None;
    }
    let m = Moments::from_sums(a.n, a.m_sum, a.m_sum_squares);
    let d = Moments::from_sums(a.n, a.d_sum, a.d_sum_squares);
    let cov = if a.n >= 2.0 {
        (a.sum_products - a.m_sum * a.d_sum / a.n) / (a.n - 1.0)
    } else {
        0.0
    };
    let (mm, md) = (m.mean, d.mean);
    let md2 = md * md;
    let variance = (m.variance / md2 + d.variance * mm * mm / (md2 * md2)
        - 2.0 * cov * mm / (md2 * md))
        .max(0.0);
    Some(Moments {
        n: a.n,
        mean: a.m_sum / a.d_sum,
        variance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbstats_theta_reference() {
        // gbstats `test_sequential_test_runs_ra`: θ = −0.0114032 (research notes §4.1).
        let a = CupedSums {
            n: 3000.0,
            sum: 1396.87,
            sum_squares: 52377.9767,
            pre_sum: 16.87,
            pre_sum_squares: 527.9767,
            sum_products: 1.0,
        };
        let b = CupedSums {
            n: 3461.0,
            sum: 2422.7,
            sum_squares: 134698.29,
            pre_sum: 22.7,
            pre_sum_squares: 1348.29,
            sum_products: 1.0,
        };
        let (theta, _, _) = cuped(&a, &b);
        assert!((theta + 0.011_403_2).abs() < 1e-7, "{theta}");
    }

    #[test]
    fn constant_covariate_leaves_the_metric_alone() {
        let arm = |n: f64, s: f64, ss: f64| CupedSums {
            n,
            sum: s,
            sum_squares: ss,
            pre_sum: 2.0 * n,
            pre_sum_squares: 4.0 * n,
            sum_products: 2.0 * s,
        };
        let (theta, c, t) = cuped(&arm(100.0, 50.0, 80.0), &arm(120.0, 70.0, 100.0));
        assert_eq!(theta, 0.0);
        assert_eq!(c, Moments::from_sums(100.0, 50.0, 80.0));
        assert_eq!(t, Moments::from_sums(120.0, 70.0, 100.0));
    }
}
