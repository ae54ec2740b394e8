//! Model-based property test of the in-memory store (restarts are no-ops for it).

use std::sync::Arc;

use proptest::prelude::*;
use verdict_store::conformance::{model, StoreFactory};
use verdict_store::{EventStore, MemoryStore};

struct Memory;

#[async_trait::async_trait]
impl StoreFactory for Memory {
    async fn create(&self) -> Arc<dyn EventStore> {
        Arc::new(MemoryStore::new())
    }

    async fn reopen(&self, _store: Arc<dyn EventStore>) -> Option<Arc<dyn EventStore>> {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_store_agrees_with_model(ops in model::ops(80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(model::check(&Memory, &ops));
    }
}
