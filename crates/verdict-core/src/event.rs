//! Domain events, their envelope, JSON encoding and upcasting.
//!
//! An event is encoded as `(type, schema_version, data)`. Stored events are never
//! rewritten: when a shape changes, its `schema_version` goes up, an upcaster turns the
//! old shape into the new one on read, and a golden file per version
//! (`tests/golden/<Type>.v<N>.json`) proves old bytes keep decoding.

use crate::experiment::definition::{ExperimentDefinition, ExperimentSpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Correlation and causation ids, and anything else a producer wants to trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Groups the events caused by one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Free-form extras (e.g. the API key's name).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A stored event as every reader sees it: the envelope around encoded data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7, the idempotency key.
    pub event_id: Uuid,
    /// Stream name, e.g. `experiment-exp-001`.
    pub stream: String,
    /// Version within the stream (1 for the first event).
    pub stream_version: u64,
    /// Global, gap-free position assigned by the store.
    pub position: u64,
    /// Event type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Version of the data's shape.
    pub schema_version: u32,
    /// When the event was recorded (given by the caller: the core reads no clock).
    pub recorded_at: DateTime<Utc>,
    /// The encoded event.
    pub data: Value,
    /// Tracing metadata.
    #[serde(default)]
    pub metadata: Metadata,
}

impl Envelope {
    /// Decodes the data, upcasting old schema versions.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        Event::decode(&self.event_type, self.schema_version, self.data.clone())
    }
}

/// Why stored data could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No such event type.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// A version newer than this build knows (written by a newer verdict).
    #[error(
        "`{event_type}` schema version {version} is newer than this build supports ({supported})"
    )]
    FutureVersion {
        /// Event type.
        event_type: String,
        /// Stored version.
        version: u32,
        /// Newest version this build decodes.
        supported: u32,
    },
    /// The data does not have the shape of its type and version.
    #[error("`{event_type}` v{version}: {message}")]
    Malformed {
        /// Event type.
        event_type: String,
        /// Version.
        version: u32,
        /// What failed.
        message: String,
    },
}

/// The experiment was defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExperimentCreated {
    /// The validated definition (schema version 2; version 1 was the seed's shape).
    pub definition: ExperimentDefinition,
}

/// A lifecycle event that names only the experiment and an optional reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Experiment id.
    pub experiment_id: String,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Weights and/or coverage changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficChanged {
    /// Experiment id.
    pub experiment_id: String,
    /// New weights by variant key (all variants), if they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, f64>>,
    /// New coverage, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Evidence for the change (e.g. a bandit's posterior).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
}

/// The experiment ended; everyone gets the control from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStopped {
    /// Experiment id.
    pub experiment_id: String,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The winning variant, if one was declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// True when a guardrail stopped it.
    #[serde(default)]
    pub auto: bool,
    /// The alert that caused an automatic stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Uuid>,
}

/// A user was exposed to the experiment for the first time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserAssigned {
    /// Experiment id.
    pub experiment_id: String,
    /// User id.
    pub user_id: String,
    /// Variant key.
    pub variant: String,
    /// Model behind the variant.
    pub model: String,
    /// The hash value that chose the variant (absent when forced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<f64>,
    /// Stream version of the experiment definition used (assignment provenance).
    pub experiment_version: u64,
    /// How the variant was chosen (`hashed`, `forced_user`, ...).
    pub reason: String,
}

/// A model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionMade {
    /// Experiment id.
    pub experiment_id: String,
    /// User id.
    pub user_id: String,
    /// Variant key.
    pub variant: String,
    /// Model name.
    pub model: String,
    /// Version reported by the model backend.
    pub model_version: String,
    /// Id of this prediction, returned to the client.
    pub prediction_id: Uuid,
    /// The request's input.
    pub input: Value,
    /// The model's output.
    pub output: Value,
    /// Model latency measured by the server.
    pub latency_ms: f64,
    /// Of `latency_ms`, the time in the model itself (the engine's run, or the upstream
    /// round trip), when the backend measures it; the rest is platform overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ms: Option<f64>,
    /// A shadow call: recorded, never served.
    #[serde(default)]
    pub shadow: bool,
    /// Shadow calls only: how the output compared with the control's answer to the same
    /// request (whose `prediction_id` this one shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ShadowComparison>,
}

/// A shadow output compared with the control's output for the same request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowComparison {
    /// Whether the decision agrees (top item, label, or the whole output).
    pub agree: bool,
    /// Recommenders: share of the control's items the shadow also returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// Mean absolute difference over the numeric outputs both returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_abs_diff: Option<f64>,
    /// The control model's latency on that request.
    pub control_latency_ms: f64,
}

/// A model failed to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionFailed {
    /// Experiment id.
    pub experiment_id: String,
    /// User id.
    pub user_id: String,
    /// Variant key.
    pub variant: String,
    /// Model name.
    pub model: String,
    /// Id of this prediction attempt.
    pub prediction_id: Uuid,
    /// `timeout`, `connection`, `upstream_4xx`, `upstream_5xx`, `invalid_output`, ...
    pub error_kind: String,
    /// Human-readable detail (truncated upstream body).
    pub message: String,
    /// Time until the failure.
    pub latency_ms: f64,
    /// A shadow call.
    #[serde(default)]
    pub shadow: bool,
}

/// A user interacted with what the model served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInteracted {
    /// Experiment id.
    pub experiment_id: String,
    /// User id.
    pub user_id: String,
    /// `click`, `view`, `scroll`, ...
    pub action: String,
    /// The item, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// The variant the user was assigned (attributed by the server), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A user converted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionRecorded {
    /// Experiment id.
    pub experiment_id: String,
    /// User id.
    pub user_id: String,
    /// `purchase`, `signup`, ...
    pub conversion_type: String,
    /// Revenue, in the experiment's currency unit.
    #[serde(default)]
    pub amount: f64,
    /// The variant the user was assigned (attributed by the server); `None` for a user
    /// never assigned, whose conversion is kept but left out of the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A monitor fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRaised {
    /// Alert id (resolution refers to it).
    pub alert_id: Uuid,
    /// Experiment id.
    pub experiment_id: String,
    /// Monitor name, e.g. `error_rate`.
    pub monitor: String,
    /// `P1`, `P2` or `P3`.
    pub severity: String,
    /// Human-readable summary.
    pub message: String,
    /// Figures and window behind the alert.
    pub evidence: Value,
}

/// A monitor's condition cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertResolved {
    /// The alert resolved.
    pub alert_id: Uuid,
    /// Experiment id.
    pub experiment_id: String,
    /// Monitor name.
    pub monitor: String,
    /// Human-readable summary.
    pub message: String,
    /// Figures at resolution.
    pub evidence: Value,
}

/// Every domain event. Serialized as `{"type": ..., "data": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(missing_docs)] // each variant is documented by its payload type
pub enum Event {
    ExperimentCreated(ExperimentCreated),
    ExperimentStarted(Lifecycle),
    ExperimentPaused(Lifecycle),
    ExperimentResumed(Lifecycle),
    TrafficChanged(TrafficChanged),
    ExperimentStopped(ExperimentStopped),
    UserAssigned(UserAssigned),
    PredictionMade(PredictionMade),
    PredictionFailed(PredictionFailed),
    UserInteracted(UserInteracted),
    ConversionRecorded(ConversionRecorded),
    AlertRaised(AlertRaised),
    AlertResolved(AlertResolved),
}

/// Every event type with its current schema version.
pub const EVENT_TYPES: &[(&str, u32)] = &[
    ("ExperimentCreated", 2),
    ("ExperimentStarted", 1),
    ("ExperimentPaused", 1),
    ("ExperimentResumed", 1),
    ("TrafficChanged", 1),
    ("ExperimentStopped", 1),
    ("UserAssigned", 1),
    ("PredictionMade", 1),
    ("PredictionFailed", 1),
    ("UserInteracted", 1),
    ("ConversionRecorded", 1),
    ("AlertRaised", 1),
    ("AlertResolved", 1),
];

impl Event {
    /// The type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::ExperimentCreated(_) => "ExperimentCreated",
            Event::ExperimentStarted(_) => "ExperimentStarted",
            Event::ExperimentPaused(_) => "ExperimentPaused",
            Event::ExperimentResumed(_) => "ExperimentResumed",
            Event::TrafficChanged(_) => "TrafficChanged",
            Event::ExperimentStopped(_) => "ExperimentStopped",
            Event::UserAssigned(_) => "UserAssigned",
            Event::PredictionMade(_) => "PredictionMade",
            Event::PredictionFailed(_) => "PredictionFailed",
            Event::UserInteracted(_) => "UserInteracted",
            Event::ConversionRecorded(_) => "ConversionRecorded",
            Event::AlertRaised(_) => "AlertRaised",
            Event::AlertResolved(_) => "AlertResolved",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn schema_version(&self) -> u32 {
        current_version(self.event_type()).unwrap_or(1)
    }

    /// The experiment the event belongs to.
    pub fn experiment_id(&self) -> &str {
        match self {
            Event::ExperimentCreated(e) => &e.definition.experiment_id,
            Event::ExperimentStarted(e)
            | Event::ExperimentPaused(e)
            | Event::ExperimentResumed(e) => &e.experiment_id,
            Event::TrafficChanged(e) => &e.experiment_id,
            Event::ExperimentStopped(e) => &e.experiment_id,
            Event::UserAssigned(e) => &e.experiment_id,
            Event::PredictionMade(e) => &e.experiment_id,
            Event::PredictionFailed(e) => &e.experiment_id,
            Event::UserInteracted(e) => &e.experiment_id,
            Event::ConversionRecorded(e) => &e.experiment_id,
            Event::AlertRaised(e) => &e.experiment_id,
            Event::AlertResolved(e) => &e.experiment_id,
        }
    }

    /// Whether the event belongs to the experiment's lifecycle stream (appended with an
    /// expected version) rather than to its traffic (appended without a check).
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            Event::ExperimentCreated(_)
                | Event::ExperimentStarted(_)
                | Event::ExperimentPaused(_)
                | Event::ExperimentResumed(_)
                | Event::TrafficChanged(_)
                | Event::ExperimentStopped(_)
        )
    }

    /// The stream the event is appended to.
    pub fn stream(&self) -> String {
        if self.is_lifecycle() {
            lifecycle_stream(self.experiment_id())
        } else {
            traffic_stream(self.experiment_id())
        }
    }

    /// Encodes the data (without the type tag) for storage, as JSON bytes.
    pub fn encode_data_vec(&self) -> Vec<u8> {
        // Straight from the payload struct: the bytes `encode_data` would give, without
        // building a `Value` tree first (this runs for every event the server writes).
        let bytes = match self {
            Event::ExperimentCreated(d) => serde_json::to_vec(d),
            Event::ExperimentStarted(d)
            | Event::ExperimentPaused(d)
            | Event::ExperimentResumed(d) => serde_json::to_vec(d),
            Event::TrafficChanged(d) => serde_json::to_vec(d),
            Event::ExperimentStopped(d) => serde_json::to_vec(d),
            Event::UserAssigned(d) => serde_json::to_vec(d),
            Event::PredictionMade(d) => serde_json::to_vec(d),
            Event::PredictionFailed(d) => serde_json::to_vec(d),
            Event::UserInteracted(d) => serde_json::to_vec(d),
            Event::ConversionRecorded(d) => serde_json::to_vec(d),
            Event::AlertRaised(d) => serde_json::to_vec(d),
            Event::AlertResolved(d) => serde_json::to_vec(d),
        };
        bytes.unwrap_or_default()
    }

    /// The event's data (the payload stored), as JSON.
    pub fn encode_data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
            // Serializing plain data to a Value cannot fail; keep the branch total.
            _ => Value::Null,
        }
    }

    /// Decodes stored JSON bytes of `event_type` at `version`. Current versions parse in
    /// one pass straight into the typed event (the replay hot path); older ones go
    /// through [`Event::decode`] and its upcasters.
    pub fn decode_slice(
        event_type: &str,
        version: u32,
        payload: &[u8],
    ) -> Result<Event, DecodeError> {
        let current = current_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        let malformed = |e: serde_json::Error| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            version,
            message: e.to_string(),
        };
        if version != current {
            let data = serde_json::from_slice(payload).map_err(malformed)?;
            return Event::decode(event_type, version, data);
        }
        // `{"type":"<T>","data":<payload>}`: the type first, so serde need not buffer.
        let mut buf = Vec::with_capacity(payload.len() + event_type.len() + 20);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(event_type.as_bytes());
        buf.extend_from_slice(b"\",\"data\":");
        buf.extend_from_slice(payload);
        buf.push(b'}');
        serde_json::from_slice(&buf).map_err(malformed)
    }

    /// Decodes stored data of `event_type` at `version`, upcasting to the current shape.
    pub fn decode(event_type: &str, version: u32, data: Value) -> Result<Event, DecodeError> {
        let current = current_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if version > current {
            return Err(DecodeError::FutureVersion {
                event_type: event_type.to_owned(),
                version,
                supported: current,
            });
        }
        let data = upcast(event_type, version, data)?;
        let tagged = serde_json::json!({"type": event_type, "data": data});
        serde_json::from_value(tagged).map_err(|e| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            version,
            message: e.to_string(),
        })
    }
}

/// The stream of an experiment's lifecycle events.
pub fn lifecycle_stream(experiment_id: &str) -> String {
    format!("experiment-{experiment_id}")
}

/// The stream of an experiment's traffic (assignments, predictions, outcomes, alerts).
pub fn traffic_stream(experiment_id: &str) -> String {
    format!("traffic-{experiment_id}")
}

fn current_version(event_type: &str) -> Option<u32> {
    EVENT_TYPES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, v)| *v)
}

/// Applies upcasters one version at a time until the data has the current shape.
fn upcast(event_type: &str, mut version: u32, mut data: Value) -> Result<Value, DecodeError> {
    let current = current_version(event_type).unwrap_or(version);
    while version < current {
        data = match (event_type, version) {
            ("ExperimentCreated", 1) => {
                experiment_created_v1_to_v2(data).map_err(|message| DecodeError::Malformed {
                    event_type: event_type.to_owned(),
                    version,
                    message,
                })?
            }
            _ => {
                return Err(DecodeError::Malformed {
                    event_type: event_type.to_owned(),
                    version,
                    message: "no upcaster from this version".to_owned(),
                })
            }
        };
        version += 1;
    }
    Ok(data)
}

/// `ExperimentCreated` v1 was the seed's shape: `{experiment_id, name, models,
/// traffic_split (percent), start_date}`. Version 2 is the full validated definition;
/// the v1 shape is read through the same path the API uses for it.
fn experiment_created_v1_to_v2(data: Value) -> Result<Value, String> {
    let spec = ExperimentSpec::from_json(data).map_err(|e| e.to_string())?;
    let definition = spec.validate().map_err(|e| e.to_string())?;
    serde_json::to_value(definition).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_shaped_v1_upcasts_to_the_full_definition() {
        let v1 = json!({
            "experiment_id": "exp-001",
            "name": "recommendation-model-v2",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "traffic_split": {"control": 50, "treatment": 50},
            "start_date": "2025-11-18",
        });
        let Event::ExperimentCreated(created) = Event::decode("ExperimentCreated", 1, v1).unwrap()
        else {
            panic!("wrong type");
        };
        let d = created.definition;
        assert_eq!(d.experiment_id, "exp-001");
        assert_eq!(
            d.variants
                .iter()
                .map(|v| (v.key.as_str(), v.model.as_str(), v.weight))
                .collect::<Vec<_>>(),
            vec![("control", "rec-v1", 0.5), ("treatment", "rec-v2", 0.5)]
        );
        assert_eq!(d.hash_attribute, "user_id");
    }

    #[test]
    fn decoding_bytes_agrees_with_decoding_values() {
        let e = Event::UserInteracted(UserInteracted {
            experiment_id: "e".into(),
            user_id: "u".into(),
            action: "click".into(),
            item_id: Some("7".into()),
            variant: None,
        });
        let bytes = serde_json::to_vec(&e.encode_data()).unwrap();
        assert_eq!(Event::decode_slice("UserInteracted", 1, &bytes).unwrap(), e);
        let v1 = br#"{"experiment_id": "x", "models": {"control": "a", "t": "b"}}"#;
        assert!(matches!(
            Event::decode_slice("ExperimentCreated", 1, v1),
            Ok(Event::ExperimentCreated(_))
        ));
        assert!(Event::decode_slice("UserInteracted", 1, b"{}").is_err());
    }

    #[test]
    fn unknown_and_future_versions_are_refused() {
        assert!(matches!(
            Event::decode("Nope", 1, json!({})),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Event::decode("UserInteracted", 9, json!({})),
            Err(DecodeError::FutureVersion { .. })
        ));
        assert!(matches!(
            Event::decode("UserInteracted", 1, json!({"user_id": 1})),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
