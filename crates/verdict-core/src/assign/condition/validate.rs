//! Strict validation of conditions at experiment creation: known operators only,
//! well-typed arguments, and regexes that run in linear time here and cannot backtrack
//! catastrophically in GrowthBook's SDKs either.

use super::is_operator_object;
use crate::assign::jsregex::JsRegex;
use serde_json::Value;

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
                match JsRegex::new(p, op == "$regexi") {
                    Err(e) => return Err(err(&here, &e.to_string())),
                    Ok(re) if re.nests_unbounded_repetition() => {
                        return Err(err(
                            &here,
                            "nests an unbounded repetition inside a repeated group (e.g. \
                             `(a+)+`): catastrophic backtracking in GrowthBook's SDKs",
                        ))
                    }
                    Ok(_) => {}
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
