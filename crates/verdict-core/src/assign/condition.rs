//! Targeting conditions: GrowthBook's Mongo-style `evalCondition`, with JavaScript's
//! coercions (see [`crate::js`]).
//!
//! [`eval_condition`] follows the reference SDK exactly, including its leniencies (an
//! unknown operator is simply false). [`validate_condition`] is the strict check
//! verdict applies when an experiment is created, so that a typo such as `$regx` is
//! rejected with the path of the offending key instead of silently excluding everyone.

mod validate;

pub use validate::{validate_condition, ConditionError, OPERATORS};

use super::jsregex::JsRegex;
use crate::js;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;

/// Saved groups: named lists of attribute values for `$inGroup` / `$notInGroup`.
pub type SavedGroups = Map<String, Value>;

/// Something conditions can be evaluated against: a JSON object, or a user context
/// that adds `user_id` to its attributes without copying them.
pub trait Attributes {
    /// The top-level attribute `key` (JavaScript `key in obj` semantics).
    fn root(&self, key: &str) -> Option<Cow<'_, Value>>;
}

impl Attributes for Value {
    fn root(&self, key: &str) -> Option<Cow<'_, Value>> {
        js::get_property(self, key).map(|p| match p {
            js::PropertyRef::Borrowed(v) => Cow::Borrowed(v),
            js::PropertyRef::Length(n) => Cow::Owned(Value::from(n)),
        })
    }
}

impl Attributes for Map<String, Value> {
    fn root(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key).map(Cow::Borrowed)
    }
}

/// A condition compiled once, with every `$regex` / `$regexi` pattern in it compiled,
/// so that evaluating it compiles nothing and takes no lock.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    condition: Map<String, Value>,
    regexes: Regexes,
}

/// Compiled patterns of `$regex` (`[0]`) and `$regexi` (`[1]`) by pattern; `None` for a
/// refused pattern, which matches nothing (as an invalid pattern does in the SDK).
#[derive(Debug, Clone, Default)]
struct Regexes([HashMap<String, Option<JsRegex>>; 2]);

impl Regexes {
    /// Collects every `$regex`/`$regexi` string anywhere in the condition: a superset of
    /// those evaluation can reach, whatever operator they sit under.
    fn collect(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let insensitive = match (k.as_str(), v) {
                        ("$regex", Value::String(_)) => false,
                        ("$regexi", Value::String(_)) => true,
                        _ => {
                            self.collect(v);
                            continue;
                        }
                    };
                    let Value::String(p) = v else { continue };
                    self.0[usize::from(insensitive)]
                        .entry(p.clone())
                        .or_insert_with(|| JsRegex::new(p, insensitive).ok());
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.collect(v)),
            _ => {}
        }
    }
}

impl CompiledCondition {
    /// Compiles a condition (patterns that do not compile will match nothing).
    pub fn new(condition: Map<String, Value>) -> Self {
        let mut regexes = Regexes::default();
        for v in condition.values() {
            regexes.collect(v);
        }
        Self { condition, regexes }
    }

    /// The condition as given.
    pub fn condition(&self) -> &Map<String, Value> {
        &self.condition
    }

    /// Evaluates the condition against `attributes` (GrowthBook `evalCondition`).
    pub fn eval<A: Attributes + ?Sized>(&self, attributes: &A, groups: &SavedGroups) -> bool {
        eval_with(
            attributes,
            &self.condition,
            groups,
            Rx::Compiled(&self.regexes),
        )
    }
}

impl From<Map<String, Value>> for CompiledCondition {
    fn from(condition: Map<String, Value>) -> Self {
        Self::new(condition)
    }
}

/// Two compiled conditions are equal when their conditions are (the regexes follow).
impl PartialEq for CompiledCondition {
    fn eq(&self, other: &Self) -> bool {
        self.condition == other.condition
    }
}

/// Where `$regex` finds its compiled pattern.
#[derive(Clone, Copy)]
enum Rx<'a> {
    /// Compiled with the condition.
    Compiled(&'a Regexes),
    /// Compiled at evaluation (a raw condition evaluated once).
    OnTheFly,
}

/// Evaluates a raw `condition` against `attributes` (GrowthBook `evalCondition`).
/// Patterns are compiled on each call; conditions evaluated repeatedly belong in a
/// [`CompiledCondition`].
pub fn eval_condition<A: Attributes + ?Sized>(
    attributes: &A,
    condition: &Map<String, Value>,
    groups: &SavedGroups,
) -> bool {
    eval_with(attributes, condition, groups, Rx::OnTheFly)
}

fn eval_with<A: Attributes + ?Sized>(
    attributes: &A,
    condition: &Map<String, Value>,
    groups: &SavedGroups,
    rx: Rx<'_>,
) -> bool {
    for (key, value) in condition {
        let pass = match key.as_str() {
            "$or" => eval_or(attributes, value, groups, rx),
            "$nor" => !eval_or(attributes, value, groups, rx),
            "$and" => eval_and(attributes, value, groups, rx),
            "$not" => !eval_condition_any(attributes, value, groups, rx),
            path => eval_condition_value(value, &get_path(attributes, path), groups, false, rx),
        };
        if !pass {
            return false;
        }
    }
    true
}

/// `evalCondition` on a value that should be an object; JavaScript iterates the
/// entries of whatever it gets, and a non-object has none that matter here.
fn eval_condition_any<A: Attributes + ?Sized>(
    attributes: &A,
    condition: &Value,
    groups: &SavedGroups,
    rx: Rx<'_>,
) -> bool {
    match condition {
        Value::Object(map) => eval_with(attributes, map, groups, rx),
        _ => true,
    }
}

fn eval_or<A: Attributes + ?Sized>(
    attributes: &A,
    conditions: &Value,
    groups: &SavedGroups,
    rx: Rx<'_>,
) -> bool {
    match conditions {
        // `!conditions.length` is true for an empty array and for non-arrays alike.
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .any(|c| eval_condition_any(attributes, c, groups, rx)),
        _ => true,
    }
}

fn eval_and<A: Attributes + ?Sized>(
    attributes: &A,
    conditions: &Value,
    groups: &SavedGroups,
    rx: Rx<'_>,
) -> bool {
    match conditions {
        Value::Array(items) => items
            .iter()
            .all(|c| eval_condition_any(attributes, c, groups, rx)),
        _ => true,
    }
}

/// `getPath`: dot-separated descent; anything missing is `null`.
pub fn get_path<'a, A: Attributes + ?Sized>(obj: &'a A, path: &str) -> Cow<'a, Value> {
    const NULL: Value = Value::Null;
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or("");
    let Some(mut current) = obj.root(first) else {
        return Cow::Owned(NULL);
    };
    for part in parts {
        current = match current {
            Cow::Borrowed(v) => match js::get_property(v, part) {
                Some(js::PropertyRef::Borrowed(next)) => Cow::Borrowed(next),
                Some(js::PropertyRef::Length(n)) => Cow::Owned(Value::from(n)),
                None => return Cow::Owned(NULL),
            },
            Cow::Owned(v) => match js::get_property(&v, part) {
                Some(p) => Cow::Owned(p.to_value()),
                None => return Cow::Owned(NULL),
            },
        };
    }
    current
}

/// An object with at least one key, all of them starting with `$`.
pub fn is_operator_object(v: &Value) -> bool {
    match v {
        Value::Object(map) => !map.is_empty() && map.keys().all(|k| k.starts_with('$')),
        _ => false,
    }
}

fn eval_condition_value(
    condition: &Value,
    value: &Value,
    groups: &SavedGroups,
    insensitive: bool,
    rx: Rx<'_>,
) -> bool {
    match condition {
        Value::String(c) => {
            if insensitive {
                js::to_string(value).to_lowercase() == c.to_lowercase()
            } else {
                js::to_string(value) == *c
            }
        }
        Value::Number(n) => js::to_number(value) == js::as_f64(n),
        Value::Bool(b) => !value.is_null() && js::truthy(value) == *b,
        Value::Null => value.is_null(),
        Value::Array(_) => js::stringify(value) == js::stringify(condition),
        Value::Object(ops) => {
            if !is_operator_object(condition) {
                return js::stringify(value) == js::stringify(condition);
            }
            ops.iter()
                .all(|(op, expected)| eval_operator(op, value, expected, groups, rx))
        }
    }
}

fn eval_operator(
    op: &str,
    actual: &Value,
    expected: &Value,
    groups: &SavedGroups,
    rx: Rx<'_>,
) -> bool {
    match op {
        "$veq" => padded_version(actual) == padded_version(expected),
        "$vne" => padded_version(actual) != padded_version(expected),
        "$vgt" => padded_version(actual) > padded_version(expected),
        "$vgte" => padded_version(actual) >= padded_version(expected),
        "$vlt" => padded_version(actual) < padded_version(expected),
        "$vlte" => padded_version(actual) <= padded_version(expected),
        "$eq" => js::strict_equals(actual, expected),
        "$ne" => !js::strict_equals(actual, expected),
        "$lt" => js::lt(actual, expected),
        "$lte" => js::lte(actual, expected),
        "$gt" => js::lt(expected, actual),
        "$gte" => js::lte(expected, actual),
        "$exists" => {
            if js::truthy(expected) {
                !actual.is_null()
            } else {
                actual.is_null()
            }
        }
        "$in" => matches!(expected, Value::Array(list) if is_in(actual, list, false)),
        "$ini" => matches!(expected, Value::Array(list) if is_in(actual, list, true)),
        "$nin" => matches!(expected, Value::Array(list) if !is_in(actual, list, false)),
        "$nini" => matches!(expected, Value::Array(list) if !is_in(actual, list, true)),
        "$inGroup" => is_in(actual, group(groups, expected), false),
        "$notInGroup" => !is_in(actual, group(groups, expected), false),
        "$not" => !eval_condition_value(expected, actual, groups, false, rx),
        "$size" => match actual {
            Value::Array(items) => {
                eval_condition_value(expected, &Value::from(items.len()), groups, false, rx)
            }
            _ => false,
        },
        "$elemMatch" => elem_match(actual, expected, groups, rx),
        "$all" => {
            matches!(expected, Value::Array(list) if is_in_all(actual, list, groups, false, rx))
        }
        "$alli" => {
            matches!(expected, Value::Array(list) if is_in_all(actual, list, groups, true, rx))
        }
        "$regex" => regex_test(expected, actual, false, rx),
        "$regexi" => regex_test(expected, actual, true, rx),
        "$type" => matches!(expected, Value::String(t) if t == js::type_name(actual)),
        _ => false,
    }
}

fn group<'a>(groups: &'a SavedGroups, name: &Value) -> &'a [Value] {
    let key = js::to_string(name);
    match groups.get(&key) {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn is_in(actual: &Value, expected: &[Value], insensitive: bool) -> bool {
    let eq = |a: &Value, b: &Value| {
        if insensitive {
            match (a, b) {
                (Value::String(x), Value::String(y)) => x.to_lowercase() == y.to_lowercase(),
                _ => js::same_value_zero(a, b),
            }
        } else {
            js::same_value_zero(a, b)
        }
    };
    match actual {
        Value::Array(items) => items.iter().any(|el| expected.iter().any(|e| eq(el, e))),
        _ => expected.iter().any(|e| eq(actual, e)),
    }
}

fn is_in_all(
    actual: &Value,
    expected: &[Value],
    groups: &SavedGroups,
    insensitive: bool,
    rx: Rx<'_>,
) -> bool {
    let Value::Array(items) = actual else {
        return false;
    };
    expected.iter().all(|e| {
        items
            .iter()
            .any(|a| eval_condition_value(e, a, groups, insensitive, rx))
    })
}

fn elem_match(actual: &Value, expected: &Value, groups: &SavedGroups, rx: Rx<'_>) -> bool {
    let Value::Array(items) = actual else {
        return false;
    };
    let operator = is_operator_object(expected);
    // npm 1.8.0 skips only null items (older sources skipped every falsy item).
    items.iter().filter(|item| !item.is_null()).any(|item| {
        if operator {
            eval_condition_value(expected, item, groups, false, rx)
        } else {
            match expected {
                Value::Object(cond) => eval_with(item, cond, groups, rx),
                _ => true,
            }
        }
    })
}

/// `paddedVersionString`: numeric parts left-padded to width 5, a `~` appended to plain
/// `x.y.z` so that a release sorts above its pre-releases.
pub fn padded_version(input: &Value) -> String {
    let s = match input {
        Value::Number(n) => js::number_to_string(js::as_f64(n)),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => "0".to_owned(),
    };
    let s = s.strip_prefix('v').unwrap_or(&s);
    let s = match s.find('+') {
        Some(i) => &s[..i],
        None => s,
    };
    let mut parts: Vec<&str> = s.split(['-', '.']).collect();
    if parts.len() == 3 {
        parts.push("~");
    }
    parts
        .iter()
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                format!("{p:>5}")
            } else {
                (*p).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn regex_test(pattern: &Value, actual: &Value, insensitive: bool, rx: Rx<'_>) -> bool {
    let Value::String(pattern) = pattern else {
        // `regex.replace` throws on a non-string pattern; the SDK turns that into false.
        return false;
    };
    let haystack = js::to_string(actual);
    let compiled = match rx {
        Rx::Compiled(table) => table.0[usize::from(insensitive)].get(pattern.as_str()),
        Rx::OnTheFly => None,
    };
    match compiled {
        Some(re) => re.as_ref().is_some_and(|re| re.is_match(&haystack)),
        // Not collected (never for a compiled condition) or raw: compile here. A refused
        // or invalid pattern matches nothing, as an invalid one does in the SDK.
        None => JsRegex::new(pattern, insensitive).is_ok_and(|re| re.is_match(&haystack)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(cond: Value, attrs: Value) -> bool {
        eval_condition(&attrs, cond.as_object().unwrap(), &Map::new())
    }

    #[test]
    fn missing_attribute_coerces_like_javascript() {
        assert!(eval(json!({"a": 0}), json!({})), "null * 1 === 0");
        assert!(
            eval(json!({"a": "null"}), json!({})),
            "null + '' === 'null'"
        );
        assert!(!eval(json!({"a": false}), json!({})));
        assert!(eval(json!({"a": {"$regex": "ull"}}), json!({})));
    }

    #[test]
    fn validation_names_the_bad_part() {
        let e = validate_condition(&json!({"country": {"$regx": "^U"}}), "condition").unwrap_err();
        assert_eq!(e.path, "condition.country.$regx");
        let e = validate_condition(&json!({"$or": {"a": 1}}), "condition").unwrap_err();
        assert_eq!(e.path, "condition.$or");
        let e = validate_condition(&json!({"a": {"$regex": "("}}), "condition").unwrap_err();
        assert_eq!(e.path, "condition.a.$regex");
        assert!(validate_condition(
            &json!({"$and": [{"a": {"$in": [1]}}], "b.c": {"$vgt": "1.2"}}),
            "c"
        )
        .is_ok());
    }

    #[test]
    fn versions_pad_numeric_parts() {
        assert_eq!(
            padded_version(&json!("v1.2.3+build")),
            "    1-    2-    3-~"
        );
        assert!(padded_version(&json!("1.2.3")) > padded_version(&json!("1.2.3-beta")));
        assert!(padded_version(&json!("1.10.0")) > padded_version(&json!("1.9.0")));
    }
}
