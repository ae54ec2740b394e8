//! The `MANIFEST` file: the log's identity (a random id and a generation) and its segment
//! chain (every sealed segment's positions and length, and the active segment's first
//! position), so open and `check` can tell a missing or stray segment file from a short log.
//!
//! Rewritten whole and atomically (temporary file, fsync, rename, directory fsync) when the
//! log is created, when a segment is sealed, and when `repair` changes the log. Small: 24
//! bytes per sealed segment. Also the matching of a directory's files against the chain
//! (missing, stray, differing segments) that `recovery::scan` runs first.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::format::SEGMENT_HEADER_LEN;
use crate::recovery::{segment_path, Problem, ProblemKind, SegmentInfo};
use crate::LogError;

/// The manifest's file name, in the log directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const MAGIC: &[u8; 8] = b"VRDCTMAN";
const VERSION: u32 = 1;
/// Magic, version, count, id, generation, active first position.
const FIXED_LEN: usize = 8 + 4 + 4 + 16 + 8 + 8;
const ENTRY_LEN: usize = 24;

/// A segment that is no longer written: what its file must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedSegment {
    /// Position of its first record (its name).
    pub first: u64,
    /// Position after its last record (the next segment's first).
    pub end: u64,
    /// Its exact length in bytes.
    pub len: u64,
}

/// See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Random, drawn when the log was created (or first opened by a version with manifests).
    pub log_id: Uuid,
    /// Bumped by every operation that may have removed acknowledged data (`repair`, a cut
    /// on open that is not provably unacknowledged): read models built before are stale.
    pub generation: u64,
    /// Sealed segments, in position order, gap-free.
    pub sealed: Vec<SealedSegment>,
    /// First position of the active (last) segment.
    pub active_first: u64,
}

impl Manifest {
    /// A new log's manifest, whose active segment starts at `active_first`.
    pub fn new(active_first: u64) -> Self {
        Self {
            // Version 7: 74 random bits behind a timestamp; the workspace's uuid has no v4.
            log_id: Uuid::now_v7(),
            generation: 0,
            sealed: Vec::new(),
            active_first,
        }
    }

    /// What `EventStore::identity` returns: the id and the generation.
    pub fn identity(&self) -> String {
        format!("{}.{}", self.log_id, self.generation)
    }

    /// The segments the manifest names, sealed ones then the active one, by first position.
    pub fn chain(&self) -> Vec<u64> {
        self.sealed
            .iter()
            .map(|s| s.first)
            .chain(std::iter::once(self.active_first))
            .collect()
    }

    /// Its bytes: fixed fields, the sealed segments, a CRC32C of all that.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_LEN + ENTRY_LEN * self.sealed.len() + 4);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(
            &u32::try_from(self.sealed.len())
                .expect("fewer than 2^32 segments")
                .to_le_bytes(),
        );
        b.extend_from_slice(self.log_id.as_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.active_first.to_le_bytes());
        for s in &self.sealed {
            b.extend_from_slice(&s.first.to_le_bytes());
            b.extend_from_slice(&s.end.to_le_bytes());
            b.extend_from_slice(&s.len.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses [`Self::encode`]'s bytes.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < FIXED_LEN + 4 || &b[0..8] != MAGIC {
            return Err("not a manifest");
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("manifest checksum mismatch");
        }
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(8) != VERSION {
            return Err("unknown manifest version");
        }
        let count = u32_at(12) as usize;
        if body.len() != FIXED_LEN + count * ENTRY_LEN {
            return Err("manifest length does not match its segment count");
        }
        let sealed = (0..count)
            .map(|i| {
                let o = FIXED_LEN + i * ENTRY_LEN;
                SealedSegment {
                    first: u64_at(o),
                    end: u64_at(o + 8),
                    len: u64_at(o + 16),
                }
            })
            .collect();
        Ok(Self {
            log_id: Uuid::from_bytes(body[16..32].try_into().expect("16 bytes")),
            generation: u64_at(32),
            sealed,
            active_first: u64_at(40),
        })
    }

    /// The manifest of the log in `dir`; `None` if it has none (a new log, or one written
    /// by a version before manifests); [`LogError::Corrupt`] if it is damaged.
    pub fn load(dir: &Path) -> Result<Option<Self>, LogError> {
        let path = dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(b) => Self::decode(&b)
                .map(Some)
                .map_err(|reason| LogError::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: reason.into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Replaces the manifest in `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(MANIFEST_TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        File::open(dir)?.sync_all()
    }

    /// The path of the manifest in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }
}

/// Which listed files to scan, given the manifest: its chain (the files present), plus the
/// problems with the set of files and the torn rolls (see [`Scan::torn_rolls`]).
pub(crate) fn chain_files(
    dir: &Path,
    manifest: Option<&Manifest>,
    listed: Vec<(u64, PathBuf)>,
) -> (Vec<(u64, PathBuf)>, Vec<Problem>, Vec<PathBuf>) {
    let Some(m) = manifest else {
        return (listed, Vec::new(), Vec::new());
    };
    let chain = m.chain();
    let mut problems = Vec::new();
    for &first in &chain {
        if !listed.iter().any(|(p, _)| *p == first) {
            problems.push(Problem {
                kind: ProblemKind::MissingSegment,
                segment: segment_path(dir, first),
                offset: 0,
                detail: format!("the manifest lists the segment starting at position {first}, and its file is gone"),
            });
        }
    }
    let (mut files, mut torn) = (Vec::new(), Vec::new());
    for (first, path) in listed {
        if chain.contains(&first) {
            files.push((first, path));
            continue;
        }
        let len = fs::metadata(&path).map_or(u64::MAX, |m| m.len());
        if first > m.active_first && len <= SEGMENT_HEADER_LEN as u64 {
            torn.push(path);
        } else {
            problems.push(Problem {
                kind: ProblemKind::StraySegment,
                segment: path,
                offset: 0,
                detail: format!("a {len}-byte segment file the manifest does not list"),
            });
        }
    }
    (files, problems, torn)
}

/// Sealed segments whose file differs from the manifest (length, positions).
pub(crate) fn sealed_problems(m: &Manifest, segments: &[SegmentInfo]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for s in &m.sealed {
        let Some(info) = segments.iter().find(|i| i.first_position == s.first) else {
            continue;
        };
        if info.file_len != s.len {
            problems.push(Problem {
                kind: ProblemKind::LengthMismatch,
                segment: info.path.clone(),
                offset: info.file_len.min(s.len),
                detail: format!("sealed with {} bytes, now {} bytes", s.len, info.file_len),
            });
        } else if info.valid_len == s.len && info.records != s.end - s.first {
            problems.push(Problem {
                kind: ProblemKind::LengthMismatch,
                segment: info.path.clone(),
                offset: 0,
                detail: format!(
                    "sealed with positions {}..{}, holds {} records",
                    s.first, s.end, info.records
                ),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip() {
        let m = Manifest {
            log_id: Uuid::from_u128(7),
            generation: 3,
            sealed: vec![
                SealedSegment {
                    first: 1,
                    end: 10,
                    len: 900,
                },
                SealedSegment {
                    first: 10,
                    end: 25,
                    len: 1200,
                },
            ],
            active_first: 25,
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m.clone()));
        assert_eq!(m.chain(), [1, 10, 25]);
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&d).is_err(), "flip of bit {bit}");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
    }
}
