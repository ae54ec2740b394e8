//! Black-box tests of `verdict analyze`: JSON in on stdin, JSON out on stdout, errors that
//! name the field with a non-zero exit.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .arg("analyze")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("verdict runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn analyses_the_contract_example() {
    let (code, stdout, stderr) = run(r#"{"alpha": 0.05, "control": "control",
        "weights": {"control": 0.5, "treatment": 0.5},
        "variants": [
          {"key": "control", "users": 10000, "conversions": 1000, "revenue": {"sum": 52340.5, "sum_squares": 8823411.2}},
          {"key": "treatment", "users": 10000, "conversions": 1100, "revenue": {"sum": 55340.5, "sum_squares": 9023411.2}}]}"#);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(
        doc["variants"].as_array().unwrap().len(),
        1,
        "one entry per non-control variant"
    );
    let v = &doc["variants"][0];
    assert_eq!(v["key"], "treatment");
    let p = v["conversion"]["p_value"].as_f64().unwrap();
    // statsmodels proportions_ztest([1100, 1000], [10000, 10000]) = 0.0210751892737977 (pooled;
    // the unpooled Wald test would give 0.021058).
    assert!((p - 0.021_075_189_273_797_7).abs() < 1e-12, "{p}");
    for k in [
        "rate",
        "diff",
        "diff_ci",
        "relative",
        "relative_ci",
        "sequential_ci",
        "sequential_p_value",
        "chance_to_beat_control",
        "risk",
    ] {
        assert!(!v["conversion"][k].is_null(), "conversion.{k}");
    }
    assert!(doc["srm"]["p_value"].is_number() && doc["srm"]["mismatch"] == false);
    assert!(v["revenue_per_user"]["mean"].is_number());
    assert!(doc["power"].is_object());
}

#[test]
fn undefined_figures_are_null() {
    let (code, stdout, _) = run(r#"{"variants": [
        {"key": "control", "users": 100, "conversions": 0},
        {"key": "treatment", "users": 100, "conversions": 5}]}"#);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let c = &doc["variants"][0]["conversion"];
    assert!(c["relative"].is_null() && c["relative_ci"].is_null());
    assert!(c["null_reasons"]["relative"].is_string());
    assert!(c["p_value"].is_number());
    assert!(doc["variants"][0]["revenue_per_user"].is_null());
}

#[test]
fn malformed_input_names_the_field() {
    let cases = [
        (
            r#"{"variants": [{"key": "control", "users": 10}, {"key": "t", "users": -3}]}"#,
            "variants[1].users",
        ),
        (
            r#"{"variants": [{"key": "control", "users": 10, "conversions": 11}, {"key": "t", "users": 3}]}"#,
            "variants[0].conversions",
        ),
        (r#"{"alpha": 2, "variants": []}"#, "alpha"),
        (
            r#"{"variants": [{"key": "control", "users": 10}, {"users": 3}]}"#,
            "variants[1].key",
        ),
        (
            r#"{"control": "base", "variants": [{"key": "a", "users": 1}, {"key": "b", "users": 1}]}"#,
            "control",
        ),
        (
            r#"{"weights": {"a": 1}, "variants": [{"key": "a", "users": 1}, {"key": "b", "users": 1}]}"#,
            "weights.b",
        ),
        (
            r#"{"variants": [{"key": "a", "users": 4, "revenue": {"sum": 10}}, {"key": "b", "users": 1}]}"#,
            "variants[0].revenue.sum_squares",
        ),
        ("not json", "JSON"),
    ];
    for (input, field) in cases {
        let (code, stdout, stderr) = run(input);
        assert_ne!(code, 0, "{input} should fail");
        assert!(stdout.is_empty(), "no output on error");
        assert!(
            stderr.contains(field),
            "{input}: error {stderr:?} should name {field}"
        );
    }
}
