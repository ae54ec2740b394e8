//! The real `verdict serve`, killed with SIGKILL while clients write to it, loses nothing it
//! acknowledged: after each restart on the same data directory, every acknowledged
//! prediction and conversion is in the audit log (`GET /api/experiments/{id}/events`)
//! exactly once, at the position the server returned.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Serve {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(dir: &std::path::Path) -> Serve {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        // The workspace root: the default registry finds models/rec-v{1,2}.onnx there.
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("VERDICT_STORE")
        .env_remove("VERDICT_READ_MODELS")
        .env_remove("VERDICT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve { child, base }
}

/// What a client was told: the prediction or conversion id, and the position.
type Acked = Vec<(String, u64)>;

async fn drive(base: String, worker: usize, stop: Duration) -> Acked {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let until = Instant::now() + stop;
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let user = format!("w{worker}-u{}", i % 50);
        let result = if i % 3 == 0 {
            let id = uuid::Uuid::now_v7().to_string();
            let body = json!({"event_id": id, "experiment_id": "exp-001", "user_id": user,
                              "conversion_type": "purchase", "amount": 3.5});
            client
                .post(format!("{base}/api/conversions"))
                .json(&body)
                .send()
                .await
                .map(|r| (r, "event_id"))
        } else {
            let body =
                json!({"experiment_id": "exp-001", "user_id": user, "input": {"context": "home"}});
            client
                .post(format!("{base}/api/predictions"))
                .json(&body)
                .send()
                .await
                .map(|r| (r, "prediction_id"))
        };
        // A refused connection or a cut response is not an acknowledgement.
        let Ok((resp, key)) = result else { continue };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(v) = resp.json::<Value>().await else {
            continue;
        };
        acked.push((
            v[key].as_str().expect("an id").to_owned(),
            v["position"].as_u64().expect("a position"),
        ));
    }
    acked
}

/// Every id in the audit log with its position (prediction ids of served predictions, event
/// ids of conversions).
async fn audit(base: &str) -> HashMap<String, Vec<u64>> {
    let client = reqwest::Client::new();
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut from = 1;
    loop {
        let page: Value = client
            .get(format!(
                "{base}/api/experiments/exp-001/events?from={from}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            let position = e["position"].as_u64().unwrap();
            let id = match e["type"].as_str().unwrap() {
                "PredictionMade" | "PredictionFailed" => e["data"]["prediction_id"].as_str(),
                "ConversionRecorded" => e["event_id"].as_str(),
                _ => None,
            };
            if let Some(id) = id {
                seen.entry(id.to_owned()).or_default().push(position);
            }
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_server() {
    let dir = tempfile_dir();
    let mut serve = start(&dir).await;
    let created = reqwest::Client::new()
        .post(format!("{}/api/experiments", serve.base))
        .json(&json!({"experiment_id": "exp-001", "models": {"control": "rec-v1", "treatment": "rec-v2"},
                      "traffic_split": {"control": 50, "treatment": 50}, "start": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut acked: Acked = Vec::new();
    for cycle in 0..3 {
        let drivers: Vec<_> = (0..8)
            .map(|w| tokio::spawn(drive(serve.base.clone(), w, Duration::from_millis(2500))))
            .collect();
        // Kill while the drivers are mid-flight.
        tokio::time::sleep(Duration::from_millis(1200 + 300 * cycle)).await;
        serve.child.kill().expect("SIGKILL");
        let _ = serve.child.wait();
        for d in drivers {
            acked.extend(d.await.unwrap());
        }
        serve = start(&dir).await;
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );

    let seen = audit(&serve.base).await;
    for (id, position) in &acked {
        let positions = seen
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged {id} at {position} is missing"));
        assert_eq!(
            positions,
            &vec![*position],
            "{id}: stored once, where acknowledged"
        );
    }
    serve.child.kill().ok();
    let _ = serve.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "verdict-kill-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
