//! No client can stall the server, and the defaults let no stranger in: slow and idle
//! clients, the connection limit, the shutdown deadline, the loopback Host rule,
//! cross-site writes and unsafe keys — each against a real server on a real socket.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verdict_server::auth::{ApiKey, Role};
use verdict_server::listen::HttpLimits;
use verdict_server::{Server, ServerConfig, ServerError};

async fn start(dir: &std::path::Path, configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::new(dir);
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    verdict_server::start(config, listener)
        .await
        .expect("server starts")
}

/// One request on a fresh connection, answered within `bound` (a stalled server fails).
async fn healthz(server: &Server, bound: Duration) -> StatusCode {
    let client = reqwest::Client::new();
    let r = tokio::time::timeout(
        bound,
        client.get(format!("http://{}/healthz", server.addr)).send(),
    )
    .await
    .expect("a normal client was kept waiting")
    .unwrap();
    r.status()
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream, bound: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_header_and_slow_body_clients_stall_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits = HttpLimits {
            header_read: Duration::from_millis(500),
            body_read: Duration::from_millis(800),
            max_connections: 200,
            shutdown_grace: Duration::from_secs(2),
        };
    })
    .await;
    let addr = server.addr;
    // 100 idle sockets, 10 sending headers a byte at a time, 10 sending a body that never ends.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = if i < 10 {
            "POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_owned()
        } else {
            "POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"experiment_id\": ".to_owned()
        };
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    let trickle = tokio::spawn(async move {
        // Keep the slow-header clients sending, slower than any real one. (The slow bodies
        // stay stalled: bytes arriving after the 408 would turn the close into a reset.)
        let mut open = slow;
        for _ in 0..30 {
            for s in &mut open[..10] {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        open
    });
    // Meanwhile normal clients are served.
    for _ in 0..20 {
        assert_eq!(
            healthz(&server, Duration::from_secs(2)).await,
            StatusCode::OK
        );
    }
    // The idle ones are closed once the header timeout passes.
    for s in &mut idle {
        until_closed(s, Duration::from_secs(10)).await;
    }
    // The slow ones too: a 408 naming the body, or a closed connection for slow headers.
    let mut open = trickle.await.unwrap();
    let mut timed_out_bodies = 0;
    for s in &mut open {
        let answer = until_closed(s, Duration::from_secs(10)).await;
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("body_timeout"), "{answer}");
            timed_out_bodies += 1;
        }
    }
    assert_eq!(timed_out_bodies, 10, "each slow body gets a 408");
    assert_eq!(
        healthz(&server, Duration::from_secs(2)).await,
        StatusCode::OK
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_its_deadline_despite_half_open_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits = HttpLimits {
            header_read: Duration::from_secs(3600),
            body_read: Duration::from_secs(3600),
            max_connections: 100,
            shutdown_grace: Duration::from_millis(500),
        };
    })
    .await;
    let mut held = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            // Half a request: headers sent, the promised body never comes.
            s.write_all(b"POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // Make sure the server has taken them all on.
    assert_eq!(
        healthz(&server, Duration::from_secs(2)).await,
        StatusCode::OK
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown waited for clients that never finish")
        .unwrap();
    // Well within the bound above; the grace is 0.5 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    for s in &mut held {
        until_closed(s, Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits = HttpLimits {
            max_connections: 4,
            header_read: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
    })
    .await;
    // A served connection answers, so the next ones are counted after it.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert_eq!(body["error"]["details"]["max_connections"], 4);
    // Freed slots are served again.
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://{}/healthz", server.addr)).await {
            if r.status() == StatusCode::OK {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served);
    server.shutdown().await.unwrap();
}

async fn raw(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let answer = until_closed(&mut s, Duration::from_secs(10)).await;
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON is one line.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or(Value::Null);
    (status, json)
}

const EXPERIMENT: &str = r#"{"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}, "start": true}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_hosts_and_same_site_json_writes_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let local = server.addr.to_string();
    // DNS rebinding: a hostile name that resolves to 127.0.0.1.
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        let (s, b) = raw(&server, "GET", "/api/experiments", &[("Host", host)], "").await;
        assert_eq!(s, 403, "{host}: {b}");
        assert_eq!(b["error"]["code"], "forbidden_host");
        assert_eq!(b["error"]["details"]["field"], "Host");
    }
    for host in [local.as_str(), "localhost", "[::1]:9"] {
        let (s, b) = raw(&server, "GET", "/api/experiments", &[("Host", host)], "").await;
        assert_eq!(s, 200, "{host}: {b}");
    }
    // A cross-site "simple" request: text/plain or a form body, no preflight.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, b) = raw(
            &server,
            "POST",
            "/api/experiments",
            &[("Host", &local), ("Content-Type", ct)],
            EXPERIMENT,
        )
        .await;
        assert_eq!(s, 415, "{ct}: {b}");
        assert_eq!(b["error"]["details"]["field"], "Content-Type");
    }
    // A foreign Origin, even with JSON.
    let (s, b) = raw(
        &server,
        "POST",
        "/api/experiments",
        &[
            ("Host", &local),
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        EXPERIMENT,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["details"]["field"], "Origin");
    let (s, b) = raw(
        &server,
        "POST",
        "/api/experiments/e/stop",
        &[("Host", &local), ("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // Nothing of that was written.
    let (s, b) = raw(&server, "GET", "/api/experiments", &[("Host", &local)], "").await;
    assert_eq!(s, 200);
    assert_eq!(b["experiments"], json!([]), "{b}");
    // Same origin and JSON: created.
    let origin = format!("http://{local}");
    let (s, b) = raw(
        &server,
        "POST",
        "/api/experiments",
        &[
            ("Host", &local),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Origin", &origin),
        ],
        EXPERIMENT,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    server.shutdown().await.unwrap();

    // --allow-public: the operator chose to answer any name.
    let server = start(dir.path(), |c| c.allow_public = true).await;
    let (s, b) = raw(
        &server,
        "GET",
        "/api/experiments",
        &[("Host", "verdict.internal")],
        "",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_short_or_repeated_keys_are_a_config_error() {
    let key = |k: &str| ApiKey {
        key: k.into(),
        role: Role::Admin,
        name: None,
    };
    for keys in [
        vec![key("")],
        vec![key("short-key")],
        vec![key("  padded-but-long-enough  ")],
        vec![
            key("a-long-enough-admin-key"),
            key("a-long-enough-admin-key"),
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = ServerConfig::new(dir.path());
        config.api_keys = keys.clone();
        match verdict_server::start(config, listener).await {
            Err(ServerError::Config(m)) => assert!(m.contains("api_keys["), "{m}"),
            Err(e) => panic!("{keys:?}: wrong error {e}"),
            Ok(_) => panic!("{keys:?} accepted"),
        }
    }
    // With a proper key, any Host is served (the key is the guard), but not without it.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.api_keys = vec![key("a-long-enough-admin-key")]
    })
    .await;
    let (s, _) = raw(
        &server,
        "GET",
        "/api/experiments",
        &[
            ("Host", "verdict.internal"),
            ("Authorization", "Bearer a-long-enough-admin-key"),
        ],
        "",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = raw(
        &server,
        "GET",
        "/api/experiments",
        &[("Host", "verdict.internal"), ("Authorization", "Bearer ")],
        "",
    )
    .await;
    assert_eq!(s, 401);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_models_and_conditions_are_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let client = reqwest::Client::new();
    let create = |body: Value| {
        let client = client.clone();
        let url = format!("http://{}/api/experiments", server.addr);
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    // A FIFO would block the load until a writer came, /dev/zero would fill memory.
    let fifo = dir.path().join("model.onnx");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (uri, why) in [
        (format!("onnx:{}", fifo.display()), "FIFO"),
        ("onnx:/dev/zero".to_owned(), "character device"),
    ] {
        let (s, b) = create(
            json!({"experiment_id": "m", "models": {"control": "builtin:a", "treatment": uri}}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["error"]["details"]["field"], "variants[1].model", "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(why), "{b}");
    }
    // A condition that backtracks catastrophically in JavaScript engines is refused; the
    // server never evaluates it.
    let (s, b) = create(json!({
        "experiment_id": "r",
        "models": {"control": "builtin:a", "treatment": "builtin:b"},
        "condition": {"name": {"$regex": "^(a+)+$"}}
    }))
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b["error"]["details"]["field"], "condition.name.$regex",
        "{b}"
    );
    // A linear one is accepted and answers on a long hostile input at once.
    let (s, b) = create(json!({
        "experiment_id": "ok",
        "models": {"control": "builtin:a", "treatment": "builtin:b"},
        "condition": {"name": {"$regex": "^a+$"}},
        "start": true
    }))
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let name = format!("{}!", "a".repeat(100_000));
    let r = client
        .post(format!("http://{}/api/assignments", server.addr))
        .json(&json!({"experiment_id": "ok", "user_id": "u", "attributes": {"name": name}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["in_experiment"], false, "{b}");
    assert_eq!(
        healthz(&server, Duration::from_secs(2)).await,
        StatusCode::OK
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_read_only_when_they_fit_and_come_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "an-ingest-key-long-enough";
    let server = start(dir.path(), |c| {
        c.body_limit = 4096;
        c.api_keys = vec![ApiKey {
            key: key.into(),
            role: Role::Ingest,
            name: None,
        }];
    })
    .await;
    // A declared length over the limit is answered before a byte of it arrives.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!("POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Without a key, no body is read at all: 401 at once, the stalled body never awaited.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    server.shutdown().await.unwrap();
}
