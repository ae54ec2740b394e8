//! Fuzzes the record and segment-header decoders: arbitrary bytes must never panic, and
//! whatever decodes must re-encode to the bytes it was decoded from (the CRC aside: the
//! `fuzzing-unchecked-crc` feature skips its check so mutations reach the fields behind it).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use verdict_store_log::format::{self, RecordRef};

fuzz_target!(|data: &[u8]| {
    let _ = format::decode_segment_header(data);
    let buf = Bytes::copy_from_slice(data);
    let mut off = 0;
    // Walk the buffer like a scan does, record after record.
    while let Ok((rec, len)) = format::decode_record_at(&buf, off) {
        let mut again = Vec::new();
        format::encode_record(
            &mut again,
            &RecordRef {
                position: rec.position,
                stream_version: rec.stream_version,
                group: rec.group,
                recorded_at: rec.recorded_at,
                event_id: rec.event_id,
                schema_version: rec.schema_version,
                flags: rec.flags,
                stream: &rec.stream,
                event_type: &rec.event_type,
                metadata: &rec.metadata,
                payload: &rec.payload,
            },
        );
        // The CRC is not checked while fuzzing (so the fuzzer gets past it); all else must match.
        let original = &data[off..off + len];
        assert_eq!(again.len(), len, "decode/encode changed the length");
        assert_eq!(&again[..4], &original[..4], "length field differs");
        assert_eq!(
            &again[8..],
            &original[8..],
            "decode/encode is not a round trip"
        );
        off += len;
    }
});
