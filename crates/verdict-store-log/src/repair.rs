//! `verdict store repair`: makes a log that refuses to open openable again, never silently.
//!
//! Every file it changes or removes is first copied (or moved) into
//! `repair-backup-<stamp>/` in the log directory, and every action is reported. It moves
//! stray segment files aside instead of cutting real ones, rewrites a damaged segment header
//! whose records verify, cuts a sealed segment's extra bytes back to its manifest length, and
//! only then, for damage to records, truncates at the last complete batch before the damage
//! (later segments, unreachable past the gap, are moved to the backup). It refuses when it
//! cannot tell which files belong to the log (damaged manifest, a missing middle segment, a
//! file holding another segment than its name says). Anything that may have removed
//! acknowledged events gives the log a new identity generation.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::recovery::{
    check, list_segments, segment_path, sync_dir, truncate, truncate_torn_tail, CheckReport,
    ProblemKind, Status,
};
use crate::LogError;

/// One thing `repair` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairAction {
    /// A file the manifest does not list was moved into the backup.
    MovedStray {
        /// Where it was.
        file: PathBuf,
    },
    /// A damaged segment header was rewritten (its records verified).
    RewroteHeader {
        /// The segment.
        segment: PathBuf,
    },
    /// A segment was cut at `from`: `bytes` bytes removed, with the events from position
    /// `first_lost` on (none if it was a torn tail or bytes past a sealed segment's end).
    Truncated {
        /// The segment.
        segment: PathBuf,
        /// Its new length.
        from: u64,
        /// Bytes removed.
        bytes: u64,
        /// First position no longer in the log, if events were cut.
        first_lost: Option<u64>,
    },
    /// A whole segment file was moved into the backup (it followed the damage).
    RemovedSegment {
        /// Where it was.
        segment: PathBuf,
        /// Its first position.
        first_position: u64,
    },
    /// The manifest listed an active segment whose file is gone: the log now ends with the
    /// previous segment.
    AcceptedMissingLastSegment {
        /// The missing file.
        segment: PathBuf,
    },
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MovedStray { file } => {
                write!(f, "moved stray file {} into the backup", file.display())
            }
            Self::RewroteHeader { segment } => write!(
                f,
                "rewrote the damaged header of {} (its records verify)",
                segment.display()
            ),
            Self::Truncated {
                segment,
                from,
                bytes,
                first_lost,
            } => {
                write!(
                    f,
                    "truncated {} at offset {from}, removing {bytes} bytes",
                    segment.display()
                )?;
                match first_lost {
                    Some(p) => write!(f, " (events from position {p} on)"),
                    None => write!(f, " (no acknowledged events)"),
                }
            }
            Self::RemovedSegment {
                segment,
                first_position,
            } => write!(
                f,
                "moved segment {} (from position {first_position}) into the backup",
                segment.display()
            ),
            Self::AcceptedMissingLastSegment { segment } => write!(
                f,
                "the last segment {} is missing; the log now ends before it",
                segment.display()
            ),
        }
    }
}

/// What `repair` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairOutcome {
    /// In order.
    pub actions: Vec<RepairAction>,
    /// Where the originals are (`None` if nothing was changed).
    pub backup: Option<PathBuf>,
    /// The head position after the repair.
    pub head: u64,
    /// The identity after the repair (a new generation if events may have been removed).
    pub identity: Option<String>,
}

impl RepairOutcome {
    /// Whether nothing had to be done.
    pub fn is_clean(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The backup directory, created on first use; files copied or moved into it.
struct Backup {
    dir: PathBuf,
    created: bool,
}

impl Backup {
    fn ensure(&mut self) -> Result<&Path, LogError> {
        if !self.created {
            fs::create_dir(&self.dir)
                .map_err(|e| LogError::io(format!("creating {}", self.dir.display()), e))?;
            self.created = true;
        }
        Ok(&self.dir)
    }

    fn target(&mut self, file: &Path) -> Result<PathBuf, LogError> {
        let name = file.file_name().expect("a file name");
        Ok(self.ensure()?.join(name))
    }

    /// Copies `file` into the backup, durably.
    fn copy(&mut self, file: &Path) -> Result<(), LogError> {
        let to = self.target(file)?;
        if to.exists() {
            return Ok(()); // the original is already saved
        }
        fs::copy(file, &to)
            .map_err(|e| LogError::io(format!("backing up {}", file.display()), e))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| LogError::io(format!("syncing {}", to.display()), e))?;
        sync_dir(&self.dir)
    }

    /// Moves `file` into the backup (copying first if a copy of an earlier state is there).
    fn take(&mut self, file: &Path, log_dir: &Path) -> Result<(), LogError> {
        let to = self.target(file)?;
        if to.exists() {
            fs::remove_file(file)
        } else {
            fs::rename(file, &to)
        }
        .map_err(|e| LogError::io(format!("moving {} into the backup", file.display()), e))?;
        sync_dir(&self.dir)?;
        sync_dir(log_dir)
    }
}

fn refuse(reason: String) -> LogError {
    LogError::Unrepairable { reason }
}

/// Repairs the log in `dir` (see the module docs). The caller must hold the directory lock
/// (see [`crate::DirLock`]).
pub fn repair(dir: &Path, backup_stamp: &str) -> Result<RepairOutcome, LogError> {
    let mut backup = Backup {
        dir: dir.join(format!("repair-backup-{backup_stamp}")),
        created: false,
    };
    let mut actions = Vec::new();
    let mut lost_events = false;
    // Each round fixes one class of problem and checks again; a repair needs few rounds.
    for _ in 0..16 {
        let report = check(dir)?;
        let mut manifest = Manifest::load(dir).ok().flatten();
        if report.opens() && report.torn_rolls.is_empty() && report.status == Status::Clean {
            if lost_events {
                if let Some(m) = manifest.as_mut() {
                    m.generation += 1;
                    m.store(dir)
                        .map_err(|e| LogError::io("writing the manifest".into(), e))?;
                }
            }
            let identity = Manifest::load(dir)?.map(|m| m.identity());
            return Ok(RepairOutcome {
                actions,
                backup: backup.created.then_some(backup.dir),
                head: report.head,
                identity,
            });
        }
        if let Some(p) = report
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::ManifestDamaged)
        {
            return Err(refuse(format!(
                "{p}; without it repair cannot tell which files belong to the log"
            )));
        }
        // Files that are not the log's: move them aside, touch nothing else this round.
        let strays: Vec<PathBuf> = report
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::StraySegment)
            .map(|p| p.segment.clone())
            .chain(report.torn_rolls.iter().cloned())
            .collect();
        if !strays.is_empty() {
            for file in strays {
                backup.take(&file, dir)?;
                actions.push(RepairAction::MovedStray { file });
            }
            continue;
        }
        if let Some(p) = report
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::MissingSegment)
        {
            let m = manifest.as_mut().expect("only a manifest lists segments");
            if p.segment != segment_path(dir, m.active_first) {
                return Err(refuse(format!(
                    "{p}; restore it from a backup (repair cannot recreate its events, and the \
                     segments after it would leave a gap)"
                )));
            }
            backup.copy(&Manifest::path(dir))?;
            match m.sealed.pop() {
                Some(last) => {
                    m.active_first = last.first;
                    m.store(dir)
                        .map_err(|e| LogError::io("writing the manifest".into(), e))?;
                }
                // Nothing left: the next open starts a new log (with a new identity).
                None => backup.take(&dir.join(MANIFEST_FILE), dir)?,
            }
            actions.push(RepairAction::AcceptedMissingLastSegment {
                segment: p.segment.clone(),
            });
            lost_events = true;
            continue;
        }
        // A sealed segment with bytes past its manifest length (and its data intact): cut
        // just those, not the segments after it.
        if let Some(m) = &manifest {
            let extended = m.sealed.iter().find_map(|s| {
                report
                    .segments
                    .iter()
                    .find(|i| {
                        i.first_position == s.first && i.file_len > s.len && i.valid_len >= s.len
                    })
                    .map(|i| (i.path.clone(), s.len, i.file_len))
            });
            if let Some((segment, len, file_len)) = extended {
                backup.copy(&segment)?;
                truncate(&segment, len)?;
                actions.push(RepairAction::Truncated {
                    segment,
                    from: len,
                    bytes: file_len - len,
                    first_lost: None,
                });
                continue;
            }
        }
        match &report.status {
            Status::Clean => {
                // Problems the status does not show (e.g. a sealed segment shorter than
                // sealed whose records still run on): nothing safe to do automatically.
                let p = report.problems.first().expect("not clean");
                return Err(refuse(format!("{p}; repair has no safe fix for it")));
            }
            status @ Status::TornTail {
                segment,
                truncate_at,
                discarded,
                provable,
                ..
            } => {
                backup.copy(segment)?;
                truncate_torn_tail(dir, status)?;
                actions.push(RepairAction::Truncated {
                    segment: segment.clone(),
                    from: *truncate_at,
                    bytes: *discarded,
                    first_lost: (!provable).then_some(report.head + 1),
                });
                lost_events |= !provable;
            }
            Status::Corrupt {
                segment,
                offset,
                truncate_at,
                reason,
                kind,
            } => match kind {
                ProblemKind::DamagedHeader => {
                    let first = first_of(segment)?;
                    backup.copy(segment)?;
                    rewrite_header(segment, first)?;
                    actions.push(RepairAction::RewroteHeader {
                        segment: segment.clone(),
                    });
                }
                ProblemKind::WrongHeader if *offset == 0 && header_names_other(segment) => {
                    return Err(refuse(format!(
                        "{} holds another segment than its name says ({reason}); repair cannot \
                         tell which file belongs to the log; move the wrong file away or restore \
                         the right one",
                        segment.display()
                    )));
                }
                _ => {
                    cut_at_damage(
                        dir,
                        &report,
                        segment,
                        *truncate_at,
                        &mut backup,
                        &mut actions,
                        manifest.as_mut(),
                    )?;
                    lost_events = true;
                }
            },
        }
    }
    Err(refuse(
        "the log is still not clean after repeated repairs".into(),
    ))
}

/// The first position a segment's file name announces.
fn first_of(segment: &Path) -> Result<u64, LogError> {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| refuse(format!("{} is not named like a segment", segment.display())))
}

/// Whether the segment's header is intact but names another first position than the file.
fn header_names_other(segment: &Path) -> bool {
    let Ok(data) = fs::read(segment) else {
        return false;
    };
    matches!(
        (format::decode_segment_header(&data), first_of(segment)),
        (Ok(h), Ok(n)) if h != n
    )
}

/// The format version a segment's records show: 2 if a write group trailer follows its
/// first records, 1 if its records run on into a second group without one (or end without
/// one: then both read the same records).
fn records_version(data: &bytes::Bytes) -> u32 {
    let mut off = SEGMENT_HEADER_LEN;
    let mut group = None;
    while let Ok((frame, len)) = format::decode_frame_at(data, off) {
        match frame {
            format::Frame::Trailer(_) => return format::FORMAT_VERSION,
            format::Frame::Record(r) if group.is_some_and(|g| g != r.group) => break,
            format::Frame::Record(r) => group = Some(r.group),
        }
        off += len;
    }
    format::FORMAT_VERSION_1
}

fn rewrite_header(segment: &Path, first: u64) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    let data = bytes::Bytes::from(
        fs::read(segment).map_err(|e| LogError::io(format!("reading {}", segment.display()), e))?,
    );
    let header = format::encode_segment_header_version(first, records_version(&data));
    let f = fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .map_err(|e| LogError::io(format!("opening {}", segment.display()), e))?;
    f.write_all_at(&header, 0)
        .and_then(|()| f.sync_all())
        .map_err(|e| LogError::io(format!("rewriting the header of {}", segment.display()), e))
}

/// Truncates `segment` at `truncate_at` (removing it if not even its header is left) and
/// moves every later segment into the backup; updates the manifest's chain.
fn cut_at_damage(
    dir: &Path,
    report: &CheckReport,
    segment: &Path,
    truncate_at: u64,
    backup: &mut Backup,
    actions: &mut Vec<RepairAction>,
    manifest: Option<&mut Manifest>,
) -> Result<(), LogError> {
    let first = first_of(segment)?;
    let later: Vec<(u64, PathBuf)> = list_segments(dir)?
        .into_iter()
        .filter(|(p, _)| *p > first)
        .collect();
    backup.copy(segment)?;
    let len = fs::metadata(segment)
        .map_err(|e| LogError::io(format!("reading {}", segment.display()), e))?
        .len();
    let removed_whole = truncate_at < SEGMENT_HEADER_LEN as u64;
    if removed_whole {
        backup.take(segment, dir)?;
        actions.push(RepairAction::RemovedSegment {
            segment: segment.to_owned(),
            first_position: first,
        });
    } else {
        truncate(segment, truncate_at)?;
        actions.push(RepairAction::Truncated {
            segment: segment.to_owned(),
            from: truncate_at,
            bytes: len - truncate_at,
            first_lost: Some(report.head + 1),
        });
    }
    for (p, path) in later {
        backup.take(&path, dir)?;
        actions.push(RepairAction::RemovedSegment {
            segment: path,
            first_position: p,
        });
    }
    if let Some(m) = manifest {
        backup.copy(&Manifest::path(dir))?;
        m.sealed.retain(|s| s.first < first);
        if removed_whole {
            match m.sealed.pop() {
                Some(prev) => m.active_first = prev.first,
                None => {
                    backup.take(&Manifest::path(dir), dir)?;
                    return Ok(());
                }
            }
        } else {
            m.active_first = first;
        }
        m.store(dir)
            .map_err(|e| LogError::io("writing the manifest".into(), e))?;
    }
    sync_dir(dir)
}
