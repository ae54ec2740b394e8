//! The manifest's identity and segment chain: a missing segment (last or middle), a stray
//! or duplicate segment file, a damaged segment header. `check` names each problem, opening
//! refuses instead of serving a shorter log, and `repair` never cuts records that verify,
//! backs up what it touches, or refuses when it cannot tell which files belong to the log.

use std::fs;
use std::path::{Path, PathBuf};

use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_log::recovery::{self, segment_path, Status};
use verdict_store_log::{LogError, LogOptions, LogStore, ProblemKind, RepairAction};

fn options() -> LogOptions {
    LogOptions {
        segment_size: 400,
        ..LogOptions::default()
    }
}

/// A closed log of 20 single-event appends in 400-byte segments (at least four); returns
/// its segments and identity.
async fn several_segments(dir: &Path) -> (Vec<(u64, PathBuf)>, String) {
    let store = LogStore::open(dir, options()).unwrap();
    for i in 0..20 {
        store
            .append("s", ExpectedVersion::Exact(i), events("E", 1))
            .await
            .unwrap();
    }
    let identity = store.identity().expect("the log has an identity");
    store.close().await.unwrap();
    let segments = recovery::list_segments(dir).unwrap();
    assert!(segments.len() >= 4, "want several segments: {segments:?}");
    (segments, identity)
}

fn kinds(dir: &Path) -> Vec<ProblemKind> {
    recovery::check(dir)
        .unwrap()
        .problems
        .iter()
        .map(|p| p.kind)
        .collect()
}

fn refuses(dir: &Path, file: &Path) {
    match LogStore::open(dir, options()) {
        Err(LogError::Corrupt { segment, .. }) => assert_eq!(segment, file),
        other => panic!("expected Corrupt naming {}, got {other:?}", file.display()),
    }
}

/// Opens, returns head and identity, closes.
async fn open_head(dir: &Path) -> (u64, String) {
    let store = LogStore::open(dir, options()).unwrap();
    let all = store.read_all_blocking(1, usize::MAX).unwrap();
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.position == i as u64 + 1));
    let identity = store.identity().unwrap();
    store.close().await.unwrap();
    (all.len() as u64, identity)
}

#[tokio::test]
async fn the_identity_is_durable_and_a_log_without_a_manifest_gets_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (_, identity) = several_segments(&dir).await;
    assert_eq!(open_head(&dir).await, (20, identity.clone()));
    let other = tmp.path().join("other");
    let (_, other_identity) = several_segments(&other).await;
    assert_ne!(identity, other_identity, "two logs, one identity");
    // A log written before manifests (no MANIFEST): opens, gets an identity, keeps it.
    fs::remove_file(dir.join("MANIFEST")).unwrap();
    assert_eq!(recovery::check(&dir).unwrap().identity, None);
    let (head, fresh) = open_head(&dir).await;
    assert_eq!(head, 20);
    assert_ne!(fresh, identity);
    assert_eq!(open_head(&dir).await.1, fresh);
    // ... and its chain: deleting its last segment is now detected.
    let segments = recovery::list_segments(&dir).unwrap();
    fs::remove_file(&segments.last().unwrap().1).unwrap();
    assert_eq!(kinds(&dir), [ProblemKind::MissingSegment]);
}

#[tokio::test]
async fn a_missing_last_segment_is_refused_and_repair_accepts_the_loss_with_a_new_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, identity) = several_segments(&dir).await;
    let (last_first, last) = segments.last().unwrap().clone();
    fs::remove_file(&last).unwrap();
    let report = recovery::check(&dir).unwrap();
    assert!(!report.opens());
    assert_eq!(report.problems[0].kind, ProblemKind::MissingSegment);
    assert_eq!(report.problems[0].segment, last);
    refuses(&dir, &last);
    let outcome = verdict_store_log::repair(&dir, "t").unwrap();
    assert_eq!(
        outcome.actions,
        [RepairAction::AcceptedMissingLastSegment {
            segment: last.clone()
        }]
    );
    assert_eq!(outcome.head, last_first - 1);
    assert_ne!(outcome.identity.as_deref(), Some(identity.as_str()));
    let (head, after) = open_head(&dir).await;
    assert_eq!(head, last_first - 1);
    assert_eq!(Some(after), outcome.identity);
    // Appends go on from there.
    let store = LogStore::open(&dir, options()).unwrap();
    let r = store
        .append("s", ExpectedVersion::Exact(head), events("E", 1))
        .await
        .unwrap();
    assert_eq!(r.first_position, head + 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_missing_middle_segment_is_refused_and_repair_will_not_guess() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, _) = several_segments(&dir).await;
    let middle = segments[1].1.clone();
    fs::remove_file(&middle).unwrap();
    let report = recovery::check(&dir).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::MissingSegment);
    assert_eq!(report.problems[0].segment, middle);
    refuses(&dir, &middle);
    let err = verdict_store_log::repair(&dir, "t").unwrap_err();
    assert!(
        matches!(&err, LogError::Unrepairable { reason } if reason.contains("restore")),
        "{err}"
    );
    // Nothing was touched.
    assert_eq!(
        recovery::list_segments(&dir).unwrap().len(),
        segments.len() - 1
    );
    assert!(!dir.join("repair-backup-t").exists());
}

#[tokio::test]
async fn a_stray_segment_named_like_the_first_is_moved_aside_not_the_real_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, identity) = several_segments(&dir).await;
    // A copy of the first segment under a name sorting before it.
    let stray = segment_path(&dir, 0);
    fs::copy(&segments[0].1, &stray).unwrap();
    assert_eq!(kinds(&dir), [ProblemKind::StraySegment]);
    refuses(&dir, &stray);
    let outcome = verdict_store_log::repair(&dir, "t").unwrap();
    assert_eq!(
        outcome.actions,
        [RepairAction::MovedStray {
            file: stray.clone()
        }]
    );
    assert!(outcome
        .backup
        .unwrap()
        .join(stray.file_name().unwrap())
        .exists());
    assert_eq!(recovery::list_segments(&dir).unwrap(), segments);
    // Nothing of the log was removed: same events, same identity.
    assert_eq!(open_head(&dir).await, (20, identity));
}

#[tokio::test]
async fn a_duplicate_segment_is_detected_whether_stray_or_in_place_of_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, _) = several_segments(&dir).await;
    // A duplicate of a segment under a later name: not in the chain.
    let dup = segment_path(&dir, 1000);
    fs::copy(&segments[1].1, &dup).unwrap();
    assert_eq!(kinds(&dir), [ProblemKind::StraySegment]);
    refuses(&dir, &dup);
    fs::remove_file(&dup).unwrap();
    // A segment's file replaced by a copy of another: its name and header disagree.
    fs::copy(&segments[1].1, &segments[2].1).unwrap();
    let report = recovery::check(&dir).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::WrongHeader && p.segment == segments[2].1),
        "{:?}",
        report.problems
    );
    refuses(&dir, &segments[2].1);
    assert!(matches!(
        verdict_store_log::repair(&dir, "t"),
        Err(LogError::Unrepairable { .. })
    ));
    assert_eq!(recovery::list_segments(&dir).unwrap(), segments);
}

#[tokio::test]
async fn a_flipped_header_byte_is_rewritten_keeping_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, identity) = several_segments(&dir).await;
    for byte in [0usize, 9, 17, 25] {
        let seg = &segments[1].1;
        let original = fs::read(seg).unwrap();
        let mut damaged = original.clone();
        damaged[byte] ^= 0x10;
        fs::write(seg, &damaged).unwrap();
        let report = recovery::check(&dir).unwrap();
        assert!(
            matches!(&report.status, Status::Corrupt { kind: ProblemKind::DamagedHeader, offset: 0, segment, .. } if segment == seg),
            "byte {byte}: {:?}",
            report.status
        );
        refuses(&dir, seg);
        let stamp = format!("h{byte}");
        let outcome = verdict_store_log::repair(&dir, &stamp).unwrap();
        assert_eq!(
            outcome.actions,
            [RepairAction::RewroteHeader {
                segment: seg.clone()
            }],
            "byte {byte}"
        );
        assert_eq!(fs::read(seg).unwrap(), original, "byte {byte}");
        // The damaged original is in the backup.
        assert_eq!(
            fs::read(
                dir.join(format!("repair-backup-{stamp}"))
                    .join(seg.file_name().unwrap())
            )
            .unwrap(),
            damaged
        );
        assert_eq!(open_head(&dir).await, (20, identity.clone()), "byte {byte}");
    }
}

#[tokio::test]
async fn an_unfinished_roll_leaves_a_header_only_segment_that_opening_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (segments, identity) = several_segments(&dir).await;
    // The next segment's header made durable, the manifest not yet updated: nothing in it.
    let next = segment_path(&dir, 21);
    fs::write(&next, verdict_store_log::format::encode_segment_header(21)).unwrap();
    let report = recovery::check(&dir).unwrap();
    assert!(report.opens());
    assert_eq!(report.torn_rolls, std::slice::from_ref(&next));
    assert_eq!(open_head(&dir).await, (20, identity));
    assert!(!next.exists());
    assert_eq!(recovery::list_segments(&dir).unwrap(), segments);
}
