//! Multiple-testing adjustments: Holm step-down and Benjamini–Hochberg step-up.
//!
//! Both match statsmodels `multipletests(method="holm" | "fdr_bh")` and GrowthBook's
//! `adjustPValuesHolmBonferroni` / `adjustPValuesBenjaminiHochberg`.

/// Holm–Bonferroni adjusted p-values, in the order given.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        // Running maximum keeps the step-down adjusted values monotone.
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Benjamini–Hochberg adjusted p-values (false discovery rate), in the order given.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut out = vec![0.0; m];
    let mut running = 1.0_f64;
    for (k, &i) in order.iter().enumerate() {
        let rank = (m - k) as f64;
        running = running.min(p[i] * m as f64 / rank).min(1.0);
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsmodels_reference() {
        let p = [0.01, 0.04, 0.03, 0.005, 0.2];
        let h = holm(&p);
        let bh = benjamini_hochberg(&p);
        for (a, b) in h.iter().zip([0.04, 0.09, 0.09, 0.025, 0.2]) {
            assert!((a - b).abs() < 1e-15, "{h:?}");
        }
        for (a, b) in bh.iter().zip([0.025, 0.05, 0.05, 0.025, 0.2]) {
            assert!((a - b).abs() < 1e-15, "{bh:?}");
        }
    }
}
