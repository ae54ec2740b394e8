//! The body of one event message: the envelope fields JetStream does not carry, then the
//! payload.
//!
//! ```text
//! u8 format (1) | event_id [16] | stream_version u64 | schema_version u32 | recorded_at i64
//! | type_len u32 | event_type | metadata_len u32 | metadata | payload (the rest)
//! ```
//!
//! All integers little-endian. The stream name is the subject's last token and the global
//! position is the message's stream sequence, so neither is repeated here. Binary rather
//! than headers because metadata and payload are arbitrary bytes.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;
use verdict_store::{EventData, RecordedEvent, StoreError};

const FORMAT: u8 = 1;
const FIXED: usize = 1 + 16 + 8 + 4 + 8 + 4;

/// Encodes `event` as the `stream_version`-th event of its stream.
pub(crate) fn encode(event: &EventData, stream_version: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(
        FIXED + event.event_type.len() + 4 + event.metadata.len() + event.payload.len(),
    );
    out.put_u8(FORMAT);
    out.put_slice(event.event_id.as_bytes());
    out.put_u64_le(stream_version);
    out.put_u32_le(event.schema_version);
    out.put_i64_le(event.recorded_at);
    out.put_u32_le(event.event_type.len() as u32);
    out.put_slice(event.event_type.as_bytes());
    out.put_u32_le(event.metadata.len() as u32);
    out.put_slice(&event.metadata);
    out.put_slice(&event.payload);
    out.freeze()
}

fn corrupt(position: u64, what: &str) -> StoreError {
    StoreError::Corrupt(format!("message at stream sequence {position}: {what}"))
}

fn take<'a>(body: &mut &'a [u8], n: usize, position: u64) -> Result<&'a [u8], StoreError> {
    if body.len() < n {
        return Err(corrupt(position, "truncated body"));
    }
    let (head, rest) = body.split_at(n);
    *body = rest;
    Ok(head)
}

/// Decodes the body of the message at `position` on `stream`.
pub(crate) fn decode(
    stream: String,
    position: u64,
    body: &Bytes,
) -> Result<RecordedEvent, StoreError> {
    let mut rest: &[u8] = body;
    let fixed = take(&mut rest, FIXED, position)?;
    if fixed[0] != FORMAT {
        return Err(corrupt(position, "unknown body format"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(fixed[at..at + 4].try_into().expect("4 bytes"));
    let event_id = Uuid::from_slice(&fixed[1..17]).expect("16 bytes");
    let stream_version = u64_at(17);
    let schema_version = u32_at(25);
    let recorded_at = u64_at(29) as i64;
    let type_len = u32_at(37) as usize;
    let event_type = std::str::from_utf8(take(&mut rest, type_len, position)?)
        .map_err(|_| corrupt(position, "event type is not UTF-8"))?
        .to_owned();
    let meta_len =
        u32::from_le_bytes(take(&mut rest, 4, position)?.try_into().expect("4 bytes")) as usize;
    let meta = take(&mut rest, meta_len, position)?;
    let meta_start = body.len() - rest.len() - meta_len;
    let payload_start = body.len() - rest.len();
    Ok(RecordedEvent {
        position,
        stream,
        stream_version,
        event_id,
        event_type,
        schema_version,
        payload: body.slice(payload_start..),
        metadata: body.slice(meta_start..meta_start + meta.len()),
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let mut e = EventData::new(Uuid::now_v7(), "Type", Bytes::from_static(b"{\"a\":1}"));
        e.metadata = Bytes::from_static(b"\x00\xffmeta");
        e.schema_version = 7;
        e.recorded_at = -5;
        let body = encode(&e, 42);
        let r = decode("s".into(), 9, &body).unwrap();
        assert_eq!(
            (r.position, r.stream_version, r.stream.as_str()),
            (9, 42, "s")
        );
        assert_eq!(r.to_event_data(), e);
        for cut in 0..FIXED + 4 + 4 {
            assert!(
                decode("s".into(), 9, &body.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }
}
