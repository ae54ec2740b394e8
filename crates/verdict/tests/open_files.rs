//! The real `verdict serve` under a small open-file limit (128): hundreds of idle sockets
//! once took every descriptor, so the next snapshot write failed with EMFILE and the
//! projector died while `/readyz` said ready. The connection limit follows the file limit,
//! so idle sockets are refused instead and snapshots, the log and other clients go on.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_take_the_descriptors_snapshots_need() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // `ulimit -n` sets the soft and hard limits, so verdict cannot raise it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec \"$0\" serve --listen 127.0.0.1:{port} --data-dir \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_verdict"))
        .arg(dir.path())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("VERDICT_STORE")
        .env_remove("VERDICT_READ_MODELS")
        .env_remove("VERDICT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict serve starts");
    let base = format!("http://127.0.0.1:{port}");
    // A request stuck in the listen backlog (accept failing with EMFILE) fails the test
    // instead of hanging it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .post(format!("{base}/api/experiments"))
        .json(&json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}, "start": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // 300 idle sockets: more than the whole descriptor budget.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(s);
        }
    }
    // The server still takes writes, on fresh connections: while idle sockets hold every
    // slot, a new connection is answered 503 and closed; the idle ones are closed after
    // the header timeout (10 s), and the writes get through.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for u in 0..5 {
        let mut done = false;
        while Instant::now() < deadline {
            let sent = client
                .post(format!("{base}/api/conversions"))
                .json(&json!({"experiment_id": "e", "user_id": format!("u{u}"), "amount": 1}))
                .send()
                .await;
            if let Ok(r) = sent {
                if r.status() == 201 {
                    last = r.json::<Value>().await.unwrap()["position"]
                        .as_u64()
                        .unwrap();
                    done = true;
                    break;
                }
                assert_eq!(r.status(), 503, "only the connection limit may refuse");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "no write got through");
    }
    // The server closed the idle ones itself.
    for mut s in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "an idle socket was kept open");
    }
    // Everything was projected and the snapshot writer never failed.
    let mut ready = Value::Null;
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            let status = r.status();
            ready = r.json().await.unwrap();
            if status == 200 && ready["projected"].as_u64() >= Some(last) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["components"]["snapshot"]["failures"], 0, "{ready}");
    // SIGTERM: a clean stop with a final snapshot at the head.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("projections.json")).unwrap())
            .unwrap();
    assert!(snapshot["position"].as_u64().unwrap() >= last);
}
