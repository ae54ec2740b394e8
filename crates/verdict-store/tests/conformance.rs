//! The conformance suite on the in-memory store.

use std::sync::Arc;

use verdict_store::conformance::StoreFactory;
use verdict_store::{EventStore, MemoryStore};

struct Memory;

#[async_trait::async_trait]
impl StoreFactory for Memory {
    async fn create(&self) -> Arc<dyn EventStore> {
        Arc::new(MemoryStore::new())
    }

    async fn reopen(&self, _store: Arc<dyn EventStore>) -> Option<Arc<dyn EventStore>> {
        None // nothing survives a restart
    }
}

verdict_store::conformance_tests!(memory, Memory);
