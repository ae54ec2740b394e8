//! Recovery on real files: the last record truncated at every byte offset, bit flips in
//! every byte of a middle record, torn group writes built by hand, preallocated zeros, and
//! check/repair.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;
use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_log::format::{self, RecordRef, FLAG_BATCH_END};
use verdict_store_log::recovery::{self, segment_path, Status};
use verdict_store_log::{LogError, LogOptions, LogStore, RepairAction};

/// Writes batches of these sizes (one group each: appended one after another) and returns
/// the directory, its single segment, and the byte offset where each record starts.
async fn build(dir: &Path, sizes: &[u64]) -> (PathBuf, Vec<u64>) {
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
    let mut offsets = Vec::new();
    let mut off = format::SEGMENT_HEADER_LEN;
    while off < data.len() {
        offsets.push(off as u64);
        off += format::decode_record(&data.slice(off..)).unwrap().1;
    }
    (segment, offsets)
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
async fn a_bit_flip_in_the_last_record_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("orig");
    let (segment, offsets) = build(&original, &[1, 2, 1]).await;
    let file_len = fs::metadata(&segment).unwrap().len();
    for byte in offsets[3]..file_len {
        let dir = tmp.path().join(format!("flip-{byte}"));
        copy_dir(&original, &dir);
        flip(&segment_path(&dir, 1), byte, 3);
        assert_eq!(head_of(&dir).await, 3, "flip at {byte}");
        fs::remove_dir_all(&dir).unwrap();
    }
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

/// Encodes one single-event batch per position, with the given group of each.
fn handmade_segment(path: &Path, groups: &[u64]) -> Vec<u64> {
    let mut buf = format::encode_segment_header(1).to_vec();
    let mut offsets = Vec::new();
    for (i, &group) in groups.iter().enumerate() {
        offsets.push(buf.len() as u64);
        let payload = vec![b'x'; 50];
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
    }
    fs::write(path, &buf).unwrap();
    offsets
}

fn zero(path: &Path, from: u64, to: u64) {
    let mut data = fs::read(path).unwrap();
    data[from as usize..to as usize].fill(0);
    fs::write(path, data).unwrap();
}

#[tokio::test]
async fn a_hole_inside_the_last_write_group_is_a_torn_write_but_not_in_an_earlier_group() {
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
    handmade_segment(&segment_path(&dir, 1), &[1, 2, 3]);
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
async fn a_torn_last_group_is_cut_quietly_but_damage_to_a_complete_last_record_changes_the_identity(
) {
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

    // A flipped bit in a complete last record: it may have been acknowledged, so the cut
    // gives the log a new identity generation (read models built on it are rebuilt).
    let flipped = tmp.path().join("flipped");
    copy_dir(&original, &flipped);
    flip(&segment_path(&flipped, 1), offsets[5] + 40, 1);
    assert!(matches!(
        recovery::check(&flipped).unwrap().status,
        Status::TornTail {
            provable: false,
            ..
        }
    ));
    assert_eq!(head_of(&flipped).await, 3);
    let after = identity_of(&flipped).await;
    assert_ne!(after, identity);
    let (id, generation) = after.rsplit_once('.').unwrap();
    assert!(identity.starts_with(id), "same log, new generation");
    assert_eq!(generation, "1");
}
