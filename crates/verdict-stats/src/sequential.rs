//! Always-valid inference: the asymptotic confidence sequence of GrowthBook and Eppo.
//!
//! Waudby-Smith et al. (arXiv 2103.06476, eq. 9; the normal mixture of Howard et al.):
//! with N the total sample and N* the tuning sample size,
//! ρ² = (−2 ln α + ln(1 − 2 ln α)) / N*, and the half-width is
//! SE·sqrt((Nρ² + 1)/(Nρ²) · ln((Nρ² + 1)/α²)). The always-valid p-value is GrowthBook's
//! min(1, 1/E) with E = exp(Nρ² z² / (2(Nρ² + 1))) / sqrt(Nρ² + 1), z = Δ/SE, which rejects
//! exactly when the interval excludes zero. Everything is kept in log space, since E overflows
//! a double for |z| beyond about 38.

/// Default tuning sample size N* (GrowthBook's default).
pub const DEFAULT_TUNING: f64 = 5000.0;

/// A confidence sequence at one look: the interval and the always-valid p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    /// Lower and upper bounds of the always-valid interval for the difference.
    pub ci: [f64; 2],
    /// Always-valid two-sided p-value for "difference = 0".
    pub p_value: f64,
}

/// The confidence sequence for a difference `diff` with standard error `se > 0`, after
/// `n_total` units in both arms together.
pub fn confidence_sequence(
    diff: f64,
    se: f64,
    n_total: f64,
    alpha: f64,
    tuning: f64,
) -> Sequential {
    let ln_alpha = alpha.ln();
    let rho2 = (-2.0 * ln_alpha + (1.0 - 2.0 * ln_alpha).ln()) / tuning;
    let nr = n_total * rho2;
    let half = se * ((nr + 1.0) / nr * (nr.ln_1p() - 2.0 * ln_alpha)).sqrt();
    let z = diff / se;
    let ln_e = nr * z * z / (2.0 * (nr + 1.0)) - 0.5 * nr.ln_1p();
    Sequential {
        ci: [diff - half, diff + half],
        p_value: (-ln_e).exp().min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn research_note_reference() {
        // Δ = 0.01, SE = 0.0043347…, N = 20000, α = 0.05, N* = 5000 → (−0.0035552, 0.0235552).
        let se = (0.09_f64 / 10000.0 + 0.0979 / 10000.0).sqrt();
        let s = confidence_sequence(0.01, se, 20000.0, 0.05, 5000.0);
        assert!((s.ci[0] + 0.003_555_2).abs() < 1e-7, "{s:?}");
        assert!((s.p_value - 0.433_72).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn rejects_exactly_when_the_interval_excludes_zero() {
        for &diff in &[0.001, 0.005, 0.0135, 0.0136, 0.02] {
            let s = confidence_sequence(diff, 0.004, 20000.0, 0.05, 5000.0);
            assert_eq!(s.p_value < 0.05, s.ci[0] > 0.0, "{diff}: {s:?}");
        }
    }
}
