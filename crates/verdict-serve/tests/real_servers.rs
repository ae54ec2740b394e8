//! verdict-serve against real model servers: an MLflow scoring server, MLServer (V2) and a
//! BentoML service,
//! started by `scripts/models/integration` (which sets the `VERDICT_IT_*` variables and
//! runs these ignored tests). Success (outputs equal the model's own predictions), a model
//! error, a timeout, and a server killed mid-run.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verdict_serve::{ModelError, Registry};

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/models/integration"))
}

/// `(rows, predictions)` the server's model gave in Python.
fn expected(var_name: &str) -> (Vec<Value>, Vec<Value>) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(var(var_name)).unwrap()).unwrap();
    (
        v["rows"].as_array().unwrap().clone(),
        v["predictions"].as_array().unwrap().clone(),
    )
}

/// Waits (up to 20 s) until nothing accepts connections at `base` (`http://host:port`):
/// the killed server's processes are gone, so the next request fails to connect.
async fn wait_refused(base: &str) {
    let addr = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs a real MLflow server: scripts/models/integration"]
async fn mlflow_scoring_server() {
    let base = var("VERDICT_IT_MLFLOW");
    let (rows, predictions) = expected("VERDICT_IT_MLFLOW_EXPECTED");
    let r = Registry::default();
    // Generous: the "unharmed" check below may queue behind the abandoned 20,000-row request.
    let m = r
        .resolve(&format!("mlflow:{base}#timeout_ms=30000"))
        .unwrap();

    for (row, want) in rows.iter().zip(&predictions) {
        let p = m.predict("u", &json!({ "features": row })).await.unwrap();
        assert_eq!(p.output, json!({ "predictions": [want] }), "row {row}");
    }
    let p = m.predict("u", &json!({ "features": rows })).await.unwrap();
    assert_eq!(p.output, json!({ "predictions": predictions }));

    // A model error: two features for a four-feature signature; MLflow answers 400.
    let e = m
        .predict("u", &json!({"features": [1.0, 2.0]}))
        .await
        .unwrap_err();
    let ModelError::Upstream4xx { status: 400, body } = &e else {
        panic!("{e:?}")
    };
    assert!(body.contains("error_code"), "{body}");

    // A timeout: 20,000 rows take MLflow (JSON parsing, pandas, sklearn) well over 1 ms;
    // a single row can come back within 1 ms on a quiet machine.
    let big: Vec<&Value> = rows.iter().cycle().take(20_000).collect();
    let fast = r.resolve(&format!("mlflow:{base}#timeout_ms=1")).unwrap();
    assert_eq!(
        fast.predict("u", &json!({ "features": big }))
            .await
            .unwrap_err(),
        ModelError::Timeout(1)
    );
    // The server is unharmed.
    assert!(m.predict("u", &json!({"features": rows[0]})).await.is_ok());
}

#[tokio::test]
#[ignore = "needs a real MLServer: scripts/models/integration"]
async fn mlserver_v2_then_killed_mid_run() {
    let base = var("VERDICT_IT_MLSERVER");
    let (rows, predictions) = expected("VERDICT_IT_MLSERVER_EXPECTED");
    let r = Registry::default();
    let uri = format!(
        "v2:{base}/v2/models/iris#timeout_ms=10000&breaker_failures=3&breaker_open_ms=60000"
    );
    let m = r.resolve(&uri).unwrap();

    for (row, want) in rows.iter().zip(&predictions) {
        let p = m.predict("u", &json!({ "features": row })).await.unwrap();
        assert_eq!(p.output["predict"], *want, "row {row}: {}", p.output);
        assert_eq!(p.model_version, "v2:iris@v1");
    }
    let p = m.predict("u", &json!({ "features": rows })).await.unwrap();
    assert_eq!(p.output["predict"], json!(predictions));

    // A model error: sklearn raises on three features; MLServer answers 4xx/5xx with a body.
    let e = m
        .predict("u", &json!({"features": [1.0, 2.0, 3.0]}))
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), "upstream_5xx" | "upstream_4xx"), "{e:?}");
    assert!(e.to_string().contains("feature"), "{e}");
    // Unknown model.
    let e = r
        .resolve(&format!("v2:{base}/v2/models/nope"))
        .unwrap()
        .predict("u", &json!({"features": rows[0]}))
        .await
        .unwrap_err();
    let ModelError::Upstream4xx { status: 404, body } = &e else {
        panic!("{e:?}")
    };
    assert!(body.contains("not found"), "{body}");

    // Killed mid-run: a stream of requests, the server's process group gets SIGKILL after 10.
    let pgid = var("VERDICT_IT_MLSERVER_PGID");
    let mut kinds = Vec::new();
    for i in 0..30 {
        if i == 10 {
            let status = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pgid}")])
                .status()
                .unwrap();
            assert!(status.success());
            wait_refused(&base).await;
        }
        let start = Instant::now();
        let result = m
            .predict("u", &json!({"features": rows[i % rows.len()]}))
            .await;
        assert!(
            start.elapsed() < Duration::from_millis(12_000),
            "request {i} hung"
        );
        kinds.push(result.map_or_else(|e| e.kind(), |_| "ok"));
    }
    assert!(kinds[..10].iter().all(|k| *k == "ok"), "{kinds:?}");
    // After the kill: connection errors until the breaker opens, then fast refusals.
    assert_eq!(kinds[10..13], ["connection"; 3], "{kinds:?}");
    assert!(kinds[13..].iter().all(|k| *k == "overloaded"), "{kinds:?}");
}

#[tokio::test]
#[ignore = "needs a real BentoML server: scripts/models/integration"]
async fn bentoml_service_then_killed_mid_run() {
    let base = var("VERDICT_IT_BENTOML");
    let (rows, predictions) = expected("VERDICT_IT_BENTOML_EXPECTED");
    let r = Registry::default();
    let uri =
        format!("bentoml:{base}/predict#timeout_ms=10000&breaker_failures=3&breaker_open_ms=60000");
    let m = r.resolve(&uri).unwrap();

    // Success: the API method's parameters are the body's keys; the answer is its return value.
    for (row, want) in rows.iter().zip(&predictions) {
        let p = m.predict("u", &json!({ "features": [row] })).await.unwrap();
        assert_eq!(p.output, json!([want]), "row {row}");
        assert_eq!(p.model_version, "bentoml:/predict");
    }
    let p = m.predict("u", &json!({ "features": rows })).await.unwrap();
    assert_eq!(p.output, json!(predictions));

    // A model error: scikit-learn raises on three features; BentoML answers 500 and hides
    // the exception behind a generic message (the traceback goes to its log).
    let e = m
        .predict("u", &json!({"features": [[1.0, 2.0, 3.0]]}))
        .await
        .unwrap_err();
    let ModelError::Upstream5xx { status: 500, body } = &e else {
        panic!("{e:?}")
    };
    assert!(body.contains("unexpected error"), "{body}");
    // Input the API's signature refuses: 400 with pydantic's explanation.
    let e = m
        .predict("u", &json!({"features": [["a"]]}))
        .await
        .unwrap_err();
    let ModelError::Upstream4xx { status: 400, body } = &e else {
        panic!("{e:?}")
    };
    assert!(body.contains("validation error"), "{body}");
    // A wrong endpoint.
    let e = r
        .resolve(&format!("bentoml:{base}/nope"))
        .unwrap()
        .predict("u", &json!({"features": [rows[0]]}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "upstream_4xx", "{e:?}");

    // A timeout: the service sleeps 3 s on request, the model allows 100 ms.
    let slow = r
        .resolve(&format!("bentoml:{base}/predict#timeout_ms=100"))
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        slow.predict("u", &json!({"features": [rows[0]], "sleep_ms": 3000}))
            .await
            .unwrap_err(),
        ModelError::Timeout(100)
    );
    assert!(start.elapsed() < Duration::from_millis(2000));
    // The server is unharmed.
    assert!(m
        .predict("u", &json!({"features": [rows[0]]}))
        .await
        .is_ok());

    // Killed mid-run: a stream of requests; the server (arbiter and workers) gets SIGKILL
    // after 10.
    let pids = var("VERDICT_IT_BENTOML_PIDS");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert!(
        pids.len() >= 2,
        "expected the arbiter and a worker: {pids:?}"
    );
    let mut kinds = Vec::new();
    for i in 0..30 {
        if i == 10 {
            let status = std::process::Command::new("kill")
                .arg("-9")
                .args(&pids)
                .status()
                .unwrap();
            assert!(status.success());
            wait_refused(&base).await;
        }
        let start = Instant::now();
        let result = m
            .predict("u", &json!({"features": [rows[i % rows.len()]]}))
            .await;
        assert!(
            start.elapsed() < Duration::from_millis(12_000),
            "request {i} hung"
        );
        kinds.push(result.map_or_else(|e| e.kind(), |_| "ok"));
    }
    assert!(kinds[..10].iter().all(|k| *k == "ok"), "{kinds:?}");
    assert_eq!(kinds[10..13], ["connection"; 3], "{kinds:?}");
    assert!(kinds[13..].iter().all(|k| *k == "overloaded"), "{kinds:?}");
}
