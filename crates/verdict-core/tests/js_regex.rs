//! `$regex` / `$regexi` against JavaScript's own `RegExp`: the answers in
//! `fixtures/js-regex-cases.json` come from Node (`tools/growthbook-js/gen-regex-cases.js`),
//! plus the linear-time and refusal properties that protect the request path.

use serde_json::{json, Value};
use verdict_core::assign::condition::{validate_condition, CompiledCondition};
use verdict_core::assign::jsregex::{JsRegex, JsRegexError};

#[test]
fn matches_javascript_regexp_case_for_case() {
    let text = include_str!("fixtures/js-regex-cases.json");
    let cases: Vec<Value> = serde_json::from_str(text).unwrap();
    assert!(cases.len() > 150);
    let mut failures = Vec::new();
    for c in &cases {
        let pattern = c["pattern"].as_str().unwrap();
        let insensitive = c["insensitive"].as_bool().unwrap();
        let input = c["input"].as_str().unwrap();
        let (valid, expected) = (
            c["valid"].as_bool().unwrap(),
            c["matches"].as_bool().unwrap(),
        );
        match (JsRegex::new(pattern, insensitive), valid) {
            (Ok(re), true) if re.is_match(input) == expected => {}
            (Err(JsRegexError::Syntax(_)), false) => {}
            (got, _) => failures.push(format!(
                "/{pattern}/{} on {input:?}: JS valid={valid} matches={expected}, got {:?}",
                if insensitive { "i" } else { "" },
                got.map(|re| re.is_match(input))
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn javascript_semantics_that_the_engine_alone_would_get_wrong() {
    let m = |p: &str, i: bool, s: &str| JsRegex::new(p, i).unwrap().is_match(s);
    // \d is ASCII: Arabic-Indic digits are not digits.
    assert!(!m(r"\d", false, "٣"));
    assert!(m(r"\d", false, "3"));
    // `.` excludes \r (and \n, U+2028, U+2029) but not U+0085.
    assert!(!m("^.$", false, "\r"));
    assert!(!m("^.$", false, "\u{2028}"));
    assert!(m("^.$", false, "\u{85}"));
    // $regexi: JavaScript's canonicalisation, not Unicode case folding.
    assert!(m("^(mobile|tablet)$", true, "MOBILE"));
    assert!(!m("^s$", true, "ſ"));
    assert!(!m("^k$", true, "\u{212A}"));
    assert!(m("^σ$", true, "ς"));
    // Code units: an astral character is two of them.
    assert!(!m("^.$", false, "😀"));
    assert!(m("^..$", false, "😀"));
}

#[test]
fn backtracking_features_are_refused() {
    for p in [
        r"(a)\1",
        "(?=a)",
        "(?!a)b",
        "(?<=a)b",
        "(?<!a)b",
        r"(?<n>a)\k<n>",
    ] {
        assert!(
            matches!(JsRegex::new(p, false), Err(JsRegexError::Backtracking(_))),
            "{p}"
        );
        let e = validate_condition(&json!({"a": {"$regex": p}}), "condition").unwrap_err();
        assert_eq!(e.path, "condition.a.$regex");
        assert!(e.message.contains("backtracking"), "{}", e.message);
        // Should one reach evaluation anyway (raw input), it matches nothing.
        let c = CompiledCondition::new(json!({"a": {"$regex": p}}).as_object().unwrap().clone());
        assert!(!c.eval(&json!({"a": "aab"}), &Default::default()));
    }
}

#[test]
fn the_catastrophic_pattern_is_refused_and_evaluation_stays_linear() {
    let cond = json!({"a": {"$regex": "^(a+)+$"}});
    let e = validate_condition(&cond, "condition").unwrap_err();
    assert_eq!(e.path, "condition.a.$regex");
    assert!(e.message.contains("nests"), "{}", e.message);
    for p in ["(a*)*", "((a+)b)+", "(?:x|(a+)){2,}"] {
        assert!(
            validate_condition(&json!({"a": {"$regex": p}}), "c").is_err(),
            "{p}"
        );
    }
    for p in ["^a+$", "(ab)+", "(a+)?", "(a{2,5})+", "(a|b)*c"] {
        assert!(
            validate_condition(&json!({"a": {"$regex": p}}), "c").is_ok(),
            "{p}"
        );
    }
    // On the linear-time engine the pathological input is just long: `^a+$` matches
    // 100k characters, and `^(a+)+$` (raw input) answers false instead of backtracking
    // 2^n ways as a backtracking engine does on the trailing `!`.
    let long = "a".repeat(100_000);
    assert!(JsRegex::new("^a+$", false).unwrap().is_match(&long));
    let nested = JsRegex::new("^(a+)+$", false).unwrap();
    assert!(nested.nests_unbounded_repetition());
    assert!(nested.is_match(&long));
    assert!(!nested.is_match(&format!("{long}!")));
}

#[test]
fn huge_patterns_are_refused_not_compiled() {
    assert_eq!(
        JsRegex::new("(?:a{1000}){1000}", false).unwrap_err(),
        JsRegexError::TooLarge
    );
    let e = validate_condition(&json!({"a": {"$regexi": "x{100000}"}}), "condition").unwrap_err();
    assert_eq!(e.path, "condition.a.$regexi");
    assert!(e.message.contains("too large"), "{}", e.message);
}

#[test]
fn compiled_conditions_evaluate_like_raw_ones() {
    let cond = json!({"$or": [{"ua": {"$regexi": "(MOBILE|TABLET)"}},
                              {"tags": {"$elemMatch": {"$regex": "^v\\d$"}}}]});
    let compiled = CompiledCondition::new(cond.as_object().unwrap().clone());
    for (attrs, expected) in [
        (json!({"ua": "Mobile Safari"}), true),
        (json!({"ua": "desktop", "tags": ["x", "v2"]}), true),
        (json!({"ua": "desktop", "tags": ["v٢"]}), false),
        (json!({}), false),
    ] {
        let raw = verdict_core::assign::condition::eval_condition(
            &attrs,
            cond.as_object().unwrap(),
            &Default::default(),
        );
        assert_eq!(
            compiled.eval(&attrs, &Default::default()),
            expected,
            "{attrs}"
        );
        assert_eq!(raw, expected, "{attrs}");
    }
}
