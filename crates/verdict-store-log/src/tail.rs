//! The tail cache: the last committed events, in memory, so that readers at the head (the
//! projector, webhook delivery, any live subscription) get them without a file read.
//!
//! At one request at a time every append wakes a subscription that reads back the event it
//! just wrote; served from files, that read costs a hop to the blocking pool and back (two
//! thread wake-ups) for bytes the writer still had in hand. The committer pushes each group
//! here after its fsync and before it publishes the new head, so anything at or below the
//! head is either here or on disk, never in neither. Bounded by events and by bytes; older
//! events are read from the segments as before.

use std::collections::VecDeque;

use verdict_store::RecordedEvent;

/// Most events the cache holds.
pub(crate) const TAIL_EVENTS: usize = 4096;
/// Most bytes (payload, metadata, stream and type names) the cache holds.
pub(crate) const TAIL_BYTES: usize = 4 << 20;

/// Consecutive committed events, ending at the head.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    events: VecDeque<RecordedEvent>,
    bytes: usize,
}

fn size(e: &RecordedEvent) -> usize {
    e.payload.len() + e.metadata.len() + e.stream.len() + e.event_type.len()
}

impl Tail {
    /// Appends a committed group, positions continuing the cache's; evicts the oldest to
    /// stay within bounds. A gap (a group that was never pushed) empties the cache first,
    /// so it only ever holds one unbroken run.
    pub(crate) fn push(&mut self, group: impl IntoIterator<Item = RecordedEvent>) {
        for e in group {
            if self
                .events
                .back()
                .is_some_and(|last| last.position + 1 != e.position)
            {
                self.events.clear();
                self.bytes = 0;
            }
            self.bytes += size(&e);
            self.events.push_back(e);
        }
        while self.events.len() > TAIL_EVENTS || (self.bytes > TAIL_BYTES && self.events.len() > 1)
        {
            let old = self.events.pop_front().expect("non-empty");
            self.bytes -= size(&old);
        }
    }

    /// Positions `from..=to`, if the cache holds all of them.
    pub(crate) fn read(&self, from: u64, to: u64) -> Option<Vec<RecordedEvent>> {
        let first = self.events.front()?.position;
        let last = self.events.back()?.position;
        if from < first || to > last || from > to {
            return None;
        }
        let start = (from - first) as usize;
        let end = (to - first) as usize;
        Some(self.events.range(start..=end).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(position: u64, payload_len: usize) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: "s".into(),
            stream_version: position,
            event_id: uuid::Uuid::from_u128(position as u128),
            event_type: "T".into(),
            schema_version: 1,
            payload: Bytes::from(vec![b'x'; payload_len]),
            metadata: Bytes::new(),
            recorded_at: 0,
        }
    }

    #[test]
    fn reads_only_ranges_it_holds_whole() {
        let mut t = Tail::default();
        assert!(t.read(1, 1).is_none());
        t.push((1..=10).map(|p| event(p, 1)));
        let got = t.read(3, 5).expect("held");
        assert_eq!(
            got.iter().map(|e| e.position).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(t.read(10, 11).is_none(), "past the last");
        assert!(t.read(0, 2).is_none(), "before the first");
        assert_eq!(t.read(10, 10).expect("held")[0].position, 10);
    }

    #[test]
    fn evicts_the_oldest_by_count_and_by_bytes() {
        let mut t = Tail::default();
        t.push((1..=TAIL_EVENTS as u64 + 5).map(|p| event(p, 1)));
        assert!(t.read(5, 5).is_none());
        assert!(t.read(6, TAIL_EVENTS as u64 + 5).is_some());

        let mut t = Tail::default();
        let big = TAIL_BYTES / 4;
        t.push((1..=8).map(|p| event(p, big)));
        assert!(t.read(4, 8).is_none(), "eight quarters do not fit");
        assert!(t.read(6, 8).is_some(), "the newest three do");
        // One event larger than the whole budget is still kept: the cache never empties
        // itself on a push.
        t.push([event(9, TAIL_BYTES * 2)]);
        assert!(t.read(9, 9).is_some());
        assert!(t.read(8, 9).is_none());
    }

    #[test]
    fn a_gap_starts_over() {
        let mut t = Tail::default();
        t.push((1..=3).map(|p| event(p, 1)));
        t.push((7..=8).map(|p| event(p, 1)));
        assert!(t.read(3, 3).is_none());
        assert!(t.read(7, 8).is_some());
    }
}
