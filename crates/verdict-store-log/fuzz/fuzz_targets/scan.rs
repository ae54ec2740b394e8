//! Fuzzes recovery: arbitrary bytes after a valid segment header must be classified (clean,
//! torn tail or corrupt) without panicking, a torn tail must end on a record boundary the
//! scan itself accepted, and a clean log may run on only in zeros (preallocated space).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_store_log::format;
use verdict_store_log::recovery::{self, Status};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("verdict-fuzz-scan-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut segment = format::encode_segment_header(1).to_vec();
    segment.extend_from_slice(data);
    std::fs::write(recovery::segment_path(&dir, 1), &segment).unwrap();
    let report = recovery::check(&dir).unwrap();
    match report.status {
        Status::Clean => {
            let valid = report.segments[0].valid_len as usize;
            assert!(valid <= segment.len());
            assert!(segment[valid..].iter().all(|&b| b == 0), "clean, but not zeros after the data");
        }
        Status::TornTail { truncate_at, .. } | Status::Corrupt { truncate_at, .. } => {
            assert!(truncate_at <= segment.len() as u64);
            assert_eq!(
                report.segments.first().map_or(0, |s| s.valid_len),
                truncate_at.max(0)
            );
        }
    }
});
