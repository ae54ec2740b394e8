//! The real `verdict serve` against slow and idle clients: a normal client keeps being
//! answered while they hold their connections, and SIGTERM ends the process within the
//! configured shutdown deadline even with requests half sent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_stall_no_one_and_sigterm_meets_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("verdict.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    // Clients may dawdle for a minute; shutdown waits one second for them.
    writeln!(
        f,
        "header_timeout_ms = 60000\nbody_timeout_ms = 60000\nshutdown_grace_ms = 1000"
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("VERDICT_STORE")
        .env_remove("VERDICT_READ_MODELS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 100 idle connections, 20 with half a request's headers, 20 with half a body.
    let mut held = Vec::new();
    for i in 0..140 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if (100..120).contains(&i) {
            s.write_all(b"POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        } else if i >= 120 {
            s.write_all(b"POST /api/conversions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"experiment_id\":")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // A normal client, meanwhile: every request answered; the slowest is reported.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest of 50 /readyz answers while 140 slow clients held connections: {slowest:?}");
    // SIGTERM with every slow client still there.
    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "SIGTERM did not end the process (deadline 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    eprintln!("SIGTERM to exit with 140 slow clients: {took:?} (deadline 1 s)");
    assert!(status.success(), "{status}");
    // Within the deadline plus the final snapshot and closing the log.
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(held);
}
