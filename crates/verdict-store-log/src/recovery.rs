//! Reading a log directory back: listing segments, validating every record, and telling a
//! torn tail (truncate it) from damage before the tail (refuse to open); plus the
//! `check` report and the `repair` operation behind `verdict store check|repair`.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::format::{self, Record, FLAG_BATCH_END, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::LogError;

/// Suffix of segment files; the stem is the first position, 20 digits.
pub const SEGMENT_SUFFIX: &str = ".log";

/// The path of the segment whose first record has `first_position`.
pub fn segment_path(dir: &Path, first_position: u64) -> PathBuf {
    dir.join(format!("{first_position:020}{SEGMENT_SUFFIX}"))
}

/// The segment files of `dir`, ordered by first position.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            out.push((stem.parse().expect("20 digits fit u64"), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What a scan found at the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every byte belongs to a complete, valid batch.
    Clean,
    /// The last segment ends in a partial write: bytes from `truncate_at` on are not part of
    /// any complete batch and were never acknowledged. Opening truncates them.
    TornTail {
        /// The segment.
        segment: PathBuf,
        /// Where the valid data ends.
        truncate_at: u64,
        /// How many bytes follow it.
        discarded: u64,
        /// The segment holds nothing valid, not even its header: delete it.
        remove: bool,
    },
    /// A record is damaged and valid data follows it: acknowledged events may be lost.
    /// Opening refuses; `repair` truncates at `truncate_at` after a backup.
    Corrupt {
        /// The segment holding the damage.
        segment: PathBuf,
        /// Offset of the damaged record.
        offset: u64,
        /// Where the last complete batch before the damage ends.
        truncate_at: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One segment as scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its file.
    pub path: PathBuf,
    /// Position of its first record.
    pub first_position: u64,
    /// Valid records in it.
    pub records: u64,
    /// End of its valid data.
    pub valid_len: u64,
    /// Its size on disk.
    pub file_len: u64,
}

/// What a full scan found.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Segments up to (and including) the one where the scan stopped.
    pub segments: Vec<SegmentInfo>,
    /// Position of the last valid record of a complete batch.
    pub head: u64,
    /// How the log ends.
    pub status: Status,
}

/// A record with its segment number and byte offset, as a scan hands it over.
pub type Located = (Record, u32, u64);

/// Scans every segment of `dir` in order, calling `on_batch` with each complete batch
/// (records with their segment number and offset). `on_batch` may reject a batch (e.g. a
/// version gap); that counts as corruption at the batch. Stops at the first damage.
pub fn scan(
    dir: &Path,
    on_batch: &mut dyn FnMut(&[Located]) -> Result<(), String>,
) -> Result<Scan, LogError> {
    let listed = list_segments(dir)?;
    let mut segments = Vec::new();
    let mut next = 1u64; // the position the next record must have
    let count = listed.len();
    for (i, (name_pos, path)) in listed.into_iter().enumerate() {
        let last = i + 1 == count;
        let data = Bytes::from(
            fs::read(&path).map_err(|e| LogError::io(format!("reading {}", path.display()), e))?,
        );
        let file_len = data.len() as u64;
        let corrupt = |offset: u64, truncate_at: u64, reason: String| Status::Corrupt {
            segment: path.clone(),
            offset,
            truncate_at,
            reason,
        };
        let seg_no = u32::try_from(segments.len()).expect("fewer than 2^32 segments");
        match format::decode_segment_header(&data) {
            Ok(first) if first == name_pos && first == next => {}
            Ok(first) => {
                let status = corrupt(
                    0,
                    0,
                    format!("segment header says first position {first}, expected {next}"),
                );
                return Ok(Scan {
                    segments,
                    head: next - 1,
                    status,
                });
            }
            // A segment is created and its header fsynced before any record goes in: a last
            // segment with nothing but a short or damaged header is a torn creation holding
            // nothing acknowledged. (A bad header with records after it is corruption.)
            Err(_) if last && name_pos == next && file_len <= SEGMENT_HEADER_LEN as u64 => {
                let status = Status::TornTail {
                    segment: path,
                    truncate_at: 0,
                    discarded: file_len,
                    remove: true,
                };
                return Ok(Scan {
                    segments,
                    head: next - 1,
                    status,
                });
            }
            Err(e) => {
                let status = corrupt(0, 0, format!("bad segment header: {e}"));
                return Ok(Scan {
                    segments,
                    head: next - 1,
                    status,
                });
            }
        }
        let mut off = SEGMENT_HEADER_LEN;
        let mut batch: Vec<Located> = Vec::new();
        let mut batch_start = off;
        let mut group = 0u64; // group of the last valid record
        let mut records = 0u64;
        let mut damage: Option<(usize, String)> = None;
        while off < data.len() {
            match format::decode_record_at(&data, off) {
                Ok((rec, len)) => {
                    let expected = next + batch.len() as u64;
                    if rec.position != expected {
                        damage = Some((
                            off,
                            format!("record has position {}, expected {expected}", rec.position),
                        ));
                        break;
                    }
                    if rec.group != group && rec.group != rec.position {
                        damage = Some((
                            off,
                            format!("record {} claims group {}", rec.position, rec.group),
                        ));
                        break;
                    }
                    group = rec.group;
                    let end = rec.flags & FLAG_BATCH_END != 0;
                    batch.push((rec, seg_no, off as u64));
                    off += len;
                    if end {
                        if let Err(reason) = on_batch(&batch) {
                            let status = corrupt(batch_start as u64, batch_start as u64, reason);
                            segments.push(info(&path, name_pos, records, batch_start, file_len));
                            return Ok(Scan {
                                segments,
                                head: next - 1,
                                status,
                            });
                        }
                        next += batch.len() as u64;
                        records += batch.len() as u64;
                        batch.clear();
                        batch_start = off;
                    }
                }
                Err(e) => {
                    damage = Some((off, e.to_string()));
                    break;
                }
            }
        }
        segments.push(info(&path, name_pos, records, batch_start, file_len));
        // Zeros from a batch boundary to the end of the last segment are space the writer
        // preallocated (`LogFile::preallocate`), not damage: the log ends there, cleanly.
        if last
            && batch.is_empty()
            && damage
                .as_ref()
                .is_some_and(|(at, _)| data[*at..].iter().all(|&b| b == 0))
        {
            continue;
        }
        let torn = |discarded| Status::TornTail {
            segment: path.clone(),
            truncate_at: batch_start as u64,
            discarded,
            remove: false,
        };
        let status = match damage {
            None if batch.is_empty() => continue,
            None if last => torn(file_len - batch_start as u64),
            None => corrupt(
                batch_start as u64,
                batch_start as u64,
                "segment ends inside a batch, and later segments exist".into(),
            ),
            Some((at, reason)) if !last => corrupt(
                at as u64,
                batch_start as u64,
                format!("{reason}, and later segments exist"),
            ),
            Some((at, reason)) => match valid_records_after(&data, at, next - 1) {
                // Only the last write group can be torn: the writer starts a group only after the
                // previous one's fdatasync, so valid bytes of a later group prove the earlier
                // groups were complete and durable.
                groups
                    if groups
                        .iter()
                        .all(|&g| g == group || g == next + batch.len() as u64) =>
                {
                    torn(file_len - batch_start as u64)
                }
                groups => corrupt(
                    at as u64,
                    batch_start as u64,
                    format!("{reason}; {} valid record(s) follow it", groups.len()),
                ),
            },
        };
        return Ok(Scan {
            segments,
            head: next - 1,
            status,
        });
    }
    Ok(Scan {
        segments,
        head: next - 1,
        status: Status::Clean,
    })
}

fn info(
    path: &Path,
    first_position: u64,
    records: u64,
    valid_len: usize,
    file_len: u64,
) -> SegmentInfo {
    SegmentInfo {
        path: path.to_owned(),
        first_position,
        records,
        valid_len: valid_len as u64,
        file_len,
    }
}

/// The groups of the valid records found anywhere after the damage at `at` (byte by byte,
/// with a cheap plausibility filter before the CRC).
fn valid_records_after(data: &Bytes, at: usize, last_position: u64) -> Vec<u64> {
    let mut groups = Vec::new();
    let mut off = at + 1;
    while off + FRAME_HEADER_LEN + format::BODY_FIXED_LEN <= data.len() {
        let plausible = format::frame_len(&data[off..]).is_ok_and(|len| off + len <= data.len())
            && {
                let p = u64::from_le_bytes(data[off + 8..off + 16].try_into().expect("8 bytes"));
                p > last_position && p - last_position <= (data.len() - at) as u64
            };
        if plausible {
            if let Ok((rec, len)) = format::decode_record_at(data, off) {
                groups.push(rec.group);
                off += len;
                continue;
            }
        }
        off += 1;
    }
    groups
}

/// Fixes a torn tail found by [`scan`]: truncates (or removes) and fsyncs.
pub fn truncate_torn_tail(dir: &Path, status: &Status) -> Result<(), LogError> {
    if let Status::TornTail {
        segment,
        truncate_at,
        remove,
        ..
    } = status
    {
        if *remove {
            fs::remove_file(segment)
                .map_err(|e| LogError::io(format!("removing {}", segment.display()), e))?;
        } else {
            truncate(segment, *truncate_at)?;
        }
        sync_dir(dir)?;
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    f.set_len(len)
        .map_err(|e| LogError::io(format!("truncating {}", path.display()), e))?;
    f.sync_all()
        .map_err(|e| LogError::io(format!("syncing {}", path.display()), e))
}

/// fsyncs a directory, making created, renamed and removed entries durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), e))
}

/// What `verdict store check` reports.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The scanned segments.
    pub segments: Vec<SegmentInfo>,
    /// Last valid position.
    pub head: u64,
    /// Distinct streams up to `head`.
    pub streams: u64,
    /// How the log ends.
    pub status: Status,
}

/// Validates every record of the log in `dir` without changing anything.
pub fn check(dir: &Path) -> Result<CheckReport, LogError> {
    let mut streams = std::collections::HashMap::<String, u64>::new();
    let mut ids = std::collections::HashSet::new();
    let scan = scan(dir, &mut |batch| {
        validate_batch(batch, &mut streams, &mut ids)
    })?;
    Ok(CheckReport {
        segments: scan.segments,
        head: scan.head,
        streams: streams.len() as u64,
        status: scan.status,
    })
}

/// The checks on a batch that need history: stream versions continue, ids are unique.
pub fn validate_batch(
    batch: &[Located],
    streams: &mut std::collections::HashMap<String, u64>,
    ids: &mut std::collections::HashSet<uuid::Uuid>,
) -> Result<(), String> {
    for (rec, _, _) in batch {
        let v = streams.entry(rec.stream.clone()).or_default();
        if rec.stream_version != *v + 1 {
            return Err(format!(
                "record {} is version {} of stream {:?}, expected {}",
                rec.position,
                rec.stream_version,
                rec.stream,
                *v + 1
            ));
        }
        *v += 1;
        if !ids.insert(rec.event_id) {
            return Err(format!(
                "record {} repeats event id {}",
                rec.position, rec.event_id
            ));
        }
    }
    Ok(())
}

/// What `repair` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Nothing to do.
    Clean,
    /// A torn tail was truncated (as opening would have).
    TruncatedTornTail {
        /// The segment.
        segment: PathBuf,
        /// Its new length.
        len: u64,
    },
    /// Damage was cut off: the damaged segment truncated at the last complete batch before
    /// the damage, later segments removed; the originals copied to `backup` first.
    TruncatedCorruption {
        /// The damaged segment.
        segment: PathBuf,
        /// Its new length.
        len: u64,
        /// Later segments removed.
        removed: Vec<PathBuf>,
        /// Where the originals are.
        backup: PathBuf,
        /// The new head position.
        head: u64,
    },
}

/// Makes the log in `dir` openable again, losing the events at and after the first damage;
/// copies every file it changes into a `repair-backup-*` directory first. The caller must hold
/// the directory lock (see [`crate::DirLock`]).
pub fn repair(dir: &Path, backup_stamp: &str) -> Result<RepairOutcome, LogError> {
    let report = check(dir)?;
    match &report.status {
        Status::Clean => Ok(RepairOutcome::Clean),
        status @ Status::TornTail {
            segment,
            truncate_at,
            ..
        } => {
            truncate_torn_tail(dir, status)?;
            Ok(RepairOutcome::TruncatedTornTail {
                segment: segment.clone(),
                len: *truncate_at,
            })
        }
        Status::Corrupt {
            segment,
            truncate_at,
            ..
        } => {
            let backup = dir.join(format!("repair-backup-{backup_stamp}"));
            fs::create_dir(&backup)
                .map_err(|e| LogError::io(format!("creating {}", backup.display()), e))?;
            let later: Vec<PathBuf> = list_segments(dir)?
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| p > segment)
                .collect();
            for p in std::iter::once(segment).chain(&later) {
                let to = backup.join(p.file_name().expect("segment file name"));
                fs::copy(p, &to)
                    .map_err(|e| LogError::io(format!("backing up {}", p.display()), e))?;
                File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| LogError::io(format!("syncing {}", to.display()), e))?;
            }
            sync_dir(&backup)?;
            sync_dir(dir)?;
            if *truncate_at < SEGMENT_HEADER_LEN as u64 {
                fs::remove_file(segment)
                    .map_err(|e| LogError::io(format!("removing {}", segment.display()), e))?;
            } else {
                truncate(segment, *truncate_at)?;
            }
            for p in &later {
                fs::remove_file(p)
                    .map_err(|e| LogError::io(format!("removing {}", p.display()), e))?;
            }
            sync_dir(dir)?;
            Ok(RepairOutcome::TruncatedCorruption {
                segment: segment.clone(),
                len: *truncate_at,
                removed: later,
                backup,
                head: report.head,
            })
        }
    }
}
