//! Properties of assignment that every user of verdict relies on.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use verdict_core::assign::{CompiledExperiment, Namespace, UserContext};
use verdict_core::ExperimentSpec;

fn experiment(
    key: &str,
    n: usize,
    coverage: f64,
    weights: &[f64],
    version: u32,
) -> CompiledExperiment {
    let keys = (0..n).map(|i| format!("v{i}")).collect();
    let mut e = CompiledExperiment::new(key, keys).with_traffic(Some(coverage), Some(weights));
    e.hash_version = version;
    e
}

fn normalized(raw: &[u32]) -> Vec<f64> {
    let total: u32 = raw.iter().sum();
    raw.iter()
        .map(|&w| f64::from(w) / f64::from(total))
        .collect()
}

/// Chi-square survival function for 1..=3 degrees of freedom, in closed form.
fn chi2_sf(x: f64, df: usize) -> f64 {
    let erfc = |z: f64| {
        // Abramowitz-Stegun 7.1.26 is too coarse for a test oracle; integrate instead.
        // erfc(z) = 2/sqrt(pi) * int_z^inf e^{-t^2} dt, Simpson on [z, z + 10].
        let (a, b, steps) = (z, z + 10.0, 20_000);
        let h = (b - a) / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(a) + f(b);
        for i in 1..steps {
            s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    match df {
        1 => erfc((x / 2.0).sqrt()),
        2 => (-x / 2.0).exp(),
        3 => erfc((x / 2.0).sqrt()) + (2.0 * x / std::f64::consts::PI).sqrt() * (-x / 2.0).exp(),
        _ => unreachable!("closed forms only up to 3 degrees of freedom"),
    }
}

#[test]
fn chi2_sf_matches_known_quantiles() {
    // scipy.stats.chi2.sf(3.841458820694124, 1) == 0.05, sf(5.991464547107979, 2) == 0.05,
    // sf(7.814727903251178, 3) == 0.05.
    for (x, df) in [
        (3.841458820694124, 1),
        (5.991464547107979, 2),
        (7.814727903251178, 3),
    ] {
        assert!(
            (chi2_sf(x, df) - 0.05).abs() < 1e-9,
            "df {df}: {}",
            chi2_sf(x, df)
        );
    }
}

/// A million users split as configured: Pearson's chi-square does not reject the
/// configured weights at the SRM threshold (p < 0.001), for both hash versions.
#[test]
fn a_million_users_split_as_configured() {
    for (weights, version) in [
        (vec![0.5, 0.5], 2),
        (vec![0.2, 0.3, 0.5], 2),
        (vec![0.25, 0.25, 0.25, 0.25], 2),
        (vec![0.1, 0.9], 1),
        (vec![0.2, 0.3, 0.5], 1),
    ] {
        let e = experiment("exp-million", weights.len(), 1.0, &weights, version);
        let n = 1_000_000;
        let mut counts = vec![0u64; weights.len()];
        for i in 0..n {
            let d = e.decide_user(&format!("user-{i}"));
            counts[d.variation.expect("full coverage puts everyone in")] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&weights)
            .map(|(&o, &w)| {
                let expected = w * n as f64;
                (o as f64 - expected).powi(2) / expected
            })
            .sum();
        let p = chi2_sf(chi2, weights.len() - 1);
        assert!(
            p > 0.001,
            "weights {weights:?} v{version}: counts {counts:?}, chi2 {chi2}, p {p}"
        );
    }
}

#[test]
fn layers_are_mutually_exclusive() {
    let mut a = experiment("exp-a", 2, 1.0, &[0.5, 0.5], 2);
    let mut b = experiment("exp-b", 2, 1.0, &[0.5, 0.5], 2);
    a.namespace = Some(Namespace {
        id: "homepage".into(),
        range: (0.0, 0.4),
    });
    b.namespace = Some(Namespace {
        id: "homepage".into(),
        range: (0.4, 1.0),
    });
    let (mut in_a, mut in_b) = (0, 0);
    for i in 0..100_000 {
        let user = format!("u{i}");
        let (da, db) = (a.decide_user(&user), b.decide_user(&user));
        assert!(
            !(da.in_experiment() && db.in_experiment()),
            "{user} is in both layers' experiments"
        );
        in_a += usize::from(da.in_experiment());
        in_b += usize::from(db.in_experiment());
    }
    assert_eq!(in_a + in_b, 100_000, "the two ranges cover the namespace");
    assert!((38_000..42_000).contains(&in_a), "{in_a}");
}

fn user_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,24}",
        "\\PC{1,12}", // any printable Unicode, astral planes included
        Just("สวัสดี".to_owned()),
        Just("😀-user".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Raising coverage never moves a user who is already in the experiment.
    #[test]
    fn raising_coverage_never_moves_an_enrolled_user(
        user in user_id(),
        raw in prop::collection::vec(1u32..100, 2..5),
        low in 0.0f64..1.0,
        delta in 0.0f64..1.0,
        version in 1u32..=2,
    ) {
        let weights = normalized(&raw);
        let high = (low + delta).min(1.0);
        let before = experiment("exp-cov", weights.len(), low, &weights, version).decide_user(&user);
        let after = experiment("exp-cov", weights.len(), high, &weights, version).decide_user(&user);
        if before.in_experiment() {
            prop_assert_eq!(before.variation, after.variation);
        }
    }

    /// The same user always gets the same variant, also after the definition has been
    /// stored and read back (an event round trip), and whatever else is in the context.
    #[test]
    fn the_same_user_always_gets_the_same_variant(user in user_id(), raw in prop::collection::vec(1u32..100, 2..5), noise in any::<u32>()) {
        let weights = normalized(&raw);
        let variants: Vec<Value> = weights.iter().enumerate().map(|(i, w)| json!({"key": format!("v{i}"), "model": "m", "weight": w})).collect();
        let spec = json!({"experiment_id": "exp-same", "variants": variants, "hash_version": 2});
        let def = ExperimentSpec::from_json(spec).unwrap().validate().unwrap();
        let stored = serde_json::to_string(&def).unwrap();
        let reread: verdict_core::ExperimentDefinition = serde_json::from_str(&stored).unwrap();
        let first = def.compile().decide_user(&user);
        let attrs: Map<String, Value> = [("noise".to_owned(), Value::from(noise))].into_iter().collect();
        for _ in 0..3 {
            prop_assert_eq!(reread.compile().decide_user(&user), first);
            prop_assert_eq!(def.compile().decide(&UserContext::new(Some(&user), &attrs)), first);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The batch fast path decides exactly as one decision at a time.
    #[test]
    fn batch_decisions_equal_single_decisions(
        users in prop::collection::vec(user_id(), 1..40),
        raw in prop::collection::vec(1u32..100, 2..5),
        coverage in 0.0f64..1.0,
        version in 1u32..=2,
    ) {
        let weights = normalized(&raw);
        let e = experiment("exp-batch", weights.len(), coverage, &weights, version);
        let ids: Vec<&str> = users.iter().map(String::as_str).chain([""]).collect();
        let mut out = Vec::new();
        e.decide_users(&ids, &mut out);
        let single: Vec<_> = ids.iter().map(|u| e.decide_user(u)).collect();
        prop_assert_eq!(out, single);
    }
}
