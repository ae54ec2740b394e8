//! Domain events to and from the store's opaque envelope.
//!
//! The payload is the event's JSON data; the metadata is the JSON [`Metadata`]; the
//! type and schema version travel in the store's envelope, so upcasting happens here,
//! on read, and nothing stored is ever rewritten.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use verdict_core::event::{DecodeError, Metadata};
use verdict_core::{Envelope, Event};
use verdict_store::{EventData, RecordedEvent};

/// Encodes an event for appending.
pub fn encode(
    event: &Event,
    event_id: Uuid,
    recorded_at_micros: i64,
    metadata: &Metadata,
) -> EventData {
    EventData {
        event_id,
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: Bytes::from(event.encode_data_vec()),
        metadata: if metadata == &Metadata::default() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(metadata).unwrap_or_default())
        },
        recorded_at: recorded_at_micros,
    }
}

/// Decodes a stored event into the domain event (upcast to the current shape).
pub fn decode(recorded: &RecordedEvent) -> Result<Event, DecodeError> {
    Event::decode_slice(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    )
}

/// Microseconds since the epoch as a timestamp.
pub fn timestamp(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

/// The stored event as the audit log shows it: the envelope with raw (stored) data.
pub fn envelope(recorded: &RecordedEvent) -> Envelope {
    Envelope {
        event_id: recorded.event_id,
        stream: recorded.stream.clone(),
        stream_version: recorded.stream_version,
        position: recorded.position,
        event_type: recorded.event_type.clone(),
        schema_version: recorded.schema_version,
        recorded_at: timestamp(recorded.recorded_at),
        data: serde_json::from_slice(&recorded.payload).unwrap_or(serde_json::Value::Null),
        metadata: if recorded.metadata.is_empty() {
            Metadata::default()
        } else {
            serde_json::from_slice(&recorded.metadata).unwrap_or_default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_core::event::UserInteracted;

    #[test]
    fn round_trip() {
        let e = Event::UserInteracted(UserInteracted {
            experiment_id: "e".into(),
            user_id: "u".into(),
            action: "click".into(),
            item_id: None,
            variant: Some("control".into()),
        });
        let data = encode(
            &e,
            Uuid::from_u128(1),
            1_700_000_000_000_000,
            &Metadata::default(),
        );
        let recorded = RecordedEvent {
            position: 7,
            stream: e.stream(),
            stream_version: 1,
            event_id: data.event_id,
            event_type: data.event_type.clone(),
            schema_version: data.schema_version,
            payload: data.payload.clone(),
            metadata: data.metadata.clone(),
            recorded_at: data.recorded_at,
        };
        assert_eq!(decode(&recorded).unwrap(), e);
        let env = envelope(&recorded);
        assert_eq!(
            (env.position, env.event_type.as_str()),
            (7, "UserInteracted")
        );
        assert_eq!(env.recorded_at.to_rfc3339(), "2023-11-14T22:13:20+00:00");
    }
}
