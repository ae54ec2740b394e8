//! Model-based property test (as sled's `tests/tree`): random appends, expected-version
//! conflicts, retries, reads and restarts run against a backend and against [`Model`], a
//! deliberately naive statement of the contract; every answer must agree.
//!
//! ```ignore
//! proptest! {
//!     #[test]
//!     fn agrees(ops in verdict_store::conformance::model::ops(60)) {
//!         let rt = tokio::runtime::Runtime::new().unwrap();
//!         rt.block_on(verdict_store::conformance::model::check(&MyFactory::new(), &ops));
//!     }
//! }
//! ```

use proptest::prelude::*;
use uuid::Uuid;

use super::{event, StoreFactory};
use crate::{AppendResult, EventData, ExpectedVersion, StoreError};

/// How an [`Op::Append`] states its expectation; `Exact` is relative to the current version
/// so that both matches and conflicts are common.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// [`ExpectedVersion::Any`].
    Any,
    /// [`ExpectedVersion::NoStream`].
    NoStream,
    /// [`ExpectedVersion::StreamExists`].
    StreamExists,
    /// `Exact(current + delta)`, clamped at 0.
    Exact(i8),
}

/// One step of a generated history.
#[derive(Clone, Debug)]
pub enum Op {
    /// Append `size` new events to stream `stream`.
    Append {
        /// One of a few stream names, so streams collide.
        stream: u8,
        /// The expectation.
        expect: Expect,
        /// Batch size.
        size: u8,
    },
    /// Re-send an earlier batch (the `batch`-th sent, modulo), or its first `prefix` events,
    /// to stream `stream`.
    Retry {
        /// Which earlier batch.
        batch: usize,
        /// How many of its leading events (at least 1).
        prefix: u8,
        /// The stream to send it to.
        stream: u8,
        /// The expectation.
        expect: Expect,
    },
    /// Read a stream.
    ReadStream {
        /// Which stream.
        stream: u8,
        /// First version.
        from: u8,
        /// Page size.
        max: u8,
    },
    /// Read the global log.
    ReadAll {
        /// First position.
        from: u16,
        /// Page size.
        max: u8,
    },
    /// Close and reopen the store.
    Restart,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        (-1i8..=1).prop_map(Expect::Exact),
    ]
}

/// A strategy for histories of up to `len` steps.
pub fn ops(len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0u8..4, expect(), 1u8..5).prop_map(|(stream, expect, size)| Op::Append { stream, expect, size }),
        2 => (any::<usize>(), 1u8..5, 0u8..4, expect())
            .prop_map(|(batch, prefix, stream, expect)| Op::Retry { batch, prefix, stream, expect }),
        2 => (0u8..4, 0u8..8, 0u8..6).prop_map(|(stream, from, max)| Op::ReadStream { stream, from, max }),
        2 => (0u16..40, 0u8..12).prop_map(|(from, max)| Op::ReadAll { from, max }),
        1 => Just(Op::Restart),
    ];
    proptest::collection::vec(op, 1..len)
}

/// The contract, stated as simply as possible: a list of `(stream, event_id)`.
#[derive(Debug, Default)]
pub struct Model {
    events: Vec<(String, Uuid)>,
}

/// The model's answer to an append; errors are compared by kind.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Appended (or recognised as a retry) at these positions.
    Ok(AppendResult),
    /// Version conflict, with the stream's current version.
    WrongVersion(u64),
    /// Id already stored elsewhere.
    Duplicate,
}

impl Model {
    fn version(&self, stream: &str) -> u64 {
        self.events.iter().filter(|(s, _)| s == stream).count() as u64
    }

    fn version_at(&self, position: u64) -> u64 {
        let stream = &self.events[position as usize - 1].0;
        self.events[..position as usize]
            .iter()
            .filter(|(s, _)| s == stream)
            .count() as u64
    }

    /// Applies an append and returns what the store must answer.
    pub fn append(&mut self, stream: &str, expected: ExpectedVersion, ids: &[Uuid]) -> Outcome {
        let position_of = |id: &Uuid| {
            self.events
                .iter()
                .position(|(_, e)| e == id)
                .map(|i| i as u64 + 1)
        };
        if let Some(first) = position_of(&ids[0]) {
            let is_retry = ids.iter().enumerate().all(|(i, id)| {
                self.events
                    .get(first as usize - 1 + i)
                    .is_some_and(|(s, e)| s == stream && e == id)
            });
            if !is_retry {
                return Outcome::Duplicate;
            }
            let last = first + ids.len() as u64 - 1;
            return Outcome::Ok(AppendResult {
                first_position: first,
                last_position: last,
                stream_version: self.version_at(last),
            });
        }
        if ids.iter().any(|id| position_of(id).is_some()) {
            return Outcome::Duplicate;
        }
        let current = self.version(stream);
        if !expected.admits(current) {
            return Outcome::WrongVersion(current);
        }
        let first = self.events.len() as u64 + 1;
        self.events
            .extend(ids.iter().map(|id| (stream.to_owned(), *id)));
        Outcome::Ok(AppendResult {
            first_position: first,
            last_position: self.events.len() as u64,
            stream_version: current + ids.len() as u64,
        })
    }
}

fn stream_name(i: u8) -> String {
    format!("stream-{i}")
}

fn resolve(expect: Expect, current: u64) -> ExpectedVersion {
    match expect {
        Expect::Any => ExpectedVersion::Any,
        Expect::NoStream => ExpectedVersion::NoStream,
        Expect::StreamExists => ExpectedVersion::StreamExists,
        Expect::Exact(d) => ExpectedVersion::Exact(current.saturating_add_signed(d as i64)),
    }
}

/// Runs `ops` against a fresh store from `factory` and against [`Model`]; panics on the
/// first disagreement. Ends with a full comparison.
pub async fn check(factory: &dyn StoreFactory, ops: &[Op]) {
    let mut store = factory.create().await;
    let mut model = Model::default();
    let mut sent: Vec<Vec<EventData>> = Vec::new();
    let mut payloads = std::collections::HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        let append = match op {
            Op::Append {
                stream,
                expect,
                size,
            } => {
                let batch: Vec<_> = (0..*size)
                    .map(|i| event("E", step as u64 * 10 + i as u64))
                    .collect();
                sent.push(batch.clone());
                Some((stream_name(*stream), *expect, batch))
            }
            Op::Retry {
                batch,
                prefix,
                stream,
                expect,
            } if !sent.is_empty() => {
                let b = &sent[batch % sent.len()];
                let n = (*prefix as usize).clamp(1, b.len());
                Some((stream_name(*stream), *expect, b[..n].to_vec()))
            }
            Op::Retry { .. } => None,
            Op::ReadStream { stream, from, max } => {
                let got = store
                    .read_stream(&stream_name(*stream), *from as u64, *max as usize)
                    .await
                    .unwrap();
                let name = stream_name(*stream);
                let want: Vec<(u64, u64, Uuid)> = model
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, (s, _))| *s == name)
                    .enumerate()
                    .map(|(v, (p, (_, id)))| (p as u64 + 1, v as u64 + 1, *id))
                    .skip((*from as usize).saturating_sub(1))
                    .take(*max as usize)
                    .collect();
                let got: Vec<_> = got
                    .iter()
                    .map(|e| (e.position, e.stream_version, e.event_id))
                    .collect();
                assert_eq!(got, want, "step {step}: {op:?}");
                None
            }
            Op::ReadAll { from, max } => {
                let got = store.read_all(*from as u64, *max as usize).await.unwrap();
                let want: Vec<(u64, String, Uuid)> = model
                    .events
                    .iter()
                    .enumerate()
                    .map(|(p, (s, id))| (p as u64 + 1, s.clone(), *id))
                    .skip((*from as usize).saturating_sub(1))
                    .take(*max as usize)
                    .collect();
                let got: Vec<_> = got
                    .iter()
                    .map(|e| (e.position, e.stream.clone(), e.event_id))
                    .collect();
                assert_eq!(got, want, "step {step}: {op:?}");
                None
            }
            Op::Restart => {
                if let Some(reopened) = factory.reopen(store.clone()).await {
                    store = reopened;
                }
                None
            }
        };
        if let Some((stream, expect, batch)) = append {
            let expected = resolve(expect, model.version(&stream));
            let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
            let want = model.append(&stream, expected, &ids);
            let got = match store.append(&stream, expected, batch.clone()).await {
                Ok(r) => Outcome::Ok(r),
                Err(StoreError::WrongExpectedVersion { current, .. }) => {
                    Outcome::WrongVersion(current)
                }
                Err(StoreError::DuplicateEventId { .. }) => Outcome::Duplicate,
                Err(other) => panic!("step {step}: {op:?}: unexpected error {other}"),
            };
            assert_eq!(
                got, want,
                "step {step}: {op:?} to {stream} expecting {expected}"
            );
            if matches!(want, Outcome::Ok(_)) {
                for e in batch {
                    payloads.insert(e.event_id, e);
                }
            }
        }
        assert_eq!(
            store.head().await.unwrap(),
            model.events.len() as u64,
            "head after step {step}"
        );
    }
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len(), model.events.len());
    for (e, (stream, id)) in all.iter().zip(&model.events) {
        assert_eq!((&e.stream, &e.event_id), (stream, id));
        assert_eq!(e.to_event_data(), payloads[id], "payload of {id}");
    }
}
