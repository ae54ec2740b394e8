//! Property tests: p-values in [0, 1], symmetry under swapping arms, the sequential interval
//! containing the fixed-horizon one, and no NaN ever (every `null` has a reason).

use proptest::prelude::*;
use verdict_stats::compare::{conversion, means, Comparison, Counts, Moments, Settings};
use verdict_stats::dist::{t_isf, t_sf};
use verdict_stats::multiple::{benjamini_hochberg, holm};

fn counts() -> impl Strategy<Value = Counts> {
    // Users from 2 to 1e9 on a log scale; conversions anywhere from none to all.
    (1.0f64..9.0, 0.0f64..=1.0).prop_map(|(e, share)| {
        let users = 10f64.powf(e).round().max(2.0);
        Counts {
            users,
            conversions: (users * share).round(),
        }
    })
}

fn moments(min_n: f64) -> impl Strategy<Value = Moments> {
    // Variances include exact zero and the extremes where naive squaring under/overflows;
    // means include a subnormal one (relative lift overflows).
    (
        min_n.log10()..7.0,
        prop_oneof![-1e3f64..1e3, Just(1e-310)],
        prop_oneof![Just(0.0), 1e-3f64..1e6, Just(1e-300), Just(1e300)],
    )
        .prop_map(|(e, mean, var)| Moments {
            n: 10f64.powf(e).round(),
            mean,
            variance: var,
        })
}

fn settings() -> impl Strategy<Value = Settings> {
    (0.001f64..0.2, 100.0f64..1e5).prop_map(|(alpha, t)| Settings {
        alpha,
        sequential_tuning: t,
    })
}

fn well_formed(c: &Comparison) -> Result<(), TestCaseError> {
    let fields: [(&str, Option<f64>); 7] = [
        ("diff", c.diff),
        ("relative", c.relative),
        ("p_value", c.p_value),
        ("sequential_p_value", c.sequential_p_value),
        ("chance_to_beat_control", c.chance_to_beat_control),
        ("risk", c.risk),
        ("risk_control", c.risk_control),
    ];
    for (name, v) in fields {
        match v {
            Some(x) => prop_assert!(x.is_finite(), "{name} = {x}"),
            None => prop_assert!(
                c.null_reasons.contains_key(name),
                "{name} null without a reason"
            ),
        }
    }
    let intervals = [
        ("diff_ci", c.diff_ci),
        ("relative_ci", c.relative_ci),
        ("sequential_ci", c.sequential_ci),
    ];
    for (name, v) in intervals {
        match v {
            Some([lo, hi]) => prop_assert!(
                lo.is_finite() && hi.is_finite() && lo <= hi,
                "{name} = [{lo}, {hi}]"
            ),
            None => prop_assert!(
                c.null_reasons.contains_key(name),
                "{name} null without a reason"
            ),
        }
    }
    for p in [c.p_value, c.sequential_p_value, c.chance_to_beat_control]
        .into_iter()
        .flatten()
    {
        prop_assert!((0.0..=1.0).contains(&p), "probability {p}");
    }
    Ok(())
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs())),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn conversion_is_well_formed_and_symmetric(c in counts(), t in counts(), s in settings()) {
        let ab = conversion(c, t, &s).comparison;
        let ba = conversion(t, c, &s).comparison;
        well_formed(&ab)?;
        well_formed(&ba)?;
        prop_assert!(close(ab.p_value, ba.p_value, 1e-12), "{:?} vs {:?}", ab.p_value, ba.p_value);
        prop_assert!(close(ab.sequential_p_value, ba.sequential_p_value, 1e-12));
        prop_assert!(close(ab.diff, ba.diff.map(|d| -d), 1e-12));
        prop_assert!(close(ab.chance_to_beat_control, ba.chance_to_beat_control.map(|p| 1.0 - p), 1e-8),
            "{:?} vs {:?}", ab.chance_to_beat_control, ba.chance_to_beat_control);
        prop_assert!(close(ab.risk, ba.risk_control, 1e-8));
        if let (Some(f), Some(q)) = (ab.diff_ci, ab.sequential_ci) {
            prop_assert!(q[0] <= f[0] && f[1] <= q[1], "fixed {f:?} not inside sequential {q:?}");
        }
    }

    #[test]
    fn means_are_well_formed_and_symmetric(c in moments(2.0), t in moments(2.0), s in settings()) {
        let ab = means(c, t, None, &s).comparison;
        let ba = means(t, c, None, &s).comparison;
        well_formed(&ab)?;
        well_formed(&ba)?;
        prop_assert!(close(ab.p_value, ba.p_value, 1e-10), "{:?} vs {:?}", ab.p_value, ba.p_value);
        prop_assert!(close(ab.sequential_p_value, ba.sequential_p_value, 1e-12));
        prop_assert!(close(ab.chance_to_beat_control, ba.chance_to_beat_control.map(|p| 1.0 - p), 1e-12));
    }

    /// With a t quantile the fixed interval can be the wider one when an arm is tiny (df ≈ 1),
    /// so the containment property is stated for arms of at least 50 users (docs/STATS.md).
    #[test]
    fn sequential_contains_fixed_for_means(c in moments(50.0), t in moments(50.0), s in settings()) {
        let r = means(c, t, None, &s).comparison;
        if let (Some(f), Some(q)) = (r.diff_ci, r.sequential_ci) {
            let slack = 1e-12 * (f[0].abs() + f[1].abs());
            prop_assert!(q[0] <= f[0] + slack && f[1] <= q[1] + slack, "fixed {f:?} not inside sequential {q:?}");
        }
    }

    #[test]
    fn t_quantile_inverts_the_tail(df in prop_oneof![1.0f64..30.0, 30.0f64..1e4, 1e4f64..1e12], q in 1e-12f64..0.5) {
        let t = t_isf(q, df);
        let back = t_sf(t, df);
        prop_assert!(((back - q) / q).abs() < 1e-10, "df {df} q {q}: t {t} gives {back}");
    }

    #[test]
    fn adjusted_p_values_are_valid(p in proptest::collection::vec(0.0f64..=1.0, 1..20)) {
        let h = holm(&p);
        let b = benjamini_hochberg(&p);
        for i in 0..p.len() {
            prop_assert!(h[i] >= p[i] && h[i] <= 1.0);
            // BH never exceeds Holm; p·m/m may round by an ulp, hence the relative slack.
            prop_assert!(b[i] >= p[i] * (1.0 - 1e-15) && b[i] <= h[i] * (1.0 + 1e-15), "{p:?}");
        }
    }
}

proptest! {
    /// The sample size reaches exactly the target power (statsmodels' two-tailed power).
    #[test]
    fn sample_size_attains_the_target_power(
        base in 1e-4f64..0.9, mde in prop_oneof![-0.5f64..-0.01, 0.01f64..0.5], alpha in 0.001f64..0.2, power in 0.5f64..0.99,
    ) {
        use verdict_stats::dist::{normal_isf, normal_sf};
        prop_assume!(base * (1.0 + mde) < 1.0);
        let s = verdict_stats::power::users_per_variant(base, mde, alpha, power).unwrap();
        let z = normal_isf(alpha / 2.0);
        let d = s.effect_size * (s.users_per_variant / 2.0).sqrt();
        let achieved = normal_sf(z - d) + normal_sf(z + d);
        prop_assert!((achieved - power).abs() < 1e-12, "{s:?}: power {achieved}");
        let more = verdict_stats::power::users_per_variant(base, mde, alpha, (power + 0.005).min(0.995)).unwrap();
        prop_assert!(more.users_per_variant >= s.users_per_variant);
    }
}
