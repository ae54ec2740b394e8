//! The bytes on disk: segment headers and CRC32C-framed records (see `FORMAT.md`).
//!
//! Pure functions over byte slices, so the decoder can be fuzzed on its own.

use bytes::Bytes;
use uuid::Uuid;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"VRDCTLOG";
/// The segment format version this code writes: records in write groups, each group ended by
/// a [`GroupTrailer`].
pub const FORMAT_VERSION: u32 = 2;
/// The segment format before group trailers; still read (write groups are then known only
/// from the records' group field), never written.
pub const FORMAT_VERSION_1: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of the frame header: body length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// Length of the fixed part of a record body.
pub const BODY_FIXED_LEN: usize = 64;
/// Largest body a record may have; a larger length field is damage, not data.
pub const MAX_BODY_LEN: usize = 64 << 20;
/// Flag bit: this record is the last event of its append batch.
pub const FLAG_BATCH_END: u8 = 1;

/// Encodes a segment header (current version) for a segment whose first record has
/// `first_position`.
pub fn encode_segment_header(first_position: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header_version(first_position, FORMAT_VERSION)
}

/// Encodes a segment header of the given format `version` ([`FORMAT_VERSION`] or
/// [`FORMAT_VERSION_1`]; `repair` rewrites a damaged header with the version its records
/// show, tests build old logs).
pub fn encode_segment_header_version(
    first_position: u64,
    version: u32,
) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    // 12..16 reserved, zero
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    // 28..32 reserved, zero
    h
}

/// Decodes a segment header, returning the first position it announces.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, DecodeError> {
    segment_header(h).map(|(first, _)| first)
}

/// Decodes a segment header, returning the first position it announces and its format
/// version (1 or 2).
pub fn segment_header(h: &[u8]) -> Result<(u64, u32), DecodeError> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(DecodeError::Invalid("bad segment magic"));
    }
    if crc32c::crc32c(&h[0..24]) != u32::from_le_bytes(h[24..28].try_into().expect("4 bytes")) {
        return Err(DecodeError::Invalid("segment header checksum mismatch"));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(DecodeError::Invalid("unknown segment format version"));
    }
    Ok((
        u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        version,
    ))
}

/// The fields of one record, borrowed for encoding.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Global position.
    pub position: u64,
    /// Version within its stream.
    pub stream_version: u64,
    /// Position of the first record of the write group (one write + one fdatasync) it was
    /// written in; recovery uses it to tell a torn group from damage to older data.
    pub group: u64,
    /// Caller's timestamp.
    pub recorded_at: i64,
    /// Idempotency key.
    pub event_id: Uuid,
    /// Payload schema version.
    pub schema_version: u32,
    /// [`FLAG_BATCH_END`] or 0.
    pub flags: u8,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Opaque metadata.
    pub metadata: &'a [u8],
    /// Opaque payload.
    pub payload: &'a [u8],
}

/// A decoded record; `metadata` and `payload` share the buffer it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// See [`RecordRef::position`].
    pub position: u64,
    /// See [`RecordRef::stream_version`].
    pub stream_version: u64,
    /// See [`RecordRef::group`].
    pub group: u64,
    /// See [`RecordRef::recorded_at`].
    pub recorded_at: i64,
    /// See [`RecordRef::event_id`].
    pub event_id: Uuid,
    /// See [`RecordRef::schema_version`].
    pub schema_version: u32,
    /// See [`RecordRef::flags`].
    pub flags: u8,
    /// See [`RecordRef::stream`].
    pub stream: String,
    /// See [`RecordRef::event_type`].
    pub event_type: String,
    /// See [`RecordRef::metadata`].
    pub metadata: Bytes,
    /// See [`RecordRef::payload`].
    pub payload: Bytes,
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends inside the record (a torn tail, or a short read).
    #[error("record truncated")]
    Truncated,
    /// The bytes are damaged or not a record.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The encoded length of a record, frame header included.
pub fn encoded_len(r: &RecordRef<'_>) -> usize {
    FRAME_HEADER_LEN
        + BODY_FIXED_LEN
        + r.stream.len()
        + r.event_type.len()
        + r.metadata.len()
        + r.payload.len()
}

/// Appends the encoded record to `buf`.
///
/// # Panics
/// If a field exceeds its length field (callers validate first: stream names are bounded,
/// and the body must stay under [`MAX_BODY_LEN`]).
pub fn encode_record(buf: &mut Vec<u8>, r: &RecordRef<'_>) {
    let start = buf.len();
    let body_len = encoded_len(r) - FRAME_HEADER_LEN;
    assert!(
        body_len <= MAX_BODY_LEN,
        "record body of {body_len} bytes is too large"
    );
    buf.reserve(body_len + FRAME_HEADER_LEN);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // CRC, filled below
    buf.extend_from_slice(&r.position.to_le_bytes());
    buf.extend_from_slice(&r.stream_version.to_le_bytes());
    buf.extend_from_slice(&r.group.to_le_bytes());
    buf.extend_from_slice(&r.recorded_at.to_le_bytes());
    buf.extend_from_slice(r.event_id.as_bytes());
    buf.extend_from_slice(&r.schema_version.to_le_bytes());
    buf.extend_from_slice(&(r.metadata.len() as u32).to_le_bytes());
    buf.extend_from_slice(
        &u16::try_from(r.stream.len())
            .expect("stream name length")
            .to_le_bytes(),
    );
    buf.extend_from_slice(
        &u16::try_from(r.event_type.len())
            .expect("event type length")
            .to_le_bytes(),
    );
    buf.push(r.flags);
    buf.extend_from_slice(&[0; 3]);
    buf.extend_from_slice(r.stream.as_bytes());
    buf.extend_from_slice(r.event_type.as_bytes());
    buf.extend_from_slice(r.metadata);
    buf.extend_from_slice(r.payload);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over the length field and the body (everything but the CRC itself).
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[FRAME_HEADER_LEN..])
}

/// The unit a disk writes whole or not at all (the classic sector-atomicity assumption):
/// the granularity of a group trailer's checksums, and of "a part of a write that never
/// reached the disk" in recovery.
pub const SECTOR: u64 = 512;
/// Fixed part of a group trailer's body: the zero that marks it (8), first position (8),
/// group length (8), record count (4), sector count (4).
pub const TRAILER_FIXED_BODY: usize = 32;
/// Largest trailer body: sector checksums for groups of up to 128 GiB.
pub const MAX_TRAILER_BODY: usize = 1 << 30;

/// The frame that ends every write group in a version-2 segment, written in the same `write`
/// as the group: which records the group holds, and a CRC32C of the group's bytes in every
/// [`SECTOR`] of the file they touch. A trailer that verifies proves the group's end reached
/// the disk; the sector checksums tell a part of it that never did (zeros) from bytes that
/// changed after they were written (see `FORMAT.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTrailer {
    /// Position of the group's first record (the group field of all its records).
    pub first: u64,
    /// Bytes of the group's records: from its first record's frame to this trailer's.
    pub len: u64,
    /// Records in the group.
    pub records: u32,
    /// The sector checksums, 4 bytes each, little-endian (a slice of the decoded buffer).
    pub sector_crcs: Bytes,
}

impl GroupTrailer {
    /// The checksum of the `i`-th sector the group touches.
    pub fn sector_crc(&self, i: usize) -> u32 {
        u32::from_le_bytes(
            self.sector_crcs[i * 4..i * 4 + 4]
                .try_into()
                .expect("4 bytes"),
        )
    }
}

/// A decoded frame: an event record, or the trailer ending a write group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An event.
    Record(Record),
    /// The end of a write group.
    Trailer(GroupTrailer),
}

/// The [`SECTOR`]-aligned pieces of the file range `start..end`: `(from, to)` per sector it
/// touches, cut to the range.
pub fn sector_ranges(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut at = start;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let to = ((at / SECTOR + 1) * SECTOR).min(end);
            let piece = (at, to);
            at = to;
            piece
        })
    })
}

/// How many sectors the file range `start..end` touches.
pub fn sectors_spanned(start: u64, end: u64) -> u64 {
    if end <= start {
        0
    } else {
        (end - 1) / SECTOR - start / SECTOR + 1
    }
}

/// The CRC32C of `group`'s bytes in each sector of the file, `group` lying at `file_offset`.
pub fn sector_crcs(group: &[u8], file_offset: u64) -> impl Iterator<Item = u32> + '_ {
    sector_ranges(file_offset, file_offset + group.len() as u64).map(move |(a, b)| {
        crc32c::crc32c(&group[(a - file_offset) as usize..(b - file_offset) as usize])
    })
}

/// The encoded length of the trailer of a group of `group_len` bytes at `file_offset`.
pub fn trailer_len(file_offset: u64, group_len: u64) -> usize {
    FRAME_HEADER_LEN
        + TRAILER_FIXED_BODY
        + 4 * sectors_spanned(file_offset, file_offset + group_len) as usize
}

/// Appends the trailer of the write group `buf[group_start..]` (its records, encoded), which
/// the group's write puts at file offset `file_offset`; `first` is its first position and
/// `records` how many it holds. No allocation beyond `buf`'s growth.
///
/// # Panics
/// If the group is larger than a trailer can describe (128 GiB).
pub fn encode_group_trailer(
    buf: &mut Vec<u8>,
    group_start: usize,
    file_offset: u64,
    first: u64,
    records: u32,
) {
    let start = buf.len();
    let len = trailer_len(file_offset, (start - group_start) as u64);
    assert!(
        len - FRAME_HEADER_LEN <= MAX_TRAILER_BODY,
        "write group of {} bytes is too large for its trailer",
        start - group_start
    );
    buf.resize(start + len, 0);
    let (head, trailer) = buf.split_at_mut(start);
    write_trailer(trailer, &head[group_start..], file_offset, first, records);
}

/// The trailer the writer puts after `group` (records at `file_offset`, from position
/// `first`, `records` of them): recovery compares a damaged trailer with it.
pub fn expected_trailer(group: &[u8], file_offset: u64, first: u64, records: u32) -> Vec<u8> {
    let mut t = vec![0; trailer_len(file_offset, group.len() as u64)];
    write_trailer(&mut t, group, file_offset, first, records);
    t
}

/// Fills `t` (exactly the trailer's length, zeroed) with the trailer of `group`.
fn write_trailer(t: &mut [u8], group: &[u8], file_offset: u64, first: u64, records: u32) {
    let n = (t.len() - FRAME_HEADER_LEN - TRAILER_FIXED_BODY) / 4;
    let body_len = (t.len() - FRAME_HEADER_LEN) as u32;
    t[0..4].copy_from_slice(&body_len.to_le_bytes());
    // 4..8 CRC, below; 8..16 zero: no record has position 0
    t[16..24].copy_from_slice(&first.to_le_bytes());
    t[24..32].copy_from_slice(&(group.len() as u64).to_le_bytes());
    t[32..36].copy_from_slice(&records.to_le_bytes());
    t[36..40].copy_from_slice(&(n as u32).to_le_bytes());
    for (i, crc) in sector_crcs(group, file_offset).enumerate() {
        let o = FRAME_HEADER_LEN + TRAILER_FIXED_BODY + 4 * i;
        t[o..o + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = frame_crc(t);
    t[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Whether the frame at the start of `buf` claims to be a trailer (its position field is 0).
fn is_trailer(buf: &[u8]) -> bool {
    buf.len() >= 16 && buf[8..16] == [0; 8]
}

/// Decodes the frame (record or trailer) at `buf[at..]`; returns it and its encoded length.
/// `buf` must hold the file from its start: a trailer is checked against its file offset.
pub fn decode_frame_at(buf: &Bytes, at: usize) -> Result<(Frame, usize), DecodeError> {
    let rest = buf.get(at..).ok_or(DecodeError::Truncated)?;
    if !is_trailer(rest) {
        return decode_record_at(buf, at).map(|(r, len)| (Frame::Record(r), len));
    }
    let body_len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    if !(TRAILER_FIXED_BODY + 4..=MAX_TRAILER_BODY).contains(&body_len)
        || (body_len - TRAILER_FIXED_BODY) % 4 != 0
    {
        return Err(DecodeError::Invalid("implausible trailer length"));
    }
    let len = FRAME_HEADER_LEN + body_len;
    if rest.len() < len {
        return Err(DecodeError::Truncated);
    }
    let frame = &rest[..len];
    let stored_crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if frame_crc(frame) != stored_crc && !cfg!(feature = "fuzzing-unchecked-crc") {
        return Err(DecodeError::Invalid("trailer checksum mismatch"));
    }
    let u64_at = |o: usize| u64::from_le_bytes(frame[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(frame[o..o + 4].try_into().expect("4 bytes"));
    let (first, group_len, records, n) = (u64_at(16), u64_at(24), u32_at(32), u32_at(36));
    if first == 0 || records == 0 || group_len == 0 {
        return Err(DecodeError::Invalid("empty write group trailer"));
    }
    if group_len > at as u64
        || u64::from(n) != sectors_spanned(at as u64 - group_len, at as u64)
        || n as usize * 4 != body_len - TRAILER_FIXED_BODY
    {
        return Err(DecodeError::Invalid(
            "trailer does not fit the bytes before it",
        ));
    }
    let crcs = at + FRAME_HEADER_LEN + TRAILER_FIXED_BODY;
    Ok((
        Frame::Trailer(GroupTrailer {
            first,
            len: group_len,
            records,
            sector_crcs: buf.slice(crcs..at + len),
        }),
        len,
    ))
}

/// The total length (frame header included) announced by the frame header at the start of
/// `buf`, if it is plausible.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(DecodeError::Invalid("implausible record length"));
    }
    Ok(FRAME_HEADER_LEN + body_len)
}

/// The total length announced by the frame header at the start of `buf`, for a record or a
/// trailer, if it is plausible for either.
pub fn any_frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if !(TRAILER_FIXED_BODY + 4..=MAX_TRAILER_BODY.max(MAX_BODY_LEN)).contains(&body_len) {
        return Err(DecodeError::Invalid("implausible frame length"));
    }
    Ok(FRAME_HEADER_LEN + body_len)
}

/// Decodes the record at the start of `buf`; returns it and its encoded length.
pub fn decode_record(buf: &Bytes) -> Result<(Record, usize), DecodeError> {
    decode_record_at(buf, 0)
}

/// Decodes the record starting at `buf[at..]`; returns it and its encoded length. Metadata and
/// payload are slices of `buf` (no copy).
pub fn decode_record_at(buf: &Bytes, at: usize) -> Result<(Record, usize), DecodeError> {
    let rest = buf.get(at..).ok_or(DecodeError::Truncated)?;
    let len = frame_len(rest)?;
    if rest.len() < len {
        return Err(DecodeError::Truncated);
    }
    let frame = &rest[..len];
    let stored_crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if frame_crc(frame) != stored_crc && !cfg!(feature = "fuzzing-unchecked-crc") {
        return Err(DecodeError::Invalid("record checksum mismatch"));
    }
    let b = &frame[FRAME_HEADER_LEN..];
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes")) as usize;
    let metadata_len = u32_at(52) as usize;
    let stream_len = u16_at(56);
    let type_len = u16_at(58);
    let flags = b[60];
    if b[61..64] != [0; 3] || flags & !FLAG_BATCH_END != 0 {
        return Err(DecodeError::Invalid("reserved bits set"));
    }
    let var = b.len() - BODY_FIXED_LEN;
    if stream_len + type_len + metadata_len > var {
        return Err(DecodeError::Invalid("field lengths exceed the record"));
    }
    let s0 = FRAME_HEADER_LEN + BODY_FIXED_LEN;
    let t0 = s0 + stream_len;
    let m0 = t0 + type_len;
    let p0 = m0 + metadata_len;
    let stream = std::str::from_utf8(&frame[s0..t0])
        .map_err(|_| DecodeError::Invalid("stream name is not UTF-8"))?;
    let event_type = std::str::from_utf8(&frame[t0..m0])
        .map_err(|_| DecodeError::Invalid("event type is not UTF-8"))?;
    let position = u64_at(0);
    if position == 0 {
        return Err(DecodeError::Invalid("position 0"));
    }
    let record = Record {
        position,
        stream_version: u64_at(8),
        group: u64_at(16),
        recorded_at: u64_at(24) as i64,
        event_id: Uuid::from_bytes(b[32..48].try_into().expect("16 bytes")),
        schema_version: u32_at(48),
        flags,
        stream: stream.to_owned(),
        event_type: event_type.to_owned(),
        metadata: if metadata_len == 0 {
            Bytes::new()
        } else {
            buf.slice(at + m0..at + p0)
        },
        payload: if p0 == len {
            Bytes::new()
        } else {
            buf.slice(at + p0..at + len)
        },
    };
    Ok((record, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>() -> RecordRef<'a> {
        RecordRef {
            position: 42,
            stream_version: 7,
            group: 40,
            recorded_at: -5,
            event_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            schema_version: 3,
            flags: FLAG_BATCH_END,
            stream: "experiment-1",
            event_type: "Started",
            metadata: b"m",
            payload: b"{\"x\":1}",
        }
    }

    #[test]
    fn record_round_trips() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample());
        assert_eq!(buf.len(), encoded_len(&sample()));
        buf.extend_from_slice(b"trailing");
        let (r, len) = decode_record(&Bytes::from(buf)).unwrap();
        assert_eq!(len, encoded_len(&sample()));
        assert_eq!(
            (r.position, r.stream_version, r.group, r.recorded_at),
            (42, 7, 40, -5)
        );
        assert_eq!(
            (r.stream.as_str(), r.event_type.as_str()),
            ("experiment-1", "Started")
        );
        assert_eq!(
            (&r.metadata[..], &r.payload[..]),
            (&b"m"[..], &b"{\"x\":1}"[..])
        );
        assert_eq!(r.schema_version, 3);
        assert_eq!(r.flags, FLAG_BATCH_END);
        assert_eq!(r.event_id, sample().event_id);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample());
        for cut in 0..buf.len() {
            assert!(
                decode_record(&Bytes::copy_from_slice(&buf[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&Bytes::from(damaged)).is_err(),
                "flip of bit {bit}"
            );
        }
    }

    /// A group of two records at file offset `at`, with its trailer; returns the buffer and
    /// where the trailer starts in it.
    fn group_at(at: u64) -> (Vec<u8>, usize) {
        let mut buf = vec![0xAA; at as usize]; // stands for the file before the group
        let mut r = sample();
        r.position = 7;
        r.group = 7;
        r.flags = 0;
        encode_record(&mut buf, &r);
        r.position = 8;
        r.flags = FLAG_BATCH_END;
        encode_record(&mut buf, &r);
        let t = buf.len();
        encode_group_trailer(&mut buf, at as usize, at, 7, 2);
        (buf, t)
    }

    #[test]
    fn trailer_round_trips_with_a_checksum_per_sector() {
        for at in [32u64, 500, 511, 512, 1000] {
            let (buf, t) = group_at(at);
            let group_len = (t as u64) - at;
            assert_eq!(buf.len() - t, trailer_len(at, group_len));
            let (frame, len) = decode_frame_at(&Bytes::from(buf.clone()), t).unwrap();
            assert_eq!(len, buf.len() - t);
            let Frame::Trailer(tr) = frame else {
                panic!("{frame:?}")
            };
            assert_eq!((tr.first, tr.records, tr.len), (7, 2, group_len));
            let sectors: Vec<_> = sector_ranges(at, t as u64).collect();
            assert_eq!(sectors.len() as u64, sectors_spanned(at, t as u64));
            assert_eq!(sectors.first().unwrap().0, at);
            assert_eq!(sectors.last().unwrap().1, t as u64);
            for (i, (a, b)) in sectors.iter().enumerate() {
                assert!(a / SECTOR == (b - 1) / SECTOR, "one sector each");
                assert_eq!(
                    tr.sector_crc(i),
                    crc32c::crc32c(&buf[*a as usize..*b as usize])
                );
            }
            assert_eq!(
                expected_trailer(&buf[at as usize..t], at, 7, 2),
                &buf[t..],
                "what recovery expects is what the writer wrote"
            );
            // Records still decode as records, the trailer is no record.
            assert!(matches!(
                decode_frame_at(&Bytes::from(buf.clone()), at as usize),
                Ok((Frame::Record(_), _))
            ));
            assert!(decode_record_at(&Bytes::from(buf.clone()), t).is_err());
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_of_a_trailer_is_detected() {
        let (buf, t) = group_at(500);
        for cut in t..buf.len() {
            assert!(
                decode_frame_at(&Bytes::copy_from_slice(&buf[..cut]), t).is_err(),
                "cut at {cut}"
            );
        }
        for bit in t * 8..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(
                    decode_frame_at(&Bytes::from(damaged), t),
                    Ok((Frame::Trailer(_), _))
                ),
                "flip of bit {bit}"
            );
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = encode_segment_header(1234);
        assert_eq!(decode_segment_header(&h), Ok(1234));
        assert_eq!(segment_header(&h), Ok((1234, FORMAT_VERSION)));
        let old = encode_segment_header_version(1234, FORMAT_VERSION_1);
        assert_eq!(segment_header(&old), Ok((1234, FORMAT_VERSION_1)));
        let unknown = encode_segment_header_version(1234, 3);
        assert!(segment_header(&unknown).is_err());
        for bit in 0..28 * 8 {
            let mut d = h;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_segment_header(&d).is_err(), "flip of bit {bit}");
        }
        assert_eq!(decode_segment_header(&h[..31]), Err(DecodeError::Truncated));
    }
}
