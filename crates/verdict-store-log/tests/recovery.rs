//! Recovery on real files: the last record truncated at every byte offset, bit flips in
//! every byte of a middle record, torn group writes built by hand, preallocated zeros, and
//! check/repair.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;
use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_log::format::{self, Frame, RecordRef, FLAG_BATCH_END};
use verdict_store_log::recovery::{self, segment_path, Status};
use verdict_store_log::{LogError, LogOptions, LogStore, RepairAction};

/// Writes batches of these sizes (one group each: appended one after another) and returns
/// its single segment and the byte offset where each record starts.
async fn build(dir: &Path, sizes: &[u64]) -> (PathBuf, Vec<u64>) {
    let (segment, records, _) = build_with_trailers(dir, sizes).await;
    (segment, records)
}

/// [`build`], also returning the offset of each group's trailer.
async fn build_with_trailers(dir: &Path, sizes: &[u64]) -> (PathBuf, Vec<u64>, Vec<u64>) {
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        store
            .append(
                &format!("s-{}", i % 2),
                ExpectedVersion::Any,
                events("E", n),
            )
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let segment = segment_path(dir, 1);
    let data = Bytes::from(fs::read(&segment).unwrap());
    let (mut records, mut trailers) = (Vec::new(), Vec::new());
    let mut off = format::SEGMENT_HEADER_LEN;
    while off < data.len() {
        let (frame, len) = format::decode_frame_at(&data, off).unwrap();
        match frame {
            Frame::Record(_) => records.push(off as u64),
            Frame::Trailer(_) => trailers.push(off as u64),
        }
        off += len;
    }
    assert_eq!(trailers.len(), sizes.len(), "one group per append");
    (segment, records, trailers)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 1 << bit;
    fs::write(path, data).unwrap();
}

async fn head_of(dir: &Path) -> u64 {
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    let all = store.read_all_blocking(1, usize::MAX).unwrap();
    store.close().await.unwrap();
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.position == i as u64 + 1));
    all.len() as u64
}

#[tokio::test]
async fn truncating_the_last_batch_at_every_byte_drops_exactly_that_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    // The last batch has three records, so cuts between them test batch atomicity.
    let (segment, offsets) = build(&original, &[1, 2, 1, 3]).await;
    let file_len = fs::metadata(&segment).unwrap().len();
    let last_batch_start = offsets[4];
    for cut in last_batch_start..file_len {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&original, &dir);
        let seg = segment_path(&dir, 1);
        set_len(&seg, cut);
        let report = recovery::check(&dir).unwrap();
        if cut == last_batch_start {
            assert_eq!(report.status, Status::Clean, "cut {cut}");
        } else {
            assert!(
                matches!(report.status, Status::TornTail { truncate_at, .. } if truncate_at == last_batch_start),
                "cut {cut}: {:?}",
                report.status
            );
        }
        assert_eq!(head_of(&dir).await, 4, "cut at {cut}");
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            last_batch_start,
            "torn tail not truncated"
        );
        // The log keeps working after recovery.
        let store = LogStore::open(&dir, LogOptions::default()).unwrap();
        let r = store
            .append("s-0", ExpectedVersion::Any, events("F", 1))
            .await
            .unwrap();
        assert_eq!(r.first_position, 5);
        store.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
    // Uncut, everything is there.
    assert_eq!(head_of(&original).await, 7);
}

#[tokio::test]
async fn a_bit_flip_in_a_middle_record_refuses_to_open_naming_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let (_, offsets) = build(&original, &[1, 2, 1, 1]).await;
    // Record 2 (first of the second batch) is in the middle: valid records follow it.
    let (start, end) = (offsets[1], offsets[2]);
    for byte in start..end {
        let dir = tmp.path().join(format!("flip-{byte}"));
        copy_dir(&original, &dir);
        let seg = segment_path(&dir, 1);
        flip(&seg, byte, (byte % 8) as u8);
        match LogStore::open(&dir, LogOptions::default()) {
            Err(LogError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!((segment, offset), (seg.clone(), start), "flip at {byte}");
            }
            other => panic!("flip at {byte}: expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            recovery::check(&dir).unwrap().status,
            Status::Corrupt { .. }
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn a_bit_flip_in_the_last_record_of_a_version_1_log_is_cut_with_a_new_generation() {
    // Version-1 segments have no group trailers: damage in the last group cannot be told from
    // a torn write, so it is cut (the old rule), with a new identity generation.
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    fs::create_dir_all(&original).unwrap();
    let offsets = handmade_segment(&segment_path(&original, 1), &[1, 2, 3, 4]);
    let file_len = fs::metadata(segment_path(&original, 1)).unwrap().len();
    for byte in offsets[3]..file_len {
        let dir = tmp.path().join(format!("flip-{byte}"));
        copy_dir(&original, &dir);
        flip(&segment_path(&dir, 1), byte, 3);
        assert!(
            matches!(recovery::check(&dir).unwrap().status, Status::TornTail { truncate_at, .. } if truncate_at == offsets[3]),
            "flip at {byte}"
        );
        assert_eq!(head_of(&dir).await, 3, "flip at {byte}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// The frame (record or trailer) of `starts` that holds byte `byte`.
fn frame_of(starts: &[u64], byte: u64) -> u64 {
    *starts.iter().rev().find(|&&s| s <= byte).unwrap()
}

#[tokio::test]
async fn a_flipped_bit_anywhere_in_a_synced_last_group_refuses_to_open() {
    // The last group (records 4, 5, 6 in one batch, then its trailer) was written and synced
    // whole: a flipped bit in it is damage to acknowledged data, not a torn write.
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let (segment, records, trailers) = build_with_trailers(&original, &[1, 2, 3]).await;
    let identity = identity_of(&original).await;
    let file_len = fs::metadata(&segment).unwrap().len();
    let group_start = records[3];
    let mut frames: Vec<u64> = records[3..].to_vec();
    frames.push(trailers[2]);
    let bytes = fs::read(&segment).unwrap();
    for byte in group_start..file_len {
        for bit in [byte % 8, (byte + 5) % 8] {
            // A flip that leaves a zero byte can look like a sector that never reached the
            // disk (FORMAT.md, "Not caught": a trailer byte, or a sector's part, that held a
            // single set bit); which bytes those are depends on the random ids and times.
            if bytes[byte as usize] ^ (1 << bit) == 0 {
                continue;
            }
            let dir = tmp.path().join(format!("flip-{byte}-{bit}"));
            copy_dir(&original, &dir);
            let seg = segment_path(&dir, 1);
            flip(&seg, byte, bit as u8);
            let at = frame_of(&frames, byte);
            match LogStore::open(&dir, LogOptions::default()) {
                Err(LogError::Corrupt {
                    segment,
                    offset,
                    reason,
                }) => {
                    assert_eq!(
                        (segment, offset),
                        (seg.clone(), at),
                        "flip at {byte}: {reason}"
                    );
                    assert!(reason.contains("acknowledged"), "flip at {byte}: {reason}");
                }
                other => panic!("flip at {byte}.{bit}: expected Corrupt, got {other:?}"),
            }
            let report = recovery::check(&dir).unwrap();
            assert!(!report.opens(), "flip at {byte}");
            assert!(
                matches!(report.status, Status::Corrupt { offset, truncate_at, .. } if offset == at && truncate_at == group_start),
                "flip at {byte}: {:?}",
                report.status
            );
            // Refusing changed nothing: not the file, not the identity.
            assert_eq!(recovery::check(&dir).unwrap().identity.unwrap(), identity);
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[tokio::test]
async fn repair_cuts_a_damaged_last_group_after_a_backup_with_a_new_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let (segment, records, trailers) = build_with_trailers(&original, &[1, 2, 3]).await;
    let identity = identity_of(&original).await;
    let original_bytes = fs::read(&segment).unwrap();
    // First, middle and last record of the last group, and its trailer.
    for (what, at) in [
        ("first record", records[3] + 30),
        ("middle record", records[4] + 70),
        ("last record", records[5] + 9),
        ("trailer", trailers[2] + 20),
    ] {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&original, &dir);
        let seg = segment_path(&dir, 1);
        // A flip must leave a nonzero byte (one that leaves zero can read as a torn write).
        let bit = if original_bytes[at as usize] == 1 << 2 {
            3
        } else {
            2
        };
        flip(&seg, at, bit);
        let damaged = fs::read(&seg).unwrap();
        assert!(
            LogStore::open(&dir, LogOptions::default()).is_err(),
            "{what}"
        );
        let outcome = verdict_store_log::repair(&dir, "t").unwrap();
        assert_eq!(outcome.head, 3, "{what}");
        assert_eq!(
            outcome.actions,
            vec![RepairAction::Truncated {
                segment: seg.clone(),
                from: records[3],
                bytes: original_bytes.len() as u64 - records[3],
                first_lost: Some(4),
            }],
            "{what}"
        );
        let backup = outcome.backup.unwrap();
        assert_eq!(
            fs::read(backup.join(seg.file_name().unwrap())).unwrap(),
            damaged
        );
        let after = outcome.identity.unwrap();
        assert_ne!(
            after, identity,
            "{what}: events were removed: new generation"
        );
        assert_eq!(
            after.rsplit_once('.').unwrap().0,
            identity.rsplit_once('.').unwrap().0
        );
        assert_eq!(
            recovery::check(&dir).unwrap().status,
            Status::Clean,
            "{what}"
        );
        assert_eq!(head_of(&dir).await, 3, "{what}");
        assert_eq!(
            fs::read(&seg).unwrap(),
            original_bytes[..records[3] as usize]
        );
    }
}

/// Zeros `data[from..to]` where it lies at or after `floor`.
fn zero_from(data: &mut [u8], floor: u64, from: u64, to: u64) {
    let from = from.max(floor) as usize;
    let to = (to as usize).min(data.len());
    if from < to {
        data[from..to].fill(0);
    }
}

#[tokio::test]
async fn a_torn_last_group_is_cut_and_never_refused() {
    // A last group of four ~700-byte records over several sectors. A power cut before its
    // fdatasync returned may keep any subset of its sectors (the others read as the zeros the
    // writer preallocated), and the file may end anywhere in it; a killed process or a
    // short write keeps a prefix. Every such image is a torn write: cut, never refused.
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let store = LogStore::open(&original, LogOptions::default()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("E", 2))
        .await
        .unwrap();
    let mut big = events("E", 4);
    for e in &mut big {
        e.payload = vec![b'x'; 700].into();
    }
    store.append("s", ExpectedVersion::Any, big).await.unwrap();
    store.close().await.unwrap();
    let segment = segment_path(&original, 1);
    let data = fs::read(&segment).unwrap();
    let report = recovery::check(&original).unwrap();
    assert_eq!(report.status, Status::Clean);
    // Where the last group starts: after the first group's trailer.
    let bytes = Bytes::from(data.clone());
    let mut off = format::SEGMENT_HEADER_LEN;
    let group_start = loop {
        let (frame, len) = format::decode_frame_at(&bytes, off).unwrap();
        off += len;
        if matches!(frame, Frame::Trailer(_)) {
            break off as u64;
        }
    };
    let sectors: Vec<(u64, u64)> = format::sector_ranges(group_start, data.len() as u64).collect();
    assert!(sectors.len() >= 6, "{} sectors", sectors.len());
    let mut images = Vec::new();
    // Any subset of the sectors lost, as is or with the file ending inside the group.
    for mask in 1u32..(1 << sectors.len()).min(1 << 8) {
        let mut d = data.clone();
        for (i, &(a, b)) in sectors.iter().enumerate() {
            if mask & (1 << i) != 0 {
                zero_from(&mut d, group_start, a / 512 * 512, b);
            }
        }
        images.push(d.clone());
        let cut = group_start + u64::from(mask * 97) % (data.len() as u64 - group_start);
        d.truncate(cut as usize);
        images.push(d);
    }
    // The write cut short at any byte, the rest still the preallocated zeros.
    for cut in group_start..data.len() as u64 {
        let mut d = data.clone();
        d[cut as usize..].fill(0);
        d.extend_from_slice(&[0; 4096]);
        images.push(d);
    }
    let dir = tmp.path().join("torn");
    copy_dir(&original, &dir);
    let seg = segment_path(&dir, 1);
    for (i, image) in images.iter().enumerate() {
        fs::write(&seg, image).unwrap();
        let status = recovery::check(&dir).unwrap().status;
        assert!(
            matches!(status, Status::TornTail { truncate_at, provable: true, .. } if truncate_at == group_start)
                || status == Status::Clean,
            "image {i}: {status:?}"
        );
    }
    // Opening cuts it, with the old head; spot-check a few through a real open.
    for image in images.iter().step_by(37) {
        fs::write(&seg, image).unwrap();
        assert_eq!(head_of(&dir).await, 2);
    }
}

#[tokio::test]
async fn a_version_1_log_opens_and_appends_go_to_a_new_version_2_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    fs::create_dir_all(&dir).unwrap();
    // A log written before group trailers (and before manifests): groups {1,2}, {3,4,5}.
    handmade_segment(&segment_path(&dir, 1), &[1, 1, 3, 3, 3]);
    let before = fs::read(segment_path(&dir, 1)).unwrap();
    assert_eq!(recovery::check(&dir).unwrap().status, Status::Clean);
    let store = LogStore::open(&dir, LogOptions::default()).unwrap();
    assert_eq!(store.head().await.unwrap(), 5);
    let r = store
        .append("s", ExpectedVersion::Exact(5), events("E", 2))
        .await
        .unwrap();
    assert_eq!(r.first_position, 6);
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 7);
    store.close().await.unwrap();
    // The version-1 segment is sealed unchanged; the new one is version 2.
    assert_eq!(fs::read(segment_path(&dir, 1)).unwrap(), before);
    let report = recovery::check(&dir).unwrap();
    assert_eq!(report.status, Status::Clean);
    let versions: Vec<(u64, u32)> = report
        .segments
        .iter()
        .map(|s| (s.first_position, s.version))
        .collect();
    assert_eq!(versions, [(1, 1), (6, 2)]);
    assert_eq!(head_of(&dir).await, 7);

    // A version-1 log whose active segment holds nothing but its header: rewritten as
    // version 2 in place.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    fs::write(
        segment_path(&empty, 1),
        format::encode_segment_header_version(1, format::FORMAT_VERSION_1),
    )
    .unwrap();
    let store = LogStore::open(&empty, LogOptions::default()).unwrap();
    store
        .append("s", ExpectedVersion::Any, events("E", 1))
        .await
        .unwrap();
    store.close().await.unwrap();
    let report = recovery::check(&empty).unwrap();
    assert_eq!(report.status, Status::Clean);
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.segments[0].version, format::FORMAT_VERSION);
    assert_eq!(head_of(&empty).await, 1);
}

/// Appends single events to stream `s`, versions `from + 1 ..= from + n`, one append each.
async fn append_singles(store: &LogStore, from: u64, n: u64) {
    for i in from..from + n {
        store
            .append("s", ExpectedVersion::Exact(i), events("E", 1))
            .await
            .unwrap();
    }
}

/// A closed log in `dir` of 20 single-event appends in 600-byte segments (at least three);
/// returns its options and its segments.
async fn several_segments(dir: &Path) -> (LogOptions, Vec<(u64, PathBuf)>) {
    let options = LogOptions {
        segment_size: 600,
        ..LogOptions::default()
    };
    let store = LogStore::open(dir, options.clone()).unwrap();
    append_singles(&store, 0, 20).await;
    store.close().await.unwrap();
    let segments = recovery::list_segments(dir).unwrap();
    assert!(
        segments.len() >= 3,
        "want several segments, got {}",
        segments.len()
    );
    (options, segments)
}

#[tokio::test]
async fn damage_in_an_earlier_segment_is_corruption_and_repair_cuts_it_off_after_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (options, segments) = several_segments(&dir).await;
    // Damage the last record of the second segment: later segments make it corruption.
    let (first_pos, second) = segments[1].clone();
    let len = fs::metadata(&second).unwrap().len();
    flip(&second, len - 3, 0);
    let err = LogStore::open(&dir, options.clone()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { segment, .. } if *segment == second),
        "{err}"
    );
    assert!(err.to_string().contains("verdict store repair"), "{err}");

    let report = recovery::check(&dir).unwrap();
    let Status::Corrupt { truncate_at, .. } = report.status else {
        panic!("{:?}", report.status)
    };
    let kept = report.head;
    assert!(kept >= first_pos - 1);
    let identity_before = recovery::check(&dir).unwrap().identity.unwrap();
    let outcome = verdict_store_log::repair(&dir, "test").unwrap();
    let backup = outcome.backup.clone().expect("a backup");
    assert_eq!(outcome.head, kept);
    // The damaged segment is cut at the damage, every later one moved to the backup.
    assert!(
        matches!(&outcome.actions[0], RepairAction::Truncated { segment, from, first_lost: Some(p), .. }
            if *segment == second && *from == truncate_at && *p == kept + 1),
        "{:?}",
        outcome.actions
    );
    let removed = outcome
        .actions
        .iter()
        .filter(|a| matches!(a, RepairAction::RemovedSegment { .. }))
        .count();
    assert_eq!(removed, segments.len() - 2);
    // Events may have been removed: read models built before must not be trusted.
    assert_ne!(outcome.identity.unwrap(), identity_before);
    // The backup holds the damaged segment and every later one, byte for byte.
    for (_, p) in &segments[1..] {
        assert!(backup.join(p.file_name().unwrap()).exists());
    }
    assert_eq!(
        fs::read(backup.join(second.file_name().unwrap()))
            .unwrap()
            .len() as u64,
        len
    );
    assert_eq!(recovery::check(&dir).unwrap().status, Status::Clean);
    let store = LogStore::open(&dir, options).unwrap();
    assert_eq!(store.head().await.unwrap(), kept);
    let r = store
        .append("s", ExpectedVersion::Exact(kept), events("E", 1))
        .await
        .unwrap();
    assert_eq!(r.first_position, kept + 1);
    store.close().await.unwrap();
}

/// A version-1 segment (no group trailers) of one single-event batch per position, with the
/// given group of each; returns the records' offsets.
fn handmade_segment(path: &Path, groups: &[u64]) -> Vec<u64> {
    handmade(path, groups, format::FORMAT_VERSION_1, 50).0
}

/// A segment of format `version` holding one single-event batch (`payload` bytes) per
/// position, with the given group of each; in version 2 each group ends with its trailer.
/// Returns the offsets of the records and of the trailers.
fn handmade(path: &Path, groups: &[u64], version: u32, payload: usize) -> (Vec<u64>, Vec<u64>) {
    let mut buf = format::encode_segment_header_version(1, version).to_vec();
    let (mut offsets, mut trailers) = (Vec::new(), Vec::new());
    let mut group_start = buf.len();
    for (i, &group) in groups.iter().enumerate() {
        offsets.push(buf.len() as u64);
        let payload = vec![b'x'; payload];
        format::encode_record(
            &mut buf,
            &RecordRef {
                position: i as u64 + 1,
                stream_version: i as u64 + 1,
                group,
                recorded_at: 0,
                event_id: Uuid::now_v7(),
                schema_version: 1,
                flags: FLAG_BATCH_END,
                stream: "s",
                event_type: "E",
                metadata: b"",
                payload: &payload,
            },
        );
        if version == format::FORMAT_VERSION && groups.get(i + 1) != Some(&group) {
            trailers.push(buf.len() as u64);
            let records = (i as u64 + 2 - group) as u32;
            format::encode_group_trailer(&mut buf, group_start, group_start as u64, group, records);
            group_start = buf.len();
        }
    }
    fs::write(path, &buf).unwrap();
    (offsets, trailers)
}

fn zero(path: &Path, from: u64, to: u64) {
    let mut data = fs::read(path).unwrap();
    data[from as usize..to as usize].fill(0);
    fs::write(path, data).unwrap();
}

#[tokio::test]
async fn a_zeroed_sector_inside_a_trailed_last_group_is_a_torn_write_a_zeroed_record_is_not() {
    // Groups {1,2}, {3,4,5} of ~1 KiB records, each group ended by its trailer. A sector of
    // record 4 reading as zeros, with the trailer intact: the group's write reached the disk
    // out of order before its fsync returned (a sector never written reads as zeros).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    fs::create_dir_all(&dir).unwrap();
    let seg = segment_path(&dir, 1);
    let (offs, trailers) = handmade(&seg, &[1, 1, 3, 3, 3], format::FORMAT_VERSION, 1000);
    assert_eq!(trailers.len(), 2);
    let sector = offs[3].next_multiple_of(512);
    assert!(sector + 512 <= offs[4]);
    zero(&seg, sector, sector + 512);
    let report = recovery::check(&dir).unwrap();
    assert!(
        matches!(report.status, Status::TornTail { truncate_at, records: 3, provable: true, .. } if truncate_at == offs[2]),
        "{:?}",
        report.status
    );
    assert_eq!(head_of(&dir).await, 2);

    // Zeros over exactly record 4, while the rest of the sectors it shares with records 3
    // and 5 hold what was written: no torn write does that (a sector is written whole or
    // not at all). The trailer proves the group complete: corruption.
    let dir = tmp.path().join("b");
    fs::create_dir_all(&dir).unwrap();
    let seg = segment_path(&dir, 1);
    let (offs, _) = handmade(&seg, &[1, 1, 3, 3, 3], format::FORMAT_VERSION, 1000);
    zero(&seg, offs[3], offs[4]);
    assert!(
        matches!(LogStore::open(&dir, LogOptions::default()), Err(LogError::Corrupt { offset, .. }) if offset == offs[3])
    );
}

#[tokio::test]
async fn a_hole_inside_the_last_write_group_of_a_version_1_log_is_a_torn_write_but_not_in_an_earlier_group(
) {
    // Groups: {1,2}, {3,4,5}. A hole in record 4 with record 5 intact can only be a write of
    // group 3 that reached the disk out of order before its fsync: torn, nothing acked lost.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    fs::create_dir_all(&dir).unwrap();
    let seg = segment_path(&dir, 1);
    let offs = handmade_segment(&seg, &[1, 1, 3, 3, 3]);
    zero(&seg, offs[3], offs[4]);
    let report = recovery::check(&dir).unwrap();
    assert!(
        matches!(report.status, Status::TornTail { truncate_at, .. } if truncate_at == offs[3]),
        "{:?}",
        report.status
    );
    assert_eq!(head_of(&dir).await, 3);

    // The same hole in group 1, with group 3 after it: group 1 was fsynced before group 3
    // was written, so this is damage to acknowledged data.
    let dir = tmp.path().join("b");
    fs::create_dir_all(&dir).unwrap();
    let seg = segment_path(&dir, 1);
    let offs = handmade_segment(&seg, &[1, 1, 3, 3, 3]);
    zero(&seg, offs[1], offs[2]);
    assert!(
        matches!(LogStore::open(&dir, LogOptions::default()), Err(LogError::Corrupt { offset, .. }) if offset == offs[1])
    );
}

#[tokio::test]
async fn a_segment_torn_at_creation_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    fs::create_dir_all(&dir).unwrap();
    handmade(
        &segment_path(&dir, 1),
        &[1, 2, 3],
        format::FORMAT_VERSION,
        50,
    );
    let next = segment_path(&dir, 4);
    fs::write(&next, &format::encode_segment_header(4)[..10]).unwrap();
    assert_eq!(head_of(&dir).await, 3);
    assert!(!next.exists());
    // A full-length header whose bytes never reached the disk (zeros) is the same.
    fs::write(&next, [0u8; format::SEGMENT_HEADER_LEN]).unwrap();
    assert_eq!(head_of(&dir).await, 3);
    assert!(!next.exists());
    // But a bad header with records after it is corruption: the header was fsynced first.
    let mut bad = vec![0u8; format::SEGMENT_HEADER_LEN];
    bad.extend_from_slice(&fs::read(segment_path(&dir, 1)).unwrap()[format::SEGMENT_HEADER_LEN..]);
    fs::write(&next, bad).unwrap();
    assert!(matches!(
        LogStore::open(&dir, LogOptions::default()),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn a_version_gap_with_valid_checksums_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    fs::create_dir_all(&dir).unwrap();
    let mut buf = format::encode_segment_header(1).to_vec();
    for (p, v) in [(1, 1), (2, 3)] {
        let start = buf.len();
        format::encode_record(
            &mut buf,
            &RecordRef {
                position: p,
                stream_version: v,
                group: p,
                recorded_at: 0,
                event_id: Uuid::now_v7(),
                schema_version: 1,
                flags: FLAG_BATCH_END,
                stream: "s",
                event_type: "E",
                metadata: b"",
                payload: b"",
            },
        );
        format::encode_group_trailer(&mut buf, start, start as u64, p, 1);
    }
    fs::write(segment_path(&dir, 1), buf).unwrap();
    let err = LogStore::open(&dir, LogOptions::default()).unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        LogStore::open(tmp.path(), LogOptions::default()),
        Err(LogError::Locked { .. })
    ));
    store.close().await.unwrap();
    LogStore::open(tmp.path(), LogOptions::default()).unwrap();
}

#[tokio::test]
async fn check_and_repair_refuse_a_log_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LogStore::open(tmp.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        verdict_store_log::check_dir(tmp.path()),
        Err(LogError::Locked { .. })
    ));
    assert!(matches!(
        verdict_store_log::repair(tmp.path(), "x"),
        Err(LogError::Locked { .. })
    ));
    store.close().await.unwrap();
    assert_eq!(
        verdict_store_log::check_dir(tmp.path()).unwrap().status,
        Status::Clean
    );
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn the_active_segment_is_preallocated_with_zeros_and_a_closed_log_ends_at_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let options = LogOptions {
        segment_size: 2000,
        ..LogOptions::default()
    };
    let store = LogStore::open(&dir, options.clone()).unwrap();
    append_singles(&store, 0, 30).await;
    // While open (as after a kill -9): the last segment runs on in zeros, which recovery
    // reads as the clean end of the log; earlier segments end at their data.
    let live = tmp.path().join("live-copy");
    copy_dir(&dir, &live);
    let report = recovery::check(&live).unwrap();
    assert_eq!(report.status, Status::Clean);
    let (last, earlier) = report.segments.split_last().unwrap();
    assert!(!earlier.is_empty(), "want several segments");
    assert!(
        last.file_len >= last.valid_len + 64 * 1024,
        "the active segment is not preallocated: {last:?}"
    );
    assert!(
        earlier.iter().all(|s| s.file_len == s.valid_len),
        "{earlier:?}"
    );
    // Opening the copy cuts the zeros and goes on appending after the data.
    let reopened = LogStore::open(&live, options.clone()).unwrap();
    assert_eq!(file_len(&last.path), last.valid_len);
    let r = reopened
        .append("s", ExpectedVersion::Exact(30), events("E", 1))
        .await
        .unwrap();
    assert_eq!(r.first_position, 31);
    reopened.close().await.unwrap();
    assert_eq!(head_of(&live).await, 31);

    // Closed: every segment ends at its data.
    store.close().await.unwrap();
    let report = recovery::check(&dir).unwrap();
    assert_eq!(report.status, Status::Clean);
    assert!(
        report.segments.iter().all(|s| s.file_len == s.valid_len),
        "{:?}",
        report.segments
    );
    assert_eq!(head_of(&dir).await, 30);
}

#[tokio::test]
async fn zeros_after_the_last_batch_are_a_clean_end_but_zeros_ending_an_earlier_segment_are_damage()
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (options, segments) = several_segments(&dir).await;

    let last = tmp.path().join("zeros-last");
    copy_dir(&dir, &last);
    let path = last.join(segments.last().unwrap().1.file_name().unwrap());
    let data_len = file_len(&path);
    set_len(&path, data_len + 10_000);
    assert_eq!(recovery::check(&last).unwrap().status, Status::Clean);
    assert_eq!(head_of(&last).await, 20);

    // The same zeros inside the last batch (its end cut off) are a torn tail.
    let torn = tmp.path().join("zeros-torn");
    copy_dir(&dir, &torn);
    let path = torn.join(segments.last().unwrap().1.file_name().unwrap());
    let mut data = fs::read(&path).unwrap();
    let n = data.len();
    data[n - 10..].fill(0);
    data.extend_from_slice(&[0; 10_000]);
    fs::write(&path, data).unwrap();
    assert!(matches!(
        recovery::check(&torn).unwrap().status,
        Status::TornTail { .. }
    ));
    assert_eq!(head_of(&torn).await, 19);

    // Zeros after the data of an earlier segment: only the last may be preallocated.
    let earlier = tmp.path().join("zeros-earlier");
    copy_dir(&dir, &earlier);
    let path = earlier.join(segments[0].1.file_name().unwrap());
    set_len(&path, file_len(&path) + 10_000);
    assert!(matches!(
        recovery::check(&earlier).unwrap().status,
        Status::Corrupt { .. }
    ));
    assert!(matches!(
        LogStore::open(&earlier, options),
        Err(LogError::Corrupt { .. })
    ));
}

async fn identity_of(dir: &Path) -> String {
    let store = LogStore::open(dir, LogOptions::default()).unwrap();
    let identity = store.identity().unwrap();
    store.close().await.unwrap();
    identity
}

#[tokio::test]
async fn a_torn_last_group_is_cut_quietly_but_damage_to_a_complete_last_record_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let (segment, offsets) = build(&original, &[1, 2, 3]).await;
    let identity = identity_of(&original).await;
    let file_len = fs::metadata(&segment).unwrap().len();

    // Torn: the last group's end never reached the disk (cut inside its last record), or
    // its sectors read as zeros. Nothing acknowledged is lost: same identity.
    let torn = tmp.path().join("torn");
    copy_dir(&original, &torn);
    set_len(&segment_path(&torn, 1), file_len - 5);
    assert!(matches!(
        recovery::check(&torn).unwrap().status,
        Status::TornTail { provable: true, .. }
    ));
    assert_eq!(head_of(&torn).await, 3);
    assert_eq!(identity_of(&torn).await, identity);

    let zeros = tmp.path().join("zeros");
    copy_dir(&original, &zeros);
    zero(&segment_path(&zeros, 1), offsets[4], file_len);
    assert_eq!(head_of(&zeros).await, 3);
    assert_eq!(identity_of(&zeros).await, identity);

    // A flipped bit in a complete last record: its group's trailer verifies, so it was
    // written whole: damage to (possibly) acknowledged data, refused like damage before the
    // tail (see `a_flipped_bit_anywhere_in_a_synced_last_group_refuses_to_open`).
    let flipped = tmp.path().join("flipped");
    copy_dir(&original, &flipped);
    flip(&segment_path(&flipped, 1), offsets[5] + 40, 1);
    assert!(matches!(
        recovery::check(&flipped).unwrap().status,
        Status::Corrupt { offset, .. } if offset == offsets[5]
    ));
    assert!(matches!(
        LogStore::open(&flipped, LogOptions::default()),
        Err(LogError::Corrupt { .. })
    ));
}
