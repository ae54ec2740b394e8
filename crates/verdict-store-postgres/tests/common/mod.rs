//! Helpers shared by the PostgreSQL store's tests: a schema per store, dropped afterwards.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use verdict_store::conformance::StoreFactory;
use verdict_store::EventStore;
use verdict_store_postgres::{PgOptions, PgStore};

/// The test database: `VERDICT_PG_URL`, or the local server the project's machines and CI run.
pub fn url() -> String {
    std::env::var("VERDICT_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Options for a fresh, uniquely named schema.
pub fn fresh_options() -> PgOptions {
    PgOptions::new(url()).with_schema(format!("vt_{}", uuid::Uuid::now_v7().simple()))
}

/// Makes stores, each in its own schema, and drops the schemas when it is dropped, so tests
/// run in parallel and repeatedly.
#[derive(Default)]
pub struct PgFactory {
    made: Mutex<Vec<(Arc<dyn EventStore>, PgOptions)>>,
}

impl PgFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `schema` for dropping.
    pub fn track(&self, store: Arc<dyn EventStore>, options: PgOptions) {
        self.made.lock().unwrap().push((store, options));
    }
}

fn same(a: &Arc<dyn EventStore>, b: &Arc<dyn EventStore>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

#[async_trait::async_trait]
impl StoreFactory for PgFactory {
    async fn create(&self) -> Arc<dyn EventStore> {
        let options = fresh_options();
        let store: Arc<dyn EventStore> = Arc::new(PgStore::open(options.clone()).await.unwrap());
        self.track(Arc::clone(&store), options);
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
        let reopened: Arc<dyn EventStore> = Arc::new(PgStore::open(options.clone()).await.unwrap());
        self.track(Arc::clone(&reopened), options);
        Some(reopened)
    }
}

impl Drop for PgFactory {
    fn drop(&mut self) {
        let mut schemas: Vec<String> = self
            .made
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|(_, o)| o.schema)
            .collect();
        schemas.sort();
        schemas.dedup();
        drop_schemas(schemas);
    }
}

/// Drops `schemas` from a thread of its own (a `Drop` cannot await inside the test runtime).
pub fn drop_schemas(schemas: Vec<String>) {
    if schemas.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                .await
                .expect("connect to drop test schemas");
            tokio::spawn(connection);
            for schema in schemas {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .expect("drop test schema");
            }
        });
    })
    .join()
    .unwrap();
}
