//! [`NatsStore`]: verdict's [`EventStore`] on NATS JetStream (server 2.12 or newer).
//!
//! # Mapping
//!
//! * The whole store is **one JetStream stream**; each event stream is **one subject**,
//!   `<prefix>.<base64url(stream name)>` (the name is encoded because subjects cannot hold
//!   dots, spaces or wildcards). One event is one message.
//! * Every event is preceded, in the same atomic batch, by its **id marker**: an empty
//!   message on `<prefix>._id.<event id>` (two tokens, so `<prefix>.*` never matches it)
//!   published with `Nats-Expected-Last-Subject-Sequence: 0` — "this id was never stored".
//!   The server checks that for every event of every batch, at commit, whatever the age of
//!   the original: the id index JetStream lacks, kept by JetStream itself.
//! * A batch of n events is therefore 2n messages, marker then event, so the event at
//!   global **position p is stream sequence 2p** and its marker 2p − 1. The leader assigns
//!   sequences in log order, a rejected batch consumes none, and the stream is created with
//!   `deny_delete`, `deny_purge`, `discard: new` and no limits, so no message ever leaves
//!   it: positions are gap-free, and a reader never sees a later one appear before an
//!   earlier one. The stream records this layout in its metadata (`verdict_layout`); a
//!   stream without it is refused rather than misread.
//! * **Stream version**: JetStream has no dense per-subject number, so each message carries
//!   its stream version in its body (the private `wire` module), computed by the writer from the subject's last
//!   message. The writer makes that computation safe with
//!   `Nats-Expected-Last-Subject-Sequence` = *the stream sequence* of the last message on the
//!   subject it read (0 for none): the server stores the batch only if nobody appended to the
//!   subject since. So every append is conditional, even with [`ExpectedVersion::Any`]; a
//!   conflicting `Any` append re-reads and tries again, a conflicting conditional one
//!   re-reads and reports [`StoreError::WrongExpectedVersion`] with the current version.
//! * **Atomic multi-event appends** use JetStream atomic batch publish (ADR-50, server 2.12+,
//!   stream option `allow_atomic`): `Nats-Batch-Id`/`Nats-Batch-Sequence` on every message,
//!   `Nats-Batch-Commit` on the last; the server stores all or nothing, at consecutive
//!   sequences, and checks every expected subject sequence at commit. Only the commit is a
//!   request, so an append of any size is one round trip. A batch holds at most 1000
//!   messages (the server's limit), hence at most [`MAX_ATOMIC_BATCH`] events; bigger
//!   appends are refused as [`StoreError::InvalidAppend`] rather than split non-atomically.
//!
//! # Idempotency
//!
//! * **Within the duplicate window** (stream option, 2 minutes by default) every event also
//!   carries `Nats-Msg-Id` = its event id, and the server refuses the batch outright.
//! * **At any age**, a batch reusing a stored id fails its marker's expectation. Either way
//!   the store then reads the markers of the batch's ids from the stream leader
//!   (`STREAM.MSG.GET`, not a possibly lagging direct-get replica): all of them stored,
//!   consecutively, on this stream and in this order is a retry, answered with the original
//!   positions — whatever the expected version says; some of them stored is
//!   [`StoreError::DuplicateEventId`] naming one and its position; none is an ordinary
//!   concurrent append, read again. This is the model the shared property test checks, and
//!   it runs on this backend too.
//! * The cost: one more (empty) message per event, and the server keeps an entry per marker
//!   subject in memory, about 320 bytes on every replica (`docs/BENCHMARKS.md`).
//!   [`NatsOptions::id_retention`] bounds that: markers then carry `Nats-TTL` and expire
//!   (events never do), and a retry older than the retention is stored again.
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
//! A cluster that has just started has no meta leader, or too few peers for R3, for a few
//! seconds; [`NatsStore::open`] retries through that (up to [`NatsOptions::startup_wait`])
//! so a process started alongside its cluster does not fail on the first request.
//!
//! # Reads and subscriptions
//!
//! Reads use batched direct gets (`$JS.API.DIRECT.GET`, stream option `allow_direct`),
//! filtered by subject: `<prefix>.*` (events, never markers) for [`EventStore::read_all`],
//! the stream's subject for [`EventStore::read_stream`] — which therefore scans the stream's
//! messages from its first one: fine for aggregates, slow for very long streams. Resolving a
//! refused id reads from the leader instead (`STREAM.MSG.GET`), so a lagging replica cannot
//! hide a stored marker.
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
    same_content, validate_append, AppendResult, EventData, EventStore, ExpectedVersion,
    RecordedEvent, StoreError, Subscription,
};

/// The most events one append may carry: half the server's limit of 1000 messages in an
/// atomic batch, as each event travels with its id marker.
pub const MAX_ATOMIC_BATCH: usize = 500;

/// The subject token under the prefix that holds id markers (`<prefix>._id.<event id>`).
const MARKER_TOKEN: &str = "_id";
/// The stream metadata value naming the layout above; a stream without it is refused.
const LAYOUT: &str = "id-markers-1";
/// JetStream API error: no message matched a `STREAM.MSG.GET`.
const ERR_NO_MESSAGE_FOUND: u64 = 10037;

/// JetStream API error: the expected last subject sequence did not match.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
/// The same, as atomic batch commits (and newer servers) report it ("wrong last sequence"
/// without the number).
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
/// JetStream API error: the stream does not exist.
const ERR_STREAM_NOT_FOUND: u64 = 10059;
/// JetStream API error: an atomic batch contains a message id already stored.
const ERR_BATCH_DUPLICATE_MSG_ID: u64 = 10201;
/// JetStream API errors a forming cluster answers with, retried within
/// [`NatsOptions::startup_wait`]: no suitable peers for placement (10005), JetStream
/// temporarily unavailable (10008), not the leader (10009), insufficient resources (10023).
const ERR_STARTING: [u64; 4] = [10005, 10008, 10009, 10023];

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
    /// The stream's duplicate window, within which `Nats-Msg-Id` dedupes retries. Zero
    /// sends no `Nats-Msg-Id` (the stream gets JetStream's minimum window, 100 ms): the id
    /// markers alone dedupe, and the server keeps no id map for the window.
    pub duplicate_window: Duration,
    /// How long id markers are kept (`Nats-TTL`, whole seconds, at least 1): `None` keeps
    /// them forever, so a retry of any age is recognised. Each kept marker costs the server
    /// memory on every replica (about 320 bytes, `docs/BENCHMARKS.md`); a retention bounds
    /// that at the rate of events times the retention, and a retry older than it is stored
    /// again.
    pub id_retention: Option<Duration>,
    /// How long a request may take before its outcome is reported unknown.
    pub request_timeout: Duration,
    /// How often the head watcher reads the stream's last sequence without being woken.
    pub poll_interval: Duration,
    /// How long [`NatsStore::open`] keeps retrying while JetStream cannot answer yet: a
    /// cluster that is starting has no meta leader (API requests time out), and one whose
    /// peers have not all joined cannot place a replicated stream. Zero tries once.
    pub startup_wait: Duration,
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
            id_retention: None,
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            startup_wait: Duration::from_secs(30),
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
        if self
            .id_retention
            .is_some_and(|r| r < Duration::from_secs(1))
        {
            return Err(NatsError::InvalidOptions(
                "id_retention must be at least 1 second (JetStream's smallest TTL)".into(),
            ));
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
    /// The stream's name and creation time: another stream, or this one deleted and
    /// created again, has another.
    identity: std::sync::OnceLock<String>,
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
            identity: std::sync::OnceLock::new(),
        });
        let head = inner.set_up().await?;
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

    /// The id marker subject of `event_id`.
    fn marker_of(&self, event_id: &uuid::Uuid) -> String {
        format!(
            "{}.{MARKER_TOKEN}.{}",
            self.options.subject_prefix,
            event_id.simple()
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

    /// Ensures the stream and reads its head, retrying what a starting cluster answers
    /// until [`NatsOptions::startup_wait`] has passed. Both steps are idempotent.
    async fn set_up(&self) -> Result<u64, NatsError> {
        let deadline = tokio::time::Instant::now() + self.options.startup_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            let attempt = async {
                self.ensure_stream().await?;
                let info = self
                    .api(
                        format!("$JS.API.STREAM.INFO.{}", self.options.stream),
                        Value::Null,
                    )
                    .await?;
                if let Some(created) = info["created"].as_str() {
                    let _ = self
                        .identity
                        .set(format!("{}@{created}", self.options.stream));
                }
                self.head().await
            };
            match attempt.await {
                Ok(head) => return Ok(head),
                Err(e) if Self::starting(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, stream = %self.options.stream, "JetStream is not ready yet: retrying");
                    tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) if Self::starting(&e) && !self.options.startup_wait.is_zero() => {
                    return Err(NatsError::Request(format!(
                        "JetStream was not ready within {:?}: {e}",
                        self.options.startup_wait
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether `err` is what a cluster answers while it forms (or a request it drops).
    fn starting(err: &NatsError) -> bool {
        match err {
            NatsError::Request(_) => true,
            NatsError::Api { err_code, .. } => ERR_STARTING.contains(err_code),
            _ => false,
        }
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
                let ttl = info["config"]["allow_msg_ttl"].as_bool().unwrap_or(false);
                if self.options.id_retention.is_some() && !ttl {
                    return Err(NatsError::InvalidOptions(format!(
                        "stream {name} does not allow per-message TTLs, which id_retention needs"
                    )));
                }
                let layout = info["config"]["metadata"]["verdict_layout"].as_str();
                if layout != Some(LAYOUT) {
                    return Err(NatsError::InvalidOptions(format!(
                        "stream {name} has layout {layout:?}, this verdict reads {LAYOUT:?} \
                         (a stream written before id markers: give this store a new stream)"
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
                    // Only id markers ever carry a TTL (NatsOptions::id_retention); events
                    // never do, so positions stay gap-free.
                    "allow_msg_ttl": true,
                    "duplicate_window": self
                        .options
                        .duplicate_window
                        .max(Duration::from_millis(100))
                        .as_nanos() as u64,
                    "metadata": { "verdict_layout": LAYOUT },
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
        // Every batch ends with an event, so the last sequence is an event's: 2 × position.
        Ok(info["state"]["last_seq"].as_u64().unwrap_or(0) / 2)
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
        // Events only (one token under the prefix), from the event at `from` on.
        let events = format!("{}.*", self.options.subject_prefix);
        let stored = self
            .direct_batch(2 * from.max(1), max, Some(&events))
            .await?;
        stored
            .into_iter()
            .map(|m| wire::decode(self.stream_of(&m.subject, m.seq)?, m.seq / 2, &m.body))
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
                let e = wire::decode(stream.to_owned(), m.seq / 2, &m.body)?;
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
        let event = wire::decode(stream, seq / 2, &reply.payload)?;
        Ok((seq, event.stream_version))
    }

    /// Publishes `events` as versions `current + 1..` of `subject`, each after its id marker,
    /// as one atomic batch conditional on the subject's last sequence being `last_seq` and on
    /// no marker existing yet; returns the position of the last event.
    async fn publish(
        &self,
        subject: &str,
        last_seq: u64,
        current: u64,
        events: &[EventData],
    ) -> Result<u64, NatsError> {
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let total = 2 * events.len();
        let mut sequence = 0;
        for (i, e) in events.iter().enumerate() {
            for is_marker in [true, false] {
                sequence += 1;
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Batch-Id", batch_id.as_str());
                headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
                let (to, body) = if is_marker {
                    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
                    if let Some(ttl) = self.options.id_retention {
                        headers.insert("Nats-TTL", format!("{}s", ttl.as_secs()).as_str());
                    }
                    (self.marker_of(&e.event_id), Bytes::new())
                } else {
                    if !self.options.duplicate_window.is_zero() {
                        headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
                    }
                    if i == 0 {
                        headers.insert(
                            "Nats-Expected-Last-Subject-Sequence",
                            last_seq.to_string().as_str(),
                        );
                    }
                    (subject.to_owned(), wire::encode(e, current + i as u64 + 1))
                };
                if sequence < total {
                    // Pipelined: the commit's answer reports any failure of the batch.
                    self.client
                        .publish_with_headers(to, headers, body)
                        .await
                        .map_err(request_error)?;
                    continue;
                }
                headers.insert("Nats-Batch-Commit", "1");
                let reply = self
                    .client
                    .request_with_headers(to, headers, body)
                    .await
                    .map_err(request_error)?;
                let ack = api_reply(&reply)?;
                let seq = ack["seq"]
                    .as_u64()
                    .ok_or_else(|| NatsError::Request(format!("publish ack without seq: {ack}")))?;
                return Ok(seq / 2);
            }
        }
        unreachable!("the last event commits")
    }

    /// `STREAM.MSG.GET` answered by the stream leader, so never behind an acknowledged
    /// append (unlike a direct get, which any replica may answer); `None` if no message
    /// matches.
    async fn leader_get(&self, request: Value) -> Result<Option<Value>, StoreError> {
        match self
            .api(
                format!("$JS.API.STREAM.MSG.GET.{}", self.options.stream),
                request,
            )
            .await
        {
            Ok(reply) => Ok(Some(reply["message"].clone())),
            Err(NatsError::Api { err_code, .. }) if err_code == ERR_NO_MESSAGE_FOUND => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The position of the event stored with `event_id`, from its marker, if any.
    async fn position_of_id(&self, event_id: &uuid::Uuid) -> Result<Option<u64>, StoreError> {
        let marker = self
            .leader_get(json!({ "last_by_subj": self.marker_of(event_id) }))
            .await?;
        marker
            .map(|m| {
                m["seq"].as_u64().map(|seq| seq.div_ceil(2)).ok_or_else(|| {
                    StoreError::Corrupt(format!("marker of {event_id} without a sequence"))
                })
            })
            .transpose()
    }

    /// The event at `position`, read from the stream leader.
    async fn leader_event(&self, position: u64) -> Result<RecordedEvent, StoreError> {
        let seq = 2 * position;
        let message = self
            .leader_get(json!({ "seq": seq }))
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no event at position {position}")))?;
        let subject = message["subject"].as_str().unwrap_or("");
        let body = base64::engine::general_purpose::STANDARD
            .decode(message["data"].as_str().unwrap_or(""))
            .map_err(|_| StoreError::Corrupt(format!("event at {position}: body not base64")))?;
        wire::decode(self.stream_of(subject, seq)?, position, &Bytes::from(body))
    }

    /// After an append failed on a stored id, or might have: the original result if the
    /// whole batch is stored on `stream` as sent (a retry), [`StoreError::DuplicateEventId`]
    /// if only some of its ids are, or any elsewhere; `None` if none is.
    async fn resolve_ids(
        &self,
        stream: &str,
        events: &[EventData],
    ) -> Result<Option<AppendResult>, StoreError> {
        let found = futures_util::future::try_join_all(
            events.iter().map(|e| self.position_of_id(&e.event_id)),
        )
        .await?;
        let Some(first) = found[0] else {
            return match events
                .iter()
                .zip(&found)
                .find_map(|(e, p)| p.map(|p| (e.event_id, p)))
            {
                Some((event_id, position)) => {
                    Err(StoreError::DuplicateEventId { event_id, position })
                }
                None => Ok(None),
            };
        };
        let consecutive = found
            .iter()
            .enumerate()
            .all(|(i, p)| *p == Some(first + i as u64));
        if consecutive {
            let stored = futures_util::future::try_join_all(
                (0..events.len() as u64).map(|i| self.leader_event(first + i)),
            )
            .await?;
            // A reused id with other content is no retry: name the first that differs.
            match stored.iter().zip(events).find(|(s, e)| {
                s.stream != stream || s.event_id != e.event_id || !same_content(s, e)
            }) {
                None => {
                    let last = &stored[stored.len() - 1];
                    return Ok(Some(AppendResult {
                        first_position: first,
                        last_position: last.position,
                        stream_version: last.stream_version,
                    }));
                }
                Some((s, e)) if s.event_id == e.event_id => {
                    return Err(StoreError::DuplicateEventId {
                        event_id: e.event_id,
                        position: s.position,
                    })
                }
                Some(_) => {}
            }
        }
        Err(StoreError::DuplicateEventId {
            event_id: events[0].event_id,
            position: first,
        })
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
        let mut unexplained = 0;
        loop {
            let (last_seq, current) = inner.last_on_subject(&subject).await?;
            if !expected.admits(current) {
                // A lost-ack retry whose expected version no longer holds: its ids are stored.
                if let Some(found) = inner.resolve_ids(stream, &events).await? {
                    return Ok(found);
                }
                return Err(StoreError::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    current,
                });
            }
            match inner.publish(&subject, last_seq, current, &events).await {
                Ok(last) => {
                    inner.announce(last);
                    return Ok(AppendResult {
                        first_position: last + 1 - n,
                        last_position: last,
                        stream_version: current + n,
                    });
                }
                Err(NatsError::Api {
                    err_code,
                    description,
                }) if err_code == ERR_WRONG_LAST_SEQUENCE
                    || err_code == ERR_WRONG_LAST_SEQUENCE_CONSTANT
                    || err_code == ERR_BATCH_DUPLICATE_MSG_ID =>
                {
                    // "wrong last sequence: N" with N even names an event subject (events
                    // sit at even sequences): someone appended, read again. Otherwise a
                    // marker may have failed: an id is stored.
                    let moved = description
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n % 2 == 0);
                    if !moved {
                        if let Some(found) = inner.resolve_ids(stream, &events).await? {
                            return Ok(found);
                        }
                    }
                    if err_code == ERR_BATCH_DUPLICATE_MSG_ID {
                        // Refused as a duplicate yet no marker found: not this layout's
                        // doing; do not spin on it.
                        unexplained += 1;
                        if unexplained > 3 {
                            return Err(StoreError::Unavailable(format!(
                                "JetStream refuses the batch as a duplicate ({description}) \
                                 but its ids have no markers"
                            )));
                        }
                    }
                    continue;
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
    fn identity(&self) -> Option<String> {
        self.inner.identity.get().cloned()
    }
}
