//! HTTP upstreams against local fake servers speaking MLflow, V2 and BentoML: success,
//! error classification, timeouts, the concurrency limit, a server killed mid-run, the
//! circuit breaker, and connection reuse.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verdict_serve::{ModelError, Registry};

type Peers = Arc<Mutex<BTreeSet<SocketAddr>>>;

/// A fake model server on its own thread and runtime, so stopping it drops every open
/// connection, like a killed process.
struct Fake {
    addr: SocketAddr,
    peers: Peers,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    fn start_on(addr: SocketAddr) -> Self {
        let peers: Peers = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = peers.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v2/models/{name}/infer", post(v2))
                    .route("/invocations", post(mlflow))
                    .route("/predict", post(bentoml))
                    .with_state(state);
                let serve = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                );
                tokio::select! {
                    _ = serve => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime here closes every connection task.
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            peers,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn v2(
    State(peers): State<Peers>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    peers.lock().unwrap().insert(peer);
    match name.as_str() {
        "iris" => {
            let input = &body["inputs"][0];
            let rows = input["shape"][0].as_u64().unwrap();
            // "Predicts" the sum of each row, to prove the data arrived in order.
            let width = input["shape"][1].as_u64().unwrap() as usize;
            let data: Vec<f64> = input["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let sums: Vec<f64> = data.chunks(width).map(|c| c.iter().sum()).collect();
            let out = json!({"model_name": "iris", "model_version": "v1", "id": "x", "outputs": [
                {"name": "predict", "shape": [rows, 1], "datatype": "FP64", "data": sums}]});
            (StatusCode::OK, out.to_string())
        }
        "crash" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "Traceback (most recent call last):\n{}ValueError: X has 3 features",
                "  File \"x.py\"\n".repeat(200)
            ),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "{}".into())
        }
        "garbage" => (StatusCode::OK, "<html>not json</html>".into()),
        _ => (
            StatusCode::NOT_FOUND,
            format!("{{\"error\":\"Model {name} not found\"}}"),
        ),
    }
}

async fn mlflow(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if let Some(rows) = body.get("inputs").and_then(Value::as_array) {
        return (
            StatusCode::OK,
            Json(json!({"predictions": rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>()})),
        );
    }
    if let Some(records) = body.get("dataframe_records") {
        return (
            StatusCode::OK,
            Json(json!({"predictions": [records[0]["context"]]})),
        );
    }
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"error_code": "BAD_REQUEST", "message": "The input must be a JSON dictionary with exactly one of the input fields"}),
        ),
    )
}

async fn bentoml(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({"echo": body}))
}

fn registry() -> Registry {
    Registry::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_success_and_error_kinds() {
    let fake = Fake::start();
    let r = registry();
    let iris = r
        .resolve(&format!("v2:{}", fake.url("/v2/models/iris")))
        .unwrap();
    let p = iris
        .predict("u", &json!({"features": [1.0, 2.0, 3.5]}))
        .await
        .unwrap();
    assert_eq!(p.output, json!({"predict": 6.5}));
    assert_eq!(p.model_version, "v2:iris@v1");
    let start = Instant::now();
    let (_, upstream) = iris
        .predict_timed("u", &json!({"features": [1]}))
        .await
        .unwrap();
    assert!(upstream.unwrap() <= start.elapsed());
    let p = iris
        .predict("u", &json!({"features": [[1, 2, 3], [4, 5, 6]]}))
        .await
        .unwrap();
    assert_eq!(p.output, json!({"predict": [6.0, 15.0]}));

    let e = r
        .resolve(&format!("v2:{}", fake.url("/v2/models/nope")))
        .unwrap()
        .predict("u", &json!({"features": [1]}))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ModelError::Upstream4xx {
            status: 404,
            body: "{\"error\":\"Model nope not found\"}".into()
        }
    );

    let e = r
        .resolve(&format!("v2:{}", fake.url("/v2/models/crash")))
        .unwrap()
        .predict("u", &json!({"features": [1]}))
        .await
        .unwrap_err();
    let ModelError::Upstream5xx { status: 500, body } = &e else {
        panic!("{e:?}")
    };
    assert!(
        body.starts_with("Traceback") && body.len() < 600,
        "truncated: {} bytes",
        body.len()
    );
    assert!(body.contains("bytes cut"), "says how much was cut: {body}");
    assert!(
        body.ends_with("ValueError: X has 3 features"),
        "keeps the end: {body}"
    );

    let e = r
        .resolve(&format!("v2:{}", fake.url("/v2/models/garbage")))
        .unwrap()
        .predict("u", &json!({"features": [1]}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "invalid_output");
    assert!(e.to_string().contains("<html>not json"), "{e}");

    let e = iris
        .predict("u", &json!({"text": "no features"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_and_bentoml() {
    let fake = Fake::start();
    let r = registry();
    let m = r.resolve(&format!("mlflow:{}", fake.url(""))).unwrap();
    let p = m.predict("u", &json!({"features": [7, 8]})).await.unwrap();
    assert_eq!(p.output, json!({"predictions": [7]}));
    assert!(
        p.model_version.starts_with("mlflow:http://127.0.0.1:"),
        "{}",
        p.model_version
    );
    let p = m
        .predict("u", &json!({"context": "homepage"}))
        .await
        .unwrap();
    assert_eq!(p.output, json!({"predictions": ["homepage"]}));
    // A pass-through body the fake refuses, as MLflow does: 400 with its JSON error.
    let e = m
        .predict("u", &json!({"dataframe_split": {}}))
        .await
        .unwrap_err();
    let ModelError::Upstream4xx { status: 400, body } = &e else {
        panic!("{e:?}")
    };
    assert!(body.contains("BAD_REQUEST"), "{body}");

    let b = r
        .resolve(&format!("bentoml:{}", fake.url("/predict")))
        .unwrap();
    let p = b.predict("u", &json!({"text": "hi"})).await.unwrap();
    assert_eq!(p.output, json!({"echo": {"text": "hi"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_concurrency_limit() {
    let fake = Fake::start();
    let r = registry();
    let slow = r
        .resolve(&format!(
            "v2:{}#timeout_ms=150&concurrency=1&breaker_failures=0",
            fake.url("/v2/models/slow")
        ))
        .unwrap();
    let input = json!({"features": [1]});
    let start = Instant::now();
    let (a, b) = tokio::join!(slow.predict("u", &input), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        slow.predict("u", &input).await
    });
    assert_eq!(a.unwrap_err(), ModelError::Timeout(150));
    assert_eq!(b.unwrap_err().kind(), "overloaded");
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused() {
    let fake = Fake::start();
    let iris = registry()
        .resolve(&format!("v2:{}", fake.url("/v2/models/iris")))
        .unwrap();
    for i in 0..50 {
        iris.predict("u", &json!({"features": [i]})).await.unwrap();
    }
    // A call puts its connection back before it returns, so sequential calls share one.
    let n = fake.peers.lock().unwrap().len();
    assert_eq!(n, 1, "50 sequential calls used {n} connections");
    // Concurrent calls each take a connection, and give them back for the next round.
    for _ in 0..3 {
        let inputs: Vec<Value> = (0..8).map(|i| json!({"features": [i]})).collect();
        let calls = inputs.iter().map(|input| iris.predict("u", input));
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
    }
    let n = fake.peers.lock().unwrap().len();
    assert!(
        n <= 9,
        "three rounds of 8 concurrent calls used {n} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast_then_recovers() {
    let mut fake = Fake::start();
    let addr = fake.addr;
    let uri = format!(
        "v2:{}#breaker_failures=3&breaker_open_ms=1000",
        fake.url("/v2/models/iris")
    );
    let iris = registry().resolve(&uri).unwrap();
    assert!(iris.predict("u", &json!({"features": [1]})).await.is_ok());
    fake.kill();
    for _ in 0..3 {
        let e = iris
            .predict("u", &json!({"features": [1]}))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "connection", "{e}");
    }
    // The breaker is open: refused without a connection attempt ("overloaded", where a
    // refused connection would be "connection").
    let e = iris
        .predict("u", &json!({"features": [1]}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "overloaded", "{e}");
    // The server comes back on the same port; after the open period a trial closes it.
    let _back = Fake::start_on(addr);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let p = iris.predict("u", &json!({"features": [2]})).await.unwrap();
    assert_eq!(p.output, json!({"predict": 2.0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = registry()
        .resolve(&format!("mlflow:http://127.0.0.1:{port}"))
        .unwrap();
    let e = m.predict("u", &json!({"features": [1]})).await.unwrap_err();
    assert_eq!(e.kind(), "connection");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
}

/// A server that answers the first request on each connection, then closes the connection
/// when the next request arrives on it (what a restarted or crashed-worker server does).
async fn one_shot_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP64","data":[1.5]}]}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
                // The client may close a spare connection without a request: nothing to answer.
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.read(&mut buf).await;
                // Close under the client's second request.
                drop(sock);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_pooled_connection_is_retried_once() {
    let addr = one_shot_server().await;
    let m = registry()
        .resolve(&format!("v2:http://{addr}/v2/models/m"))
        .unwrap();
    for _ in 0..5 {
        let p = m.predict("u", &json!({"features": [1]})).await.unwrap();
        assert_eq!(p.output, json!({"y": 1.5}));
    }
}

/// The retry goes on a new connection, not another pooled one: after concurrent calls the
/// pool holds several connections that all die on their next use (as after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_does_not_take_another_dead_pooled_connection() {
    let addr = one_shot_server().await;
    let m = registry()
        .resolve(&format!("v2:http://{addr}/v2/models/m"))
        .unwrap();
    let input = json!({"features": [1]});
    let (a, b, c, d) = tokio::join!(
        m.predict("u", &input),
        m.predict("u", &input),
        m.predict("u", &input),
        m.predict("u", &input),
    );
    for p in [a, b, c, d] {
        assert_eq!(p.unwrap().output, json!({"y": 1.5}));
    }
    // Let the four connections go back to the pool.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..4 {
        let p = m.predict("u", &json!({"features": [1]})).await;
        assert_eq!(p.unwrap().output, json!({"y": 1.5}), "call {i}");
    }
}
