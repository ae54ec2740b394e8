//! Bad values are refused at the door, naming the field, and a reused `event_id` never
//! silently drops data: each against a real server over HTTP.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use verdict_server::{Server, ServerConfig};

struct App {
    server: Server,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn spawn() -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.query_wait = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = verdict_server::start(config, listener).await.unwrap();
    App {
        base: format!("http://{}", server.addr),
        server,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl App {
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

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn experiment(&self) {
        let (s, b) = self
            .post(
                "/api/experiments",
                json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}, "start": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    async fn assign(&self, user: &str) -> u64 {
        let (s, b) = self
            .post(
                "/api/assignments",
                json!({"experiment_id": "e", "user_id": user}),
            )
            .await;
        assert!(s.is_success(), "{b}");
        b["position"].as_u64().unwrap()
    }
}

fn refused(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], field, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_values_are_refused_naming_the_field_and_figures_stay_finite() {
    let app = spawn().await;
    // Names and keys with control characters, too many variants.
    let (s, b) = app
        .post(
            "/api/experiments",
            json!({"experiment_id": "n", "name": "bad\u{0}name", "models": {"control": "builtin:a", "treatment": "builtin:b"}}),
        )
        .await;
    refused(s, &b, "name");
    let variants: Vec<Value> = (0..33)
        .map(|i| json!({"key": format!("v{i}"), "model": "builtin:a", "weight": 1.0 / 33.0}))
        .collect();
    let (s, b) = app
        .post(
            "/api/experiments",
            json!({"experiment_id": "wide", "variants": variants}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("32"),
        "{b}"
    );

    app.experiment().await;
    app.assign("u1").await;
    let (s, b) = app
        .post(
            "/api/assignments",
            json!({"experiment_id": "e", "user_id": "u\u{0}2"}),
        )
        .await;
    refused(s, &b, "user_id");
    for (amount, kind) in [
        (json!(1e200), "purchase"),
        (json!(-1e200), "refund"),
        (json!(1.000_001e12), "purchase"),
        (json!(-5), "purchase"),
    ] {
        let (s, b) = app
            .post(
                "/api/conversions",
                json!({"experiment_id": "e", "user_id": "u1", "amount": amount, "conversion_type": kind}),
            )
            .await;
        refused(s, &b, "amount");
    }
    let (s, b) = app
        .post(
            "/api/conversions",
            json!({"experiment_id": "e", "user_id": "u1", "amount": 1e12, "conversion_type": "purchase"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post(
            "/api/conversions",
            json!({"experiment_id": "e", "user_id": "u1", "amount": -30, "conversion_type": "refund"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post(
            "/api/interactions",
            json!({"experiment_id": "e", "user_id": "u1", "action": "cl\u{7}ick"}),
        )
        .await;
    refused(s, &b, "action");
    // A batch line is held to the same rules, the others still stored.
    let body = [
        json!({"type": "conversion", "experiment_id": "e", "user_id": "u1", "amount": 1e300})
            .to_string(),
        json!({"type": "conversion", "experiment_id": "e", "user_id": "u1", "amount": 7})
            .to_string(),
    ]
    .join("\n");
    let r = app
        .client
        .post(format!("{}/api/events/batch", app.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["error"]["details"]["field"], "amount");
    assert_eq!(lines[1]["ok"], true);
    let last = lines[1]["position"].as_u64().unwrap();
    // Every figure is a number, not null: the largest accepted amount keeps sums finite.
    let (s, r) = app
        .get(&format!("/api/experiments/e/results?min_position={last}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let arms = r["variants"].as_array().unwrap();
    let revenue: f64 = arms.iter().map(|v| v["revenue"].as_f64().unwrap()).sum();
    assert_eq!(revenue, 1e12 - 30.0 + 7.0);
    for v in arms.iter().filter(|v| v["users"] != 0) {
        assert!(v["revenue_per_user"].is_f64(), "{v}");
    }
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_with_another_payload_is_a_conflict_naming_the_first() {
    let app = spawn().await;
    app.experiment().await;
    app.assign("u1").await;
    let id = uuid::Uuid::now_v7();
    let conversion = |amount: u32, user: &str| json!({"event_id": id, "experiment_id": "e", "user_id": user, "amount": amount});
    let (s, first) = app.post("/api/conversions", conversion(10, "u1")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let position = first["position"].as_u64().unwrap();
    // The same request again: a retry, the same answer.
    let (s, again) = app.post("/api/conversions", conversion(10, "u1")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again["position"], position);
    // Other amount, other user, other kind: a conflict naming where the id is stored.
    for body in [
        conversion(20, "u1"),
        conversion(10, "u2"),
        json!({"event_id": id, "experiment_id": "e", "user_id": "u1", "action": "click"}),
    ] {
        let path = if body.get("action").is_some() {
            "/api/interactions"
        } else {
            "/api/conversions"
        };
        let (s, b) = app.post(path, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert_eq!(b["error"]["code"], "event_id_conflict");
        assert_eq!(b["error"]["details"]["position"], position, "{b}");
        assert_eq!(b["error"]["details"]["field"], "event_id");
    }

    // In a batch: two new lines with one id but different amounts; the second is the
    // conflict, naming the first line's position.
    let shared = uuid::Uuid::now_v7();
    let body = [
        json!({"type": "conversion", "event_id": shared, "experiment_id": "e", "user_id": "u1", "amount": 1}).to_string(),
        json!({"type": "conversion", "event_id": shared, "experiment_id": "e", "user_id": "u1", "amount": 2}).to_string(),
    ]
    .join("\n");
    let r = app
        .client
        .post(format!("{}/api/events/batch", app.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ok"], true, "{lines:?}");
    assert_eq!(lines[1]["ok"], false, "{lines:?}");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"]["code"], "event_id_conflict");
    assert_eq!(
        lines[1]["error"]["details"]["position"],
        lines[0]["position"]
    );

    // Only the first amount of each id counts.
    let last = lines[0]["position"].as_u64().unwrap();
    let (_, r) = app
        .get(&format!("/api/experiments/e/results?min_position={last}"))
        .await;
    let arms = r["variants"].as_array().unwrap();
    let events: u64 = arms
        .iter()
        .map(|v| v["conversion_events"].as_u64().unwrap())
        .sum();
    let revenue: f64 = arms.iter().map(|v| v["revenue"].as_f64().unwrap()).sum();
    assert_eq!((events, revenue), (2, 11.0), "{r}");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_stays_a_retry_when_the_user_was_exposed_in_between() {
    let app = spawn().await;
    app.experiment().await;
    let id = uuid::Uuid::now_v7();
    let body = json!({"event_id": id, "experiment_id": "e", "user_id": "late", "amount": 5});
    // Sent before the exposure is known: stored unattributed.
    let (s, first) = app.post("/api/conversions", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["variant"], Value::Null);
    app.assign("late").await;
    // The client's retry now derives a variant, but it is the same outcome.
    let (s, again) = app.post("/api/conversions", body).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["position"], first["position"]);
    assert_eq!(
        again["variant"],
        Value::Null,
        "the stored attribution stands"
    );
    app.server.shutdown().await.unwrap();
}
