//! Group commit: one writer task per store commits every append waiting at that moment in
//! one transaction.
//!
//! Positions are allocated under the `verdict_head` row lock, held until COMMIT (see the
//! crate doc), so commits cannot overlap and PostgreSQL's own group commit never applies.
//! The writer recovers it inside the store: it takes the lock once per group, reads the
//! stored ids and current versions of the whole group in two queries, decides every append
//! in memory in arrival order (retry, version conflict, or new positions), inserts all
//! accepted events with one statement, and commits once — one WAL flush for the group.
//! Replies go out only after COMMIT; if it fails, every append of the group gets
//! [`StoreError::Unavailable`] (unknown outcome), as a single append would.

use std::collections::HashMap;
use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use verdict_store::{AppendResult, EventData, ExpectedVersion, StoreError};

use crate::{check_retry, unavailable, Content, Inner, StoredIds};

/// Appends that may wait for the writer (beyond it, `append` waits to enqueue).
pub(crate) const QUEUE: usize = 4096;
/// A group closes at this many events (an append larger than that is a group of its own).
const GROUP_EVENTS: usize = 10_000;

/// One append for the writer.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// The writer task: ends when the store is dropped (its sender goes with it).
pub(crate) async fn write(inner: Weak<Inner>, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut events = first.events.len();
        let mut group = vec![first];
        while events < GROUP_EVENTS {
            match requests.try_recv() {
                Ok(r) => {
                    events += r.events.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match commit(&inner, &group).await {
            Ok((results, head)) => {
                inner.announce(head);
                for (request, result) in group.into_iter().zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(err) => {
                // `tokio_postgres::Error` is not `Clone`: every reply gets its message.
                let message = err.to_string();
                for request in group {
                    let _ = request.reply.send(Err(unavailable(&message)));
                }
            }
        }
    }
}

/// Decides and commits `group`; returns each append's result and the head after it.
async fn commit(
    inner: &Inner,
    group: &[Request],
) -> Result<(Vec<Result<AppendResult, StoreError>>, u64), tokio_postgres::Error> {
    let mut client = inner.pool.get().await?;
    let tx = client.transaction().await?;
    // The append lock; both reads below run after it, so they see every earlier group.
    let head: i64 = tx
        .query_one("SELECT position FROM verdict_head FOR UPDATE", &[])
        .await?
        .get(0);
    let all_ids: Vec<Uuid> = group
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event_id))
        .collect();
    let mut streams: Vec<&str> = group.iter().map(|r| r.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let id_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&all_ids];
    let stream_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&streams];
    let (found, current) = tokio::try_join!(
        tx.query(
            "SELECT event_id, position, stream, version, event_type, schema_version, payload
             FROM verdict_events WHERE event_id = ANY($1)",
            &id_params,
        ),
        // One index probe per stream (max of the (stream, version) index), not a scan.
        tx.query(
            "SELECT s, (SELECT max(version) FROM verdict_events WHERE stream = s)
             FROM unnest($1::text[]) AS s",
            &stream_params,
        ),
    )?;
    let mut ids: StoredIds = found
        .iter()
        .map(|r| {
            let content = Content::Stored {
                event_type: r.get(4),
                schema_version: r.get(5),
                payload: r.get(6),
            };
            (r.get(0), (r.get(1), r.get(2), r.get(3), content))
        })
        .collect();
    let mut versions: HashMap<String, i64> = current
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<i64>>(1).unwrap_or(0)))
        .collect();

    let mut next = head + 1;
    let mut results = Vec::with_capacity(group.len());
    let (mut positions, mut names, mut event_versions) = (Vec::new(), Vec::new(), Vec::new());
    let mut accepted: Vec<&EventData> = Vec::new();
    for request in group {
        let stream = request.stream.as_str();
        if request.events.iter().any(|e| ids.contains_key(&e.event_id)) {
            results.push(check_retry(stream, &request.events, &ids));
            continue;
        }
        let current = versions.get(stream).copied().unwrap_or(0);
        if !request.expected.admits(current as u64) {
            results.push(Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected: request.expected,
                current: current as u64,
            }));
            continue;
        }
        let n = request.events.len() as i64;
        for (i, e) in request.events.iter().enumerate() {
            let (position, version) = (next + i as i64, current + 1 + i as i64);
            ids.insert(
                e.event_id,
                (position, stream.to_owned(), version, Content::Pending(e)),
            );
            positions.push(position);
            names.push(stream);
            event_versions.push(version);
            accepted.push(e);
        }
        versions.insert(stream.to_owned(), current + n);
        results.push(Ok(AppendResult {
            first_position: next as u64,
            last_position: (next + n - 1) as u64,
            stream_version: (current + n) as u64,
        }));
        next += n;
    }
    let last = next - 1;
    if accepted.is_empty() {
        // Nothing to write: dropping `tx` rolls back and releases the lock.
        return Ok((results, last as u64));
    }
    let event_ids: Vec<Uuid> = accepted.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = accepted.iter().map(|e| e.event_type.as_str()).collect();
    let schema_versions: Vec<i64> = accepted
        .iter()
        .map(|e| i64::from(e.schema_version))
        .collect();
    let payloads: Vec<&[u8]> = accepted.iter().map(|e| &e.payload[..]).collect();
    let metadata: Vec<&[u8]> = accepted.iter().map(|e| &e.metadata[..]).collect();
    let recorded_at: Vec<i64> = accepted.iter().map(|e| e.recorded_at).collect();
    tx.execute(
        "INSERT INTO verdict_events
             (position, stream, version, event_id, event_type, schema_version,
              payload, metadata, recorded_at)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                              $6::bigint[], $7::bytea[], $8::bytea[], $9::bigint[])",
        &[
            &positions,
            &names,
            &event_versions,
            &event_ids,
            &types,
            &schema_versions,
            &payloads,
            &metadata,
            &recorded_at,
        ],
    )
    .await?;
    // NOTIFY is delivered at COMMIT, in commit order.
    tx.execute(
        "WITH moved AS (UPDATE verdict_head SET position = $1 RETURNING 1)
         SELECT pg_notify($2, $3) FROM moved",
        &[&last, &inner.channel, &last.to_string()],
    )
    .await?;
    // An error here is an unknown outcome (the commit may have happened): Unavailable.
    tx.commit().await?;
    Ok((results, last as u64))
}
