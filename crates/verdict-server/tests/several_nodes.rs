//! Two serve nodes on one PostgreSQL event store with PostgreSQL read models, and the
//! projector of `verdict project` in the test process: commands on either node are known
//! to the other, outcomes are attributed to the other node's assignments, queries on both
//! nodes read their own writes through `?min_position=` and equal a replay of the store.
//! Needs the local PostgreSQL (`VERDICT_PG_URL`, default the `test` database).

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use verdict_readmodel_postgres::{
    open_projections, run_projector, ProjectorOptions, ReadModelOptions, Writer,
};
use verdict_server::backend::StoreUrl;
use verdict_server::ServerConfig;
use verdict_store::EventStore;

fn url() -> String {
    std::env::var("VERDICT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_store_and_read_models() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let store_url = format!("{}?schema=vst_{id}", url());
    let rm = ReadModelOptions::parse(&format!("{}?schema=vrm_{id}", url())).unwrap();
    let store_choice = StoreUrl::parse(&store_url).unwrap();
    assert!(store_choice.is_shared());

    // The projector process.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let projector_store: Arc<dyn EventStore> = store_choice
        .open(dirs[0].path(), Duration::ZERO)
        .await
        .unwrap();
    let writer = Writer::connect(rm.clone()).await.unwrap();
    assert!(writer.try_lock().await.unwrap());
    let (projections, checkpoint) = open_projections(&writer, &*projector_store).await.unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(run_projector(
        projector_store.clone(),
        projections,
        writer,
        checkpoint,
        ProjectorOptions::default(),
        rx,
    ));

    // Two serve nodes.
    let mut nodes = Vec::new();
    let mut bases = Vec::new();
    for dir in &dirs {
        let mut config = ServerConfig::new(dir.path());
        config.store = store_choice.clone();
        config.follow_store = true;
        config.read_models = Some(rm.clone());
        config.query_wait = Duration::from_secs(10);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = verdict_server::start(config, listener).await.unwrap();
        bases.push(format!("http://{}", server.addr));
        nodes.push(server);
    }
    let client = reqwest::Client::new();
    let (a, b) = (&bases[0], &bases[1]);
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{a}/api/experiments"),
        Some(json!({"experiment_id": "e", "models": {"control": "rec-v1", "treatment": "rec-v2"}, "start": true})),
    )
    .await;
    assert!(status.is_success(), "{status}");
    // B learns of the experiment through its store follower.
    let mut ok = false;
    for _ in 0..100 {
        let (s, _) = call(
            &client,
            reqwest::Method::POST,
            format!("{b}/api/predictions"),
            Some(json!({"experiment_id": "e", "user_id": "probe"})),
        )
        .await;
        if s.is_success() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "node B never learned of the experiment node A created");

    let mut last = 0;
    let mut variants = Vec::new();
    for i in 0..40 {
        let (s, p) = call(
            &client,
            reqwest::Method::POST,
            format!("{}/api/predictions", bases[i % 2]),
            Some(json!({"experiment_id": "e", "user_id": format!("u{i}")})),
        )
        .await;
        assert!(s.is_success(), "{s} {p}");
        variants.push(p["variant"].as_str().unwrap().to_owned());
        last = last.max(p["position"].as_u64().unwrap());
    }
    // Each node attributes an outcome only to an exposure it has seen: wait until both
    // command sides have followed the store past the last assignment.
    for base in &bases {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (s, r) = call(
                &client,
                reqwest::Method::GET,
                format!("{base}/readyz"),
                None,
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{r}");
            if r["followed"].as_u64().expect("a following node reports it") >= last {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{base} never followed to {last}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for i in (0..40).step_by(3) {
        let (s, c) = call(
            &client,
            reqwest::Method::POST,
            format!("{}/api/conversions", bases[(i + 1) % 2]),
            Some(json!({"experiment_id": "e", "user_id": format!("u{i}"), "amount": 10.0})),
        )
        .await;
        assert!(s.is_success(), "{s} {c}");
        assert_eq!(
            c["variant"].as_str(),
            Some(variants[i].as_str()),
            "u{i} attributed on the other node"
        );
        last = last.max(c["position"].as_u64().unwrap());
    }

    // Both nodes read their own writes from the tables, and agree with a replay.
    let replayed = verdict_app::projector::replay(projector_store.as_ref(), |_, _| {})
        .await
        .unwrap();
    let expected = verdict_app::queries::results(&replayed, "e").unwrap();
    for base in &bases {
        let (s, got) = call(
            &client,
            reqwest::Method::GET,
            format!("{base}/api/experiments/e/results?min_position={last}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{got}");
        assert_eq!(got, expected, "{base}");
    }
    let users: u64 = expected["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["users"].as_u64().unwrap())
        .sum();
    assert_eq!(users, 41);

    for node in nodes {
        node.shutdown().await.unwrap();
    }
    stop.send_replace(true);
    projector.await.unwrap().unwrap();
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP SCHEMA vst_{id} CASCADE; DROP SCHEMA vrm_{id} CASCADE"
        ))
        .await
        .unwrap();
}
