//! GrowthBook's language-agnostic SDK test suite (`cases.json`, spec 0.8.0), run
//! against verdict's router.
//!
//! The file is read at test time from `../shared/conformance/` beside the checkout when
//! it exists (and must then be byte-identical to the vendored copy), else from the
//! vendored copy in `tests/conformance/` (MIT, see `SOURCE.md` there).
//!
//! Sections run: hash, getBucketRange, chooseVariation, evalCondition, inNamespace,
//! getEqualWeights, run, getQueryStringOverride. Skipped sections, with reasons:
//! - feature, stickyBucket, contextualBandit: feature flags, sticky-bucket documents and
//!   contextual bandits are GrowthBook SDK features verdict does not offer (verdict
//!   assigns experiments; its sticky state is the `UserAssigned` event).
//! - decrypt: encrypted feature payloads are a GrowthBook API transport concern.
//! - urlRedirect: browser redirects.
//!
//! No case of a section that runs is skipped.

use serde_json::Value;
use std::path::PathBuf;
use verdict_core::assign::condition::eval_condition;
use verdict_core::assign::growthbook::{compile_sdk_experiment, sdk_context};
use verdict_core::assign::hash::{
    bucket_ranges, choose_variation, equal_weights, hash, in_namespace,
};
use verdict_core::assign::router::query_string_override;
use verdict_core::js;

fn vendored() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/growthbook-cases.json")
}

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/growthbook-cases.json")
}

fn cases() -> Value {
    let path = if shared().exists() {
        shared()
    } else {
        vendored()
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("cases.json parses");
    assert_eq!(v["specVersion"], "0.8.0");
    v
}

fn section(name: &str) -> Vec<Value> {
    let all = cases();
    let items = all[name]
        .as_array()
        .unwrap_or_else(|| panic!("section {name}"))
        .clone();
    assert!(!items.is_empty(), "section {name} is empty");
    items
}

fn floor8(x: f64) -> f64 {
    (x * 1e8).floor() / 1e8
}

#[test]
fn vendored_copy_matches_shared() {
    if shared().exists() {
        assert_eq!(
            std::fs::read(shared()).unwrap(),
            std::fs::read(vendored()).unwrap()
        );
    }
}

#[test]
fn hash_cases() {
    for case in section("hash") {
        let (seed, value, version) = (
            case[0].as_str().unwrap(),
            case[1].as_str().unwrap(),
            case[2].as_u64().unwrap(),
        );
        let got = hash(seed, value, version as u32);
        assert_eq!(got, case[3].as_f64(), "hash {case}");
    }
}

#[test]
fn get_bucket_range_cases() {
    for case in section("getBucketRange") {
        let args = &case[1];
        let n = args[0].as_u64().unwrap() as usize;
        let coverage = args[1].as_f64();
        let weights: Option<Vec<f64>> = args[2]
            .as_array()
            .map(|w| w.iter().map(|x| x.as_f64().unwrap()).collect());
        let got: Vec<(f64, f64)> = bucket_ranges(n, coverage, weights.as_deref())
            .into_iter()
            .map(|(a, b)| (floor8(a), floor8(b)))
            .collect();
        let want: Vec<(f64, f64)> = case[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    floor8(r[0].as_f64().unwrap()),
                    floor8(r[1].as_f64().unwrap()),
                )
            })
            .collect();
        assert_eq!(got, want, "getBucketRange {}", case[0]);
    }
}

#[test]
fn choose_variation_cases() {
    for case in section("chooseVariation") {
        let n = case[1].as_f64().unwrap();
        let ranges: Vec<(f64, f64)> = case[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_f64().unwrap(), r[1].as_f64().unwrap()))
            .collect();
        let got = choose_variation(n, &ranges).map_or(-1, |i| i as i64);
        assert_eq!(
            got,
            case[3].as_i64().unwrap(),
            "chooseVariation {}",
            case[0]
        );
    }
}

#[test]
fn eval_condition_cases() {
    let mut failures = Vec::new();
    let all = section("evalCondition");
    for case in &all {
        let cond = case[1].as_object().expect("condition object");
        let groups = case
            .get(4)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let got = eval_condition(&case[2], cond, &groups);
        if got != case[3].as_bool().unwrap() {
            failures.push(format!("{}: got {got}", case[0]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} evalCondition cases fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn in_namespace_cases() {
    for case in section("inNamespace") {
        let ns = &case[2];
        let got = in_namespace(
            case[1].as_str().unwrap(),
            ns[0].as_str().unwrap(),
            (ns[1].as_f64().unwrap(), ns[2].as_f64().unwrap()),
        );
        assert_eq!(got, case[3].as_bool().unwrap(), "inNamespace {}", case[0]);
    }
}

#[test]
fn get_equal_weights_cases() {
    for case in section("getEqualWeights") {
        let n = case[0].as_i64().unwrap();
        let got: Vec<f64> = equal_weights(n.max(0) as usize)
            .into_iter()
            .map(floor8)
            .collect();
        let want: Vec<f64> = case[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| floor8(x.as_f64().unwrap()))
            .collect();
        assert_eq!(got, want, "getEqualWeights {n}");
    }
}

#[test]
fn get_query_string_override_cases() {
    for case in section("getQueryStringOverride") {
        let got = query_string_override(
            case[1].as_str().unwrap(),
            case[2].as_str().unwrap(),
            case[3].as_u64().unwrap() as usize,
        );
        assert_eq!(got, case[4].as_i64(), "getQueryStringOverride {}", case[0]);
    }
}

#[test]
fn run_cases() {
    let mut failures = Vec::new();
    let all = section("run");
    for case in &all {
        let (name, ctx_json, exp_json) = (&case[0], &case[1], &case[2]);
        let exp = compile_sdk_experiment(exp_json);
        let ctx = sdk_context(ctx_json);
        let d = exp.decide(&ctx);
        let variations = exp_json["variations"].as_array().unwrap();
        // A user outside the experiment gets variation 0, as the SDK returns it.
        let value = variations
            .get(d.variation.unwrap_or(0))
            .cloned()
            .unwrap_or(Value::Null);
        let ok = js::stringify(&value) == js::stringify(&case[3])
            && d.in_experiment() == case[4].as_bool().unwrap()
            && d.hash_used == case[5].as_bool().unwrap();
        if !ok {
            failures.push(format!(
                "{name}: got value {value} in={} hashUsed={} ({:?})",
                d.in_experiment(),
                d.hash_used,
                d.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} run cases fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
