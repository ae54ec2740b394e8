//! Black-box API tests: a real server on port 0 over the embedded log in a temporary
//! directory, driven over HTTP (as zero-to-production's `spawn_app`).

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use verdict_server::auth::{ApiKey, Role};
use verdict_server::{Server, ServerConfig};

struct TestApp {
    server: Option<Server>,
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

async fn spawn_with(dir: tempfile::TempDir, configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let mut config = ServerConfig::new(dir.path());
    config.query_wait = Duration::from_secs(10);
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = verdict_server::start(config, listener)
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    TestApp {
        server: Some(server),
        base,
        client: reqwest::Client::new(),
        dir,
    }
}

async fn spawn_app() -> TestApp {
    spawn_with(tempfile::tempdir().unwrap(), |_| {}).await
}

const SEED_EXPERIMENT: &str = r#"{
    "experiment_id": "exp-001",
    "name": "recommendation-model-v2",
    "models": {"control": "rec-v1", "treatment": "rec-v2"},
    "traffic_split": {"control": 50, "treatment": 50}
}"#;

impl TestApp {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(&body.to_string()), None)
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    /// `GET /metrics`: the Prometheus text.
    async fn prometheus(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    async fn create_seed(&self, start: bool) -> u64 {
        let mut body: Value = serde_json::from_str(SEED_EXPERIMENT).unwrap();
        body["start"] = json!(start);
        let (status, v) = self.post("/api/experiments", body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["position"].as_u64().unwrap()
    }

    async fn results(&self, min_position: u64) -> Value {
        let (status, v) = self
            .get(&format!(
                "/api/experiments/exp-001/results?min_position={min_position}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    async fn stop(mut self) -> tempfile::TempDir {
        self.server.take().unwrap().shutdown().await.unwrap();
        self.dir
    }
}

fn variant<'a>(results: &'a Value, key: &str) -> &'a Value {
    results["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == key)
        .unwrap()
}

/// The seed's own flow: ExperimentCreated, UserAssigned + PredictionMade, ConversionRecorded.
#[tokio::test]
async fn the_seed_event_flow_is_reproduced() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    let (status, p) = app
        .post("/api/predictions", json!({"experiment_id": "exp-001", "user_id": "user-123", "input": {"user_id": "user-123", "context": "homepage"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let served = p["variant"].as_str().unwrap().to_owned();
    assert!(p["output"]["items"].is_array());
    assert!(p["latency_ms"].as_f64().unwrap() >= 0.0);
    // The ONNX engine measures its own run: model time is part of the latency.
    let model_ms = p["model_ms"]
        .as_f64()
        .expect("model time of an in-process model");
    assert!(
        model_ms > 0.0 && model_ms <= p["latency_ms"].as_f64().unwrap(),
        "{p}"
    );
    let (_, m) = app
        .get(&format!(
            "/api/experiments/exp-001/metrics?min_position={}",
            p["position"]
        ))
        .await;
    let row = variant(&m, &served);
    assert_eq!(row["model_latency_ms"]["count"], 1, "{m}");
    assert_eq!(row["overhead_ms"]["count"], 1, "{m}");
    // The client claims the other variant: attribution ignores it.
    let claimed = if served == "control" {
        "treatment"
    } else {
        "control"
    };
    let (status, c) = app
        .post("/api/conversions", json!({"experiment_id": "exp-001", "user_id": "user-123", "model_version": "whatever", "variant": claimed, "conversion_type": "purchase", "amount": 1500}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["variant"], served);

    let (status, log) = app
        .get("/api/experiments/exp-001/events?from=1&limit=100")
        .await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ExperimentCreated",
            "ExperimentStarted",
            "UserAssigned",
            "PredictionMade",
            "ConversionRecorded"
        ]
    );
    let events = log["events"].as_array().unwrap();
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(log["next"], Value::Null);
    assert_eq!(
        events[0]["data"]["models"],
        Value::Null,
        "stored in the full shape"
    );
    assert_eq!(events[0]["data"]["variants"][1]["model"], "rec-v2");
    assert_eq!(events[3]["data"]["input"]["context"], "homepage");
    assert_eq!(events[4]["data"]["amount"], 1500.0);
    assert_eq!(events[4]["data"]["variant"], served);
    assert!(events
        .iter()
        .all(|e| e["event_id"].is_string() && e["recorded_at"].is_string()));

    let r = app.results(5).await;
    let v = variant(&r, &served);
    assert_eq!(
        (
            v["users"].as_u64(),
            v["predictions"].as_u64(),
            v["conversions"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(v["revenue_per_user"], 1500.0);
    assert_eq!(variant(&r, claimed)["conversions"], 0);
    app.stop().await;
}

/// A command's position, passed as min_position, shows its effect at once.
#[tokio::test]
async fn queries_read_their_own_writes() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    let mut last = 0;
    for i in 0..50 {
        let (_, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "exp-001", "user_id": format!("u{i}")}),
            )
            .await;
        let (_, c) = app
            .post(
                "/api/conversions",
                json!({"experiment_id": "exp-001", "user_id": format!("u{i}"), "amount": 2.0}),
            )
            .await;
        assert!(c["position"].as_u64().unwrap() > p["position"].as_u64().unwrap());
        last = c["position"].as_u64().unwrap();
        let r = app.results(last).await;
        let users: u64 = r["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["users"].as_u64().unwrap())
            .sum();
        let conversions: u64 = r["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["conversions"].as_u64().unwrap())
            .sum();
        assert_eq!((users, conversions), (i + 1, i + 1));
    }
    // A position the log never had: a 400 naming the parameter, not a wait.
    let (status, e) = app
        .get(&format!(
            "/api/experiments/exp-001/results?min_position={}",
            last + 1000
        ))
        .await;
    assert_eq!(
        (status, e["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("min_position"))
    );
    app.stop().await;
}

/// Events in, stop, start again on the same directory: the same results, nothing
/// double counted (the snapshot's checkpoint is consistent with its state).
#[tokio::test]
async fn a_restart_gives_the_same_results() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    let mut last = 0;
    for i in 0..200 {
        let (_, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "exp-001", "user_id": format!("u{i}")}),
            )
            .await;
        last = p["position"].as_u64().unwrap();
        if i % 3 == 0 {
            let (_, c) = app
                .post(
                    "/api/conversions",
                    json!({"experiment_id": "exp-001", "user_id": format!("u{i}"), "amount": i}),
                )
                .await;
            last = c["position"].as_u64().unwrap();
        }
    }
    let before = app.results(last).await;
    let dir = app.stop().await;
    let app = spawn_with(dir, |_| {}).await;
    let after = app.results(last).await;
    assert_eq!(before["variants"], after["variants"]);
    assert_eq!(before["comparisons"], after["comparisons"]);
    // And traffic keeps flowing after the restart, with first exposures remembered.
    let (_, p) = app
        .post(
            "/api/predictions",
            json!({"experiment_id": "exp-001", "user_id": "u0"}),
        )
        .await;
    let r = app.results(p["position"].as_u64().unwrap()).await;
    let users: u64 = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["users"].as_u64().unwrap())
        .sum();
    assert_eq!(users, 200, "u0 was assigned before the restart");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field() {
    let app = spawn_with(tempfile::tempdir().unwrap(), |c| c.body_limit = 4096).await;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("/api/experiments", "{not json".into(), StatusCode::BAD_REQUEST, "body"),
        ("/api/experiments", r#"{"experiment_id": "e", "variants": [{"key": "a", "model": "rec-v1"}, {"key": "b", "model": "rec-v1", "weight": "x"}]}"#.into(), StatusCode::BAD_REQUEST, "variants[1].weight"),
        ("/api/experiments", r#"{"experiment_id": "e", "variants": [{"key": "a", "model": "rec-v1"}, {"key": "b", "model": "rec-v9"}]}"#.into(), StatusCode::BAD_REQUEST, "variants[1].model"),
        ("/api/experiments", r#"{"experiment_id": "e", "models": {"control": "rec-v1", "t": "rec-v2"}, "traffic_split": {"control": 50, "t": 60}}"#.into(), StatusCode::BAD_REQUEST, "traffic_split"),
        ("/api/experiments", r#"{"experiment_id": "e", "models": {"control": "rec-v1", "t": "rec-v2"}, "colour": 1}"#.into(), StatusCode::BAD_REQUEST, "colour"),
        ("/api/experiments", r#"{"experiment_id": "e", "models": {"control": "rec-v1", "t": "rec-v2"}, "start": "yes"}"#.into(), StatusCode::BAD_REQUEST, "start"),
        ("/api/predictions", r#"{"experiment_id": "nope", "user_id": "u"}"#.into(), StatusCode::NOT_FOUND, ""),
        ("/api/predictions", r#"{"experiment_id": "exp-001", "user_id": 7}"#.into(), StatusCode::BAD_REQUEST, "user_id"),
        ("/api/predictions", r#"{"experiment_id": "exp-001", "user_id": "u", "extra": 1}"#.into(), StatusCode::BAD_REQUEST, "extra"),
        ("/api/conversions", r#"{"experiment_id": "exp-001", "user_id": "u", "amount": "10"}"#.into(), StatusCode::BAD_REQUEST, "amount"),
        ("/api/conversions", r#"{"experiment_id": "exp-001", "user_id": "u", "event_id": "not-a-uuid"}"#.into(), StatusCode::BAD_REQUEST, "event_id"),
        ("/api/interactions", r#"{"experiment_id": "exp-001", "user_id": "u"}"#.into(), StatusCode::BAD_REQUEST, "body"),
        ("/api/experiments", format!(r#"{{"experiment_id": "e", "name": "{}"}}"#, "x".repeat(5000)), StatusCode::PAYLOAD_TOO_LARGE, ""),
    ];
    app.create_seed(false).await;
    for (path, body, status, field) in cases {
        let (got, v) = app
            .send(reqwest::Method::POST, path, Some(&body), None)
            .await;
        assert_eq!(got, status, "{path} {body:.80}: {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
        if !field.is_empty() {
            assert_eq!(
                v["error"]["details"]["field"], field,
                "{path} {body:.80}: {v}"
            );
        }
    }
    // A draft experiment does not serve predictions.
    let (status, v) = app
        .post(
            "/api/predictions",
            json!({"experiment_id": "exp-001", "user_id": "u"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    // Illegal transitions are 409.
    let (status, _) = app.post("/api/experiments/exp-001/pause", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.post("/api/experiments/exp-001/start", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post("/api/experiments/exp-001/start", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, v) = app
        .send(
            reqwest::Method::GET,
            "/api/experiments/exp-001/timeline?bucket=week",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, v["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bucket"))
    );
    let (status, _) = app.get("/api/experiments/nope/results").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was lost or invented by the rejected requests.
    let (_, log) = app.get("/api/experiments/exp-001/events").await;
    assert_eq!(log["events"].as_array().unwrap().len(), 2, "{log}");
    app.stop().await;
}

#[tokio::test]
async fn retried_outcomes_with_an_event_id_are_stored_once() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    app.post(
        "/api/predictions",
        json!({"experiment_id": "exp-001", "user_id": "u1"}),
    )
    .await;
    let body = json!({"event_id": "01900000-0000-7000-8000-00000000abcd", "experiment_id": "exp-001", "user_id": "u1", "amount": 10.0});
    let (s1, a) = app.post("/api/conversions", body.clone()).await;
    let (s2, b) = app.post("/api/conversions", body).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["position"], b["position"]);
    let r = app.results(b["position"].as_u64().unwrap()).await;
    let total: f64 = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["revenue"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 10.0);
    app.stop().await;
}

#[tokio::test]
async fn paused_and_stopped_experiments_serve_the_control_and_record_no_exposures() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    let (_, paused) = app
        .post(
            "/api/experiments/exp-001/pause",
            json!({"reason": "check latency"}),
        )
        .await;
    assert_eq!(paused["status"], "paused");
    for i in 0..20 {
        let (status, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "exp-001", "user_id": format!("p{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (p["variant"].as_str(), p["in_experiment"].as_bool()),
            (Some("control"), Some(false))
        );
    }
    app.post("/api/experiments/exp-001/resume", json!({})).await;
    let (_, stopped) = app
        .post(
            "/api/experiments/exp-001/stop",
            json!({"winner": "control"}),
        )
        .await;
    assert_eq!(stopped["status"], "stopped");
    for i in 0..20 {
        let (_, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "exp-001", "user_id": format!("s{i}")}),
            )
            .await;
        assert_eq!(p["variant"], "control");
    }
    let (_, log) = app.get("/api/experiments/exp-001/events").await;
    let types: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ExperimentCreated",
            "ExperimentStarted",
            "ExperimentPaused",
            "ExperimentResumed",
            "ExperimentStopped"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn conversions_of_users_never_assigned_are_kept_and_left_out() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    let (status, c) = app
        .post(
            "/api/conversions",
            json!({"experiment_id": "exp-001", "user_id": "stranger", "amount": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c["variant"], Value::Null);
    let r = app.results(c["position"].as_u64().unwrap()).await;
    assert_eq!(r["unattributed_conversions"], 1);
    assert!(r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["conversions"] == 0));
    app.stop().await;
}

#[tokio::test]
async fn batch_ingest_answers_every_line() {
    let app = spawn_app().await;
    app.create_seed(true).await;
    app.post(
        "/api/predictions",
        json!({"experiment_id": "exp-001", "user_id": "u1"}),
    )
    .await;
    let body = [
        r#"{"type": "conversion", "experiment_id": "exp-001", "user_id": "u1", "amount": 3}"#,
        r#"{"type": "interaction", "experiment_id": "exp-001", "user_id": "u1", "action": "click"}"#,
        r#"{"type": "refund", "experiment_id": "exp-001", "user_id": "u1"}"#,
        "",
        r#"{"type": "conversion", "experiment_id": "nope", "user_id": "u1"}"#,
    ]
    .join("\n");
    let resp = app
        .client
        .post(format!("{}/api/events/batch", app.base))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let lines: Vec<Value> = resp
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["ok"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, true, false, false]
    );
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 5]
    );
    assert_eq!(lines[3]["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_and_roles() {
    let keys = vec![
        ApiKey {
            key: "admin-key-0123456789".into(),
            role: Role::Admin,
            name: None,
        },
        ApiKey {
            key: "ingest-key-0123456789".into(),
            role: Role::Ingest,
            name: None,
        },
        ApiKey {
            key: "read-key-0123456789".into(),
            role: Role::Read,
            name: None,
        },
    ];
    let app = spawn_with(tempfile::tempdir().unwrap(), |c| c.api_keys = keys).await;
    let create = Some(SEED_EXPERIMENT);
    let (s, _) = app
        .send(reqwest::Method::POST, "/api/experiments", create, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            "/api/experiments",
            create,
            Some("wrong"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = app
        .send(
            reqwest::Method::POST,
            "/api/experiments",
            create,
            Some("ingest-key-0123456789"),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            "/api/experiments",
            create,
            Some("admin-key-0123456789"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .send(
            reqwest::Method::GET,
            "/api/experiments",
            None,
            Some("read-key-0123456789"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            "/api/conversions",
            Some(r#"{"experiment_id": "exp-001", "user_id": "u"}"#),
            Some("read-key-0123456789"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // Readiness is open too; a node that does not follow a shared store has no `followed`.
    let (s, r) = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["status"], "ready", "{r}");
    assert!(
        r["head"].as_u64().unwrap() >= r["projected"].as_u64().unwrap(),
        "{r}"
    );
    assert!(r.get("followed").is_none(), "{r}");
    app.stop().await;
}

/// The OpenAPI document lists exactly the routes the router serves.
#[tokio::test]
async fn openapi_matches_the_router() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let table: Vec<(String, String)> = verdict_server::api::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    let (mut a, mut b) = (documented.clone(), table);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Every documented operation is routed: no "no such route" and no 405.
    for (method, path) in documented {
        let concrete = path.replace("{id}", "nope");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, v) = app.send(m, &concrete, Some("{}"), None).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && v["error"]["message"] == "no such route"),
            "{method} {path}"
        );
    }
    app.stop().await;
}

/// A treatment whose model fails trips the P1 error-rate guardrail: the experiment is
/// stopped automatically (`auto: true`, the alert as cause) and from then on every user
/// gets the control.
#[tokio::test]
async fn a_failing_model_stops_its_experiment() {
    let app = spawn_with(tempfile::tempdir().unwrap(), |c| {
        c.monitor_every = Duration::from_millis(100)
    })
    .await;
    let (status, v) = app
        .post(
            "/api/experiments",
            json!({
                "experiment_id": "guarded",
                "variants": [{"key": "control", "model": "rec-v1"}, {"key": "treatment", "model": "builtin-failing:rec-v2"}],
                "monitors": {"min_sample": 20},
                "start": true
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let mut failed = 0;
    for i in 0..200 {
        let (status, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "guarded", "user_id": format!("u{i}")}),
            )
            .await;
        if status == StatusCode::BAD_GATEWAY {
            assert_eq!(p["error"]["kind"], "internal");
            failed += 1;
        }
    }
    // The guardrail may fire as soon as it has its 20 failed requests.
    assert!(failed >= 20, "{failed}");
    // The monitor runs after projected batches; give it a few seconds.
    let mut stopped = Value::Null;
    for _ in 0..100 {
        let (_, e) = app.get("/api/experiments/guarded").await;
        if e["status"] == "stopped" {
            stopped = e;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stopped["status"], "stopped",
        "the guardrail did not stop the experiment"
    );
    assert_eq!(stopped["stop"]["auto"], true);
    let (_, alerts) = app
        .get(&format!("/api/alerts?min_position={}", stopped["position"]))
        .await;
    let alert = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["monitor"] == "error_rate")
        .expect("an error_rate alert")
        .clone();
    assert_eq!(alert["severity"], "P1");
    assert_eq!(stopped["stop"]["cause"], alert["alert_id"]);
    assert!(alert["evidence"]["variants"][1]["errors"].as_u64().unwrap() >= 20);
    // No treatment prediction is served after the stop.
    for i in 0..100 {
        let (status, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "guarded", "user_id": format!("u{i}")}),
            )
            .await;
        assert_eq!(
            (status, p["variant"].as_str(), p["in_experiment"].as_bool()),
            (StatusCode::OK, Some("control"), Some(false))
        );
    }
    app.stop().await;
}

/// Alerts reach a webhook at least once, through a receiver that refuses the first tries.
#[tokio::test]
async fn alerts_are_delivered_to_webhooks_with_retries() {
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Receiver {
        attempts: u32,
        accepted: Vec<Value>,
    }
    let received = Arc::new(Mutex::new(Receiver::default()));
    let hook = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                async move {
                    let mut r = received.lock().unwrap();
                    r.attempts += 1;
                    if r.attempts <= 2 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    r.accepted.push(body);
                    StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let app = spawn_with(tempfile::tempdir().unwrap(), |c| {
        c.monitor_every = Duration::from_millis(100);
        c.webhooks = vec![url];
        c.webhook_backoff = verdict_server::webhooks::Backoff {
            first: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
    })
    .await;
    app.post(
        "/api/experiments",
        json!({
            "experiment_id": "hooked",
            "variants": [{"key": "control", "model": "rec-v1"}, {"key": "treatment", "model": "builtin-failing:rec-v2"}],
            "monitors": {"min_sample": 10},
            "start": true
        }),
    )
    .await;
    for i in 0..80 {
        app.post(
            "/api/predictions",
            json!({"experiment_id": "hooked", "user_id": format!("u{i}")}),
        )
        .await;
    }
    // Other monitors may alert first (a tick can see too few treatment requests for the
    // error rate yet): wait for the error-rate alert among the deliveries.
    let mut delivered = None;
    for _ in 0..100 {
        let found = received
            .lock()
            .unwrap()
            .accepted
            .iter()
            .find(|b| b["alert"]["monitor"] == "error_rate")
            .cloned();
        if found.is_some() {
            delivered = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = delivered.expect("the error-rate alert reached the webhook");
    assert_eq!(body["type"], "AlertRaised");
    assert_eq!(body["alert"]["monitor"], "error_rate");
    assert_eq!(body["alert"]["severity"], "P1");
    assert!(
        received.lock().unwrap().attempts >= 3,
        "the first two attempts were refused and retried"
    );
    app.stop().await;
}

/// Shadow variants: a copy of the control's requests goes to each shadow model off the
/// request path; the answers are recorded (`shadow: true`, sharing the control's
/// prediction id), compared with the control's in `/metrics`, and never served.
#[tokio::test]
async fn shadow_variants_are_mirrored_compared_and_never_served() {
    let app = spawn_app().await;
    let body = json!({
        "experiment_id": "exp-shadow",
        "variants": [
            {"key": "control", "model": "builtin:rec-v1", "weight": 0.5},
            {"key": "treatment", "model": "builtin:rec-v2", "weight": 0.5},
            {"key": "same", "model": "builtin:rec-v1", "shadow": true},
            {"key": "other", "model": "builtin:rec-v3", "shadow": true, "share": 0.5},
            {"key": "broken", "model": "builtin-failing:x", "shadow": true, "share": 0.25},
        ],
        "start": true,
    });
    let (status, v) = app.post("/api/experiments", body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    let mut control_ids = Vec::new();
    for u in 0..400 {
        let (status, p) = app
            .post(
                "/api/predictions",
                json!({"experiment_id": "exp-shadow", "user_id": format!("u{u}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let served = p["variant"].as_str().unwrap();
        assert!(matches!(served, "control" | "treatment"), "served {served}");
        if served == "control" {
            control_ids.push(p["prediction_id"].as_str().unwrap().to_owned());
        }
    }
    let n = control_ids.len() as u64;
    assert!(n > 150, "control served {n}");

    // Mirrors are recorded after the response: wait until none is running, then read the
    // metrics at the head, which then holds every mirror.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.prometheus().await;
        if text.contains("\nverdict_shadow_in_flight 0\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shadow calls still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, ready) = app.get("/readyz").await;
    let (status, m) = app
        .get(&format!(
            "/api/experiments/exp-shadow/metrics?min_position={}",
            ready["head"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let shadows = m["shadows"].as_array().unwrap();
    assert_eq!(shadows.len(), 3, "{m}");
    let (same, other, broken) = (&shadows[0], &shadows[1], &shadows[2]);
    assert_eq!(same["key"], "same");
    assert_eq!(same["shadow_of"], "control");
    // The same model as the control agrees on every request, with no difference.
    assert_eq!(same["predictions"].as_u64().unwrap(), n, "{m}");
    assert_eq!(same["compared"].as_u64().unwrap(), n);
    assert_eq!(same["agreement_rate"].as_f64().unwrap(), 1.0);
    assert_eq!(same["mean_overlap"].as_f64().unwrap(), 1.0);
    assert_eq!(same["latency_ms"]["count"].as_u64().unwrap(), n);
    assert_eq!(same["control_latency_ms"]["count"].as_u64().unwrap(), n);
    // A different model: about half the requests (share 0.5), and it disagrees somewhere.
    let other_n = other["predictions"].as_u64().unwrap();
    assert!(
        other_n > n / 4 && other_n < 3 * n / 4,
        "other took {other_n} of {n}"
    );
    assert!(other["agreement_rate"].as_f64().unwrap() < 1.0, "{other}");
    assert!(other["mean_overlap"].as_f64().unwrap() < 1.0, "{other}");
    // A failing shadow: failures are counted for the shadow, none for the served arms.
    let broken_n = broken["errors"].as_u64().unwrap();
    assert!(
        broken_n > 0 && broken_n < n / 2,
        "broken failed {broken_n} of {n}"
    );
    assert_eq!(broken["predictions"].as_u64().unwrap(), 0);
    for v in m["variants"].as_array().unwrap() {
        assert_eq!(v["errors"].as_u64().unwrap(), 0, "{v}");
    }
    let control = variant(&m, "control");
    assert_eq!(
        control["predictions"].as_u64().unwrap(),
        n,
        "shadows are not served traffic"
    );

    // In the audit log: shadow records share the control's prediction id.
    let mut shadow_ids = Vec::new();
    let mut from = 1;
    loop {
        let (status, page) = app
            .get(&format!(
                "/api/experiments/exp-shadow/events?from={from}&limit=500"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            if e["type"] == "PredictionMade" && e["data"]["shadow"] == true {
                assert!(e["data"]["comparison"]["agree"].is_boolean(), "{e}");
                shadow_ids.push(e["data"]["prediction_id"].as_str().unwrap().to_owned());
            }
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(shadow_ids.len() as u64, n + other_n);
    assert!(shadow_ids.iter().all(|id| control_ids.contains(id)));

    // Prometheus sees the arms too.
    let text = app.prometheus().await;
    assert!(
        text.contains(&format!(
            "verdict_shadow_agreements_total{{experiment_id=\"exp-shadow\",shadow=\"same\",model=\"builtin:rec-v1\"}} {n}"
        )),
        "{text}"
    );
    assert!(text.contains("verdict_shadow_dropped_total 0"), "{text}");

    // And the dashboard shows them, beside the served variants.
    let page = app
        .client
        .get(format!("{}/experiments/exp-shadow", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<table id="shadows">"#), "{page}");
    let row = page
        .split(r#"<tr class="shadow" data-key="same">"#)
        .nth(1)
        .expect("the `same` shadow row");
    assert!(
        row.split("</tr>")
            .next()
            .unwrap()
            .contains(r#"<td class="num agreement">100.0%</td>"#),
        "{row}"
    );
    app.stop().await;
}

#[tokio::test]
async fn shadow_variants_are_validated_naming_the_field() {
    let app = spawn_app().await;
    let base = |shadow: Value| {
        json!({
            "experiment_id": "exp-bad-shadow",
            "variants": [
                {"key": "control", "model": "builtin:a", "weight": 0.5},
                {"key": "treatment", "model": "builtin:b", "weight": 0.5},
                shadow,
            ],
        })
    };
    let cases = [
        (
            json!({"key": "s", "model": "builtin:c", "shadow": true, "weight": 0.1}),
            "variants[2].weight",
        ),
        (
            json!({"key": "s", "model": "builtin:c", "shadow": true, "share": 1.5}),
            "variants[2].share",
        ),
        (
            json!({"key": "s", "model": "builtin:c", "share": 0.5, "weight": 0.0}),
            "variants[2].share",
        ),
        (
            json!({"key": "control", "model": "builtin:c", "shadow": true}),
            "variants[2].key",
        ),
        (
            json!({"key": "s", "model": "nope:x", "shadow": true}),
            "variants",
        ),
    ];
    for (shadow, field) in cases {
        let (status, v) = app.post("/api/experiments", base(shadow.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shadow}: {v}");
        assert_eq!(v["error"]["details"]["field"], field, "{shadow}: {v}");
    }
    let (status, v) = app.get("/api/experiments/exp-bad-shadow").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written: {v}");
    app.stop().await;
}
