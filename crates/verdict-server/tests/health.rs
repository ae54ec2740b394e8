//! Health tells the truth: background failures turn `/readyz` red naming the component and
//! recover without a restart; a read model is never trusted beyond or beside its log.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use verdict_app::projector::CheckpointPolicy;
use verdict_server::{Server, ServerConfig};
use verdict_store::conformance::faulty::Faulty;
use verdict_store::EventStore;

struct App {
    server: Server,
    base: String,
    client: reqwest::Client,
}

async fn start(dir: &std::path::Path, store: Option<Arc<dyn EventStore>>) -> App {
    let mut config = ServerConfig::new(dir);
    config.query_wait = Duration::from_secs(10);
    // Save after every page, so a snapshot failure shows at once.
    config.checkpoint = CheckpointPolicy {
        every: Duration::from_millis(1),
        events: 1,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = match store {
        Some(store) => verdict_server::start_with_store(config, store, listener).await,
        None => verdict_server::start(config, listener).await,
    }
    .expect("server starts");
    App {
        base: format!("http://{}", server.addr),
        server,
        client: reqwest::Client::new(),
    }
}

impl App {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Polls `/readyz` until `want` holds of (status, body); panics after 60 s.
    async fn readyz_until(&self, what: &str, want: impl Fn(StatusCode, &Value) -> bool) -> Value {
        // Long enough for the longest retry backoff (30 s) on a slow machine.
        for _ in 0..1200 {
            let (status, body) = self.get("/readyz").await;
            if want(status, &body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("readyz never showed: {what}");
    }

    async fn experiment_with_conversions(&self, id: &str, users: u32) -> u64 {
        let (s, _) = self
            .post(
                "/api/experiments",
                json!({"experiment_id": id, "models": {"control": "builtin:a", "treatment": "builtin:b"}, "start": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let mut last = 0;
        for u in 0..users {
            let (s, b) = self
                .post(
                    "/api/assignments",
                    json!({"experiment_id": id, "user_id": format!("u{u}")}),
                )
                .await;
            assert!(s.is_success(), "{b}");
            let (s, b) = self
                .post(
                    "/api/conversions",
                    json!({"experiment_id": id, "user_id": format!("u{u}"), "amount": 10}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            last = b["position"].as_u64().unwrap();
        }
        last
    }

    async fn users(&self, id: &str, min_position: u64) -> u64 {
        let (s, b) = self
            .get(&format!(
                "/api/experiments/{id}/results?min_position={min_position}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["users"].as_u64().unwrap())
            .sum()
    }
}

fn down(body: &Value) -> Vec<String> {
    body["down"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_snapshot_write_turns_readyz_red_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), None).await;
    app.readyz_until("ready at start", |s, _| s == StatusCode::OK)
        .await;
    // The snapshot's temporary file cannot be created while a directory sits on its name:
    // every save fails, as with EMFILE or ENOSPC.
    let blocker = dir.path().join("projections.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let last = app.experiment_with_conversions("e", 5).await;
    let body = app
        .readyz_until("snapshot down", |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE && down(b) == ["snapshot"]
        })
        .await;
    assert!(
        body["components"]["snapshot"]["error"]
            .as_str()
            .unwrap()
            .contains("projections"),
        "{body}"
    );
    // Meanwhile the projection goes on from memory: reads see their writes.
    assert_eq!(app.users("e", last).await, 5);
    let last = app.experiment_with_conversions("f", 3).await;
    assert_eq!(app.users("f", last).await, 3);
    // The metric says the same.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("verdict_component_up{component=\"snapshot\"} 0"));
    assert!(metrics.contains("verdict_component_up{component=\"projector\"} 1"));

    // Space is back: the retry (with backoff, no new events needed) succeeds.
    std::fs::remove_dir(&blocker).unwrap();
    let body = app
        .readyz_until("recovered", |s, _| s == StatusCode::OK)
        .await;
    assert_eq!(body["components"]["snapshot"]["failures"], 1);
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("projections.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["position"].as_u64().unwrap(), last);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscription_turns_readyz_red_and_the_projector_resubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty::new());
    store.fail_subscribe(true);
    let app = start(dir.path(), Some(store.clone())).await;
    let body = app
        .readyz_until("projector down", |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE && down(b).contains(&"projector".to_owned())
        })
        .await;
    assert!(body["components"]["projector"]["error"]
        .as_str()
        .unwrap()
        .contains("injected"));
    // Writes are still acknowledged; readyz says how far behind the answers are.
    let last = app.experiment_with_conversions("e", 4).await;
    let body = app
        .readyz_until("lag shown", |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE && b["head"].as_u64() >= Some(last)
        })
        .await;
    assert_eq!(body["projected"], 0, "{body}");
    assert!(body["lag"].as_u64().unwrap() >= last);
    store.fail_subscribe(false);
    app.readyz_until("recovered", |s, _| s == StatusCode::OK)
        .await;
    assert_eq!(app.users("e", last).await, 4);
    app.server.shutdown().await.unwrap();
}

fn store_named(identity: &str) -> Arc<Faulty> {
    Arc::new(Faulty::with_identity(identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_ahead_of_its_log_is_discarded_and_rebuilt() {
    // A snapshot taken at the head of a log with 5 users' worth of events ...
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Some(store_named("same-log"))).await;
    let last = app.experiment_with_conversions("e", 5).await;
    assert_eq!(app.users("e", last).await, 5);
    app.server.shutdown().await.unwrap();
    // ... beside the same log cut back (as `store repair` may leave it; the identity is
    // the same, only the position tells).
    let cut = store_named("same-log");
    let app = start(dir.path(), Some(cut.clone())).await;
    let short = app.experiment_with_conversions("e", 2).await;
    assert!(short < last);
    // The stale snapshot would claim 5 users and answer at once; the log has 2.
    assert_eq!(app.users("e", short).await, 2);
    // New acknowledged events reach the results.
    let (s, b) = app
        .post(
            "/api/assignments",
            json!({"experiment_id": "e", "user_id": "new"}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    assert_eq!(app.users("e", b["position"].as_u64().unwrap()).await, 3);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_history_of_the_same_log_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Some(store_named("restored"))).await;
    let last = app.experiment_with_conversions("e", 3).await;
    app.server.shutdown().await.unwrap();
    // The same store identity (restored from a backup), written on since: longer than the
    // snapshot, another event at its position.
    let app = start(dir.path(), Some(store_named("restored"))).await;
    let now = app.experiment_with_conversions("g", 6).await;
    assert!(now > last);
    let (_, list) = app
        .get(&format!("/api/experiments?min_position={now}"))
        .await;
    let ids: Vec<&str> = list["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["experiment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g"], "the old history leaked in: {list}");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_log_is_discarded_even_when_not_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn EventStore> = store_named("log-one");
    let app = start(dir.path(), Some(one)).await;
    let last = app.experiment_with_conversions("e", 3).await;
    assert_eq!(app.users("e", last).await, 3);
    app.server.shutdown().await.unwrap();
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("projections.json")).unwrap())
            .unwrap();
    assert_eq!(snapshot["store_identity"], "log-one");

    // Another log, longer than the snapshot: only its identity tells them apart.
    let two = store_named("log-two");
    let app = start(dir.path(), Some(two.clone())).await;
    let last = app.experiment_with_conversions("g", 4).await;
    assert!(last > snapshot["position"].as_u64().unwrap());
    let (s, list) = app
        .get(&format!("/api/experiments?min_position={last}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = list["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["experiment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g"], "the other log's experiment leaked in: {list}");
    assert_eq!(app.users("g", last).await, 4);
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_turns_readyz_red_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty::new());
    let app = start(dir.path(), Some(store.clone())).await;
    app.readyz_until("ready", |s, _| s == StatusCode::OK).await;
    store.break_with(Some("writer stopped: No space left on device"));
    let body = app
        .readyz_until("store down", |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE && down(b) == ["store"]
        })
        .await;
    assert!(body["components"]["store"]["error"]
        .as_str()
        .unwrap()
        .contains("No space"));
    store.break_with(None);
    let body = app
        .readyz_until("recovered", |s, _| s == StatusCode::OK)
        .await;
    assert_eq!(body["components"]["store"]["failures"], 1, "{body}");
    app.server.shutdown().await.unwrap();
}
