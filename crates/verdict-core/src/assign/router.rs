//! The experiment router: a compiled experiment and the one function that decides a
//! user's variation, step for step in the order of GrowthBook's `runExperiment`.
//!
//! Compilation does every per-experiment computation once (bucket ranges, seed,
//! hash attribute), so a decision is a map lookup, one FNV pass and a range scan.

use super::condition::{Attributes, CompiledCondition, SavedGroups};
use super::hash::{bucket_ranges, choose_variation, hash, in_namespace, in_range, Range};
use crate::js;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A namespace: a layer of mutually exclusive experiments. Users whose namespace hash
/// falls in `range` may enter; experiments in one namespace with disjoint ranges never
/// share a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Namespace id; the hash seed is `"__" + id`.
    pub id: String,
    /// The share of the namespace this experiment owns, `[start, end)`.
    pub range: Range,
}

/// A hash filter (GrowthBook `filters`): the user passes if their hash under `seed`
/// falls in any of `ranges`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Attribute to hash; `None` uses the experiment's hash attribute.
    pub attribute: Option<String>,
    /// Hash seed.
    pub seed: String,
    /// Hash version (GrowthBook's default for filters is 2).
    pub hash_version: u32,
    /// Accepted ranges.
    pub ranges: Vec<Range>,
}

/// A prerequisite: the parent feature's value must satisfy `condition`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentCondition {
    /// Parent feature key.
    pub id: String,
    /// Condition evaluated against `{"value": <parent value>}`.
    pub condition: CompiledCondition,
    /// A failing gate blocks rather than skips (only matters for feature rules).
    pub gate: bool,
}

/// An experiment compiled for fast, repeated decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledExperiment {
    /// Experiment key (GrowthBook `key`; verdict's `experiment_id`).
    pub key: String,
    /// Hash seed (defaults to the key).
    pub seed: String,
    /// Hash version: 1 or 2; anything else excludes every user.
    pub hash_version: u32,
    /// Attribute whose value is hashed.
    pub hash_attribute: String,
    /// Variation keys, in bucket order.
    pub variation_keys: Vec<String>,
    /// Bucket ranges, one per variation.
    pub ranges: Vec<Range>,
    /// Optional namespace (ignored when `filters` is non-empty, as in GrowthBook).
    pub namespace: Option<Namespace>,
    /// Optional hash filters.
    pub filters: Option<Vec<Filter>>,
    /// Optional targeting condition, compiled (regexes included) with the experiment.
    pub condition: Option<CompiledCondition>,
    /// Optional prerequisites on other features.
    pub parent_conditions: Vec<ParentCondition>,
    /// Per-user overrides: hash value -> variation index (checked before hashing).
    pub forced_users: Map<String, Value>,
    /// Forced variation for everyone who passes coverage (GrowthBook `force`).
    pub force: Option<i64>,
    /// GrowthBook `active` / `status != draft`.
    pub active: bool,
    /// GrowthBook `status == stopped`: nobody is in the experiment.
    pub stopped: bool,
    /// verdict lifecycle: paused, stopped or draft; checked first, so that nothing, not
    /// even an override, puts a user into a halted experiment.
    pub halted: bool,
}

/// Everything about the caller that a decision may look at.
#[derive(Debug, Clone, Copy)]
pub struct UserContext<'a> {
    /// The user id; also the attribute `user_id`.
    pub user_id: Option<&'a str>,
    /// Other attributes (an object).
    pub attributes: &'a Map<String, Value>,
    /// Saved groups for `$inGroup`.
    pub saved_groups: &'a SavedGroups,
    /// Forced variations by experiment key (GrowthBook context `forcedVariations`).
    pub forced_variations: Option<&'a Map<String, Value>>,
    /// QA mode: nobody is hashed into an experiment.
    pub qa_mode: bool,
    /// `false` disables every experiment.
    pub enabled: bool,
    /// Page URL, for query-string overrides.
    pub url: Option<&'a str>,
    /// Feature definitions, for prerequisites.
    pub features: Option<&'a Map<String, Value>>,
}

impl<'a> UserContext<'a> {
    /// A context with only a user id.
    pub fn user(user_id: &'a str) -> Self {
        Self::new(Some(user_id), js::empty_object())
    }

    /// A context with a user id and attributes, everything else at its default.
    pub fn new(user_id: Option<&'a str>, attributes: &'a Map<String, Value>) -> Self {
        Self {
            user_id,
            attributes,
            saved_groups: js::empty_object(),
            forced_variations: None,
            qa_mode: false,
            enabled: true,
            url: None,
            features: None,
        }
    }

    /// The attribute as a hash input: JavaScript truthiness decides "missing", and
    /// `user_id` overrides any attribute of that name. Borrowed when it is a string.
    fn hash_value(&self, name: &str) -> Option<Cow<'a, str>> {
        if name == "user_id" {
            if let Some(id) = self.user_id {
                return (!id.is_empty()).then_some(Cow::Borrowed(id));
            }
        }
        match self.attributes.get(name)? {
            Value::String(s) => (!s.is_empty()).then_some(Cow::Borrowed(s.as_str())),
            other => js::truthy(other).then(|| Cow::Owned(js::to_string(other))),
        }
    }
}

/// Conditions see the attributes with `user_id` added, without copying the map.
impl Attributes for UserContext<'_> {
    fn root(&self, key: &str) -> Option<Cow<'_, Value>> {
        match (key, self.user_id) {
            ("user_id", Some(id)) => Some(Cow::Owned(Value::String(id.to_owned()))),
            _ => self.attributes.get(key).map(Cow::Borrowed),
        }
    }
}

/// Why a user got the decision they got (assignment provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Fewer than two variations.
    TooFewVariations,
    /// verdict lifecycle: the experiment is draft, paused or stopped.
    Halted,
    /// The context disables experiments.
    Disabled,
    /// Forced by the URL's query string.
    QueryString,
    /// Forced by the context's `forcedVariations`.
    ForcedByContext,
    /// Forced by a per-user override.
    ForcedUser,
    /// The experiment is inactive or a draft (GrowthBook semantics).
    Inactive,
    /// No value for the hash attribute.
    NoHashValue,
    /// Excluded by a hash filter.
    Filtered,
    /// Outside the experiment's namespace range.
    NotInNamespace,
    /// The targeting condition failed.
    ConditionFailed,
    /// A prerequisite failed.
    PrerequisiteFailed,
    /// Unknown hash version.
    UnknownHashVersion,
    /// The hash fell outside every range (coverage).
    NotCovered,
    /// The experiment forces a variation.
    ForcedByExperiment,
    /// QA mode.
    QaMode,
    /// GrowthBook status "stopped".
    Stopped,
    /// Assigned by hashing.
    Hashed,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The variation index, when the user is in the experiment.
    pub variation: Option<usize>,
    /// Whether a hash chose the variation.
    pub hash_used: bool,
    /// The hash value, when a hash chose the variation.
    pub bucket: Option<f64>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    fn out(reason: Reason) -> Self {
        Self {
            variation: None,
            hash_used: false,
            bucket: None,
            reason,
        }
    }

    /// Whether the user is in the experiment.
    pub fn in_experiment(&self) -> bool {
        self.variation.is_some()
    }
}

impl CompiledExperiment {
    /// A running experiment with equal weights, full coverage and GrowthBook defaults.
    pub fn new(key: impl Into<String>, variation_keys: Vec<String>) -> Self {
        let key = key.into();
        let ranges = bucket_ranges(variation_keys.len(), None, None);
        Self {
            seed: key.clone(),
            key,
            hash_version: 1,
            hash_attribute: "user_id".to_owned(),
            variation_keys,
            ranges,
            namespace: None,
            filters: None,
            condition: None,
            parent_conditions: Vec::new(),
            forced_users: Map::new(),
            force: None,
            active: true,
            stopped: false,
            halted: false,
        }
    }

    /// Sets coverage and weights (GrowthBook `getBucketRanges`, with its fallbacks).
    pub fn with_traffic(mut self, coverage: Option<f64>, weights: Option<&[f64]>) -> Self {
        self.ranges = bucket_ranges(self.variation_keys.len(), coverage, weights);
        self
    }

    /// Forced index -> decision, as `getExperimentResult(exp, index, hashUsed=false)`.
    fn forced(&self, index: i64, reason: Reason) -> Decision {
        let n = self.variation_keys.len() as i64;
        if (0..n).contains(&index) {
            Decision {
                variation: Some(index as usize),
                hash_used: false,
                bucket: None,
                reason,
            }
        } else {
            Decision::out(reason)
        }
    }

    /// Decides the user's variation: GrowthBook `runExperiment`, step for step.
    pub fn decide(&self, ctx: &UserContext<'_>) -> Decision {
        let n = self.variation_keys.len();
        // 1. Fewer than two variations.
        if n < 2 {
            return Decision::out(Reason::TooFewVariations);
        }
        if self.halted {
            return Decision::out(Reason::Halted);
        }
        // 2. Globally disabled.
        if !ctx.enabled {
            return Decision::out(Reason::Disabled);
        }
        // 3. Query-string override.
        if let Some(url) = ctx.url {
            if let Some(i) = query_string_override(&self.key, url, n) {
                return self.forced(i, Reason::QueryString);
            }
        }
        // 4. Forced variations from the context, then per-user overrides.
        if let Some(fv) = ctx.forced_variations {
            if let Some(v) = fv.get(&self.key) {
                return self.forced(forced_index(v), Reason::ForcedByContext);
            }
        }
        let hash_value = ctx.hash_value(&self.hash_attribute);
        if !self.forced_users.is_empty() {
            if let Some(v) = hash_value
                .as_ref()
                .and_then(|h| self.forced_users.get(h.as_ref()))
            {
                return self.forced(forced_index(v), Reason::ForcedUser);
            }
        }
        // 5. Inactive or draft.
        if !self.active {
            return Decision::out(Reason::Inactive);
        }
        // 6. The hash attribute.
        let Some(hash_value) = hash_value else {
            return Decision::out(Reason::NoHashValue);
        };
        // 7. Filters take precedence over the namespace.
        if let Some(filters) = &self.filters {
            if self.filtered_out(filters, ctx) {
                return Decision::out(Reason::Filtered);
            }
        } else if let Some(ns) = &self.namespace {
            if !in_namespace(&hash_value, &ns.id, ns.range) {
                return Decision::out(Reason::NotInNamespace);
            }
        }
        // 8. Targeting condition.
        if let Some(cond) = &self.condition {
            if !cond.eval(ctx, ctx.saved_groups) {
                return Decision::out(Reason::ConditionFailed);
            }
        }
        // 8.05 Prerequisites.
        if !self.parent_conditions.is_empty()
            && !super::growthbook::prerequisites_pass(&self.parent_conditions, ctx)
        {
            return Decision::out(Reason::PrerequisiteFailed);
        }
        // 9. Hash and choose.
        let Some(bucket) = hash(&self.seed, &hash_value, self.hash_version) else {
            return Decision::out(Reason::UnknownHashVersion);
        };
        // 10. Coverage exclusion.
        let Some(assigned) = choose_variation(bucket, &self.ranges) else {
            return Decision::out(Reason::NotCovered);
        };
        // 11. Forced by the experiment (after coverage, as in GrowthBook).
        if let Some(force) = self.force {
            return self.forced(force, Reason::ForcedByExperiment);
        }
        // 12. QA mode, 12.5 stopped.
        if ctx.qa_mode {
            return Decision::out(Reason::QaMode);
        }
        if self.stopped {
            return Decision::out(Reason::Stopped);
        }
        Decision {
            variation: Some(assigned),
            hash_used: true,
            bucket: Some(bucket),
            reason: Reason::Hashed,
        }
    }

    /// The fast path for the common case: hash attribute `user_id`, no condition.
    /// Same result as [`Self::decide`] with [`UserContext::user`].
    pub fn decide_user(&self, user_id: &str) -> Decision {
        self.decide(&UserContext::user(user_id))
    }

    /// Decides for many users at once, on the fast path (hash attribute `user_id`, no
    /// condition, filters, namespace, prerequisites or overrides; any other experiment
    /// falls back to [`Self::decide`] per user). Same results as `decide_user` for each
    /// id; faster because the users' hash chains are independent, so the core can run
    /// several at once instead of waiting on one chain of multiplies.
    pub fn decide_users(&self, user_ids: &[&str], out: &mut Vec<Decision>) {
        out.clear();
        let simple = self.variation_keys.len() >= 2
            && !self.halted
            && self.active
            && !self.stopped
            && self.force.is_none()
            && self.hash_attribute == "user_id"
            && self.condition.is_none()
            && self.filters.is_none()
            && self.namespace.is_none()
            && self.parent_conditions.is_empty()
            && self.forced_users.is_empty()
            && matches!(self.hash_version, 1 | 2);
        if !simple {
            out.extend(user_ids.iter().map(|u| self.decide_user(u)));
            return;
        }
        out.extend(user_ids.iter().map(|u| {
            if u.is_empty() {
                return Decision::out(Reason::NoHashValue);
            }
            // `hash` is inlined here; with no branches between users the CPU overlaps
            // consecutive users' multiply chains.
            let bucket = hash(&self.seed, u, self.hash_version).unwrap_or(f64::NAN);
            match choose_variation(bucket, &self.ranges) {
                Some(i) => Decision {
                    variation: Some(i),
                    hash_used: true,
                    bucket: Some(bucket),
                    reason: Reason::Hashed,
                },
                None => Decision::out(Reason::NotCovered),
            }
        }));
    }

    fn filtered_out(&self, filters: &[Filter], ctx: &UserContext<'_>) -> bool {
        filters.iter().any(|f| {
            let attr = f.attribute.as_deref().unwrap_or(&self.hash_attribute);
            let Some(value) = ctx.hash_value(attr) else {
                return true;
            };
            let Some(n) = hash(&f.seed, &value, f.hash_version) else {
                return true;
            };
            !f.ranges.iter().any(|&r| in_range(n, r))
        })
    }
}

/// A forced variation from JSON: a number (JavaScript would index with it).
fn forced_index(v: &Value) -> i64 {
    match v {
        Value::Number(n) => {
            let f = js::as_f64(n);
            if f.fract() == 0.0 && f.is_finite() {
                f as i64
            } else {
                -1
            }
        }
        _ => -1,
    }
}

/// `getQueryStringOverride(id, url, numVariations)`, with JavaScript's `split` and
/// `parseInt` quirks (no URL-decoding; "1abc" is 1; "0x1" is 1).
pub fn query_string_override(id: &str, url: &str, num_variations: usize) -> Option<i64> {
    let search = url.split('?').nth(1)?;
    if search.is_empty() {
        return None;
    }
    let search = match search.find('#') {
        Some(i) => &search[..i],
        None => search,
    };
    let first = search
        .split('&')
        .filter_map(|kv| {
            let mut it = kv.splitn(3, '=');
            let k = it.next().unwrap_or("");
            (k == id).then(|| it.next())
        })
        .next()?;
    let v = parse_int(first?)?;
    (v >= 0 && (v as usize) < num_variations).then_some(v)
}

/// JavaScript `parseInt(s)` for the integers a query string can carry; `None` is NaN.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, t) = if t.starts_with("0x") || t.starts_with("0X") {
        (16, &t[2..])
    } else {
        (10, t)
    };
    let digits: String = t.chars().take_while(|c| c.is_digit(radix)).collect();
    if digits.is_empty() {
        return None;
    }
    let v = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_string_follows_javascript() {
        assert_eq!(query_string_override("t", "http://x?t=1#a", 2), Some(1));
        assert_eq!(query_string_override("t", "http://x?t=1.5", 2), Some(1));
        assert_eq!(query_string_override("t", "http://x?t=1abc", 2), Some(1));
        assert_eq!(query_string_override("t", "http://x?t=5", 2), None);
        assert_eq!(query_string_override("t", "http://x?t=foo", 2), None);
        assert_eq!(query_string_override("t", "http://x?t", 2), None);
        assert_eq!(query_string_override("t", "http://x?t=-0", 2), Some(0));
    }

    #[test]
    fn halted_beats_overrides() {
        let mut exp = CompiledExperiment::new("e", vec!["control".into(), "treatment".into()]);
        exp.forced_users.insert("u1".into(), Value::from(1));
        assert_eq!(exp.decide_user("u1").variation, Some(1));
        exp.halted = true;
        assert_eq!(exp.decide_user("u1").variation, None);
        assert_eq!(exp.decide_user("u1").reason, Reason::Halted);
    }
}
