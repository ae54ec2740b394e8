//! Sample ratio mismatch: Pearson chi-square goodness of fit of users per variant against
//! the configured weights (scipy `chisquare`), flagged when p < 0.001 (GrowthBook, Eppo).

use crate::dist::chi2_sf;

/// The p-value below which a sample ratio mismatch is flagged.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Result of the chi-square test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Srm {
    /// Pearson's statistic Σ (o − e)² / e.
    pub chi_square: f64,
    /// Degrees of freedom: variants with positive weight, minus one.
    pub df: f64,
    /// Upper-tail p-value.
    pub p_value: f64,
}

/// Why an SRM test could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrmUndefined {
    /// No users at all.
    NoUsers,
    /// Fewer than two variants have a positive weight.
    TooFewVariants,
}

/// Chi-square test of `users` against `weights` (any positive scale; normalised here).
/// Variants with weight zero and no users are left out, as GrowthBook does; a variant with
/// weight zero that received users is an infinite mismatch (p = 0).
pub fn chi_square(users: &[f64], weights: &[f64]) -> Result<Srm, SrmUndefined> {
    let total_w: f64 = weights.iter().sum();
    let total_n: f64 = users.iter().sum();
    if total_n <= 0.0 {
        return Err(SrmUndefined::NoUsers);
    }
    let mut stat = 0.0;
    let mut k = 0usize;
    for (&o, &w) in users.iter().zip(weights) {
        if w <= 0.0 {
            if o > 0.0 {
                stat = f64::INFINITY;
            }
            continue;
        }
        k += 1;
        let e = total_n * w / total_w;
        stat += (o - e) * (o - e) / e;
    }
    if k < 2 {
        return Err(SrmUndefined::TooFewVariants);
    }
    let df = (k - 1) as f64;
    let p_value = if stat.is_infinite() {
        0.0
    } else {
        chi2_sf(stat, df)
    };
    Ok(Srm {
        chi_square: stat,
        df,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let s = chi_square(&[1000.0, 1200.0], &[0.5, 0.5]).unwrap();
        assert!(
            (s.p_value / 2.007_865_612_426_481e-5 - 1.0).abs() < 1e-12,
            "{s:?}"
        );
        let s = chi_square(&[600.0, 400.0], &[1.0, 1.0]).unwrap();
        assert!((s.p_value / 2.5396e-10 - 1.0).abs() < 1e-3, "{s:?}");
    }
}
