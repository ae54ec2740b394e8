//! [`NatsStore`]: verdict's [`EventStore`] on NATS JetStream (server 2.12 or newer).
//!
//! # Mapping
//!
//! * The whole store is **one JetStream stream**; each event stream is **one subject**,
//!   `<prefix>.<base64url(stream name)>` (the name is encoded because subjects cannot hold
//!   dots, spaces or wildcards). One event is one message.
//! * **Global position = stream sequence.** The leader assigns sequences in log order, a
//!   rejected publish or batch consumes none, and the stream is created with `deny_delete`,
//!   `deny_purge`, `discard: new` and no limits, so no message ever leaves it: the stored
//!   messages are exactly sequences `1..=last_seq`, gap-free, and a reader never sees a later
//!   sequence appear before an earlier one.
//! * **Stream version**: JetStream has no dense per-subject number, so each message carries
//!   its stream version in its body ([`wire`]), computed by the writer from the subject's last
//!   message. The writer makes that computation safe with
//!   `Nats-Expected-Last-Subject-Sequence` = *the stream sequence* of the last message on the
//!   subject it read (0 for none): the server stores the batch only if nobody appended to the
//!   subject since. So every append is conditional, even with [`ExpectedVersion::Any`]; a
//!   conflicting `Any` append re-reads and tries again, a conflicting conditional one
//!   re-reads and reports [`StoreError::WrongExpectedVersion`] with the current version.
//! * **Atomic multi-event appends** use JetStream atomic batch publish (ADR-50, server 2.12+,
//!   stream option `allow_atomic`): `Nats-Batch-Id`/`Nats-Batch-Sequence` on every message,
//!   `Nats-Batch-Commit` on the last; the server stores all or nothing, at consecutive
//!   sequences, and checks the expected subject sequence at commit. A batch holds at most
//!   [`MAX_ATOMIC_BATCH`] events (the server's limit); bigger appends are refused as
//!   [`StoreError::InvalidAppend`] rather than split non-atomically.
//!
//! # Idempotency
//!
//! * **Within the duplicate window** (stream option, 2 minutes by default): every message
//!   carries `Nats-Msg-Id` = its event id; the server refuses to store an id again, in any
//!   subject, and the store then looks the ids up to return the original positions (a retry
//!   on the same stream) or [`StoreError::DuplicateEventId`] (ids stored elsewhere).
//! * **Beyond it**: a conditional retry ([`ExpectedVersion::Exact`] or
//!   [`ExpectedVersion::NoStream`]) fails the version check once its batch is stored; on
//!   every version failure the store looks for the batch's ids in the stream's own history
//!   and returns the original positions (or [`StoreError::DuplicateEventId`] if only some
//!   are there). Not covered beyond the window, because JetStream has no index by id: a
//!   retry with [`ExpectedVersion::Any`] or [`ExpectedVersion::StreamExists`] is stored
//!   again, and ids stored on *another* stream are reported as a version conflict (when the
//!   version fails) or stored again (when it holds). Retry with an exact version, or within
//!   the window. The shared model-based property test finds exactly these cases, so this
//!   crate does not run it.
//!
//! # Durability
//!
//! An append returns when its publish acknowledgement does. That means durable only with the
//! server's `jetstream { sync_interval: always }`: the default fsyncs every 2 minutes and
//! acknowledges before (Jepsen, NATS 2.12.1, lost acknowledged writes that way). The
//! durable deployment is **3 replicas** ([`NatsOptions::replicas`]) in a cluster, **file
//! storage** (always used here) and **`sync_interval: always`** on every server; the
//! acknowledgement then means a quorum has fsynced. Jepsen's remaining caveat (a corrupt
//! file on a minority node can still lose acknowledged data, nats-server#7549) stands.
//!
//! # Reads and subscriptions
//!
//! Reads use batched direct gets (`$JS.API.DIRECT.GET`, stream option `allow_direct`),
//! filtered by subject for [`EventStore::read_stream`] — which therefore scans the stream's
//! messages from its first one: fine for aggregates, slow for very long streams.
//! Subscriptions are [`Subscription::spawn_polling`] over `read_all`; the head they follow
//! is announced by this store's own appends and by a watcher that reads the stream's last
//! sequence whenever a message is published on the store's subjects (a core NATS
//! subscription used only as a wake-up) and every [`NatsOptions::poll_interval`].

mod wire;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, RwLock};
use verdict_store::{
    validate_append, AppendResult, EventData, EventStore, ExpectedVersion, RecordedEvent,
    StoreError, Subscription,
};

/// The most events one append may carry: the server's limit on an atomic batch.
pub const MAX_ATOMIC_BATCH: usize = 1000;

/// JetStream API error: the expected last subject sequence did not match.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
/// The same, as atomic batch commits (and newer servers) report it ("wrong last sequence"
/// without the number).
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
/// JetStream API error: the stream does not exist.
const ERR_STREAM_NOT_FOUND: u64 = 10059;
/// JetStream API error: an atomic batch contains a message id already stored.
const ERR_BATCH_DUPLICATE_MSG_ID: u64 = 10201;

/// Errors of the JetStream backend; appends and reads map them to [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The options are unusable.
    #[error("invalid JetStream store options: {0}")]
    InvalidOptions(String),
    /// The server is older than 2.12, which atomic batch publish needs.
    #[error("nats-server {0} is too old: atomic batch publish needs 2.12 or newer")]
    ServerTooOld(String),
    /// Connecting failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A request failed in transit or timed out: its outcome is unknown.
    #[error("NATS request failed: {0}")]
    Request(String),
    /// The JetStream API answered with an error.
    #[error("JetStream error {err_code}: {description}")]
    Api {
        /// JetStream's error code (`err_code`).
        err_code: u64,
        /// Its description.
        description: String,
    },
}

impl From<NatsError> for StoreError {
    fn from(err: NatsError) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

/// How to reach the server and how the store's JetStream stream is configured.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for a cluster).
    pub url: String,
    /// The JetStream stream holding every event: `[A-Za-z0-9_-]+`.
    pub stream: String,
    /// The subject prefix, dot-separated tokens of `[A-Za-z0-9_-]`; event streams are
    /// `<prefix>.<encoded name>`.
    pub subject_prefix: String,
    /// Replicas of the stream when this store creates it: 3 in production (needs a cluster
    /// of 3 or more servers), 1 for a single development server.
    pub replicas: usize,
    /// The stream's duplicate window, within which `Nats-Msg-Id` dedupes retries.
    pub duplicate_window: Duration,
    /// How long a request may take before its outcome is reported unknown.
    pub request_timeout: Duration,
    /// How often the head watcher reads the stream's last sequence without being woken.
    pub poll_interval: Duration,
}

impl NatsOptions {
    /// Options for stream `VERDICT` on subjects `verdict.ev.>`, 1 replica, a 2-minute
    /// duplicate window.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "VERDICT".into(),
            subject_prefix: "verdict.ev".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), NatsError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token(&self.stream) {
            return Err(NatsError::InvalidOptions(format!(
                "stream name {:?} must be [A-Za-z0-9_-]+",
                self.stream
            )));
        }
        if !self.subject_prefix.split('.').all(token) {
            return Err(NatsError::InvalidOptions(format!(
                "subject prefix {:?} must be dot-separated [A-Za-z0-9_-]+ tokens",
                self.subject_prefix
            )));
        }
        if self.replicas == 0 {
            return Err(NatsError::InvalidOptions(
                "replicas must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// An [`EventStore`] on a JetStream stream. Cloning shares the same store.
#[derive(Clone, Debug)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    options: NatsOptions,
    /// `true` once closed; appends hold it shared, so `close` waits for those in flight.
    closed: RwLock<bool>,
    /// The head announced to subscriptions; dropped by `close`.
    head_tx: Mutex<Option<watch::Sender<u64>>>,
    head_rx: watch::Receiver<u64>,
    /// Tells the watcher task to stop.
    stop: watch::Sender<bool>,
}

/// One message read back: its stream sequence, subject and body.
struct Stored {
    seq: u64,
    subject: String,
    body: Bytes,
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    // Parsed, not passed as `&str`: a `&str` key always names a custom header, and
    // async-nats files Nats-Sequence and friends under standard ones.
    let name: async_nats::header::HeaderName = name.parse().ok()?;
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

fn request_error(err: impl std::fmt::Display) -> NatsError {
    NatsError::Request(err.to_string())
}

/// Parses a JetStream API reply, turning `{"error": ...}` into [`NatsError::Api`].
fn api_reply(message: &Message) -> Result<Value, NatsError> {
    if message.payload.is_empty() {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(&message.payload)
        .map_err(|e| NatsError::Request(format!("unreadable JetStream reply: {e}")))?;
    if let Some(err) = value.get("error") {
        return Err(NatsError::Api {
            err_code: err.get("err_code").and_then(Value::as_u64).unwrap_or(0),
            description: err
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    Ok(value)
}

fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

impl NatsStore {
    /// Connects, checks the server version, and creates the stream if it does not exist.
    pub async fn open(options: NatsOptions) -> Result<Self, NatsError> {
        options.validate()?;
        let servers = options
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NatsError::InvalidOptions(format!("server URL: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(options.request_timeout))
            .connect(servers)
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let version = client.server_info().version;
        if !version_at_least(&version, 2, 12) {
            return Err(NatsError::ServerTooOld(version));
        }
        let (head_tx, head_rx) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            client,
            options,
            closed: RwLock::new(false),
            head_tx: Mutex::new(Some(head_tx)),
            head_rx,
            stop,
        });
        inner.ensure_stream().await?;
        let head = inner.head().await?;
        inner.announce(head);
        tokio::spawn(watch_head(Arc::downgrade(&inner), stop_rx));
        Ok(Self { inner })
    }

    /// The subject an event stream is stored under.
    pub fn subject_of(&self, stream: &str) -> String {
        self.inner.subject_of(stream)
    }
}

impl Inner {
    fn subject_of(&self, stream: &str) -> String {
        format!(
            "{}.{}",
            self.options.subject_prefix,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(stream)
        )
    }

    fn stream_of(&self, subject: &str, seq: u64) -> Result<String, StoreError> {
        let bad =
            || StoreError::Corrupt(format!("message {seq} has a foreign subject {subject:?}"));
        let token = subject
            .strip_prefix(&self.options.subject_prefix)
            .and_then(|t| t.strip_prefix('.'))
            .ok_or_else(bad)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        String::from_utf8(raw).map_err(|_| bad())
    }

    async fn api(&self, subject: String, body: Value) -> Result<Value, NatsError> {
        let reply = self
            .client
            .request(subject, Bytes::from(body.to_string()))
            .await
            .map_err(request_error)?;
        api_reply(&reply)
    }

    async fn ensure_stream(&self) -> Result<(), NatsError> {
        let name = &self.options.stream;
        match self
            .api(format!("$JS.API.STREAM.INFO.{name}"), Value::Null)
            .await
        {
            Ok(info) => {
                let atomic = info["config"]["allow_atomic"].as_bool().unwrap_or(false);
                let direct = info["config"]["allow_direct"].as_bool().unwrap_or(false);
                if !atomic || !direct {
                    return Err(NatsError::InvalidOptions(format!(
                        "stream {name} exists without allow_atomic and allow_direct"
                    )));
                }
                Ok(())
            }
            Err(NatsError::Api { err_code, .. }) if err_code == ERR_STREAM_NOT_FOUND => {
                let config = json!({
                    "name": name,
                    "subjects": [format!("{}.>", self.options.subject_prefix)],
                    "retention": "limits",
                    "storage": "file",
                    "num_replicas": self.options.replicas,
                    // Nothing may ever leave the stream: positions must stay gap-free.
                    "discard": "new",
                    "max_msgs": -1,
                    "max_bytes": -1,
                    "max_age": 0,
                    "max_msgs_per_subject": -1,
                    "deny_delete": true,
                    "deny_purge": true,
                    "allow_rollup_hdrs": false,
                    "allow_direct": true,
                    "allow_atomic": true,
                    "duplicate_window": self.options.duplicate_window.as_nanos() as u64,
                });
                match self
                    .api(format!("$JS.API.STREAM.CREATE.{name}"), config)
                    .await
                {
                    Ok(_) => Ok(()),
                    // Another store created it first.
                    Err(NatsError::Api { description, .. })
                        if description.contains("already in use") =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn head(&self) -> Result<u64, NatsError> {
        let info = self
            .api(
                format!("$JS.API.STREAM.INFO.{}", self.options.stream),
                Value::Null,
            )
            .await?;
        Ok(info["state"]["last_seq"].as_u64().unwrap_or(0))
    }

    fn announce(&self, head: u64) -> bool {
        let guard = self.head_tx.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(tx) => {
                tx.send_if_modified(|h| {
                    let newer = head > *h;
                    if newer {
                        *h = head;
                    }
                    newer
                });
                true
            }
            None => false,
        }
    }

    /// Up to `max` messages from sequence `from` (on `subject` only, if given), through
    /// batched direct gets of at most 1000 messages each.
    async fn direct_batch(
        &self,
        from: u64,
        max: usize,
        subject: Option<&str>,
    ) -> Result<Vec<Stored>, NatsError> {
        let mut out = Vec::new();
        let mut next = from.max(1);
        while out.len() < max {
            let want = (max - out.len()).min(1000);
            let mut request = json!({ "seq": next, "batch": want });
            if let Some(s) = subject {
                request["next_by_subj"] = json!(s);
            }
            let inbox = self.client.new_inbox();
            let mut replies = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(request_error)?;
            self.client
                .publish_with_reply(
                    format!("$JS.API.DIRECT.GET.{}", self.options.stream),
                    inbox,
                    Bytes::from(request.to_string()),
                )
                .await
                .map_err(request_error)?;
            let mut got = 0;
            let mut more = false;
            loop {
                let message = tokio::time::timeout(self.options.request_timeout, replies.next())
                    .await
                    .map_err(|_| NatsError::Request("direct get timed out".into()))?
                    .ok_or_else(|| NatsError::Request("connection closed".into()))?;
                let Some(seq) = header(&message, "Nats-Sequence").and_then(|s| s.parse().ok())
                else {
                    // A status message ends the batch: 204 end of batch, 404 nothing (more).
                    match message.status.map(|s| s.as_u16()) {
                        Some(204) | Some(404) | Some(408) => break,
                        other => {
                            return Err(NatsError::Request(format!(
                                "direct get answered {other:?} {:?}",
                                message.description
                            )))
                        }
                    }
                };
                let subject = header(&message, "Nats-Subject").unwrap_or("").to_owned();
                more = header(&message, "Nats-Num-Pending")
                    .and_then(|p| p.parse::<u64>().ok())
                    .is_none_or(|p| p > 0);
                got += 1;
                next = seq + 1;
                out.push(Stored {
                    seq,
                    subject,
                    body: message.payload,
                });
                if got == want {
                    break;
                }
            }
            if got < want || !more {
                break;
            }
        }
        Ok(out)
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let stored = self.direct_batch(from, max, None).await?;
        stored
            .into_iter()
            .map(|m| wire::decode(self.stream_of(&m.subject, m.seq)?, m.seq, &m.body))
            .collect()
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let subject = self.subject_of(stream);
        let mut out = Vec::new();
        let mut next = 1;
        // Versions are not indexed: scan the subject from its start, keep those >= from.
        while out.len() < max {
            let page = self.direct_batch(next, 1000, Some(&subject)).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            let full = page.len() == 1000;
            for m in page {
                let e = wire::decode(stream.to_owned(), m.seq, &m.body)?;
                if e.stream_version >= from_version && out.len() < max {
                    out.push(e);
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The sequence of the subject's last message and its stream version; (0, 0) if none.
    async fn last_on_subject(&self, subject: &str) -> Result<(u64, u64), StoreError> {
        let reply = self
            .client
            .request(
                format!("$JS.API.DIRECT.GET.{}", self.options.stream),
                Bytes::from(json!({ "last_by_subj": subject }).to_string()),
            )
            .await
            .map_err(request_error)?;
        let Some(seq) = header(&reply, "Nats-Sequence").and_then(|s| s.parse::<u64>().ok()) else {
            return match reply.status.map(|s| s.as_u16()) {
                Some(404) => Ok((0, 0)),
                other => Err(StoreError::Unavailable(format!(
                    "direct get of the last message answered {other:?} {:?}",
                    reply.description
                ))),
            };
        };
        let stream = self.stream_of(subject, seq)?;
        let event = wire::decode(stream, seq, &reply.payload)?;
        Ok((seq, event.stream_version))
    }

    /// Publishes `events` as versions `current + 1..` of `subject`, conditional on the
    /// subject's last sequence being `last_seq`; returns the ack's sequence and duplicate
    /// flag.
    async fn publish(
        &self,
        subject: &str,
        last_seq: u64,
        current: u64,
        events: &[EventData],
    ) -> Result<(u64, bool), NatsError> {
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let n = events.len();
        for (i, e) in events.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
            if i == 0 {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last_seq.to_string().as_str(),
                );
            }
            if n > 1 {
                headers.insert("Nats-Batch-Id", batch_id.as_str());
                headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                if i + 1 == n {
                    headers.insert("Nats-Batch-Commit", "1");
                }
            }
            let body = wire::encode(e, current + i as u64 + 1);
            if i + 1 == n {
                let reply = self
                    .client
                    .request_with_headers(subject.to_owned(), headers, body)
                    .await
                    .map_err(request_error)?;
                let ack = api_reply(&reply)?;
                let seq = ack["seq"]
                    .as_u64()
                    .ok_or_else(|| NatsError::Request(format!("publish ack without seq: {ack}")))?;
                return Ok((seq, ack["duplicate"].as_bool().unwrap_or(false)));
            } else if i == 0 {
                // The batch's first message is a request: the server confirms the batch
                // started (or says why not) before the rest is sent.
                let reply = self
                    .client
                    .request_with_headers(subject.to_owned(), headers, body)
                    .await
                    .map_err(request_error)?;
                api_reply(&reply)?;
            } else {
                self.client
                    .publish_with_headers(subject.to_owned(), headers, body)
                    .await
                    .map_err(request_error)?;
            }
        }
        unreachable!("the last event returns")
    }

    /// The original result if `events` are stored on `stream` from version `from_version`,
    /// consecutively and in order.
    async fn stored_at(
        &self,
        stream: &str,
        from_version: u64,
        events: &[EventData],
    ) -> Result<Option<AppendResult>, StoreError> {
        let stored = self
            .read_stream(stream, from_version.max(1), events.len())
            .await?;
        let same = stored.len() == events.len()
            && stored
                .iter()
                .zip(events)
                .all(|(s, e)| s.event_id == e.event_id)
            && stored
                .windows(2)
                .all(|w| w[1].position == w[0].position + 1);
        Ok(same.then(|| AppendResult {
            first_position: stored[0].position,
            last_position: stored[stored.len() - 1].position,
            stream_version: stored[stored.len() - 1].stream_version,
        }))
    }

    /// After the server refused ids as duplicates: the original positions if the batch is
    /// stored on `stream` as sent, else [`StoreError::DuplicateEventId`].
    async fn resolve_duplicate(
        &self,
        stream: &str,
        events: &[EventData],
        stored_seq: Option<u64>,
    ) -> Result<AppendResult, StoreError> {
        let history = self.read_stream(stream, 1, usize::MAX).await?;
        if let Some(at) = history
            .iter()
            .position(|e| e.event_id == events[0].event_id)
        {
            if let Some(found) = self
                .stored_at(stream, history[at].stream_version, events)
                .await?
            {
                return Ok(found);
            }
        }
        // Not a retry of a batch of this stream: name an id that is stored, if we know one.
        let (event_id, position) = events
            .iter()
            .find_map(|e| {
                history
                    .iter()
                    .find(|h| h.event_id == e.event_id)
                    .map(|h| (e.event_id, h.position))
            })
            .unwrap_or((events[0].event_id, stored_seq.unwrap_or(0)));
        Err(StoreError::DuplicateEventId { event_id, position })
    }
}

/// Keeps the announced head current for appends made elsewhere: wakes on any publish to the
/// store's subjects (a hint only, as rejected publishes wake it too) or every poll interval,
/// then reads the stream's last sequence.
async fn watch_head(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let (client, subjects, poll) = match inner.upgrade() {
        Some(i) => (
            i.client.clone(),
            format!("{}.>", i.options.subject_prefix),
            i.options.poll_interval,
        ),
        None => return,
    };
    let mut wakes = client.subscribe(subjects).await.ok();
    loop {
        let woke = async {
            match wakes.as_mut() {
                Some(w) => w.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = woke => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match strong.head().await {
            Ok(head) => {
                if !strong.announce(head) {
                    return;
                }
            }
            Err(err) => tracing::debug!(%err, "head watcher cannot read the stream's state"),
        }
    }
}

#[async_trait::async_trait]
impl EventStore for NatsStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(stream, &events)?;
        if events.len() > MAX_ATOMIC_BATCH {
            return Err(StoreError::InvalidAppend(format!(
                "batch of {} events exceeds JetStream's atomic batch limit of {MAX_ATOMIC_BATCH}",
                events.len()
            )));
        }
        let closed = self.inner.closed.read().await;
        if *closed {
            return Err(StoreError::Unavailable("store is closed".into()));
        }
        let inner = &self.inner;
        let subject = inner.subject_of(stream);
        let n = events.len() as u64;
        loop {
            let (last_seq, current) = inner.last_on_subject(&subject).await?;
            if !expected.admits(current) {
                // A lost-ack retry whose expected version no longer holds (even beyond the
                // duplicate window): its events are in this stream's history.
                match inner.resolve_duplicate(stream, &events, None).await {
                    Ok(found) => return Ok(found),
                    Err(e @ StoreError::DuplicateEventId { position, .. }) if position > 0 => {
                        return Err(e)
                    }
                    Err(StoreError::DuplicateEventId { .. }) => {}
                    Err(e) => return Err(e),
                }
                return Err(StoreError::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    current,
                });
            }
            match inner.publish(&subject, last_seq, current, &events).await {
                Ok((seq, false)) => {
                    inner.announce(seq);
                    return Ok(AppendResult {
                        first_position: seq + 1 - n,
                        last_position: seq,
                        stream_version: current + n,
                    });
                }
                Ok((seq, true)) => {
                    return inner.resolve_duplicate(stream, &events, Some(seq)).await
                }
                // Someone appended to the stream since we read it: read again and re-check.
                Err(NatsError::Api { err_code, .. })
                    if err_code == ERR_WRONG_LAST_SEQUENCE
                        || err_code == ERR_WRONG_LAST_SEQUENCE_CONSTANT =>
                {
                    continue
                }
                Err(NatsError::Api { err_code, .. }) if err_code == ERR_BATCH_DUPLICATE_MSG_ID => {
                    return inner.resolve_duplicate(stream, &events, None).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.inner.read_stream(stream, from_version, max).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from_position, max).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let subject = self.inner.subject_of(stream);
        Ok(self.inner.last_on_subject(&subject).await?.1)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.inner.head().await?)
    }

    async fn subscribe(&self, from_position: u64) -> Result<Subscription, StoreError> {
        let inner = Arc::clone(&self.inner);
        Ok(Subscription::spawn_polling(
            from_position,
            self.inner.head_rx.clone(),
            move |from, max| {
                let inner = Arc::clone(&inner);
                Box::pin(async move {
                    // A replica answering direct gets may lag the leader that reported the
                    // head by a moment: wait for it rather than report a hole.
                    for _ in 0..200 {
                        let page = inner.read_all(from, max).await?;
                        if !page.is_empty() {
                            return Ok(page);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Vec::new())
                })
            },
        ))
    }

    async fn close(&self) -> Result<(), StoreError> {
        let mut closed = self.inner.closed.write().await;
        *closed = true;
        self.inner
            .head_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.stop.send_replace(true);
        Ok(())
    }
}
