//! Caps and label checks that keep one request from costing gigabytes or poisoning the
//! stores: no control characters in identifiers and labels (PostgreSQL's jsonb refuses
//! `\u0000`, which then stops a projector for good), at most [`MAX_VARIANTS`] arms and a
//! serialized definition of at most [`MAX_DEFINITION_BYTES`].
//!
//! [`validate_label`] and [`validate_text`] are public so that adapters can hold request
//! fields (reasons, user ids) to the same rules.

use super::definition::ExperimentSpec;
use crate::error::DomainError;
use serde_json::Value;

/// Most arms an experiment may have, shadow arms included. Analysis, monitors and the
/// read models all grow with the number of arms (a 5,000-arm experiment cost 3 GB).
pub const MAX_VARIANTS: usize = 32;

/// Largest accepted definition, as stored (serialized JSON, in bytes): 64 KiB. Bounds
/// everything without a count of its own: the condition, forced variations, labels.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// Longest label (names, variant keys, model names, layer ids, seeds, hash
/// attributes), in bytes of UTF-8.
pub const MAX_LABEL_BYTES: usize = 256;

/// Longest free text (description, reasons), in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;

fn invalid(field: &str, message: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks a label: no control character (`char::is_control`, NUL included) and at most
/// `max_len` bytes of UTF-8. Whether it may be empty is the caller's business.
pub fn validate_label(field: &str, value: &str, max_len: usize) -> Result<(), DomainError> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("must not contain control characters (found {c:?})"),
        ));
    }
    check_len(field, value, max_len)
}

/// Checks free text: like [`validate_label`], except that tab, line feed and carriage
/// return are allowed.
pub fn validate_text(field: &str, value: &str, max_len: usize) -> Result<(), DomainError> {
    let layout = |c: char| matches!(c, '\t' | '\n' | '\r');
    if let Some(c) = value.chars().find(|&c| c.is_control() && !layout(c)) {
        return Err(invalid(
            field,
            format!("must not contain control characters (found {c:?})"),
        ));
    }
    check_len(field, value, max_len)
}

fn check_len(field: &str, value: &str, max_len: usize) -> Result<(), DomainError> {
    if value.len() > max_len {
        return Err(invalid(
            field,
            format!("is {} bytes long; at most {max_len} allowed", value.len()),
        ));
    }
    Ok(())
}

/// Refuses NUL anywhere in a JSON value (keys included): the condition is stored as
/// jsonb, which cannot hold `\u0000`. Other control characters may be real attribute
/// values, so they stay.
fn validate_no_nul(value: &Value, path: &str) -> Result<(), DomainError> {
    const MSG: &str = "must not contain NUL (\\u0000)";
    match value {
        Value::String(s) if s.contains('\0') => Err(invalid(path, MSG)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| validate_no_nul(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                // The key itself cannot go into the path: it is what is wrong.
                return Err(invalid(path, format!("a key {MSG}")));
            }
            validate_no_nul(v, &format!("{path}.{k}"))
        }),
        _ => Ok(()),
    }
}

/// Checks every label of a spec before it is turned into a definition, so that errors
/// name the field as the client sent it.
pub(crate) fn validate_spec_labels(spec: &ExperimentSpec) -> Result<(), DomainError> {
    let label = |field: &str, v: &Option<String>| match v {
        Some(v) => validate_label(field, v, MAX_LABEL_BYTES),
        None => Ok(()),
    };
    label("name", &spec.name)?;
    if let Some(d) = &spec.description {
        validate_text("description", d, MAX_TEXT_BYTES)?;
    }
    label("hash_attribute", &spec.hash_attribute)?;
    label("seed", &spec.seed)?;
    label("primary_metric", &spec.primary_metric)?;
    if let Some(ns) = &spec.namespace {
        validate_label("namespace.id", &ns.id, MAX_LABEL_BYTES)?;
    }
    let arms = match (&spec.variants, &spec.models) {
        (Some(v), _) => v.len(),
        (None, Some(m)) => m.len(),
        (None, None) => 0,
    };
    if arms > MAX_VARIANTS {
        return Err(invalid(
            if spec.variants.is_some() {
                "variants"
            } else {
                "models"
            },
            format!("{arms} variants; at most {MAX_VARIANTS} allowed"),
        ));
    }
    for (i, v) in spec.variants.iter().flatten().enumerate() {
        validate_label(&format!("variants[{i}].key"), &v.key, MAX_LABEL_BYTES)?;
        validate_label(&format!("variants[{i}].model"), &v.model, MAX_LABEL_BYTES)?;
    }
    for (key, model) in spec.models.iter().flatten() {
        // A bad key cannot name its own field; the message quotes it escaped.
        validate_label("models", key, MAX_LABEL_BYTES).map_err(|e| with_key(e, key))?;
        if let Value::String(m) = model {
            validate_label(&format!("models.{key}"), m, MAX_LABEL_BYTES)?;
        }
    }
    for key in spec.traffic_split.iter().flat_map(|s| s.keys()) {
        validate_label("traffic_split", key, MAX_LABEL_BYTES).map_err(|e| with_key(e, key))?;
    }
    for (user, key) in spec.forced_variations.iter().flatten() {
        validate_label("forced_variations", user, MAX_LABEL_BYTES)
            .map_err(|e| with_key(e, user))?;
        validate_label(&format!("forced_variations.{user}"), key, MAX_LABEL_BYTES)?;
    }
    for (i, m) in spec.guardrail_metrics.iter().flatten().enumerate() {
        validate_label(&format!("guardrail_metrics[{i}]"), m, MAX_LABEL_BYTES)?;
    }
    if let Some(c) = &spec.condition {
        validate_no_nul(c, "condition")?;
    }
    Ok(())
}

fn with_key(e: DomainError, key: &str) -> DomainError {
    match e {
        DomainError::Invalid { field, message } => DomainError::Invalid {
            field,
            message: format!("key {key:?}: {message}"),
        },
        other => other,
    }
}

/// The size cap on the definition as stored.
pub(crate) fn validate_size(stored: &impl serde::Serialize) -> Result<(), DomainError> {
    let len = serde_json::to_vec(stored).map_or(usize::MAX, |v| v.len());
    if len > MAX_DEFINITION_BYTES {
        return Err(invalid(
            "body",
            format!("the definition is {len} bytes as stored; at most {MAX_DEFINITION_BYTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(overrides: Value) -> Value {
        let mut base = json!({"experiment_id": "e", "variants": [
            {"key": "control", "model": "m1"}, {"key": "t", "model": "m2"}]});
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn refused(v: Value) -> (String, String) {
        match ExperimentSpec::from_json(v).and_then(ExperimentSpec::validate) {
            Err(DomainError::Invalid { field, message }) => (field, message),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn accepted(v: Value) {
        ExperimentSpec::from_json(v)
            .and_then(ExperimentSpec::validate)
            .expect("accepted");
    }

    #[test]
    fn validate_label_refuses_control_characters_and_length() {
        assert!(validate_label("f", "rec-v2 ünïcødé 😀", 64).is_ok());
        for bad in ["a\0b", "a\nb", "\u{7f}", "x\u{85}", "\u{1b}[31m"] {
            let e = validate_label("req.user_id", bad, 64).unwrap_err();
            assert!(
                matches!(&e, DomainError::Invalid { field, .. } if field == "req.user_id"),
                "{bad:?}: {e:?}"
            );
        }
        assert!(validate_label("f", &"a".repeat(64), 64).is_ok());
        assert!(validate_label("f", &"a".repeat(65), 64).is_err());
        // Length is in bytes: 32 two-byte characters are 64 bytes.
        assert!(validate_label("f", &"é".repeat(33), 64).is_err());
        assert!(validate_text("f", "line 1\nline 2\ttab\r\n", 64).is_ok());
        assert!(validate_text("f", "nul\0", 64).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_every_label() {
        let cases = [
            (json!({"name": "a\u{0}b"}), "name"),
            (json!({"description": "x\u{0}"}), "description"),
            (json!({"hash_attribute": "id\u{1}"}), "hash_attribute"),
            (json!({"seed": "s\n"}), "seed"),
            (json!({"primary_metric": "conv\u{0}"}), "primary_metric"),
            (
                json!({"guardrail_metrics": ["error_rate", "x\u{0}"]}),
                "guardrail_metrics[1]",
            ),
            (
                json!({"namespace": {"id": "l\u{0}", "range": [0, 0.5]}}),
                "namespace.id",
            ),
            (
                json!({"variants": [{"key": "control", "model": "m"}, {"key": "t\u{0}", "model": "m"}]}),
                "variants[1].key",
            ),
            (
                json!({"variants": [{"key": "control", "model": "m"}, {"key": "t", "model": "m\u{9}"}]}),
                "variants[1].model",
            ),
            (
                json!({"variants": [{"key": "control", "model": "m"}, {"key": "t", "model": "m"},
                    {"key": "s\u{0}", "model": "m", "shadow": true}]}),
                "variants[2].key",
            ),
            (
                json!({"forced_variations": {"u\u{0}": "t"}}),
                "forced_variations",
            ),
            (
                json!({"condition": {"country": {"$in": ["US", "T\u{0}H"]}}}),
                "condition.country.$in[1]",
            ),
        ];
        for (overrides, field) in cases {
            assert_eq!(refused(spec(overrides.clone())).0, field, "{overrides}");
        }
        let seed = json!({"experiment_id": "e", "models": {"control": "a", "t\u{0}": "b"}});
        let (field, message) = refused(seed);
        assert_eq!(field, "models");
        assert!(
            message.contains("\\0"),
            "the key is quoted escaped: {message}"
        );
        let seed = json!({"experiment_id": "e", "models": {"control": "a", "t": "b\u{0}"}});
        assert_eq!(refused(seed).0, "models.t");
        // Line breaks are fine in a description, and other controls in condition values.
        accepted(spec(json!({"description": "two\nlines"})));
        accepted(spec(json!({"condition": {"note": "tab\there"}})));
    }

    #[test]
    fn variants_are_capped() {
        let arms = |n: usize| {
            Value::Array(
                (0..n)
                    .map(|i| json!({"key": format!("v{i}"), "model": "m"}))
                    .collect(),
            )
        };
        accepted(spec(json!({ "variants": arms(MAX_VARIANTS) })));
        let (field, message) = refused(spec(json!({ "variants": arms(MAX_VARIANTS + 1) })));
        assert_eq!(field, "variants");
        assert!(message.contains("at most 32"), "{message}");
        let models: serde_json::Map<String, Value> =
            (0..5000).map(|i| (format!("v{i}"), json!("m"))).collect();
        let seed = json!({"experiment_id": "e", "models": models});
        assert_eq!(refused(seed).0, "models");
    }

    #[test]
    fn the_stored_definition_is_capped() {
        let users = |n: usize| -> serde_json::Map<String, Value> {
            (0..n)
                .map(|i| (format!("user-{i:08}"), json!("t")))
                .collect()
        };
        // About 20 bytes per override: 2,000 fit, 4,000 do not.
        accepted(spec(json!({ "forced_variations": users(2000) })));
        let (field, message) = refused(spec(json!({ "forced_variations": users(4000) })));
        assert_eq!(field, "body");
        assert!(message.contains("65536"), "{message}");
    }
}
