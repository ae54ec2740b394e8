//! The read model: everything queries need, folded from events.
//!
//! Per experiment and variant: exact distinct users, per-user conversion and revenue
//! aggregated over users (sums and sums of squares of per-user totals, not of events),
//! predictions, errors, latency histograms (HDR), and hourly buckets. [`ReadModel::apply`]
//! is idempotent by position (an event at or below the model's position is ignored), so
//! a snapshot plus a replay from its position never double counts.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer as HdrDeserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;
use verdict_core::experiment::{evolve, Experiment};
use verdict_core::Event;

/// Microseconds per hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// A latency histogram in microseconds (HDR, 1 us to 10 min), serialized compactly.
#[derive(Debug, Clone)]
pub struct Latency(pub Histogram<u64>);

impl Latency {
    /// An empty histogram with `sigfig` significant digits.
    pub fn new(sigfig: u8) -> Self {
        Self(
            Histogram::new_with_bounds(1, 600_000_000, sigfig)
                .unwrap_or_else(|_| Histogram::new(2).expect("valid")),
        )
    }

    /// Records a latency in milliseconds.
    pub fn record_ms(&mut self, ms: f64) {
        let micros = (ms * 1000.0).round().clamp(1.0, 600_000_000.0) as u64;
        self.0.saturating_record(micros);
    }

    /// The value at `q` (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Mean in milliseconds; `None` when empty.
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.mean() / 1000.0)
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new(3)
    }
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut buf)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(buf))
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        let h = HdrDeserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(serde::de::Error::custom)?;
        Ok(Latency(h))
    }
}

/// One user's state in one experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserState {
    /// Index of the assigned variant.
    pub variant: u32,
    /// Converted at least once.
    pub converted: bool,
    /// Total revenue.
    pub revenue: f64,
}

/// Running totals for one variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VariantStats {
    /// Distinct assigned users.
    pub users: u64,
    /// Successful predictions.
    pub predictions: u64,
    /// Failed predictions.
    pub errors: u64,
    /// Interactions.
    pub interactions: u64,
    /// Users with at least one conversion.
    pub converted_users: u64,
    /// Conversion events.
    pub conversion_events: u64,
    /// Sum over users of their revenue.
    pub revenue_sum: f64,
    /// Sum over users of their revenue squared.
    pub revenue_sum_squares: f64,
    /// Prediction latency (successful predictions).
    pub latency: Latency,
    /// Of it, time in the model itself (predictions whose backend measures it).
    #[serde(default)]
    pub model_latency: Latency,
    /// The rest: platform overhead (latency minus model time) of the same predictions.
    #[serde(default)]
    pub overhead: Latency,
}

/// Running totals for one shadow arm: its calls, and how its answers compared with the
/// control's answers to the same requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShadowStats {
    /// Shadow arm key.
    pub key: String,
    /// Shadow predictions (recorded, never served).
    pub predictions: u64,
    /// Shadow failures.
    pub errors: u64,
    /// Shadow model latency.
    pub latency: Latency,
    /// The control's latency on the same (mirrored) requests.
    pub control_latency: Latency,
    /// Predictions compared with the control's.
    pub compared: u64,
    /// ... whose decision agreed with the control's.
    pub agreements: u64,
    /// Sum and count of the item overlaps (recommenders).
    pub overlap_sum: f64,
    /// Count of overlaps summed.
    pub overlap_count: u64,
    /// Sum and count of the mean absolute output differences.
    pub diff_sum: f64,
    /// Count of differences summed.
    pub diff_count: u64,
}

/// One hour of one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketStats {
    /// Users first assigned in this hour.
    pub new_users: u64,
    /// Predictions.
    pub predictions: u64,
    /// Failures.
    pub errors: u64,
    /// Users whose first conversion fell in this hour.
    pub newly_converted: u64,
    /// Revenue recorded in this hour.
    pub revenue: f64,
    /// Latency in this hour (2 significant digits, to keep hours small).
    pub latency: Latency,
}

impl Default for BucketStats {
    fn default() -> Self {
        Self {
            new_users: 0,
            predictions: 0,
            errors: 0,
            newly_converted: 0,
            revenue: 0.0,
            latency: Latency::new(2),
        }
    }
}

/// An alert as the read side shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertView {
    /// Alert id.
    pub alert_id: Uuid,
    /// Experiment.
    pub experiment_id: String,
    /// Monitor.
    pub monitor: String,
    /// P1/P2/P3.
    pub severity: String,
    /// Summary.
    pub message: String,
    /// Evidence at raise time.
    pub evidence: serde_json::Value,
    /// Raised at (unix micros).
    pub raised_at: i64,
    /// Position of the raise.
    pub position: u64,
    /// Resolved at (unix micros), if resolved.
    pub resolved_at: Option<i64>,
}

/// Everything known about one experiment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExperimentView {
    /// The aggregate's state (definition, status, version, stop).
    pub state: Experiment,
    /// Created at (unix micros).
    pub created_at: i64,
    /// First started at.
    pub started_at: Option<i64>,
    /// Stopped at.
    pub stopped_at: Option<i64>,
    /// Latest event of any kind.
    pub last_event_at: i64,
    /// Per-variant totals, in definition order.
    pub variants: Vec<VariantStats>,
    /// Per-shadow-arm totals, in definition order.
    #[serde(default)]
    pub shadows: Vec<ShadowStats>,
    /// Per-user state.
    pub users: HashMap<String, UserState>,
    /// Conversions of users never assigned: kept, left out of the analysis.
    pub unattributed_conversions: u64,
    /// Interactions of users never assigned.
    pub unattributed_interactions: u64,
    /// Hour start (unix micros) -> per-variant bucket.
    pub hours: BTreeMap<i64, Vec<BucketStats>>,
    /// Alerts, oldest first.
    pub alerts: Vec<AlertView>,
}

/// The traffic event kinds, which make up nearly the whole log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// `UserAssigned`.
    Assigned,
    /// `PredictionMade`.
    Predicted,
    /// `PredictionFailed`.
    Failed,
    /// `UserInteracted`.
    Interacted,
    /// `ConversionRecorded`.
    Converted,
}

impl Traffic {
    /// The kind of a stored event type, if it is traffic.
    pub fn of(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "UserAssigned" => Traffic::Assigned,
            "PredictionMade" => Traffic::Predicted,
            "PredictionFailed" => Traffic::Failed,
            "UserInteracted" => Traffic::Interacted,
            "ConversionRecorded" => Traffic::Converted,
            _ => return None,
        })
    }
}

/// The fields of a traffic event the read model uses, borrowed from the stored JSON:
/// decoding only these (and skipping model inputs and outputs) is what makes replay fast.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Fields<'a> {
    /// Experiment.
    #[serde(borrow)]
    pub experiment_id: std::borrow::Cow<'a, str>,
    /// User.
    #[serde(borrow)]
    pub user_id: std::borrow::Cow<'a, str>,
    /// Variant (assignments and predictions).
    #[serde(borrow, default)]
    pub variant: Option<std::borrow::Cow<'a, str>>,
    /// Latency (predictions).
    #[serde(default)]
    pub latency_ms: f64,
    /// Model time within the latency (predictions).
    #[serde(default)]
    pub model_ms: Option<f64>,
    /// Shadow call (predictions).
    #[serde(default)]
    pub shadow: bool,
    /// Shadow predictions: the comparison with the control.
    #[serde(default)]
    pub comparison: Option<verdict_core::event::ShadowComparison>,
    /// Revenue (conversions).
    #[serde(default)]
    pub amount: f64,
}

impl<'a> Fields<'a> {
    /// The same fields, owning their strings.
    pub fn into_owned(self) -> Fields<'static> {
        use std::borrow::Cow;
        Fields {
            experiment_id: Cow::Owned(self.experiment_id.into_owned()),
            user_id: Cow::Owned(self.user_id.into_owned()),
            variant: self.variant.map(|v| Cow::Owned(v.into_owned())),
            latency_ms: self.latency_ms,
            model_ms: self.model_ms,
            shadow: self.shadow,
            comparison: self.comparison,
            amount: self.amount,
        }
    }

    fn of_assigned(e: &'a verdict_core::event::UserAssigned) -> Self {
        Self {
            experiment_id: e.experiment_id.as_str().into(),
            user_id: e.user_id.as_str().into(),
            variant: Some(e.variant.as_str().into()),
            ..Self::default()
        }
    }
    fn of_made(e: &'a verdict_core::event::PredictionMade) -> Self {
        Self {
            experiment_id: e.experiment_id.as_str().into(),
            user_id: e.user_id.as_str().into(),
            variant: Some(e.variant.as_str().into()),
            latency_ms: e.latency_ms,
            model_ms: e.model_ms,
            shadow: e.shadow,
            comparison: e.comparison.clone(),
            amount: 0.0,
        }
    }
    fn of_failed(e: &'a verdict_core::event::PredictionFailed) -> Self {
        Self {
            experiment_id: e.experiment_id.as_str().into(),
            user_id: e.user_id.as_str().into(),
            variant: Some(e.variant.as_str().into()),
            latency_ms: e.latency_ms,
            model_ms: None,
            shadow: e.shadow,
            comparison: None,
            amount: 0.0,
        }
    }
    fn of_interacted(e: &'a verdict_core::event::UserInteracted) -> Self {
        Self {
            experiment_id: e.experiment_id.as_str().into(),
            user_id: e.user_id.as_str().into(),
            ..Self::default()
        }
    }
    fn of_converted(e: &'a verdict_core::event::ConversionRecorded) -> Self {
        Self {
            experiment_id: e.experiment_id.as_str().into(),
            user_id: e.user_id.as_str().into(),
            amount: e.amount,
            ..Self::default()
        }
    }
}

impl ExperimentView {
    fn apply_traffic(&mut self, kind: Traffic, f: &Fields<'_>, at: i64) {
        let view = self;
        match kind {
            Traffic::Assigned => {
                let Some(i) = f.variant.as_deref().and_then(|v| view.variant_index(v)) else {
                    return;
                };
                if view.users.contains_key(f.user_id.as_ref()) {
                    return; // a second exposure record of the same user counts once
                }
                view.users.insert(
                    f.user_id.to_string(),
                    UserState {
                        variant: i as u32,
                        converted: false,
                        revenue: 0.0,
                    },
                );
                view.variants[i].users += 1;
                view.bucket(at, i).new_users += 1;
            }
            Traffic::Predicted if f.shadow => {
                let Some(s) = view.shadow_mut(f.variant.as_deref()) else {
                    return;
                };
                s.predictions += 1;
                s.latency.record_ms(f.latency_ms);
                if let Some(c) = &f.comparison {
                    s.compared += 1;
                    s.agreements += u64::from(c.agree);
                    s.control_latency.record_ms(c.control_latency_ms);
                    if let Some(o) = c.overlap {
                        s.overlap_sum += o;
                        s.overlap_count += 1;
                    }
                    if let Some(d) = c.mean_abs_diff {
                        s.diff_sum += d;
                        s.diff_count += 1;
                    }
                }
            }
            Traffic::Failed if f.shadow => {
                if let Some(s) = view.shadow_mut(f.variant.as_deref()) {
                    s.errors += 1;
                }
            }
            Traffic::Predicted => {
                let Some(i) = f.variant.as_deref().and_then(|v| view.variant_index(v)) else {
                    return;
                };
                view.variants[i].predictions += 1;
                view.variants[i].latency.record_ms(f.latency_ms);
                if let Some(m) = f.model_ms {
                    let v = &mut view.variants[i];
                    v.model_latency.record_ms(m);
                    v.overhead.record_ms((f.latency_ms - m).max(0.0));
                }
                let b = view.bucket(at, i);
                b.predictions += 1;
                b.latency.record_ms(f.latency_ms);
            }
            Traffic::Failed => {
                let Some(i) = f.variant.as_deref().and_then(|v| view.variant_index(v)) else {
                    return;
                };
                view.variants[i].errors += 1;
                view.bucket(at, i).errors += 1;
            }
            Traffic::Interacted => match view.users.get(f.user_id.as_ref()) {
                Some(u) => {
                    let i = u.variant as usize;
                    view.variants[i].interactions += 1;
                }
                None => view.unattributed_interactions += 1,
            },
            Traffic::Converted => {
                // The projection's own assignment is the truth, whatever the client said.
                let Some(user) = view.users.get_mut(f.user_id.as_ref()) else {
                    view.unattributed_conversions += 1;
                    return;
                };
                let i = user.variant as usize;
                let first = !user.converted;
                user.converted = true;
                let before = user.revenue;
                user.revenue += f.amount;
                let after = user.revenue;
                let v = &mut view.variants[i];
                v.conversion_events += 1;
                v.revenue_sum += f.amount;
                v.revenue_sum_squares += after * after - before * before;
                if first {
                    v.converted_users += 1;
                }
                let b = view.bucket(at, i);
                b.revenue += f.amount;
                if first {
                    b.newly_converted += 1;
                }
            }
        }
    }

    fn shadow_mut(&mut self, key: Option<&str>) -> Option<&mut ShadowStats> {
        let key = key?;
        self.shadows.iter_mut().find(|s| s.key == key)
    }

    fn variant_index(&self, key: &str) -> Option<usize> {
        self.state
            .definition
            .as_ref()?
            .variants
            .iter()
            .position(|v| v.key == key)
    }

    fn bucket(&mut self, at: i64, variant: usize) -> &mut BucketStats {
        let n = self.variants.len();
        let hour = at.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let row = self
            .hours
            .entry(hour)
            .or_insert_with(|| vec![BucketStats::default(); n]);
        if row.len() < n {
            row.resize(n, BucketStats::default());
        }
        &mut row[variant]
    }
}

/// A traffic payload's fields: the plain shape verdict writes through the fast scanner
/// ([`crate::scan`]), anything else through serde_json (same answers, property-tested).
fn decode_fields(payload: &[u8]) -> Result<Fields<'_>, serde_json::Error> {
    match crate::scan::fields(payload) {
        Some(f) => Ok(f),
        None => serde_json::from_slice(payload),
    }
}

/// A stored event parsed without the read model, so parsing can run on other threads
/// than applying ([`ReadModel::apply_prepared`]).
#[derive(Debug)]
pub enum Prepared {
    /// A current traffic event: only the fields the read model uses.
    Traffic(Traffic, Fields<'static>),
    /// Any other event (rare), decoded (and upcast) in full; boxed to keep pages small.
    Event(Box<Event>),
    /// An event that cannot be decoded.
    Bad(verdict_core::event::DecodeError),
}

impl Prepared {
    /// Parses a stored event the way [`ReadModel::apply_stored`] would.
    pub fn of_stored(event_type: &str, schema_version: u32, payload: &[u8]) -> Self {
        if let Some(kind) = Traffic::of(event_type).filter(|_| schema_version == 1) {
            return match decode_fields(payload) {
                Ok(f) => Prepared::Traffic(kind, f.into_owned()),
                Err(e) => Prepared::Bad(verdict_core::event::DecodeError::Malformed {
                    event_type: event_type.to_owned(),
                    version: schema_version,
                    message: e.to_string(),
                }),
            };
        }
        match Event::decode_slice(event_type, schema_version, payload) {
            Ok(e) => Prepared::Event(Box::new(e)),
            Err(e) => Prepared::Bad(e),
        }
    }
}

/// All read models, with the position they reflect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadModel {
    /// The last applied global position.
    pub position: u64,
    /// Experiments by id.
    pub experiments: BTreeMap<String, ExperimentView>,
    /// Events that could not be decoded (skipped, counted).
    pub undecodable: u64,
    /// The identity of the store these events came from ([`verdict_store::EventStore::identity`]):
    /// a snapshot is trusted only by the log it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_identity: Option<String>,
    /// The id of the event at `position`: a log that has another event there (restored
    /// from an older backup and written since, cut back and written again) is another
    /// history, whatever its identity says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<uuid::Uuid>,
}

impl ReadModel {
    /// Applies one event at `position`, recorded at `at` (unix micros). Events at or
    /// below the current position are ignored, which makes replays idempotent.
    pub fn apply(&mut self, position: u64, at: i64, event: &Event) {
        if position <= self.position {
            return;
        }
        self.position = position;
        let id = event.experiment_id().to_owned();
        if let Event::ExperimentCreated(c) = event {
            let n = c.definition.variants.len();
            let view = self.experiments.entry(id.clone()).or_default();
            view.created_at = at;
            view.variants = vec![VariantStats::default(); n];
            view.shadows = (c.definition.shadows.iter())
                .map(|s| ShadowStats {
                    key: s.key.clone(),
                    ..ShadowStats::default()
                })
                .collect();
        }
        let Some(view) = self.experiments.get_mut(&id) else {
            // Traffic for an experiment never created: nothing to attribute it to.
            return;
        };
        view.last_event_at = view.last_event_at.max(at);
        match event {
            Event::ExperimentCreated(_)
            | Event::ExperimentPaused(_)
            | Event::ExperimentResumed(_)
            | Event::TrafficChanged(_) => {
                view.state = evolve(std::mem::take(&mut view.state), event);
            }
            Event::ExperimentStarted(_) => {
                view.state = evolve(std::mem::take(&mut view.state), event);
                view.started_at.get_or_insert(at);
            }
            Event::ExperimentStopped(_) => {
                view.state = evolve(std::mem::take(&mut view.state), event);
                view.stopped_at = Some(at);
            }
            Event::UserAssigned(e) => {
                view.apply_traffic(Traffic::Assigned, &Fields::of_assigned(e), at)
            }
            Event::PredictionMade(e) => {
                view.apply_traffic(Traffic::Predicted, &Fields::of_made(e), at)
            }
            Event::PredictionFailed(e) => {
                view.apply_traffic(Traffic::Failed, &Fields::of_failed(e), at)
            }
            Event::UserInteracted(e) => {
                view.apply_traffic(Traffic::Interacted, &Fields::of_interacted(e), at)
            }
            Event::ConversionRecorded(e) => {
                view.apply_traffic(Traffic::Converted, &Fields::of_converted(e), at)
            }
            Event::AlertRaised(e) => view.alerts.push(AlertView {
                alert_id: e.alert_id,
                experiment_id: e.experiment_id.clone(),
                monitor: e.monitor.clone(),
                severity: e.severity.clone(),
                message: e.message.clone(),
                evidence: e.evidence.clone(),
                raised_at: at,
                position,
                resolved_at: None,
            }),
            Event::AlertResolved(e) => {
                if let Some(a) = view.alerts.iter_mut().find(|a| a.alert_id == e.alert_id) {
                    a.resolved_at = Some(at);
                }
            }
        }
    }

    /// Applies a stored event from its type, schema version and JSON payload. Current
    /// traffic events decode only the fields the model needs; everything else (and
    /// older schema versions) decodes fully, with upcasting.
    pub fn apply_stored(
        &mut self,
        position: u64,
        at: i64,
        event_type: &str,
        schema_version: u32,
        payload: &[u8],
    ) -> Result<(), verdict_core::event::DecodeError> {
        if position <= self.position {
            return Ok(());
        }
        if let Some(kind) = Traffic::of(event_type).filter(|_| schema_version == 1) {
            let f: Fields<'_> = decode_fields(payload).map_err(|e| {
                verdict_core::event::DecodeError::Malformed {
                    event_type: event_type.to_owned(),
                    version: schema_version,
                    message: e.to_string(),
                }
            })?;
            self.position = position;
            if let Some(view) = self.experiments.get_mut(f.experiment_id.as_ref()) {
                view.last_event_at = view.last_event_at.max(at);
                view.apply_traffic(kind, &f, at);
            }
            return Ok(());
        }
        let event = Event::decode_slice(event_type, schema_version, payload)?;
        self.apply(position, at, &event);
        Ok(())
    }

    /// Applies an event parsed ahead by [`Prepared::of_stored`] (replay parses on other
    /// threads and applies here, in position order). Same effect as [`Self::apply_stored`].
    pub fn apply_prepared(
        &mut self,
        position: u64,
        at: i64,
        prepared: Prepared,
    ) -> Result<(), verdict_core::event::DecodeError> {
        if position <= self.position {
            return Ok(());
        }
        match prepared {
            Prepared::Traffic(kind, f) => {
                self.position = position;
                if let Some(view) = self.experiments.get_mut(f.experiment_id.as_ref()) {
                    view.last_event_at = view.last_event_at.max(at);
                    view.apply_traffic(kind, &f, at);
                }
                Ok(())
            }
            Prepared::Event(event) => {
                self.apply(position, at, &event);
                Ok(())
            }
            Prepared::Bad(e) => Err(e),
        }
    }

    /// Counts an event that could not be decoded, and moves past it.
    pub fn skip_undecodable(&mut self, position: u64) {
        if position > self.position {
            self.position = position;
            self.undecodable += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use verdict_core::event::*;
    use verdict_core::ExperimentSpec;

    fn created() -> Event {
        let definition = ExperimentSpec::from_json(json!({
            "experiment_id": "exp-001",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "traffic_split": {"control": 50, "treatment": 50}
        }))
        .unwrap()
        .validate()
        .unwrap();
        Event::ExperimentCreated(ExperimentCreated { definition })
    }

    fn assigned(user: &str, variant: &str) -> Event {
        Event::UserAssigned(UserAssigned {
            experiment_id: "exp-001".into(),
            user_id: user.into(),
            variant: variant.into(),
            model: "m".into(),
            bucket: None,
            experiment_version: 2,
            reason: "hashed".into(),
        })
    }

    fn converted(user: &str, amount: f64) -> Event {
        Event::ConversionRecorded(ConversionRecorded {
            experiment_id: "exp-001".into(),
            user_id: user.into(),
            conversion_type: "purchase".into(),
            amount,
            variant: Some("treatment".into()),
        })
    }

    #[test]
    fn conversion_and_revenue_are_per_user_not_per_event() {
        let mut m = ReadModel::default();
        let events = [
            created(),
            assigned("a", "control"),
            assigned("b", "control"),
            assigned("a", "treatment"), // a duplicate exposure record: ignored
            converted("a", 10.0),
            converted("a", 20.0),
            converted("ghost", 99.0),
        ];
        for (i, e) in events.iter().enumerate() {
            m.apply(i as u64 + 1, 0, e);
        }
        let v = &m.experiments["exp-001"];
        let c = &v.variants[0];
        assert_eq!((c.users, c.converted_users, c.conversion_events), (2, 1, 2));
        // Per-user revenue: a = 30, b = 0 -> sum 30, sum of squares 900 (not 100 + 400).
        assert_eq!((c.revenue_sum, c.revenue_sum_squares), (30.0, 900.0));
        assert_eq!(v.variants[1].users, 0);
        assert_eq!(v.unattributed_conversions, 1);
    }

    #[test]
    fn the_fast_stored_path_agrees_with_full_decoding() {
        let made = |user: &str, variant: &str, ms: f64| {
            Event::PredictionMade(PredictionMade {
                experiment_id: "exp-001".into(),
                user_id: user.into(),
                variant: variant.into(),
                model: "m".into(),
                model_version: "1".into(),
                prediction_id: Uuid::nil(),
                input: json!({"context": "homepage", "nested": [1, {"a": null}]}),
                output: json!({"items": [1, 2, 3]}),
                latency_ms: ms,
                model_ms: None,
                shadow: false,
                comparison: None,
            })
        };
        let events = [
            created(),
            assigned("a", "control"),
            made("a", "control", 3.5),
            assigned("b", "treatment"),
            made("b", "treatment", 7.25),
            converted("a", 10.0),
            converted("b", 4.0),
            converted("nobody", 1.0),
        ];
        let (mut full, mut fast) = (ReadModel::default(), ReadModel::default());
        for (i, e) in events.iter().enumerate() {
            let at = 1_800_000_000_000_000 + i as i64 * HOUR_MICROS / 2;
            full.apply(i as u64 + 1, at, e);
            let payload = serde_json::to_vec(&e.encode_data()).unwrap();
            fast.apply_stored(
                i as u64 + 1,
                at,
                e.event_type(),
                e.schema_version(),
                &payload,
            )
            .unwrap();
        }
        let value = |m: &ReadModel| serde_json::to_value(m).unwrap();
        assert_eq!(value(&fast), value(&full));
        assert_eq!(fast.experiments["exp-001"].variants[1].predictions, 1);
    }

    #[test]
    fn shadow_calls_aggregate_per_arm_on_both_paths() {
        let definition = ExperimentSpec::from_json(json!({
            "experiment_id": "exp-001",
            "variants": [
                {"key": "control", "model": "rec-v1"},
                {"key": "treatment", "model": "rec-v2"},
                {"key": "shadow", "model": "rec-v3", "shadow": true, "share": 0.5},
            ]
        }))
        .unwrap()
        .validate()
        .unwrap();
        let shadow = |agree: bool, overlap: f64, diff: Option<f64>, ms: f64| {
            Event::PredictionMade(PredictionMade {
                experiment_id: "exp-001".into(),
                user_id: "a".into(),
                variant: "shadow".into(),
                model: "rec-v3".into(),
                model_version: "3".into(),
                prediction_id: Uuid::nil(),
                input: json!({}),
                output: json!({"items": [1]}),
                latency_ms: ms,
                model_ms: None,
                shadow: true,
                comparison: Some(verdict_core::event::ShadowComparison {
                    agree,
                    overlap: Some(overlap),
                    mean_abs_diff: diff,
                    control_latency_ms: 2.0,
                }),
            })
        };
        let failed = Event::PredictionFailed(verdict_core::event::PredictionFailed {
            experiment_id: "exp-001".into(),
            user_id: "a".into(),
            variant: "shadow".into(),
            model: "rec-v3".into(),
            prediction_id: Uuid::nil(),
            error_kind: "timeout".into(),
            message: String::new(),
            latency_ms: 100.0,
            shadow: true,
        });
        let events = [
            Event::ExperimentCreated(ExperimentCreated { definition }),
            assigned("a", "control"),
            shadow(true, 1.0, Some(0.25), 4.0),
            shadow(false, 0.5, None, 6.0),
            failed,
        ];
        let (mut full, mut fast) = (ReadModel::default(), ReadModel::default());
        for (i, e) in events.iter().enumerate() {
            full.apply(i as u64 + 1, 0, e);
            let payload = serde_json::to_vec(&e.encode_data()).unwrap();
            fast.apply_stored(
                i as u64 + 1,
                0,
                e.event_type(),
                e.schema_version(),
                &payload,
            )
            .unwrap();
        }
        let value = |m: &ReadModel| serde_json::to_value(m).unwrap();
        assert_eq!(value(&fast), value(&full));
        let view = &fast.experiments["exp-001"];
        let s = &view.shadows[0];
        assert_eq!(
            (s.predictions, s.errors, s.compared, s.agreements),
            (2, 1, 2, 1)
        );
        assert_eq!((s.overlap_sum, s.overlap_count), (1.5, 2));
        assert_eq!((s.diff_sum, s.diff_count), (0.25, 1));
        assert_eq!(s.control_latency.count(), 2);
        // Shadow calls are not served traffic.
        assert!(view
            .variants
            .iter()
            .all(|v| v.predictions == 0 && v.errors == 0));
    }

    /// Replay's path (parse on one thread, apply on another) ends where the live path does,
    /// including ids that JSON escapes.
    #[test]
    fn prepared_events_apply_like_stored_ones() {
        let events = [
            created(),
            assigned("plain", "control"),
            assigned("quo\"te", "treatment"),
            assigned("\u{e9}t\u{e9}", "treatment"),
            converted("quo\"te", 5.0),
            converted("plain", 2.5),
            converted("\u{e9}t\u{e9}", 1.0),
            converted("never-assigned", 9.0),
        ];
        let (mut live, mut replayed) = (ReadModel::default(), ReadModel::default());
        for (i, e) in events.iter().enumerate() {
            let (position, at) = (i as u64 + 1, 3_600_000_000 * i as i64);
            let payload = e.encode_data_vec();
            live.apply_stored(position, at, e.event_type(), 1, &payload)
                .unwrap();
            let prepared = Prepared::of_stored(e.event_type(), 1, &payload);
            replayed.apply_prepared(position, at, prepared).unwrap();
        }
        let value = |m: &ReadModel| serde_json::to_value(m).unwrap();
        assert_eq!(value(&live), value(&replayed));
        let view = &replayed.experiments["exp-001"];
        assert_eq!(view.users.len(), 3);
        assert!(view.users.contains_key("quo\"te") && view.users.contains_key("été"));
        assert_eq!(view.unattributed_conversions, 1);
        assert_eq!(view.variants[1].converted_users, 2);
    }

    #[test]
    fn replaying_an_applied_position_changes_nothing() {
        let mut m = ReadModel::default();
        m.apply(1, 0, &created());
        m.apply(2, 0, &assigned("a", "control"));
        m.apply(3, 0, &converted("a", 5.0));
        let before = serde_json::to_string(&m).unwrap();
        m.apply(3, 0, &converted("a", 5.0));
        m.apply(2, 0, &assigned("b", "control"));
        assert_eq!(serde_json::to_string(&m).unwrap(), before);
        let back: ReadModel = serde_json::from_str(&before).unwrap();
        let value = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            value(&serde_json::to_string(&back).unwrap()),
            value(&before),
            "snapshots round-trip"
        );
    }
}
