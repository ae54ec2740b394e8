//! Targeting conditions: GrowthBook's Mongo-style `evalCondition`, with JavaScript's
//! coercions (see [`crate::js`]).
//!
//! [`eval_condition`] follows the reference SDK exactly, including its leniencies (an
//! unknown operator is simply false). [`validate_condition`] is the strict check
//! verdict applies when an experiment is created, so that a typo such as `$regx` is
//! rejected with the path of the offending key instead of silently excluding everyone.

use crate::js;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

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

/// Evaluates `condition` against `attributes` (GrowthBook `evalCondition`).
pub fn eval_condition<A: Attributes + ?Sized>(
    attributes: &A,
    condition: &Map<String, Value>,
    groups: &SavedGroups,
) -> bool {
    for (key, value) in condition {
        let pass = match key.as_str() {
            "$or" => eval_or(attributes, value, groups),
            "$nor" => !eval_or(attributes, value, groups),
            "$and" => eval_and(attributes, value, groups),
            "$not" => !eval_condition_any(attributes, value, groups),
            path => eval_condition_value(value, &get_path(attributes, path), groups, false),
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
) -> bool {
    match condition {
        Value::Object(map) => eval_condition(attributes, map, groups),
        _ => true,
    }
}

fn eval_or<A: Attributes + ?Sized>(
    attributes: &A,
    conditions: &Value,
    groups: &SavedGroups,
) -> bool {
    match conditions {
        // `!conditions.length` is true for an empty array and for non-arrays alike.
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .any(|c| eval_condition_any(attributes, c, groups)),
        _ => true,
    }
}

fn eval_and<A: Attributes + ?Sized>(
    attributes: &A,
    conditions: &Value,
    groups: &SavedGroups,
) -> bool {
    match conditions {
        Value::Array(items) => items
            .iter()
            .all(|c| eval_condition_any(attributes, c, groups)),
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
                .all(|(op, expected)| eval_operator(op, value, expected, groups))
        }
    }
}

fn eval_operator(op: &str, actual: &Value, expected: &Value, groups: &SavedGroups) -> bool {
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
        "$not" => !eval_condition_value(expected, actual, groups, false),
        "$size" => match actual {
            Value::Array(items) => {
                eval_condition_value(expected, &Value::from(items.len()), groups, false)
            }
            _ => false,
        },
        "$elemMatch" => elem_match(actual, expected, groups),
        "$all" => matches!(expected, Value::Array(list) if is_in_all(actual, list, groups, false)),
        "$alli" => matches!(expected, Value::Array(list) if is_in_all(actual, list, groups, true)),
        "$regex" => regex_test(expected, actual, false),
        "$regexi" => regex_test(expected, actual, true),
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

fn is_in_all(actual: &Value, expected: &[Value], groups: &SavedGroups, insensitive: bool) -> bool {
    let Value::Array(items) = actual else {
        return false;
    };
    expected.iter().all(|e| {
        items
            .iter()
            .any(|a| eval_condition_value(e, a, groups, insensitive))
    })
}

fn elem_match(actual: &Value, expected: &Value, groups: &SavedGroups) -> bool {
    let Value::Array(items) = actual else {
        return false;
    };
    let operator = is_operator_object(expected);
    // npm 1.8.0 skips only null items (older sources skipped every falsy item).
    items.iter().filter(|item| !item.is_null()).any(|item| {
        if operator {
            eval_condition_value(expected, item, groups, false)
        } else {
            match expected {
                Value::Object(cond) => eval_condition(item, cond, groups),
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

/// Compiled regular expressions, keyed by pattern and flags; conditions reuse a handful
/// of patterns millions of times.
type RegexCache = Mutex<HashMap<(String, bool), Option<regress::Regex>>>;

fn regex_cache() -> &'static RegexCache {
    static CACHE: OnceLock<RegexCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles an ECMAScript pattern the way `getRegex` does (escaping unescaped `/`).
fn compile_regex(pattern: &str, insensitive: bool) -> Option<regress::Regex> {
    let mut escaped = String::with_capacity(pattern.len());
    let mut prev: Option<char> = None;
    for c in pattern.chars() {
        // `regex.replace(/([^\\])\//g, "$1\\/")`: a `/` after any character but `\`.
        if c == '/' && prev.is_some_and(|p| p != '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
        prev = Some(c);
    }
    regress::Regex::with_flags(&escaped, if insensitive { "i" } else { "" }).ok()
}

fn regex_test(pattern: &Value, actual: &Value, insensitive: bool) -> bool {
    let Value::String(pattern) = pattern else {
        // `regex.replace` throws on a non-string pattern; the SDK turns that into false.
        return false;
    };
    let haystack = js::to_string(actual);
    let mut cache = regex_cache().lock().unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry((pattern.clone(), insensitive))
        .or_insert_with(|| compile_regex(pattern, insensitive));
    re.as_ref().is_some_and(|re| re.find(&haystack).is_some())
}

/// Every operator the reference SDK understands.
pub const OPERATORS: &[&str] = &[
    "$veq",
    "$vne",
    "$vgt",
    "$vgte",
    "$vlt",
    "$vlte",
    "$eq",
    "$ne",
    "$lt",
    "$lte",
    "$gt",
    "$gte",
    "$exists",
    "$in",
    "$ini",
    "$nin",
    "$nini",
    "$inGroup",
    "$notInGroup",
    "$not",
    "$size",
    "$elemMatch",
    "$all",
    "$alli",
    "$regex",
    "$regexi",
    "$type",
];

/// Why a condition was rejected: the JSON path of the offending part and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// Path inside the condition, e.g. `condition.country.$regx`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Strictly validates a condition for experiment creation: known operators only,
/// `$or`/`$and`/`$nor` take arrays of objects, regexes compile, `$type` names a type.
pub fn validate_condition(condition: &Value, path: &str) -> Result<(), ConditionError> {
    let err = |path: &str, message: &str| ConditionError {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let Value::Object(map) = condition else {
        return Err(err(path, "must be an object"));
    };
    for (key, value) in map {
        let here = format!("{path}.{key}");
        match key.as_str() {
            "$or" | "$and" | "$nor" => {
                let Value::Array(items) = value else {
                    return Err(err(&here, "must be an array of conditions"));
                };
                for (i, item) in items.iter().enumerate() {
                    validate_condition(item, &format!("{here}[{i}]"))?;
                }
            }
            "$not" => validate_condition(value, &here)?,
            k if k.starts_with('$') => return Err(err(&here, "unknown top-level operator")),
            _ => validate_value(value, &here)?,
        }
    }
    Ok(())
}

fn validate_value(value: &Value, path: &str) -> Result<(), ConditionError> {
    let err = |path: &str, message: &str| ConditionError {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    if !is_operator_object(value) {
        return Ok(());
    }
    let Value::Object(ops) = value else {
        return Ok(());
    };
    for (op, arg) in ops {
        let here = format!("{path}.{op}");
        if !OPERATORS.contains(&op.as_str()) {
            return Err(err(&here, "unknown operator"));
        }
        match op.as_str() {
            "$in" | "$nin" | "$ini" | "$nini" | "$all" | "$alli" if !arg.is_array() => {
                return Err(err(&here, "must be an array"));
            }
            "$regex" | "$regexi" => {
                let Value::String(p) = arg else {
                    return Err(err(&here, "must be a string"));
                };
                if compile_regex(p, op == "$regexi").is_none() {
                    return Err(err(&here, "is not a valid ECMAScript regular expression"));
                }
            }
            "$type" => {
                let known = [
                    "null",
                    "array",
                    "string",
                    "number",
                    "boolean",
                    "object",
                    "undefined",
                ];
                if !matches!(arg, Value::String(t) if known.contains(&t.as_str())) {
                    return Err(err(
                        &here,
                        "must name a type (string, number, boolean, array, object, null)",
                    ));
                }
            }
            "$inGroup" | "$notInGroup" if !arg.is_string() => {
                return Err(err(&here, "must be a group name"))
            }
            "$not" | "$size" => validate_value(arg, &here)?,
            "$elemMatch" => {
                if is_operator_object(arg) {
                    validate_value(arg, &here)?;
                } else {
                    validate_condition(arg, &here)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
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
