//! The in-memory index, rebuilt from the segments on every open: where each position is on
//! disk, each stream's positions, and each event id's position.
//!
//! The writer inserts a group's entries *before* its fdatasync; readers only ever look at
//! positions up to the durable head, so those entries stay invisible until they are durable.
//! About 40-70 bytes per event (see docs/BENCHMARKS.md for a measurement at 10 million).

use std::collections::HashMap;

use uuid::Uuid;

/// Segment number in the upper bits of a location, byte offset in the lower.
const OFFSET_BITS: u32 = 40;

/// Packs a segment number and an offset.
pub fn pack(segment: u32, offset: u64) -> u64 {
    debug_assert!(offset < 1 << OFFSET_BITS);
    (u64::from(segment) << OFFSET_BITS) | offset
}

/// Unpacks a location into segment number and offset.
pub fn unpack(loc: u64) -> (u32, u64) {
    ((loc >> OFFSET_BITS) as u32, loc & ((1 << OFFSET_BITS) - 1))
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Index {
    /// `locs[p - 1]` is where position `p` is.
    pub locs: Vec<u64>,
    /// Each stream's positions, in version order (version = index + 1).
    pub streams: HashMap<Box<str>, Vec<u64>>,
    /// Each event id's position.
    pub ids: HashMap<Uuid, u64>,
}

impl Index {
    /// Records one event at the next position.
    pub fn push(&mut self, stream: &str, event_id: Uuid, loc: u64) -> u64 {
        self.locs.push(loc);
        let position = self.locs.len() as u64;
        match self.streams.get_mut(stream) {
            Some(v) => v.push(position),
            None => {
                self.streams.insert(stream.into(), vec![position]);
            }
        }
        self.ids.insert(event_id, position);
        position
    }

    /// Takes back the newest entries, `(stream, event id)` from the newest down to
    /// `first` (those of a group whose write failed), so the next group reuses their
    /// positions and their ids are free again.
    pub fn pop_since<'a>(
        &mut self,
        first: u64,
        newest_first: impl Iterator<Item = (&'a str, Uuid)>,
    ) {
        let mut position = self.locs.len() as u64;
        for (stream, id) in newest_first {
            if position < first {
                break;
            }
            if let Some(v) = self.streams.get_mut(stream) {
                if v.last() == Some(&position) {
                    v.pop();
                    if v.is_empty() {
                        self.streams.remove(stream);
                    }
                }
            }
            if self.ids.get(&id) == Some(&position) {
                self.ids.remove(&id);
            }
            position -= 1;
        }
        self.locs.truncate(first.saturating_sub(1) as usize);
    }

    /// The number of events of `stream` at or below `head`.
    pub fn version_at(&self, stream: &str, head: u64) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |v| v.partition_point(|&p| p <= head) as u64)
    }

    /// The stream version of `position` within `stream`, if it is there.
    pub fn version_of(&self, stream: &str, position: u64) -> Option<u64> {
        let v = self.streams.get(stream)?;
        v.binary_search(&position).ok().map(|i| i as u64 + 1)
    }
}
