//! GrowthBook's own JSON shapes (SDK experiments, contexts and features), read into
//! the router's types with the SDK's leniency.
//!
//! This is how the conformance suite drives the very same [`CompiledExperiment::decide`]
//! that verdict uses, and how prerequisites (`parentConditions`) evaluate their parent
//! features.

use super::condition::eval_condition;
use super::hash::{bucket_ranges, hash, in_range, Range};
use super::router::{CompiledExperiment, Filter, Namespace, ParentCondition, UserContext};
use crate::js;
use serde_json::{Map, Value};

fn f64_of(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn range_of(v: &Value) -> Option<Range> {
    let a = v.as_array()?;
    Some((f64_of(a.first()?)?, f64_of(a.get(1)?)?))
}

fn ranges_of(v: &Value) -> Option<Vec<Range>> {
    v.as_array()?.iter().map(range_of).collect()
}

/// Reads hash filters (`[{seed, ranges, attribute?, hashVersion?}]`).
fn filters_of(v: &Value) -> Option<Vec<Filter>> {
    let items = v.as_array()?;
    Some(
        items
            .iter()
            .map(|f| Filter {
                attribute: f
                    .get("attribute")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                seed: f.get("seed").map(js::to_string).unwrap_or_default(),
                hash_version: f
                    .get("hashVersion")
                    .and_then(Value::as_u64)
                    .map_or(2, |v| v as u32),
                ranges: f.get("ranges").and_then(ranges_of).unwrap_or_default(),
            })
            .collect(),
    )
}

fn parent_conditions_of(v: &Value) -> Vec<ParentCondition> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| ParentCondition {
                    id: p.get("id").map(js::to_string).unwrap_or_default(),
                    condition: p
                        .get("condition")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default()
                        .into(),
                    gate: p.get("gate").is_some_and(js::truthy),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Compiles a GrowthBook SDK experiment object (`{key, variations, weights, ...}`).
pub fn compile_sdk_experiment(exp: &Value) -> CompiledExperiment {
    let key = exp.get("key").map(js::to_string).unwrap_or_default();
    let n = exp
        .get("variations")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let meta = exp.get("meta").and_then(Value::as_array);
    let variation_keys = (0..n)
        .map(|i| {
            meta.and_then(|m| m.get(i))
                .and_then(|m| m.get("key"))
                .and_then(Value::as_str)
                .map_or_else(|| i.to_string(), str::to_owned)
        })
        .collect();
    let mut c = CompiledExperiment::new(key.clone(), variation_keys);
    let weights: Option<Vec<f64>> = exp
        .get("weights")
        .and_then(Value::as_array)
        .map(|w| w.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect());
    c.ranges = match exp.get("ranges").and_then(ranges_of) {
        Some(r) => r,
        None => bucket_ranges(n, exp.get("coverage").and_then(f64_of), weights.as_deref()),
    };
    c.seed = exp
        .get("seed")
        .filter(|s| js::truthy(s))
        .map_or(key, js::to_string);
    c.hash_version = match exp.get("hashVersion") {
        Some(v) if js::truthy(v) => v.as_u64().map_or(0, |v| v as u32),
        _ => 1,
    };
    c.hash_attribute = exp
        .get("hashAttribute")
        .filter(|s| js::truthy(s))
        .map_or_else(|| "id".to_owned(), js::to_string);
    c.namespace = exp
        .get("namespace")
        .and_then(Value::as_array)
        .and_then(|ns| {
            Some(Namespace {
                id: js::to_string(ns.first()?),
                range: (f64_of(ns.get(1)?)?, f64_of(ns.get(2)?)?),
            })
        });
    c.filters = exp.get("filters").and_then(filters_of);
    c.condition = exp
        .get("condition")
        .and_then(Value::as_object)
        .cloned()
        .map(Into::into);
    c.parent_conditions = exp
        .get("parentConditions")
        .map(parent_conditions_of)
        .unwrap_or_default();
    c.force =
        exp.get("force")
            .and_then(Value::as_f64)
            .map(|f| if f.fract() == 0.0 { f as i64 } else { -1 });
    c.active = exp.get("active").is_none_or(|a| a != &Value::Bool(false))
        && exp.get("status").and_then(Value::as_str) != Some("draft");
    c.stopped = exp.get("status").and_then(Value::as_str) == Some("stopped");
    c
}

/// A GrowthBook SDK context (`{attributes, forcedVariations, qaMode, enabled, url,
/// features, savedGroups}`) as a [`UserContext`] borrowing from the JSON.
pub fn sdk_context(ctx: &Value) -> UserContext<'_> {
    let attributes = ctx
        .get("attributes")
        .and_then(Value::as_object)
        .unwrap_or(js::empty_object());
    let mut u = UserContext::new(None, attributes);
    u.saved_groups = ctx
        .get("savedGroups")
        .and_then(Value::as_object)
        .unwrap_or(js::empty_object());
    u.forced_variations = ctx.get("forcedVariations").and_then(Value::as_object);
    u.qa_mode = ctx.get("qaMode").is_some_and(js::truthy);
    u.enabled = ctx.get("enabled") != Some(&Value::Bool(false));
    u.url = ctx.get("url").and_then(Value::as_str);
    u.features = ctx.get("features").and_then(Value::as_object);
    u
}

/// Whether every prerequisite holds (a cyclic one fails).
pub(crate) fn prerequisites_pass(parents: &[ParentCondition], ctx: &UserContext<'_>) -> bool {
    parents.iter().all(|p| {
        let mut stack = Vec::new();
        match feature_value(&p.id, ctx, &mut stack) {
            Some(value) => {
                let obj = Value::Object(Map::from_iter([("value".to_owned(), value)]));
                p.condition.eval(&obj, js::empty_object())
            }
            None => false,
        }
    })
}

/// A feature's value for this user (GrowthBook `evalFeature(key).value`): forced
/// rules with rollouts, experiment rules, prerequisites, then the default. `None`
/// means a prerequisite cycle.
pub fn feature_value(key: &str, ctx: &UserContext<'_>, stack: &mut Vec<String>) -> Option<Value> {
    if stack.iter().any(|k| k == key) {
        return None;
    }
    let Some(feature) = ctx.features.and_then(|f| f.get(key)) else {
        return Some(Value::Null);
    };
    stack.push(key.to_owned());
    let result = feature_value_inner(key, feature, ctx, stack);
    stack.pop();
    result
}

fn feature_value_inner(
    key: &str,
    feature: &Value,
    ctx: &UserContext<'_>,
    stack: &[String],
) -> Option<Value> {
    let rules = feature
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for rule in rules {
        if let Some(parents) = rule.get("parentConditions") {
            let mut blocked = false;
            for p in parent_conditions_of(parents) {
                // Each parent sees the current stack, as the SDK copies it per parent.
                let mut inner = stack.to_vec();
                let value = feature_value(&p.id, ctx, &mut inner)?;
                let obj = Value::Object(Map::from_iter([("value".to_owned(), value)]));
                if !p.condition.eval(&obj, js::empty_object()) {
                    if p.gate {
                        return Some(Value::Null);
                    }
                    blocked = true;
                    break;
                }
            }
            if blocked {
                continue;
            }
        }
        if let Some(filters) = rule.get("filters").and_then(filters_of) {
            let mut exp = CompiledExperiment::new(key, vec![String::new(), String::new()]);
            exp.hash_attribute = rule
                .get("hashAttribute")
                .and_then(Value::as_str)
                .unwrap_or("id")
                .to_owned();
            exp.filters = Some(filters);
            if exp.decide(ctx).reason == super::router::Reason::Filtered {
                continue;
            }
        }
        if let Some(force) = rule.get("force") {
            if let Some(cond) = rule.get("condition").and_then(Value::as_object) {
                if !eval_condition(ctx.attributes, cond, ctx.saved_groups) {
                    continue;
                }
            }
            if !included_in_rollout(key, rule, ctx) {
                continue;
            }
            return Some(force.clone());
        }
        let Some(variations) = rule.get("variations").and_then(Value::as_array) else {
            continue;
        };
        let mut exp_json = rule.clone();
        if let Value::Object(m) = &mut exp_json {
            if !m.contains_key("key") {
                m.insert("key".to_owned(), Value::String(key.to_owned()));
            }
        }
        let exp = compile_sdk_experiment(&exp_json);
        let decision = exp.decide(ctx);
        if let Some(i) = decision.variation {
            let passthrough = rule
                .get("meta")
                .and_then(|m| m.get(i))
                .and_then(|m| m.get("passthrough"))
                .is_some_and(js::truthy);
            if !passthrough {
                return Some(variations.get(i).cloned().unwrap_or(Value::Null));
            }
        }
    }
    Some(feature.get("defaultValue").cloned().unwrap_or(Value::Null))
}

/// `isIncludedInRollout`: note the inclusive `n <= coverage`.
fn included_in_rollout(feature_key: &str, rule: &Value, ctx: &UserContext<'_>) -> bool {
    let range = rule.get("range").and_then(range_of);
    let coverage = rule.get("coverage").and_then(f64_of);
    if range.is_none() && coverage.is_none() {
        return true;
    }
    if range.is_none() && coverage == Some(0.0) {
        return false;
    }
    let attr = rule
        .get("hashAttribute")
        .and_then(Value::as_str)
        .unwrap_or("id");
    let Some(value) = ctx.attributes.get(attr).filter(|v| js::truthy(v)) else {
        return false;
    };
    let seed = rule
        .get("seed")
        .filter(|s| js::truthy(s))
        .map_or_else(|| feature_key.to_owned(), js::to_string);
    let version = rule
        .get("hashVersion")
        .and_then(Value::as_u64)
        .map_or(1, |v| v as u32);
    let Some(n) = hash(&seed, &js::to_string(value), version) else {
        return false;
    };
    match (range, coverage) {
        (Some(r), _) => in_range(n, r),
        (None, Some(c)) => n <= c,
        (None, None) => true,
    }
}

/// Compiles a verdict experiment definition (`experiment_id`, `variants`, `coverage`,
/// `hash_attribute`, `hash_version`, `seed`, `namespace`, `condition`; also the seed's
/// `models` + `traffic_split`) with GrowthBook's run-time leniency: weights that do not
/// sum to 1 fall back to equal, coverage is clamped, an unknown hash version excludes
/// everyone. Only structural errors (a wrong type, a missing key) are refused, naming
/// the field. Strict validation for creating experiments is
/// [`crate::ExperimentSpec::validate`].
pub fn compile_lenient_definition(def: &Value) -> Result<CompiledExperiment, crate::DomainError> {
    let bad = |field: &str, message: &str| crate::DomainError::Invalid {
        field: field.to_owned(),
        message: message.to_owned(),
    };
    let Value::Object(obj) = def else {
        return Err(bad("experiment", "must be an object"));
    };
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let id = match present("experiment_id") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("experiment.experiment_id", "must be a string")),
        None => return Err(bad("experiment.experiment_id", "is required")),
    };
    let number = |k: &str| -> Result<Option<f64>, crate::DomainError> {
        match present(k) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(js::as_f64(n))),
            Some(_) => Err(bad(&format!("experiment.{k}"), "must be a number")),
        }
    };
    let string = |k: &str| -> Result<Option<String>, crate::DomainError> {
        match present(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(&format!("experiment.{k}"), "must be a string")),
        }
    };
    let (keys, weights) = match (present("variants"), present("models")) {
        (Some(Value::Array(items)), _) => {
            let mut keys = Vec::with_capacity(items.len());
            let mut weights = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let field = |f: &str| format!("experiment.variants[{i}].{f}");
                let Value::Object(v) = v else {
                    return Err(bad(
                        &format!("experiment.variants[{i}]"),
                        "must be an object",
                    ));
                };
                match v.get("key") {
                    Some(Value::String(k)) => keys.push(k.clone()),
                    Some(_) => return Err(bad(&field("key"), "must be a string")),
                    None => return Err(bad(&field("key"), "is required")),
                }
                match v.get("weight").filter(|w| !w.is_null()) {
                    None => {}
                    Some(Value::Number(w)) => weights.push(js::as_f64(w)),
                    Some(_) => return Err(bad(&field("weight"), "must be a number")),
                }
            }
            let weights = match weights.len() {
                0 => None,
                n if n == keys.len() => Some(weights),
                _ => {
                    return Err(bad(
                        "experiment.variants",
                        "give every variant a weight, or none for equal weights",
                    ))
                }
            };
            (keys, weights)
        }
        (Some(_), _) => return Err(bad("experiment.variants", "must be an array")),
        (None, Some(Value::Object(models))) => {
            let keys: Vec<String> = models.keys().cloned().collect();
            let weights = match present("traffic_split") {
                None => None,
                Some(Value::Object(split)) => Some(
                    keys.iter()
                        .map(|k| match split.get(k) {
                            Some(Value::Number(p)) => Ok(js::as_f64(p) / 100.0),
                            _ => Err(bad(
                                &format!("experiment.traffic_split.{k}"),
                                "must be a number (percent)",
                            )),
                        })
                        .collect::<Result<Vec<f64>, _>>()?,
                ),
                Some(_) => return Err(bad("experiment.traffic_split", "must be an object")),
            };
            (keys, weights)
        }
        (None, Some(_)) => return Err(bad("experiment.models", "must be an object")),
        (None, None) => return Err(bad("experiment.variants", "is required")),
    };
    let mut c = CompiledExperiment::new(id.clone(), keys)
        .with_traffic(number("coverage")?, weights.as_deref());
    c.seed = string("seed")?.filter(|s| !s.is_empty()).unwrap_or(id);
    c.hash_attribute = string("hash_attribute")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "user_id".to_owned());
    c.hash_version = match number("hash_version")? {
        None => 1,
        // Any version but 1 and 2 is "unknown" and excludes everyone, as in the SDK.
        Some(1.0) => 1,
        Some(2.0) => 2,
        Some(_) => 0,
    };
    c.namespace = match present("namespace") {
        None => None,
        Some(Value::Object(ns)) => {
            let nid = match ns.get("id") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(bad("experiment.namespace.id", "must be a string")),
            };
            let range = ns
                .get("range")
                .and_then(range_of)
                .ok_or_else(|| bad("experiment.namespace.range", "must be [start, end]"))?;
            Some(Namespace { id: nid, range })
        }
        Some(_) => return Err(bad("experiment.namespace", "must be an object {id, range}")),
    };
    c.condition = match present("condition") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone().into()),
        Some(_) => return Err(bad("experiment.condition", "must be an object")),
    };
    if let Some(forced) = present("forced_variations") {
        let Value::Object(forced) = forced else {
            return Err(bad(
                "experiment.forced_variations",
                "must be an object {user: variant}",
            ));
        };
        for (user, key) in forced {
            let i = key
                .as_str()
                .and_then(|k| c.variation_keys.iter().position(|v| v == k))
                .ok_or_else(|| {
                    bad(
                        &format!("experiment.forced_variations.{user}"),
                        "must name a variant key",
                    )
                })?;
            c.forced_users.insert(user.clone(), Value::from(i));
        }
    }
    Ok(c)
}
