//! Opening the store on a 3-node cluster that is still forming: with one node up there is
//! no meta leader and JetStream API requests go unanswered. `open` waits (within
//! `startup_wait`) until the other nodes join, then creates the R3 stream; with no wait it
//! reports the unanswered request at once. CI's cluster test once failed this way, its
//! projector started before the cluster had elected a leader.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use verdict_store::conformance::events;
use verdict_store::{EventStore, ExpectedVersion};
use verdict_store_nats::{NatsError, NatsOptions, NatsStore};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three cluster nodes' ports, none started yet; each started node is killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    client: [u16; 3],
    route: [u16; 3],
    nodes: Vec<Child>,
}

impl Cluster {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            client: [free_port(), free_port(), free_port()],
            route: [free_port(), free_port(), free_port()],
            nodes: Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.client
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` (0-2) and waits until it accepts clients.
    fn start(&mut self, i: usize) {
        let routes = self
            .route
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let dir: &Path = self.dir.path();
        let config = dir.join(format!("n{i}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: {:?}, sync_interval: always }}\n\
                 cluster {{ name: startup, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
                self.client[i],
                dir.join(format!("n{i}")),
                self.route[i],
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("n{i}.log"))).unwrap();
        let child = Command::new(common::nats_server_bin())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.nodes.push(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.client[i])).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

fn options(cluster: &Cluster, startup_wait: Duration) -> NatsOptions {
    let mut options = NatsOptions::new(cluster.url());
    options.replicas = 3;
    options.request_timeout = Duration::from_millis(500);
    options.startup_wait = startup_wait;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_waits_for_a_forming_cluster() {
    let mut cluster = Cluster::new();
    cluster.start(0);
    let opening = tokio::spawn(NatsStore::open(options(&cluster, Duration::from_secs(60))));
    // Several request timeouts' worth: without the wait, open would have failed by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !opening.is_finished(),
        "open returned while the cluster had one node of three: {:?}",
        opening.await.unwrap().map(|_| ())
    );
    cluster.start(1);
    cluster.start(2);
    let store = tokio::time::timeout(Duration::from_secs(90), opening)
        .await
        .expect("open did not return")
        .unwrap()
        .expect("open succeeds once the cluster has formed");
    let stored = store
        .append("s", ExpectedVersion::NoStream, events("e", 2))
        .await
        .unwrap();
    assert_eq!(stored.first_position, 1);
    let read = store.read_all(1, 10).await.unwrap();
    assert_eq!(read.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_startup_wait_a_leaderless_cluster_is_reported_at_once() {
    let mut cluster = Cluster::new();
    cluster.start(0);
    match NatsStore::open(options(&cluster, Duration::ZERO)).await {
        Err(NatsError::Request(message)) => {
            assert!(!message.contains("not ready within"), "{message}")
        }
        other => panic!(
            "expected an unanswered request, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_never_forms_is_reported_after_the_wait() {
    let mut cluster = Cluster::new();
    cluster.start(0);
    match NatsStore::open(options(&cluster, Duration::from_secs(2))).await {
        Err(NatsError::Request(message)) => {
            assert!(message.contains("not ready within 2s"), "{message}")
        }
        other => panic!("expected a startup timeout, got {:?}", other.map(|_| ())),
    }
}
