//! Sample size for a conversion metric, as statsmodels `NormalIndPower` (two-sided).
//!
//! The effect size is Cohen's h = 2·asin(sqrt(p₂)) − 2·asin(sqrt(p₁)) with
//! p₂ = p₁·(1 + relative MDE) (statsmodels `proportion_effectsize`), and the users per
//! variant n solve Q(z − h·sqrt(n/2)) + Q(z + h·sqrt(n/2)) = power with z the normal
//! quantile 1 − α/2: both rejection tails count, as in statsmodels.

use crate::dist::{normal_isf, normal_pdf, normal_sf};

/// Required users per variant, with the effect size used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSize {
    /// Cohen's h.
    pub effect_size: f64,
    /// Users per variant (not rounded), as `NormalIndPower.solve_power(nobs1=None)`.
    pub users_per_variant: f64,
}

/// Why a sample size is undefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerUndefined {
    /// The baseline rate is not strictly between 0 and 1.
    Baseline,
    /// The MDE is zero or makes the target rate leave [0, 1].
    Mde,
    /// The target power is not between alpha and 1.
    Power,
}

/// Users per variant to detect a relative change `relative_mde` of `baseline` with two-sided
/// level `alpha` and the given `power`, equal allocation.
pub fn users_per_variant(
    baseline: f64,
    relative_mde: f64,
    alpha: f64,
    power: f64,
) -> Result<SampleSize, PowerUndefined> {
    if !(baseline > 0.0 && baseline < 1.0) {
        return Err(PowerUndefined::Baseline);
    }
    let target = baseline * (1.0 + relative_mde);
    if relative_mde == 0.0 || !(0.0..=1.0).contains(&target) {
        return Err(PowerUndefined::Mde);
    }
    if !(power > alpha && power < 1.0) {
        return Err(PowerUndefined::Power);
    }
    let h = (2.0 * target.sqrt().asin() - 2.0 * baseline.sqrt().asin()).abs();
    let z = normal_isf(alpha / 2.0);
    // Solve for d = h·sqrt(n/2); power(d) is increasing, start from the one-tail answer.
    let mut d = (z + normal_isf(1.0 - power)).max(1e-3);
    for _ in 0..200 {
        let f = normal_sf(z - d) + normal_sf(z + d) - power;
        let fp = normal_pdf(z - d) - normal_pdf(z + d);
        let next = d - f / fp;
        // Power is increasing and convex near 0: halve instead of stepping out of (0, ∞).
        let next = if next.is_finite() && next > 0.0 {
            next
        } else {
            0.5 * d
        };
        let done = (next - d).abs() <= 1e-15 * d;
        d = next;
        if done {
            break;
        }
    }
    Ok(SampleSize {
        effect_size: h,
        users_per_variant: 2.0 * (d / h) * (d / h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn research_note_reference() {
        // 0.10 → 0.11, α 0.05, power 0.8: Cohen's h with NormalIndPower gives 14744.10.
        let s = users_per_variant(0.10, 0.10, 0.05, 0.8).unwrap();
        assert!((s.users_per_variant - 14744.10).abs() < 0.01, "{s:?}");
    }
}
