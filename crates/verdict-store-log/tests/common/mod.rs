//! Helpers shared by the log's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use verdict_store::conformance::StoreFactory;
use verdict_store::EventStore;
use verdict_store_log::{LogOptions, LogStore};

/// A store made by the factory, its directory, and the temporary directory holding it.
type Made = (Arc<dyn EventStore>, PathBuf, tempfile::TempDir);

/// Makes log stores in temporary directories; small segments so rolling is exercised.
pub struct LogFactory {
    pub segment_size: u64,
    pub spin: std::time::Duration,
    pub inline_commit: bool,
    dirs: Mutex<Vec<Made>>,
}

impl LogFactory {
    pub fn new(segment_size: u64) -> Self {
        Self {
            segment_size,
            spin: std::time::Duration::ZERO,
            inline_commit: true,
            dirs: Mutex::new(Vec::new()),
        }
    }

    /// With `spin_during_sync` on.
    pub fn spinning(segment_size: u64) -> Self {
        Self {
            spin: std::time::Duration::from_millis(1),
            ..Self::new(segment_size)
        }
    }

    /// With `inline_commit` off: every append goes through the writer thread.
    pub fn queued(segment_size: u64) -> Self {
        Self {
            inline_commit: false,
            ..Self::new(segment_size)
        }
    }

    pub fn options(&self) -> LogOptions {
        LogOptions {
            segment_size: self.segment_size,
            spin_during_sync: self.spin,
            inline_commit: self.inline_commit,
            ..LogOptions::default()
        }
    }
}

fn same(a: &Arc<dyn EventStore>, b: &Arc<dyn EventStore>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

#[async_trait::async_trait]
impl StoreFactory for LogFactory {
    async fn create(&self) -> Arc<dyn EventStore> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let store: Arc<dyn EventStore> = Arc::new(LogStore::open(&dir, self.options()).unwrap());
        self.dirs
            .lock()
            .unwrap()
            .push((Arc::clone(&store), dir, tmp));
        store
    }

    async fn reopen(&self, store: Arc<dyn EventStore>) -> Option<Arc<dyn EventStore>> {
        store.close().await.unwrap();
        let mut dirs = self.dirs.lock().unwrap();
        let entry = dirs
            .iter_mut()
            .find(|(s, _, _)| same(s, &store))
            .expect("a store this factory made");
        let reopened: Arc<dyn EventStore> =
            Arc::new(LogStore::open(&entry.1, self.options()).unwrap());
        entry.0 = Arc::clone(&reopened);
        Some(reopened)
    }
}
